// Releases and deletes that land while another action runs on the server
// or image: Hetzner answers 423 locked, and the driver waits the action
// out and tries again, bounded by the context, in its one retry layer.

package hetzner_test

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/internal/testenv/hcloudfake"
	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/hetzner"
)

// A release that lands during a running poweroff succeeds and leaves no
// server and no key (it used to fail with ErrConflict and leave the server
// billing).
func TestReleaseDuringRunningActionSucceeds(t *testing.T) {
	var locked atomic.Int32
	w := newWorld(t, hcloudfake.Options{AfterRequest: func(r *http.Request, status int) {
		if r.Method == "DELETE" && status == http.StatusLocked {
			locked.Add(1)
		}
	}})
	ctx := ctxFor(t, time.Minute)
	l, err := w.c.Warmup(ctx, crabbox.WithClass("small"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := w.client.Server.Poweroff(ctx, &hcloud.Server{ID: mustID(t, l.MachineID)}); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatalf("Release during a poweroff: %v", err)
	}
	if locked.Load() == 0 {
		t.Fatal("the release never met the lock; the test proves nothing")
	}
	if st := w.fake.State(); st.Servers != 0 || st.SSHKeys != 0 {
		t.Fatalf("left %+v", st)
	}
}

// DeleteMachine during a snapshot of the server waits for the snapshot.
func TestDeleteMachineDuringCreateImage(t *testing.T) {
	e := newEnv(t, hcloudfake.Options{}, 2)
	ctx := ctxFor(t, time.Minute)
	m := e.runningMachine(t, "cbx_0123456789ab")
	ci, _, err := e.client.Server.CreateImage(ctx, &hcloud.Server{ID: mustID(t, m.ID)}, &hcloud.ServerCreateImageOpts{Type: hcloud.ImageTypeSnapshot})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.d.DeleteMachine(ctx, m.ID); err != nil {
		t.Fatalf("DeleteMachine during create_image: %v", err)
	}
	if st := e.fake.State(); st.Servers != 0 || st.SSHKeys != 0 {
		t.Fatalf("left %+v", st)
	}
	im, _, err := e.client.Image.GetByID(ctx, ci.Image.ID)
	if err != nil || im == nil || im.Status != hcloud.ImageStatusAvailable {
		t.Fatalf("the snapshot the release waited for: %+v, %v", im, err)
	}
}

// A lock that outlasts the context ends with the context's error: not
// retryable, no provider code, so the SDK does not retry it on top.
func TestLockedDeleteBoundedByContext(t *testing.T) {
	for _, retries := range []bool{true, false} {
		opts := []hetzner.Option{hetzner.WithClientRetries(retries)}
		e := newEnv(t, hcloudfake.Options{}, map[bool]int{true: 2, false: 0}[retries], opts...)
		m := e.runningMachine(t, "cbx_0123456789ab")
		e.fake.InjectFault(hcloudfake.Fault{Method: "DELETE", Path: "/servers/*", Code: "locked", Times: 1 << 30})
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		err := e.d.DeleteMachine(ctx, m.ID)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, provider.ErrUnavailable) || errors.Is(err, provider.ErrThrottled) {
			t.Fatalf("retries %v: persistently locked delete = %v, want the context's error and nothing retryable", retries, err)
		}
		e.fake.ClearFaults()
		if err := e.d.DeleteMachine(context.Background(), m.ID); err != nil || e.fake.State().Servers != 0 {
			t.Fatalf("retries %v: delete once unlocked: %v", retries, err)
		}
	}
}

// DeleteImage and ProtectImage retry locked too.
func TestImageCallsRetryLocked(t *testing.T) {
	e := newEnv(t, hcloudfake.Options{}, 2)
	ctx := ctxFor(t, time.Minute)
	m := e.runningMachine(t, "cbx_0123456789ab")
	ci, _, err := e.client.Server.CreateImage(ctx, &hcloud.Server{ID: mustID(t, m.ID)}, &hcloud.ServerCreateImageOpts{Type: hcloud.ImageTypeSnapshot})
	if err != nil {
		t.Fatal(err)
	}
	id := ci.Image.ID
	// change_protection while the snapshot is created is locked.
	if err := e.d.ProtectImage(ctx, itoa(id), true); err != nil {
		t.Fatalf("ProtectImage during create_image: %v", err)
	}
	if err := e.d.ProtectImage(ctx, itoa(id), false); err != nil {
		t.Fatal(err)
	}
	e.fake.InjectFault(hcloudfake.Fault{Method: "DELETE", Path: "/images/*", Code: "locked", Times: 2})
	if err := e.d.DeleteImage(ctx, itoa(id)); err != nil {
		t.Fatalf("DeleteImage answered locked twice: %v", err)
	}
	if e.fake.State().Images != 0 {
		t.Fatal("image left")
	}
}

// conflict ("the resource has changed during the request, please retry")
// is retried by hcloud-go when the client retries; the driver retries it
// only for a client that does not, so attempts never multiply.
func TestDeleteRetriesConflictOnlyWithoutClientRetries(t *testing.T) {
	for _, clientRetries := range []bool{false, true} {
		var deletes atomic.Int32
		e := newEnv(t, hcloudfake.Options{}, 0, hetzner.WithClientRetries(clientRetries))
		m := e.runningMachine(t, "cbx_0123456789ab")
		e.fakeBefore(func(r *http.Request) {
			if r.Method == "DELETE" && r.URL.Path == "/servers/"+m.ID {
				deletes.Add(1)
			}
		})
		e.fake.InjectFault(hcloudfake.Fault{Method: "DELETE", Path: "/servers/*", Code: "conflict", Times: 2})
		err := e.d.DeleteMachine(ctxFor(t, time.Minute), m.ID)
		switch {
		case !clientRetries && (err != nil || deletes.Load() != 3 || e.fake.State().Servers != 0):
			t.Fatalf("without client retries: %v after %d deletes, want success after 3", err, deletes.Load())
		case clientRetries && (!errors.Is(err, provider.ErrConflict) || deletes.Load() != 1):
			t.Fatalf("with client retries (here none): %v after %d deletes, want ErrConflict after one (hcloud-go's to retry)", err, deletes.Load())
		}
	}
}
