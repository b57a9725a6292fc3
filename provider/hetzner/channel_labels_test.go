// Tests of channel_labels.go: the channel mirrored onto image labels.

package hetzner_test

import (
	"context"
	"errors"
	"net/http"
	"path"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"

	"github.com/crabbox/crabbox-go/internal/testenv/hcloudfake"
	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/hetzner"
)

// snapshots makes n available snapshots from one machine.
func (e *env) snapshots(t *testing.T, n int) []string {
	t.Helper()
	m := e.runningMachine(t, "cbx_0123456789ab")
	var ids []string
	for i := 0; i < n; i++ {
		im, err := e.d.CreateImage(context.Background(), provider.CreateImageRequest{MachineID: m.ID, Name: "a-b-c-20260101-000" + strconv.Itoa(i)})
		if err != nil || im.State != provider.ImageAvailable {
			t.Fatalf("snapshot %d = %+v, %v", i, im, err)
		}
		ids = append(ids, im.ID)
	}
	return ids
}

// rawChannelLabels reads, with the plain hcloud client and nothing of the
// driver, which snapshots carry the channel's label and with what value.
func (e *env) rawChannelLabels(t *testing.T, key string) map[string]string {
	t.Helper()
	ims, err := e.client.Image.AllWithOpts(context.Background(), hcloud.ImageListOpts{ListOpts: hcloud.ListOpts{LabelSelector: key}})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, im := range ims {
		out[strconv.FormatInt(im.ID, 10)] = im.Labels[key]
	}
	return out
}

func wantLabels(t *testing.T, got map[string]string, current, previous string) {
	t.Helper()
	want := map[string]string{current: "current"}
	if previous != "" {
		want[previous] = "previous"
	}
	if len(got) != len(want) {
		t.Fatalf("channel labels = %v, want %v", got, want)
	}
	for id, v := range want {
		if got[id] != v {
			t.Fatalf("channel labels = %v, want %v", got, want)
		}
	}
}

func TestChannelReadBackFromImageLabelsAlone(t *testing.T) {
	e := newEnv(t, hcloudfake.Options{}, 0)
	ctx := context.Background()
	imgs := e.snapshots(t, 3)
	key, err := e.d.ChannelLabelKey("default")
	if err != nil || key != "crabbox-channel-default" {
		t.Fatalf("ChannelLabelKey = %q, %v", key, err)
	}
	// A known-good mark (written by the SDK) must survive the mirror.
	if err := e.d.UpdateImageLabels(ctx, imgs[0], map[string]string{"crabbox-status": "known-good"}); err != nil {
		t.Fatal(err)
	}

	set := func(img string) {
		t.Helper()
		if _, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: img}); err != nil {
			t.Fatal(err)
		}
	}
	set(imgs[0])
	wantLabels(t, e.rawChannelLabels(t, key), imgs[0], "")
	set(imgs[1])
	wantLabels(t, e.rawChannelLabels(t, key), imgs[1], imgs[0])
	set(imgs[2])
	// The image that was previous before loses the label.
	wantLabels(t, e.rawChannelLabels(t, key), imgs[2], imgs[1])
	// Setting the current image again displaces nothing.
	set(imgs[2])
	wantLabels(t, e.rawChannelLabels(t, key), imgs[2], imgs[1])
	// A rollback is a promotion of the older image.
	set(imgs[1])
	wantLabels(t, e.rawChannelLabels(t, key), imgs[1], imgs[2])

	// Known-good marks are image labels too, untouched by the mirror.
	got, err := e.d.GetImage(ctx, imgs[0])
	if err != nil || got.Labels["crabbox-status"] != "known-good" {
		t.Fatalf("known-good mark after the mirror = %v, %v", got.Labels, err)
	}

	// Drop the channel records behind the driver's back: the labels alone
	// still answer (the records answer CurrentChannel).
	keys, err := e.client.SSHKey.AllWithOpts(ctx, hcloud.SSHKeyListOpts{ListOpts: hcloud.ListOpts{LabelSelector: hetzner.LabelKind + "=channel-entry"}})
	if err != nil || len(keys) != 5 {
		t.Fatalf("channel records = %d, %v", len(keys), err)
	}
	for _, k := range keys {
		if _, err := e.client.SSHKey.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.d.CurrentChannel(ctx, "default"); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("CurrentChannel without records: %v", err)
	}
	fresh, err := hetzner.New(e.client)
	if err != nil {
		t.Fatal(err)
	}
	cur, prev, err := fresh.ChannelImagesFromLabels(ctx, "default")
	if err != nil || cur.ID != imgs[1] || prev == nil || prev.ID != imgs[2] {
		t.Fatalf("ChannelImagesFromLabels = %+v, %+v, %v; want %s and %s", cur, prev, err, imgs[1], imgs[2])
	}
	known, err := fresh.ListImages(ctx, map[string]string{"crabbox-status": "known-good"})
	if err != nil || len(known) != 1 || known[0].ID != imgs[0] {
		t.Fatalf("known-good images from labels = %+v, %v", known, err)
	}

	// DeleteChannel removes the labels as well.
	if err := e.d.DeleteChannel(ctx, "default"); err != nil {
		t.Fatal(err)
	}
	if got := e.rawChannelLabels(t, key); len(got) != 0 {
		t.Fatalf("labels after DeleteChannel = %v", got)
	}
	if _, _, err := e.d.ChannelImagesFromLabels(ctx, "default"); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("deleted channel from labels: %v", err)
	}
	if _, err := e.d.ChannelLabelKey("has space"); !errors.Is(err, provider.ErrInvalidArgument) {
		t.Fatalf("bad channel: %v", err)
	}
}

func TestChannelLabelsUnderPrefixAndRepair(t *testing.T) {
	e := newEnv(t, hcloudfake.Options{}, 0, hetzner.WithLabelPrefix("crabbox.example.com"))
	ctx := context.Background()
	imgs := e.snapshots(t, 2)
	key, err := e.d.ChannelLabelKey("nightly")
	if err != nil || key != "crabbox.example.com/crabbox-channel-nightly" {
		t.Fatalf("ChannelLabelKey = %q, %v", key, err)
	}
	for _, img := range imgs {
		if _, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "nightly", ImageID: img}); err != nil {
			t.Fatal(err)
		}
	}
	wantLabels(t, e.rawChannelLabels(t, key), imgs[1], imgs[0])
	// Someone edits the labels by hand; SyncChannelLabels restores them
	// from the records.
	if err := e.d.UpdateImageLabels(ctx, imgs[0], map[string]string{"crabbox-channel-nightly": "current"}); err != nil {
		t.Fatal(err)
	}
	if err := e.d.UpdateImageLabels(ctx, imgs[1], map[string]string{"crabbox-channel-nightly": ""}); err != nil {
		t.Fatal(err)
	}
	if err := e.d.SyncChannelLabels(ctx, "nightly"); err != nil {
		t.Fatal(err)
	}
	wantLabels(t, e.rawChannelLabels(t, key), imgs[1], imgs[0])
}

func TestChannelOnSystemImageHasNoLabels(t *testing.T) {
	// System images cannot carry labels: the records still work, the
	// mirror has nothing to label.
	e := newEnv(t, hcloudfake.Options{}, 0)
	ctx := context.Background()
	if _, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "base", ImageID: e.baseImage(t)}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.d.ChannelImagesFromLabels(ctx, "base"); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("labels of a system-image channel: %v", err)
	}
}

func TestChannelLabelsAfterAConditionalRaceShowTheWinner(t *testing.T) {
	e := newEnv(t, hcloudfake.Options{}, 0)
	ctx := context.Background()
	imgs := e.snapshots(t, 3)
	key, _ := e.d.ChannelLabelKey("default")
	if _, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: imgs[0], IfVersion: -1}); err != nil {
		t.Fatal(err)
	}
	e.fakeBefore(holdSSHKeyCreates(2))
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, errs[i] = e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: imgs[1+i], IfVersion: 1})
		}(i)
	}
	wg.Wait()
	e.fakeBefore(nil)
	winner := -1
	for i, err := range errs {
		if err == nil {
			winner = i
		} else if !errors.Is(err, provider.ErrConflict) {
			t.Fatalf("loser: %v", err)
		}
	}
	if winner == -1 || errs[1-winner] == nil {
		t.Fatalf("race errors = %v, want exactly one winner", errs)
	}
	// The winner is current, the displaced image previous, and the loser's
	// image carries nothing.
	wantLabels(t, e.rawChannelLabels(t, key), imgs[1+winner], imgs[0])
}

func TestChannelLabelsEndConsistentWhenAStaleWriterLandsLast(t *testing.T) {
	// Two unconditional promotions race. The first to claim (version 2)
	// mirrors a view that is stale by the time its label writes land: they
	// are held until the second promotion (version 3) has finished
	// entirely. The labels must still end matching version 3.
	e := newEnv(t, hcloudfake.Options{}, 0)
	ctx := context.Background()
	imgs := e.snapshots(t, 3)
	key, _ := e.d.ChannelLabelKey("default")
	if _, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: imgs[0]}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	posts, puts := 0, 0
	firstPut := make(chan struct{})
	secondDone := make(chan struct{})
	e.fakeBefore(func(r *http.Request) {
		isPut, _ := path.Match("/images/*", r.URL.Path)
		switch {
		case r.Method == "POST" && r.URL.Path == "/ssh_keys":
			mu.Lock()
			posts++
			n := posts
			mu.Unlock()
			if n == 2 { // the second promotion starts once the first writes labels
				select {
				case <-firstPut:
				case <-time.After(10 * time.Second):
				}
			}
		case r.Method == "PUT" && isPut:
			mu.Lock()
			puts++
			n := puts
			mu.Unlock()
			if n == 1 { // the first promotion's first label write lands last
				close(firstPut)
				select {
				case <-secondDone:
				case <-time.After(10 * time.Second):
				}
			}
		}
	})
	var wg sync.WaitGroup
	var once sync.Once
	errs := make([]error, 2)
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, errs[i] = e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: imgs[1+i]})
			once.Do(func() { close(secondDone) })
		}(i)
	}
	wg.Wait()
	e.fakeBefore(nil)
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("unconditional racing sets: %v", errs)
	}
	hist, err := e.d.ChannelHistory(ctx, "default")
	if err != nil || len(hist) != 3 {
		t.Fatalf("history = %+v, %v", hist, err)
	}
	wantLabels(t, e.rawChannelLabels(t, key), hist[2].ImageID, hist[1].ImageID)
	cur, prev, err := e.d.ChannelImagesFromLabels(ctx, "default")
	if err != nil || cur.ID != hist[2].ImageID || prev.ID != hist[1].ImageID {
		t.Fatalf("from labels = %+v, %+v, %v", cur, prev, err)
	}
}
