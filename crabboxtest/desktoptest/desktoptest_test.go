package desktoptest_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/crabboxtest/desktoptest"
	"github.com/crabbox/crabbox-go/provider/sshhost"
)

// TestHostRunsCommandsWithItsDisplay: the host is an SSH host whose
// sessions know its display and file-system root, and Close removes it.
func TestHostRunsCommandsWithItsDisplay(t *testing.T) {
	h, err := desktoptest.Start()
	if errors.Is(err, desktoptest.ErrMissing) && os.Getenv("CI") != "true" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	drv, err := sshhost.New([]sshhost.Host{h.SSH})
	if err != nil {
		t.Fatal(err)
	}
	c, err := crabbox.New(drv, crabbox.WithStateDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := c.Warmup(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release(context.WithoutCancel(ctx))
	res, err := l.Run(ctx, `echo "$(id -un) $CRABBOX_DISPLAY"`, crabbox.Strict())
	if err != nil {
		t.Fatal(err)
	}
	if want := h.SSH.User + " " + h.Display; strings.TrimSpace(res.StdoutTail) != want {
		t.Fatalf("stdout %q, want %q", res.StdoutTail, want)
	}
}
