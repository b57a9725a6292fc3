package awstest_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/crabboxtest/awstest"
)

// start starts the cloud, skipping (failing with CI=true) when a component
// is missing.
func start(t *testing.T) *awstest.Cloud {
	t.Helper()
	cloud, err := awstest.Start(context.Background(), awstest.Options{})
	if errors.Is(err, awstest.ErrMissing) && os.Getenv("CI") != "true" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cloud.Close() })
	return cloud
}

// TestLeaseRunsOnABox: a lease on the emulated EC2 is a real sshd box that
// runs commands.
func TestLeaseRunsOnABox(t *testing.T) {
	cloud := start(t)
	drv, err := cloud.Driver()
	if err != nil {
		t.Fatal(err)
	}
	c, err := crabbox.New(drv, append(cloud.ClientOptions(), crabbox.WithStateDir(t.TempDir()))...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := c.Warmup(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release(context.WithoutCancel(ctx))
	res, err := l.Run(ctx, "echo hello from $(id -un)", crabbox.Strict())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(strings.TrimSpace(res.StdoutTail), "hello from ") {
		t.Fatalf("stdout %q", res.StdoutTail)
	}
}

// TestMissingMotoSaysSo: without python3 on PATH (the account tools kept),
// Start fails with ErrMissing and names what is missing.
func TestMissingMotoSaysSo(t *testing.T) {
	if _, err := os.Stat("/usr/sbin/python3"); err == nil {
		t.Skip("python3 is in /usr/sbin")
	}
	t.Setenv("PATH", "/usr/sbin:/sbin")
	_, err := awstest.Start(context.Background(), awstest.Options{})
	if !errors.Is(err, awstest.ErrMissing) {
		t.Fatalf("Start without python3: %v, want ErrMissing", err)
	}
	want := "moto"
	if os.Geteuid() != 0 {
		want = "root"
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error does not say what is missing: %v", err)
	}
}
