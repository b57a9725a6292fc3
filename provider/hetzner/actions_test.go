// Tests of actions.go: waiting for actions and settling after them.

package hetzner_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/internal/testenv/hcloudfake"
	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/hetzner"
)

// nullBox is a fake server's box that nobody dials.
type nullBox struct{}

func (nullBox) Addr() string { return "127.0.0.1:1" }
func (nullBox) Close() error { return nil }

// bootFailing fails the boot (and so the create_server action) of servers
// whose name contains "broken".
func bootFailing(_ context.Context, r hcloudfake.BootRequest) (hcloudfake.Box, error) {
	if strings.Contains(r.Name, "broken") {
		return nil, errors.New("kernel panic on first boot")
	}
	return nullBox{}, nil
}

// isActionPoll reports whether r is hcloud-go's action waiting polling the
// actions API (GET /actions?id=...).
func isActionPoll(r *http.Request) bool {
	return r.Method == "GET" && r.URL.Path == "/actions" && r.URL.Query().Has("id")
}

func TestCreateMachineWaitsThroughActionsWithTheClientsBackoff(t *testing.T) {
	f := hcloudfake.New(hcloudfake.Options{ActionSteps: 4})
	t.Cleanup(f.Close)
	var backoffs atomic.Int64
	c := hcloud.NewClient(hcloud.WithEndpoint(f.URL()), hcloud.WithToken("t"),
		hcloud.WithPollOpts(hcloud.PollOpts{BackoffFunc: func(int) time.Duration {
			backoffs.Add(1)
			return time.Millisecond
		}}))
	d, err := hetzner.New(c)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{fake: f, client: c, d: d}
	ctx := context.Background()
	m, err := d.CreateMachine(ctx, e.createReq(t, "cbx_0123456789ab", "cx22"))
	if err != nil {
		t.Fatal(err)
	}
	if m.State != provider.MachineRunning || !strings.HasPrefix(m.SSHAddr, "203.0.113.") {
		t.Fatalf("machine = %+v, want running with its address", m)
	}
	if st := f.State(); st.RunningActions != 0 {
		t.Fatalf("%d actions still running", st.RunningActions)
	}
	// The wait went through hcloud-go's action waiting, which sleeps with
	// the poll backoff the caller configured on the client.
	if backoffs.Load() == 0 {
		t.Fatal("the client's poll backoff was never consulted: CreateMachine did not wait through hcloud-go's action waiting")
	}
	if err := d.DeleteMachine(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
}

func TestCreateMachineActionFailureReleasesServer(t *testing.T) {
	for _, token := range []string{"cbx_0123456789ab", ""} {
		e := newEnv(t, hcloudfake.Options{Boot: bootFailing, ActionSteps: 3}, 0)
		ctx := context.Background()
		req := e.createReq(t, token, "cx22")
		req.Name = "broken-crab"
		polls := 0
		var mu sync.Mutex
		e.fakeBefore(func(r *http.Request) {
			if isActionPoll(r) {
				mu.Lock()
				polls++
				mu.Unlock()
			}
		})
		m, err := e.d.CreateMachine(ctx, req)
		if m != nil || err == nil {
			t.Fatalf("token %q: CreateMachine of a server whose create action fails = %+v, %v; want nil and an error", token, m, err)
		}
		// A failed create action is a backend failure: retryable, the
		// raw action error reachable, its message kept.
		if !errors.Is(err, provider.ErrUnavailable) || !strings.Contains(err.Error(), "kernel panic on first boot") {
			t.Fatalf("token %q: err = %v, want ErrUnavailable with the action's message", token, err)
		}
		var ae hcloud.ActionError
		if !errors.As(err, &ae) || ae.Code != "server_error" {
			t.Fatalf("token %q: hcloud.ActionError not reachable: %#v", token, err)
		}
		mu.Lock()
		if polls == 0 {
			t.Fatalf("token %q: the failure was not observed through the action", token)
		}
		mu.Unlock()
		// The driver released the server and its key itself.
		if st := e.fake.State(); st.Servers != 0 || st.SSHKeys != 0 {
			t.Fatalf("token %q: a failed create left %+v", token, st)
		}
	}
}

func TestCancelDuringServerWaitHandsItBackAndLeavesNothing(t *testing.T) {
	e := newEnv(t, hcloudfake.Options{ActionSteps: 1000}, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var once sync.Once
	e.fakeBefore(func(r *http.Request) {
		if isActionPoll(r) {
			once.Do(cancel)
		}
	})
	m, err := e.d.CreateMachine(ctx, e.createReq(t, "cbx_0123456789ab", "cx22"))
	e.fakeBefore(nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if provider.Retryable(err) {
		t.Fatalf("a cancelled wait must not be retryable: %v", err)
	}
	servers := e.fake.Servers()
	if m == nil || len(servers) != 1 || mustID(t, m.ID) != servers[0].ID {
		t.Fatalf("cancelled create returned %+v; fake holds %+v: want the half-made server handed back", m, servers)
	}
	// The caller releases what it got back, as the SDK does: nothing stays.
	if err := e.d.DeleteMachine(context.Background(), m.ID); err != nil {
		t.Fatal(err)
	}
	if st := e.fake.State(); st.Servers != 0 || st.SSHKeys != 0 {
		t.Fatalf("left %+v", st)
	}
}

func TestCancelledWarmupDuringActionWaitLeavesNothing(t *testing.T) {
	// Through the SDK: the lease's create is cancelled while the driver
	// waits for the create action; the SDK releases what the driver handed
	// back.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var once sync.Once
	w := newWorld(t, hcloudfake.Options{ActionSteps: 1000, BeforeRequest: func(r *http.Request) {
		if isActionPoll(r) {
			once.Do(cancel)
		}
	}})
	l, err := w.c.Warmup(ctx, crabbox.WithClass("small"))
	if err == nil {
		_ = l.Release(context.Background())
		t.Fatal("warmup succeeded despite the cancellation")
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if st := w.fake.State(); st.Servers != 0 || st.SSHKeys != 0 || st.Boxes != 0 {
		t.Fatalf("cancelled warmup left %+v", st)
	}
}

func TestCreateMachineAdoptsAndWaitsForAnInitializingServer(t *testing.T) {
	// A retried create finds the first attempt's server still coming up:
	// it waits for that server's running actions too.
	e := newEnv(t, hcloudfake.Options{ActionSteps: 5}, 0)
	ctx := context.Background()
	res, _, err := e.client.Server.Create(ctx, hcloud.ServerCreateOpts{Name: "first-attempt",
		ServerType: &hcloud.ServerType{Name: "cx22"}, Image: &hcloud.Image{Name: "ubuntu-24.04"},
		Labels: map[string]string{hetzner.LabelToken: "cbx_0123456789ab"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Server.Status != hcloud.ServerStatusInitializing {
		t.Fatalf("first attempt's server is %q", res.Server.Status)
	}
	m, err := e.d.CreateMachine(ctx, e.createReq(t, "cbx_0123456789ab", "cx22"))
	if err != nil || m.ID != itoa(res.Server.ID) || m.State != provider.MachineRunning {
		t.Fatalf("retried create = %+v, %v; want server %d running", m, err, res.Server.ID)
	}
	if st := e.fake.State(); st.Servers != 1 || st.RunningActions != 0 {
		t.Fatalf("state = %+v", st)
	}
}

func TestCreateImageWaitsAndReportsAFailedActionAsAFailedImage(t *testing.T) {
	var calls atomic.Int64
	e := newEnv(t, hcloudfake.Options{ActionSteps: 3, Snapshot: func(context.Context, int64, int64) error {
		if calls.Add(1) == 1 {
			return errors.New("disk read error")
		}
		return nil
	}}, 0)
	ctx := context.Background()
	m := e.runningMachine(t, "cbx_0123456789ab")
	req := provider.CreateImageRequest{MachineID: m.ID, Name: "a-b-c-20260101-0000", Token: "tok1"}
	im, err := e.d.CreateImage(ctx, req)
	if err != nil {
		t.Fatalf("a failed snapshot is a result, not a failed call: %v", err)
	}
	if im == nil || im.ID == "" || im.State != provider.ImageFailed || !strings.Contains(im.StateReason, "disk read error") {
		t.Fatalf("image after a failed create_image action = %+v; want failed with the action's message", im)
	}
	if st := e.fake.State(); st.RunningActions != 0 || st.Images != 1 {
		t.Fatalf("state = %+v", st)
	}
	// GetImage tells the same reason (the SDK's WaitImage reports it).
	got, err := e.d.GetImage(ctx, im.ID)
	if err != nil || got.State != provider.ImageFailed || !strings.Contains(got.StateReason, "disk read error") {
		t.Fatalf("GetImage of the failed snapshot = %+v, %v", got, err)
	}
	// A repeated call with the token adopts the failed snapshot as it is
	// (kept for inspection, as on other providers), reason included.
	again, err := e.d.CreateImage(ctx, req)
	if err != nil || again.ID != im.ID || again.State != provider.ImageFailed || !strings.Contains(again.StateReason, "disk read error") {
		t.Fatalf("repeated call = %+v, %v; want the failed snapshot %s adopted", again, err, im.ID)
	}
	if ims := e.fake.Images(); len(ims) != 1 || calls.Load() != 1 {
		t.Fatalf("fake images = %+v after %d snapshots, want only the failed one", ims, calls.Load())
	}
	// A new token makes a new snapshot, which succeeds this time.
	req.Token = "tok2"
	ok, err := e.d.CreateImage(ctx, req)
	if err != nil || ok.State != provider.ImageAvailable || ok.ID == im.ID {
		t.Fatalf("new attempt = %+v, %v; want a new available snapshot", ok, err)
	}
}

func TestCancelDuringSnapshotWaitReturnsTheImage(t *testing.T) {
	e := newEnv(t, hcloudfake.Options{ActionSteps: 200}, 0)
	m := e.runningMachine(t, "cbx_0123456789ab")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var once sync.Once
	e.fakeBefore(func(r *http.Request) {
		if isActionPoll(r) {
			once.Do(cancel)
		}
	})
	im, err := e.d.CreateImage(ctx, provider.CreateImageRequest{MachineID: m.ID, Name: "a-b-c-20260101-0000", Token: "tok1"})
	e.fakeBefore(nil)
	if !errors.Is(err, context.Canceled) || provider.Retryable(err) {
		t.Fatalf("err = %v, want context.Canceled without a retryable code", err)
	}
	ims := e.fake.Images()
	if im == nil || len(ims) != 1 || mustID(t, im.ID) != ims[0].ID || im.State != provider.ImagePending {
		t.Fatalf("cancelled CreateImage returned %+v; fake holds %+v: want the pending snapshot's id", im, ims)
	}
	// The caller decides; deleting what it got leaves nothing.
	if err := e.d.DeleteImage(context.Background(), im.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.d.DeleteMachine(context.Background(), m.ID); err != nil {
		t.Fatal(err)
	}
	if st := e.fake.State(); st.Servers != 0 || st.Images != 0 || st.SSHKeys != 0 {
		t.Fatalf("left %+v", st)
	}
}

func TestAPIErrorDuringServerWaitHandsItBackAndRetryAdopts(t *testing.T) {
	e := newEnv(t, hcloudfake.Options{ActionSteps: 3}, 0)
	ctx := context.Background()
	e.fake.InjectFault(hcloudfake.Fault{Method: "GET", Path: "/actions", Code: "service_error"})
	req := e.createReq(t, "cbx_0123456789ab", "cx22")
	m, err := e.d.CreateMachine(ctx, req)
	if !errors.Is(err, provider.ErrUnavailable) || m == nil {
		t.Fatalf("CreateMachine with the action poll failing = %+v, %v; want the server and ErrUnavailable", m, err)
	}
	// The SDK retries a retryable error: the retry adopts the server by its
	// token and finishes the wait.
	again, err := e.d.CreateMachine(ctx, req)
	if err != nil || again.ID != m.ID || again.State != provider.MachineRunning {
		t.Fatalf("retry = %+v, %v; want server %s running", again, err, m.ID)
	}
	if st := e.fake.State(); st.Servers != 1 || st.SSHKeys != 1 {
		t.Fatalf("state = %+v", st)
	}
}
