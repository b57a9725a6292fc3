// Tests of channels.go: SSH-key channel records and racing promotions.

package hetzner_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/crabbox/crabbox-go/internal/testenv/hcloudfake"
	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/hetzner"
)

func TestChannelsAndRace(t *testing.T) {
	e := newEnv(t, hcloudfake.Options{}, 0, hetzner.WithClock(func() time.Time { return time.Date(2026, 5, 6, 2, 35, 0, 0, time.UTC) }))
	ctx := context.Background()
	m := e.runningMachine(t, "cbx_0123456789ab")
	var imgs []string
	for i := 0; i < 3; i++ {
		im, err := e.d.CreateImage(ctx, provider.CreateImageRequest{MachineID: m.ID, Name: "a-b-c-20260101-000" + string(rune('0'+i))})
		if err != nil {
			t.Fatal(err)
		}
		imgs = append(imgs, e.waitImage(t, im.ID).ID)
	}
	if _, err := e.d.CurrentChannel(ctx, "default"); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("unset channel: %v", err)
	}
	for _, bad := range []string{"", "has space", "-lead", strings.Repeat("x", 41)} {
		if _, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: bad, ImageID: imgs[0]}); !errors.Is(err, provider.ErrInvalidArgument) {
			t.Errorf("channel %q: %v", bad, err)
		}
	}
	if _, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: "999999"}); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("missing image: %v", err)
	}
	e1, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: imgs[0], Operator: "jane doe", IfVersion: -1})
	if err != nil || e1.Version != 1 || e1.Operator != "jane-doe" || !e1.At.Equal(time.Date(2026, 5, 6, 2, 35, 0, 0, time.UTC)) {
		t.Fatalf("first set = %+v, %v", e1, err)
	}

	// The race: two promotions from version 1 read the channel before
	// either writes (the fake holds both record creations until both
	// arrived). Exactly one wins: the one whose record Hetzner created
	// first; the other gets ErrConflict and leaves no trace.
	e.fakeBefore(holdSSHKeyCreates(2))
	var wg sync.WaitGroup
	results := make([]*provider.ChannelEntry, 2)
	errs := make([]error, 2)
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			results[i], errs[i] = e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: imgs[1+i], IfVersion: 1})
		}(i)
	}
	wg.Wait()
	e.fakeBefore(nil)
	winner := -1
	for i := range errs {
		switch {
		case errs[i] == nil:
			if winner != -1 {
				t.Fatal("both racing promotions won")
			}
			winner = i
		case !errors.Is(errs[i], provider.ErrConflict):
			t.Fatalf("loser error = %v, want ErrConflict", errs[i])
		}
	}
	if winner == -1 {
		t.Fatalf("no racing promotion won: %v", errs)
	}
	cur, err := e.d.CurrentChannel(ctx, "default")
	if err != nil || cur.Version != 2 || cur.ImageID != imgs[1+winner] {
		t.Fatalf("current after race = %+v, %v; want version 2 image %s", cur, err, imgs[1+winner])
	}
	hist, err := e.d.ChannelHistory(ctx, "default")
	if err != nil || len(hist) != 2 || hist[0].ImageID != imgs[0] || hist[1].ImageID != imgs[1+winner] {
		t.Fatalf("history = %+v, %v", hist, err)
	}

	// Rollback = set the previous image again; history keeps every step.
	if _, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: imgs[0], IfVersion: 2}); err != nil {
		t.Fatal(err)
	}
	hist, _ = e.d.ChannelHistory(ctx, "default")
	if len(hist) != 3 || hist[2].ImageID != imgs[0] || hist[2].Version != 3 {
		t.Fatalf("history after rollback = %+v", hist)
	}
	// Unconditional sets always land, on top.
	if e4, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: imgs[2]}); err != nil || e4.Version != 4 {
		t.Fatalf("unconditional = %+v, %v", e4, err)
	}
	// Channels are independent.
	if _, err := e.d.CurrentChannel(ctx, "default-2"); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("other channel: %v", err)
	}
	// Prune keeps the newest records.
	if n, err := e.d.PruneChannel(ctx, "default", 2); err != nil || n != 2 {
		t.Fatalf("prune = %d, %v", n, err)
	}
	cur, _ = e.d.CurrentChannel(ctx, "default")
	if cur.Version != 4 || cur.ImageID != imgs[2] {
		t.Fatalf("current after prune = %+v", cur)
	}
	if err := e.d.DeleteChannel(ctx, "default"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.CurrentChannel(ctx, "default"); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("deleted channel: %v", err)
	}
}

func TestRaceWithoutNameUniqueness(t *testing.T) {
	// Should Hetzner ever accept two SSH keys with one name, the record
	// created first still wins and the other racer gets ErrConflict.
	for _, conditional := range []bool{true, false} {
		e := newEnv(t, hcloudfake.Options{AllowDuplicateSSHKeyNames: true}, 0)
		ctx := context.Background()
		img := e.baseImage(t)
		if _, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "ch", ImageID: img}); err != nil {
			t.Fatal(err)
		}
		e.fakeBefore(holdSSHKeyCreates(2))
		ifv := int64(0)
		if conditional {
			ifv = 1
		}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i := 0; i < 2; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				_, errs[i] = e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "ch", ImageID: img, IfVersion: ifv})
			}(i)
		}
		wg.Wait()
		e.fakeBefore(nil)
		hist, err := e.d.ChannelHistory(ctx, "ch")
		if err != nil {
			t.Fatal(err)
		}
		if conditional {
			won := 0
			for _, err := range errs {
				if err == nil {
					won++
				} else if !errors.Is(err, provider.ErrConflict) {
					t.Fatalf("loser: %v", err)
				}
			}
			if won != 1 || len(hist) != 2 {
				t.Fatalf("conditional race without name uniqueness: %d won (errors %v), history %+v", won, errs, hist)
			}
		} else if errs[0] != nil || errs[1] != nil || len(hist) != 3 || hist[2].Version != 3 {
			t.Fatalf("unconditional race without name uniqueness: errors %v, history %+v", errs, hist)
		}
		// The loser's record is gone: one record per version.
		if n := len(e.fake.SSHKeys()); n != len(hist) {
			t.Fatalf("%d records for %d versions", n, len(hist))
		}
	}
}

func TestUnconditionalRaceBothLand(t *testing.T) {
	e := newEnv(t, hcloudfake.Options{}, 0)
	ctx := context.Background()
	img := e.baseImage(t)
	e.fakeBefore(holdSSHKeyCreates(2))
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, errs[i] = e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "ch", ImageID: img})
		}(i)
	}
	wg.Wait()
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("unconditional racing sets: %v", errs)
	}
	hist, err := e.d.ChannelHistory(ctx, "ch")
	if err != nil || len(hist) != 2 || hist[0].Version != 1 || hist[1].Version != 2 {
		t.Fatalf("history = %+v, %v", hist, err)
	}
}

func TestChannelSetRetriedInsideHcloudGo(t *testing.T) {
	// The record create lands but answers "timeout"; hcloud-go retries and
	// the retry hits our own record's name. The set must succeed once.
	e := newEnv(t, hcloudfake.Options{}, 2)
	ctx := context.Background()
	img := e.baseImage(t)
	e.fake.InjectFault(hcloudfake.Fault{Method: "POST", Path: "/ssh_keys", Code: "timeout", After: true})
	got, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "ch", ImageID: img, IfVersion: -1})
	if err != nil || got.Version != 1 {
		t.Fatalf("SetChannel = %+v, %v; want version 1", got, err)
	}
	if n := len(e.fake.SSHKeys()); n != 1 {
		t.Fatalf("%d records, want 1", n)
	}
	if e.fake.PendingFaults() != 0 {
		t.Fatal("the fault did not fire")
	}
}

// holdSSHKeyCreates returns a fake hook that holds each SSH-key create
// (a channel record write) until n of them have arrived, so racing
// promotions reach Hetzner at the same time. It gives up after 10 s.
func holdSSHKeyCreates(n int) func(*http.Request) {
	var mu sync.Mutex
	arrived := 0
	all := make(chan struct{})
	return func(r *http.Request) {
		if r.Method != "POST" || r.URL.Path != "/ssh_keys" {
			return
		}
		mu.Lock()
		arrived++
		if arrived == n {
			close(all)
		}
		mu.Unlock()
		select {
		case <-all:
		case <-time.After(10 * time.Second):
		}
	}
}
