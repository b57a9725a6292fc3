package crabboxtest

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/providertest"
)

func harness(c provider.Driver, inject func(call, kind string) (func(), error)) providertest.Harness {
	var d net.Dialer
	h := providertest.Harness{Driver: c, PollInterval: 10 * time.Millisecond, Timeout: time.Minute, Dial: d.DialContext}
	if inject != nil {
		h.Inject = func(call string, kind providertest.FaultKind) (func(), error) { return inject(call, string(kind)) }
	}
	return h
}

func TestConformance(t *testing.T) {
	c := Start(t)
	providertest.Run(t, harness(c, c.InjectFault))
	if n := c.MachineCount(); n != 0 {
		t.Errorf("the suite left %d machines", n)
	}
	if n := c.ImageCount(); n != 0 {
		t.Errorf("the suite left %d images", n)
	}
}

func TestConformanceBootDelay(t *testing.T) {
	c := Start(t, WithBootDelay(100*time.Millisecond), WithImagePendingPolls(3))
	providertest.Run(t, harness(c, c.InjectFault))
}

// wrongAddr reports every machine's SSH address one port off: the suite's
// SSH login must catch it.
type wrongAddr struct{ *Cloud }

func (w wrongAddr) GetMachine(ctx context.Context, id string) (*provider.Machine, error) {
	m, err := w.Cloud.GetMachine(ctx, id)
	if m != nil && m.SSHAddr != "" {
		host, _, _ := net.SplitHostPort(m.SSHAddr)
		m.SSHAddr = net.JoinHostPort(host, "1")
	}
	return m, err
}

// TestConformanceCatchesUnreachableMachines runs the suite in a child
// process against machines whose address is wrong, and wants the Machines
// subtest to fail on the SSH login.
func TestConformanceCatchesUnreachableMachines(t *testing.T) {
	if os.Getenv("CRABBOXTEST_WRONG_ADDR") == "1" {
		c := Start(t)
		h := harness(wrongAddr{c}, nil)
		h.Timeout = 2 * time.Second
		providertest.Run(t, h)
		return
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), exe, "-test.run=^TestConformanceCatchesUnreachableMachines$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "CRABBOX_WRONG_ADDR=1", "CRABBOXTEST_WRONG_ADDR=1")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--- FAIL: TestConformanceCatchesUnreachableMachines/Machines") ||
		!strings.Contains(string(out), "SSH login to machine") {
		t.Fatalf("the suite passed machines it cannot log in to (err %v):\n%s", err, out)
	}
}
