// Tests of the browser's DevTools endpoint (WithDevTools, Browser.DevTools)
// and of Lease.ForwardVNC on the desktop test host: real Xvfb, Chromium and
// x11vnc, reached through the lease's tunnel, bound to the box's loopback
// only.

package crabbox_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	crabbox "github.com/crabbox/crabbox-go"
)

func TestDesktopDevToolsThroughTheTunnel(t *testing.T) {
	needDesktopTools(t, desktopTools...)
	h := startDesktopHost(t, hostOptions{})
	h.mustBootstrap(t)
	ctx := testCtx(t)
	url := h.writePage(t, "DevTools proof")

	plain, err := h.l.OpenURL(ctx, url)
	require.NoError(t, err)
	_, err = plain.DevTools(ctx)
	assert.ErrorIs(t, err, crabbox.ErrInvalidArgument, "no DevTools without WithDevTools")
	require.NoError(t, plain.Close(ctx))

	b, err := h.l.OpenURL(ctx, url, crabbox.WithDevTools())
	require.NoError(t, err)
	defer b.Close(context.Background())
	assert.True(t, b.DevToolsEnabled)
	dt, err := b.DevTools(ctx)
	require.NoError(t, err)
	again, err := b.DevTools(ctx)
	require.NoError(t, err)
	assert.Same(t, dt, again, "one tunnel per browser")
	assert.True(t, strings.HasPrefix(dt.WebSocketURL, "ws://127.0.0.1:"), dt.WebSocketURL)
	assert.Contains(t, dt.WebSocketURL, "/devtools/browser/")

	// The page is listed through the tunnel.
	var pages []struct{ Type, Title, URL string }
	require.Eventually(t, func() bool {
		resp, err := http.Get(dt.HTTPURL + "/json/list")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if json.Unmarshal(body, &pages) != nil {
			return false
		}
		for _, p := range pages {
			if p.Type == "page" && p.Title == "DevTools proof" {
				return true
			}
		}
		return false
	}, 30*time.Second, 200*time.Millisecond, "pages: %+v", pages)

	// On the box the endpoint listens on 127.0.0.1 only.
	tcp, err := os.ReadFile("/proc/net/tcp")
	require.NoError(t, err)
	port := fmt.Sprintf(":%04X ", dt.BoxPort)
	var found bool
	for _, line := range strings.Split(string(tcp), "\n") {
		f := strings.Fields(line)
		if len(f) > 3 && strings.HasSuffix(f[1]+" ", port) && f[3] == "0A" { // LISTEN
			found = true
			assert.Equal(t, "0100007F"+strings.TrimSuffix(port, " "), f[1], "DevTools listens on the box's loopback only")
		}
	}
	assert.True(t, found, "no listener on port %d", dt.BoxPort)
	tcp6, _ := os.ReadFile("/proc/net/tcp6")
	for _, line := range strings.Split(string(tcp6), "\n") {
		f := strings.Fields(line)
		if len(f) > 3 && strings.HasSuffix(f[1]+" ", port) && f[3] == "0A" {
			t.Errorf("DevTools also listens on IPv6 %s", f[1])
		}
	}

	// The browser's Close closes the tunnel.
	require.NoError(t, b.Close(ctx))
	select {
	case <-dt.Tunnel.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the DevTools tunnel outlived the browser")
	}
	_, err = net.Dial("tcp", strings.TrimPrefix(dt.HTTPURL, "http://"))
	assert.Error(t, err)
	_, err = b.DevTools(ctx)
	assert.ErrorIs(t, err, crabbox.ErrBrowserExited)
}

func TestDevToolsSwitchesOnlyThroughWithDevTools(t *testing.T) {
	l := uploadLease(t)
	for _, a := range []string{"--remote-debugging-port=9222", "--remote-debugging-address=0.0.0.0", "--remote-debugging-pipe"} {
		_, err := l.OpenURL(testCtx(t), "about:blank", crabbox.WithBrowserArgs(a))
		assert.ErrorIs(t, err, crabbox.ErrInvalidArgument, a)
	}
}

func TestDesktopForwardVNCShowsTheLiveDesktop(t *testing.T) {
	needDesktopTools(t, desktopTools...)
	h := startDesktopHost(t, hostOptions{})
	h.mustBootstrap(t)
	ctx := testCtx(t)
	tun, err := h.l.ForwardVNC(ctx)
	require.NoError(t, err)
	defer tun.Close()
	assert.Equal(t, fmt.Sprintf("127.0.0.1:%d", h.vncPort), tun.RemoteAddr())
	c, err := net.Dial("tcp", tun.LocalAddr())
	require.NoError(t, err)
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	banner := make([]byte, 12)
	_, err = io.ReadFull(c, banner)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(string(banner), "RFB 003."), "an RFB server answers: %q", banner)
}

func TestForwardVNCWithoutAVNCServer(t *testing.T) {
	l := uploadLease(t)
	boxVNCPort(t, l) // not 5900, where another test's desktop may listen
	// ForwardVNC waits for a server still starting; the caller's context
	// bounds that wait, and the error says both why and that it ended.
	ctx, cancel := context.WithTimeout(testCtx(t), 2*time.Second)
	defer cancel()
	_, err := l.ForwardVNC(ctx)
	assert.ErrorIs(t, err, crabbox.ErrUnavailable)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}
