package hetznertest_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/crabboxtest/hetznertest"
	"github.com/crabbox/crabbox-go/provider/hetzner"
)

// TestLeaseRunsOnABox: a lease on the fake Hetzner Cloud is a real sshd
// box that runs commands, and releasing it leaves no server behind.
func TestLeaseRunsOnABox(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cloud, err := hetznertest.Start(ctx)
	if errors.Is(err, hetznertest.ErrMissing) && os.Getenv("CI") != "true" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer cloud.Close()
	drv, err := hetzner.New(cloud.Client(), hetzner.WithLocation("fsn1"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := crabbox.New(drv, append(cloud.ClientOptions(), crabbox.WithStateDir(t.TempDir()))...)
	if err != nil {
		t.Fatal(err)
	}
	l, err := c.Warmup(ctx)
	if err != nil {
		t.Fatal(err)
	}
	res, err := l.Run(ctx, "echo hello", crabbox.Strict())
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(res.StdoutTail) != "hello" {
		t.Fatalf("stdout %q", res.StdoutTail)
	}
	if n := cloud.Counts().Servers; n != 1 {
		t.Fatalf("%d servers while the lease runs, want 1", n)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if n := cloud.Counts().Servers; n != 0 {
		t.Fatalf("%d servers after release, want 0", n)
	}
}
