// Tests of the behaviour raised to the documented API (issue 16): statuses
// per the Errors table, 423 locked during actions, the rate-limit token
// bucket and its headers, capacity per location.

package hcloudfake

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"
)

// The statuses of the "Errors" table of https://docs.hetzner.cloud/#errors.
func TestStatusForCodeFollowsErrorTable(t *testing.T) {
	for code, want := range map[string]int{
		"forbidden": 403, "unauthorized": 401, "invalid_input": 400, "json_error": 400,
		"locked": 423, "not_found": 404, "rate_limit_exceeded": 429,
		"resource_limit_exceeded": 403, "resource_unavailable": 403, "server_error": 500,
		"service_error": 503, "uniqueness_error": 409, "protected": 423, "maintenance": 503,
		"conflict": 409, "unsupported_error": 422, "token_readonly": 403, "unavailable": 503,
	} {
		if got := StatusForCode(code); got != want {
			t.Errorf("StatusForCode(%q) = %d, want %d", code, got, want)
		}
	}
}

func TestLockedWhileAnActionRuns(t *testing.T) {
	f := newFake(t, Options{})
	c := newClient(t, f)
	ctx := context.Background()
	res := createServer(t, c, "src", nil)
	if err := c.Action.WaitFor(ctx, res.Action); err != nil {
		t.Fatal(err)
	}
	off, _, err := c.Server.Poweroff(ctx, res.Server)
	if err != nil {
		t.Fatal(err)
	}
	// While the poweroff runs, every mutating request on the server is 423 locked.
	_, resp, err := c.Server.DeleteWithResult(ctx, res.Server)
	if !hcloud.IsError(err, hcloud.ErrorCodeLocked) || resp.StatusCode != http.StatusLocked {
		t.Fatalf("delete during poweroff: %v, want 423 locked", err)
	}
	if _, _, err := c.Server.Poweron(ctx, res.Server); !hcloud.IsError(err, hcloud.ErrorCodeLocked) {
		t.Fatalf("poweron during poweroff: %v, want locked", err)
	}
	if _, _, err := c.Server.CreateImage(ctx, res.Server, nil); !hcloud.IsError(err, hcloud.ErrorCodeLocked) {
		t.Fatalf("create_image during poweroff: %v, want locked", err)
	}
	if f.State().Servers != 1 {
		t.Fatal("a locked delete deleted the server")
	}
	if err := c.Action.WaitFor(ctx, off); err != nil {
		t.Fatal(err)
	}
	// Once it finished, the server can be imaged; its image is locked
	// while it is created, the server too.
	ci, _, err := c.Server.CreateImage(ctx, res.Server, &hcloud.ServerCreateImageOpts{Type: hcloud.ImageTypeSnapshot})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Image.ChangeProtection(ctx, ci.Image, hcloud.ImageChangeProtectionOpts{Delete: hcloud.Ptr(true)}); !hcloud.IsError(err, hcloud.ErrorCodeLocked) {
		t.Fatalf("change_protection during create_image: %v, want locked", err)
	}
	if _, _, err := c.Server.DeleteWithResult(ctx, res.Server); !hcloud.IsError(err, hcloud.ErrorCodeLocked) {
		t.Fatalf("delete during create_image: %v, want locked", err)
	}
	if err := c.Action.WaitFor(ctx, ci.Action); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Server.DeleteWithResult(ctx, res.Server); err != nil {
		t.Fatalf("delete after the actions: %v", err)
	}
}

// A settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestRateLimitTokenBucket(t *testing.T) {
	clk := &clock{t: time.Date(2026, 5, 6, 2, 0, 0, 0, time.UTC)}
	f := newFake(t, Options{RateLimit: 3, RateRefill: 10 * time.Second, Now: clk.now})
	c := newClient(t, f)
	ctx := context.Background()
	for i := range 3 {
		_, resp, err := c.Server.List(ctx, hcloud.ServerListOpts{})
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		rl := resp.Meta.Ratelimit
		if rl.Limit != 3 || rl.Remaining != 2-i {
			t.Fatalf("request %d: rate limit %+v, want limit 3, remaining %d", i, rl, 2-i)
		}
		// Reset: when the bucket is full again, one refill per missing request.
		if want := clk.now().Add(time.Duration(3-rl.Remaining) * 10 * time.Second); !rl.Reset.Equal(want) {
			t.Fatalf("request %d: reset %v, want %v", i, rl.Reset, want)
		}
	}
	// Empty: 429 rate_limit_exceeded, with the headers, and no effect.
	_, resp, err := c.Server.Create(ctx, hcloud.ServerCreateOpts{Name: "x", ServerType: &hcloud.ServerType{Name: "cx22"}, Image: &hcloud.Image{Name: "ubuntu-24.04"}})
	if !hcloud.IsError(err, hcloud.ErrorCodeRateLimitExceeded) || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("request on an empty bucket: %v, want 429 rate_limit_exceeded", err)
	}
	if rl := resp.Meta.Ratelimit; rl.Limit != 3 || rl.Remaining != 0 || !rl.Reset.Equal(clk.now().Add(30*time.Second)) {
		t.Fatalf("429 rate limit headers %+v", rl)
	}
	if f.State().Servers != 0 {
		t.Fatal("a rate-limited create made a server")
	}
	// One request back per refill period.
	clk.add(10 * time.Second)
	if _, _, err := c.Server.List(ctx, hcloud.ServerListOpts{}); err != nil {
		t.Fatalf("after one refill: %v", err)
	}
	if _, _, err := c.Server.List(ctx, hcloud.ServerListOpts{}); !hcloud.IsError(err, hcloud.ErrorCodeRateLimitExceeded) {
		t.Fatalf("second request after one refill: %v, want rate limited", err)
	}
	clk.add(time.Hour)
	if n := f.RateRemaining(); n != 3 {
		t.Fatalf("after an hour %d remaining, want the full 3", n)
	}
}

func TestRateLimitDefaultsToHetznersBudget(t *testing.T) {
	f := newFake(t, Options{})
	_, resp, err := newClient(t, f).Server.List(context.Background(), hcloud.ServerListOpts{})
	if err != nil {
		t.Fatal(err)
	}
	if rl := resp.Meta.Ratelimit; rl.Limit != 3600 || rl.Remaining != 3599 {
		t.Fatalf("rate limit %+v, want 3600 with 3599 left", rl)
	}
	off := newFake(t, Options{RateLimit: -1})
	c := newClient(t, off)
	for range 5 {
		if _, _, err := c.Server.List(context.Background(), hcloud.ServerListOpts{}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCapacityPerLocation(t *testing.T) {
	f := newFake(t, Options{})
	c := newClient(t, f)
	ctx := context.Background()
	f.SetNoCapacity("fsn1")
	f.SetNoCapacity("nbg1", "cx32")
	create := func(name, typ, loc string) (hcloud.ServerCreateResult, *hcloud.Response, error) {
		opts := hcloud.ServerCreateOpts{Name: name, ServerType: &hcloud.ServerType{Name: typ}, Image: &hcloud.Image{Name: "ubuntu-24.04"}}
		if loc != "" {
			opts.Location = &hcloud.Location{Name: loc}
		}
		return c.Server.Create(ctx, opts)
	}
	_, resp, err := create("a", "cx22", "fsn1")
	if !hcloud.IsError(err, hcloud.ErrorCodeResourceUnavailable) || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("create in an out-of-stock location: %v, want resource_unavailable (403)", err)
	}
	if !strings.Contains(err.Error(), "fsn1") || !strings.Contains(err.Error(), "different location") {
		t.Fatalf("message %q does not name the location and the remedy", err)
	}
	if _, _, err := create("b", "cx32", "nbg1"); !hcloud.IsError(err, hcloud.ErrorCodeResourceUnavailable) {
		t.Fatalf("cx32 in nbg1: %v, want resource_unavailable", err)
	}
	res, _, err := create("c", "cx22", "nbg1")
	if err != nil || res.Server.Location.Name != "nbg1" {
		t.Fatalf("cx22 in nbg1: %+v, %v", res.Server, err)
	}
	// Without a location, the first one with capacity.
	res, _, err = create("d", "cx32", "")
	if err != nil || res.Server.Location.Name != "hel1" {
		t.Fatalf("cx32 anywhere: %+v, %v; want hel1", res.Server, err)
	}
	f.SetCapacity("fsn1")
	if res, _, err = create("e", "cx22", "fsn1"); err != nil || res.Server.Location.Name != "fsn1" {
		t.Fatalf("fsn1 restocked: %v", err)
	}
	if f.State().Servers != 3 {
		t.Fatalf("%d servers, want 3", f.State().Servers)
	}
}

func TestLateCapacityFailure(t *testing.T) {
	f := newFake(t, Options{})
	c := newClient(t, f)
	ctx := context.Background()
	f.SetLateNoCapacity("fsn1")
	res, _, err := c.Server.Create(ctx, hcloud.ServerCreateOpts{Name: "a", ServerType: &hcloud.ServerType{Name: "cx22"},
		Image: &hcloud.Image{Name: "ubuntu-24.04"}, Location: &hcloud.Location{Name: "fsn1"}})
	if err != nil {
		t.Fatalf("create is accepted: %v", err)
	}
	err = c.Action.WaitFor(ctx, res.Action)
	var ae hcloud.ActionError
	if !errors.As(err, &ae) || ae.Code != "resource_unavailable" {
		t.Fatalf("create_server action: %v, want it failed with resource_unavailable", err)
	}
	f.SetCapacity("fsn1")
	res, _, err = c.Server.Create(ctx, hcloud.ServerCreateOpts{Name: "b", ServerType: &hcloud.ServerType{Name: "cx22"},
		Image: &hcloud.Image{Name: "ubuntu-24.04"}, Location: &hcloud.Location{Name: "fsn1"}})
	if err != nil || c.Action.WaitFor(ctx, res.Action) != nil {
		t.Fatalf("restocked: %v", err)
	}
}
