// Throttling with hcloud-go's retries on: one layer retries (hcloud-go, per
// request), never both, so throttled flows complete and persistent
// throttling ends in hcloud-go's attempts, not attempts times the client's.

package hetzner_test

import (
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/internal/testenv/hcloudfake"
)

// With one API request in three rate-limited, every flow completes: warm a
// lease, run on it, image it, release it, delete the image.
func TestThrottlingOneInThreeCompletes(t *testing.T) {
	w := newWorld(t, hcloudfake.Options{})
	if !w.d.RetriesRequests() {
		t.Fatal("RetriesRequests = false by default")
	}
	ctx := ctxFor(t, 2*time.Minute)
	w.fake.InjectFault(hcloudfake.Fault{Code: "rate_limit_exceeded", Every: 3, Times: 1 << 30})
	for i := range 2 {
		l, err := w.c.Warmup(ctx, crabbox.WithClass("small"))
		if err != nil {
			t.Fatalf("Warmup %d: %v", i, err)
		}
		if _, err := l.Run(ctx, "true"); err != nil {
			t.Fatalf("Run %d: %v", i, err)
		}
		name := "openclaw-crabbox-linux-20260506-023" + string(rune('0'+i))
		img, err := w.c.CreateImage(ctx, l.ID, name, crabbox.WithWait(time.Minute))
		if err != nil {
			t.Fatalf("CreateImage %d: %v", i, err)
		}
		if err := l.Release(ctx); err != nil {
			t.Fatalf("Release %d: %v", i, err)
		}
		if err := w.d.DeleteImage(ctx, img.ID); err != nil {
			t.Fatalf("DeleteImage %d: %v", i, err)
		}
	}
	if st := w.fake.State(); st.Servers != 0 || st.SSHKeys != 0 || st.Images != 0 {
		t.Fatalf("left %+v", st)
	}
}

// Persistent rate limiting of POST /servers ends after hcloud-go's attempts
// for the one request (1 + 2 retries in this world): the client does not run
// the create again on top (5 x 3 requests before).
func TestPersistentThrottlingEndsInBoundedAttempts(t *testing.T) {
	w := newWorld(t, hcloudfake.Options{})
	var creates atomic.Int32
	w.fakeBefore(func(r *http.Request) {
		if r.Method == "POST" && r.URL.Path == "/servers" {
			creates.Add(1)
		}
	})
	w.fake.InjectFault(hcloudfake.Fault{Method: "POST", Path: "/servers", Code: "rate_limit_exceeded", Times: 1 << 30})
	_, err := w.c.Warmup(ctxFor(t, time.Minute), crabbox.WithClass("small"))
	if !errors.Is(err, crabbox.ErrThrottled) {
		t.Fatalf("Warmup = %v, want ErrThrottled", err)
	}
	if n := creates.Load(); n != 3 {
		t.Errorf("%d POST /servers reached the fake, want 3 (one request, hcloud-go's attempts)", n)
	}
	if st := w.fake.State(); st.Servers != 0 || st.SSHKeys != 0 {
		t.Fatalf("left %+v", st)
	}
}
