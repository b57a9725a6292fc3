// Location fallback (WithLocations): a location out of stock moves the
// create to the next location with the same server type; quota does not
// move; the request token keeps one server wherever it landed.

package hetzner_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/internal/testenv/hcloudfake"
	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/hetzner"
)

// serverCreates counts POST /servers.
func serverCreates(n *atomic.Int32) func(*http.Request) {
	return func(r *http.Request) {
		if r.Method == "POST" && r.URL.Path == "/servers" {
			n.Add(1)
		}
	}
}

// With fsn1 out of stock for everything, a Warmup with the preferred type
// lands in nbg1 (with one location, every type failed in fsn1 and the
// lease failed with ErrCapacity).
func TestWarmupMovesToTheNextLocation(t *testing.T) {
	w := newWorld(t, hcloudfake.Options{}, hetzner.WithLocations("fsn1", "nbg1", "hel1"))
	w.fake.SetNoCapacity("fsn1")
	w.fake.SetNoCapacity("nbg1", "cx32")
	ctx := ctxFor(t, time.Minute)
	l, err := w.c.Warmup(ctx, crabbox.WithClass("small"))
	if err != nil {
		t.Fatalf("Warmup with fsn1 out of stock: %v", err)
	}
	defer l.Release(context.Background())
	srv := w.fake.Servers()
	if len(srv) != 1 || srv[0].Location.Name != "hel1" || srv[0].ServerType.Name != "cx32" {
		t.Fatalf("servers %+v: want the class's first type cx32, in hel1 (fsn1 empty, nbg1 without cx32)", srv)
	}
	if st := w.fake.State(); st.SSHKeys != 1 {
		t.Fatalf("%d keys, want the lease's one", st.SSHKeys)
	}
	if w.d.Info().Region != "fsn1" {
		t.Fatalf("region %q", w.d.Info().Region)
	}
}

func TestLocationFallback(t *testing.T) {
	var creates atomic.Int32
	e := newEnv(t, hcloudfake.Options{}, 2, hetzner.WithLocations("fsn1", "nbg1", "hel1"))
	e.fakeBefore(serverCreates(&creates))
	ctx := ctxFor(t, time.Minute)

	// Classified by code, whatever the status: the API was seen answering
	// resource_unavailable with 412 rather than its table's 403.
	e.fake.InjectFault(hcloudfake.Fault{Method: "POST", Path: "/servers", Code: "resource_unavailable", Status: http.StatusPreconditionFailed,
		Message: "unable to provision servers in fsn1, try with a different location or try later"})
	req := e.createReq(t, "cbx_00000000000a", "cx22")
	m, err := e.d.CreateMachine(ctx, req)
	if err != nil {
		t.Fatalf("CreateMachine: %v", err)
	}
	if srv := e.fake.Servers(); len(srv) != 1 || srv[0].Location.Name != "nbg1" || creates.Load() != 2 {
		t.Fatalf("servers %+v after %d creates: want one in nbg1 after 2", srv, creates.Load())
	}
	// The same request again adopts it: one server, wherever it landed.
	again, err := e.d.CreateMachine(ctx, req)
	if err != nil || again.ID != m.ID || len(e.fake.Servers()) != 1 {
		t.Fatalf("retried create = %+v, %v; want server %s", again, err, m.ID)
	}
	if err := e.d.DeleteMachine(ctx, m.ID); err != nil {
		t.Fatal(err)
	}

	// Out of stock everywhere: ErrCapacity naming every location, nothing left.
	for _, l := range []string{"fsn1", "nbg1", "hel1"} {
		e.fake.SetNoCapacity(l, "cx22")
	}
	creates.Store(0)
	_, err = e.d.CreateMachine(ctx, e.createReq(t, "cbx_00000000000b", "cx22"))
	if !errors.Is(err, provider.ErrCapacity) || errors.Is(err, provider.ErrQuota) || !strings.Contains(err.Error(), "fsn1, nbg1, hel1") {
		t.Fatalf("everywhere out of stock: %v, want ErrCapacity naming the locations", err)
	}
	if st := e.fake.State(); st.Servers != 0 || st.SSHKeys != 0 || creates.Load() != 3 {
		t.Fatalf("left %+v after %d creates", st, creates.Load())
	}

	// A project limit is the same everywhere: ErrQuota at once.
	for _, l := range []string{"fsn1", "nbg1", "hel1"} {
		e.fake.SetCapacity(l)
	}
	creates.Store(0)
	e.fake.InjectFault(hcloudfake.Fault{Method: "POST", Path: "/servers", Code: "resource_limit_exceeded"})
	_, err = e.d.CreateMachine(ctx, e.createReq(t, "cbx_00000000000c", "cx22"))
	if !errors.Is(err, provider.ErrQuota) || errors.Is(err, provider.ErrCapacity) || creates.Load() != 1 {
		t.Fatalf("quota: %v after %d creates, want ErrQuota after one", err, creates.Load())
	}

	// An ambiguous failure does not move: the server it made is adopted.
	creates.Store(0)
	e.fake.InjectFault(hcloudfake.Fault{Method: "POST", Path: "/servers", Code: "service_error", After: true})
	m, err = e.d.CreateMachine(ctx, e.createReq(t, "cbx_00000000000d", "cx22"))
	if err != nil {
		t.Fatalf("ambiguous create: %v", err)
	}
	if srv := e.fake.Servers(); len(srv) != 1 || srv[0].Location.Name != "fsn1" {
		t.Fatalf("servers %+v, want the one the ambiguous create made in fsn1", srv)
	}
	if err := e.d.DeleteMachine(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	if st := e.fake.State(); st.Servers != 0 || st.SSHKeys != 0 {
		t.Fatalf("left %+v", st)
	}
}

func TestWithLocationsChecksItsArguments(t *testing.T) {
	for _, locs := range [][]string{nil, {""}, {"fsn1", "fsn1"}} {
		if _, err := hetzner.New(newEnv(t, hcloudfake.Options{}, 0).client, hetzner.WithLocations(locs...)); !errors.Is(err, provider.ErrInvalidArgument) {
			t.Errorf("WithLocations(%q) = %v, want ErrInvalidArgument", locs, err)
		}
	}
}

// The API also accepts a create and fails its create_server action with
// resource_unavailable later: the driver deletes that server and moves on
// to the next location too, with a fresh lease key.
func TestLocationFallbackAfterFailedCreateAction(t *testing.T) {
	e := newEnv(t, hcloudfake.Options{}, 2, hetzner.WithLocations("fsn1", "nbg1"))
	e.fake.SetLateNoCapacity("fsn1")
	ctx := ctxFor(t, time.Minute)
	m, err := e.d.CreateMachine(ctx, e.createReq(t, "cbx_00000000000a", "cx22"))
	if err != nil {
		t.Fatalf("CreateMachine: %v", err)
	}
	srv := e.fake.Servers()
	if len(srv) != 1 || srv[0].Location.Name != "nbg1" || m.State != provider.MachineRunning {
		t.Fatalf("servers %+v, machine %+v: want one running in nbg1", srv, m)
	}
	if keys := e.fake.SSHKeys(); len(keys) != 1 || len(srv[0].Labels) == 0 {
		t.Fatalf("keys %+v: want the lease's one", keys)
	}
	if err := e.d.DeleteMachine(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	// Failing late everywhere: ErrCapacity, nothing left.
	e.fake.SetLateNoCapacity("nbg1")
	if _, err := e.d.CreateMachine(ctx, e.createReq(t, "cbx_00000000000b", "cx22")); !errors.Is(err, provider.ErrCapacity) {
		t.Fatalf("late failure everywhere: %v, want ErrCapacity", err)
	}
	if st := e.fake.State(); st.Servers != 0 || st.SSHKeys != 0 {
		t.Fatalf("left %+v", st)
	}
}

// A create whose reply was lost and whose create_server action failed
// before the driver looked: adoption sees the failed action and treats the
// server as never up (released, the error returned), not as a machine.
func TestAdoptedCreateWithFailedActionIsNotAMachine(t *testing.T) {
	e := newEnv(t, hcloudfake.Options{}, 0)
	e.fake.SetLateNoCapacity("fsn1")
	e.fake.InjectFault(hcloudfake.Fault{Method: "POST", Path: "/servers", Code: "service_error", After: true})
	ctx := ctxFor(t, time.Minute)
	m, err := e.d.CreateMachine(ctx, e.createReq(t, "cbx_00000000000e", "cx22"))
	if !errors.Is(err, provider.ErrCapacity) || m != nil {
		t.Fatalf("CreateMachine = %+v, %v; want nil, ErrCapacity (the adopted server's create failed)", m, err)
	}
	if st := e.fake.State(); st.Servers != 0 || st.SSHKeys != 0 {
		t.Fatalf("left %+v: the failed server and its key must go", st)
	}
}
