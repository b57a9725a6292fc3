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
	h := startHost(t)
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

// TestHostsDoNotShareADisplayOrVNCPort: two hosts started before either
// has an X server get displays and VNC ports of their own, and so does a
// host started after one of them closed.
func TestHostsDoNotShareADisplayOrVNCPort(t *testing.T) {
	a := startHost(t)
	defer a.Close()
	b, err := desktoptest.Start()
	if err != nil {
		t.Fatal(err)
	}
	if a.Display == b.Display {
		t.Errorf("both hosts got display %s", a.Display)
	}
	if a.VNCPort == b.VNCPort || a.VNCPort == 5900 || b.VNCPort == 5900 {
		t.Errorf("VNC ports %d and %d: want two of their own", a.VNCPort, b.VNCPort)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	c, err := desktoptest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if a.Display == c.Display {
		t.Errorf("a third host got the first's display %s", a.Display)
	}
}

// startHost starts a host, skipping (outside CI) where its tools are
// missing. The caller closes it.
func startHost(t *testing.T) *desktoptest.Host {
	t.Helper()
	h, err := desktoptest.Start()
	if errors.Is(err, desktoptest.ErrMissing) && os.Getenv("CI") != "true" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return h
}
