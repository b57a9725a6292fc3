package crabbox

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crabbox/crabbox-go/provider"
)

var planNow = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

type imgSpec struct {
	id        string
	owned     bool
	status    string
	state     string
	age       time.Duration // since creation
	statusAge time.Duration // since status change
	protected bool
	snaps     int
}

func mkImages(specs ...imgSpec) []*Image {
	var out []*Image
	for _, s := range specs {
		state := s.state
		if state == "" {
			state = string(provider.ImageAvailable)
		}
		labels := map[string]string{}
		if s.owned {
			labels[LabelManaged] = "true"
		}
		if s.status != "" {
			labels[LabelStatus] = s.status
			labels[LabelStatusAt] = formatLabelTime(planNow.Add(-s.statusAge))
		}
		img := &Image{ID: s.id, Name: s.id, State: state, Status: s.status, Owned: s.owned, Labels: labels,
			Created: planNow.Add(-s.age), Protected: s.protected}
		for i := 0; i < s.snaps; i++ {
			img.Snapshots = append(img.Snapshots, provider.Snapshot{ID: fmt.Sprintf("snap-%s-%d", s.id, i), SizeGiB: 8})
		}
		out = append(out, img)
	}
	return out
}

func decisions(p *CleanupPlan) map[string]string {
	m := map[string]string{}
	for _, it := range p.Items {
		m[it.Image.ID] = it.Action
	}
	return m
}

const day = 24 * time.Hour

func TestPlanCleanupTable(t *testing.T) {
	cases := []struct {
		name     string
		images   []*Image
		promoted map[string]string
		inUse    map[string]string
		policy   CleanupPolicy
		want     map[string]string
	}{
		{
			name:     "promoted is kept even when old and not known-good",
			images:   mkImages(imgSpec{id: "p", owned: true, status: StatusCandidate, age: 400 * day, statusAge: 400 * day, snaps: 1}),
			promoted: map[string]string{"p": "default"},
			want:     map[string]string{"p": ActionKeep},
		},
		{
			name: "foreign images are never deleted",
			images: mkImages(
				imgSpec{id: "foreign-old", owned: false, age: 900 * day},
				imgSpec{id: "foreign-failed", owned: false, status: StatusFailed, age: 900 * day, statusAge: 900 * day},
			),
			want: map[string]string{"foreign-old": ActionKeep, "foreign-failed": ActionKeep},
		},
		{
			name: "previous known-good kept while promoted is not known-good, even with KeepKnownGood<0",
			images: mkImages(
				imgSpec{id: "new", owned: true, status: StatusCandidate, age: day, statusAge: day},
				imgSpec{id: "kg1", owned: true, status: StatusKnownGood, age: 30 * day, statusAge: 20 * day},
				imgSpec{id: "kg0", owned: true, status: StatusKnownGood, age: 60 * day, statusAge: 50 * day, snaps: 2},
			),
			promoted: map[string]string{"new": "default"},
			policy:   CleanupPolicy{KeepKnownGood: -1},
			want:     map[string]string{"new": ActionKeep, "kg1": ActionKeep, "kg0": ActionDelete},
		},
		{
			name: "once promoted is known-good, KeepKnownGood<0 drops older known-good",
			images: mkImages(
				imgSpec{id: "new", owned: true, status: StatusKnownGood, age: day, statusAge: day},
				imgSpec{id: "kg1", owned: true, status: StatusKnownGood, age: 30 * day, statusAge: 20 * day},
			),
			promoted: map[string]string{"new": "default"},
			policy:   CleanupPolicy{KeepKnownGood: -1},
			want:     map[string]string{"new": ActionKeep, "kg1": ActionDelete},
		},
		{
			name: "failed images kept during inspection, deleted after",
			images: mkImages(
				imgSpec{id: "f-recent", owned: true, status: StatusFailed, age: 100 * day, statusAge: 2 * day},
				imgSpec{id: "f-old", owned: true, status: StatusFailed, age: 100 * day, statusAge: 8 * day, snaps: 1},
			),
			want: map[string]string{"f-recent": ActionKeep, "f-old": ActionDelete},
		},
		{
			name: "stale candidates deleted, recent kept, pending kept, protected kept, in-use kept",
			images: mkImages(
				imgSpec{id: "c-new", owned: true, status: StatusCandidate, age: time.Hour},
				imgSpec{id: "c-old", owned: true, status: StatusCandidate, age: 10 * day, snaps: 1},
				imgSpec{id: "pending", owned: true, status: StatusCandidate, state: "pending", age: 10 * day},
				imgSpec{id: "prot", owned: true, status: StatusCandidate, age: 10 * day, protected: true},
				imgSpec{id: "used", owned: true, status: StatusCandidate, age: 10 * day},
			),
			inUse: map[string]string{"used": "instance i-1"},
			want:  map[string]string{"c-new": ActionKeep, "c-old": ActionDelete, "pending": ActionKeep, "prot": ActionKeep, "used": ActionKeep},
		},
		{
			name: "promoted in a second channel is kept",
			images: mkImages(
				imgSpec{id: "a", owned: true, status: StatusCandidate, age: 10 * day},
				imgSpec{id: "b", owned: true, status: StatusCandidate, age: 10 * day},
			),
			promoted: map[string]string{"b": "beta"},
			policy:   CleanupPolicy{Channels: []string{"default", "beta"}},
			want:     map[string]string{"a": ActionDelete, "b": ActionKeep},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := planCleanup(tc.images, tc.promoted, tc.inUse, tc.policy, planNow)
			assert.Equal(t, tc.want, decisions(p))
			for _, it := range p.Items {
				assert.NotEmpty(t, it.Reason, it.Image.ID)
			}
		})
	}
}

func TestPlanCleanupTotals(t *testing.T) {
	imgs := mkImages(
		imgSpec{id: "c-old", owned: true, status: StatusCandidate, age: 10 * day, snaps: 2},
		imgSpec{id: "f-old", owned: true, status: StatusFailed, age: 100 * day, statusAge: 30 * day, snaps: 1},
		imgSpec{id: "keep", owned: true, status: StatusCandidate, age: time.Hour, snaps: 5},
	)
	p := planCleanup(imgs, nil, nil, CleanupPolicy{}, planNow)
	assert.Equal(t, 2, p.Deletes)
	assert.Equal(t, 3, p.SnapshotsFreed)
	assert.InDelta(t, 24.0, p.GiBReclaimed, 0.001)
	b, err := json.Marshal(p)
	require.NoError(t, err)
	assert.Contains(t, string(b), `"gib_reclaimed":24`)
	var sb strings.Builder
	require.NoError(t, p.WriteText(&sb))
	assert.Contains(t, sb.String(), "stale candidate")
	assert.Contains(t, sb.String(), "2 to delete, 3 snapshots freed")
}

// TestPlanCleanupInvariants generates many random image sets and checks the
// rules no policy may break.
func TestPlanCleanupInvariants(t *testing.T) {
	rng := rand.New(rand.NewSource(42))
	statuses := []string{"", StatusCandidate, StatusKnownGood, StatusFailed}
	states := []string{"available", "available", "available", "pending", "failed"}
	for iter := 0; iter < 500; iter++ {
		var specs []imgSpec
		n := 1 + rng.Intn(12)
		for i := 0; i < n; i++ {
			specs = append(specs, imgSpec{
				id: fmt.Sprintf("i%d", i), owned: rng.Intn(5) != 0, status: statuses[rng.Intn(len(statuses))],
				state: states[rng.Intn(len(states))], age: time.Duration(rng.Intn(400)) * day / 2,
				statusAge: time.Duration(rng.Intn(30)) * day / 2, protected: rng.Intn(8) == 0, snaps: rng.Intn(3),
			})
		}
		imgs := mkImages(specs...)
		promoted := map[string]string{}
		var promotedImg *Image
		if rng.Intn(4) != 0 {
			promotedImg = imgs[rng.Intn(len(imgs))]
			promoted[promotedImg.ID] = "default"
		}
		policy := CleanupPolicy{KeepKnownGood: rng.Intn(4) - 1, FailedInspection: time.Duration(1+rng.Intn(10)) * day}
		p := planCleanup(imgs, promoted, nil, policy, planNow)
		require.Len(t, p.Items, len(imgs))
		d := decisions(p)
		var newestKG *Image
		for _, img := range imgs {
			if img.Owned && img.Status == StatusKnownGood && promoted[img.ID] == "" &&
				(newestKG == nil || statusTime(img).After(statusTime(newestKG))) {
				newestKG = img
			}
		}
		for _, img := range imgs {
			if d[img.ID] != ActionDelete {
				continue
			}
			require.True(t, img.Owned, "iteration %d: deletes foreign image %s", iter, img.ID)
			require.Empty(t, promoted[img.ID], "iteration %d: deletes promoted image %s", iter, img.ID)
			require.False(t, img.Protected, "iteration %d: deletes protected image", iter)
			require.NotEqual(t, "pending", img.State, "iteration %d: deletes pending image", iter)
			if img.Status == StatusFailed {
				require.False(t, planNow.Before(statusTime(img).Add(policy.withDefaults().FailedInspection)),
					"iteration %d: deletes failed image %s inside its inspection period", iter, img.ID)
			}
			if promotedImg != nil && promotedImg.Status != StatusKnownGood && newestKG != nil {
				require.NotEqual(t, newestKG.ID, img.ID, "iteration %d: deletes the previous known-good while the promoted image is unproven", iter)
			}
		}
	}
}

func entries(ch string, ids ...string) []provider.ChannelEntry {
	var out []provider.ChannelEntry
	for i, id := range ids {
		out = append(out, provider.ChannelEntry{Channel: ch, ImageID: id, Version: int64(i + 1)})
	}
	return out
}

// factsOf builds the channel facts of histories (the last entry of each is
// current).
func factsOf(hist map[string][]provider.ChannelEntry) cleanupFacts {
	f := cleanupFacts{promoted: map[string]string{}, ever: map[string]string{}, history: hist}
	for ch, h := range hist {
		f.promoted[h[len(h)-1].ImageID] = ch
		for _, e := range h {
			f.ever[e.ImageID] = ch
		}
	}
	return f
}

func reasons(p *CleanupPlan) map[string]string {
	m := map[string]string{}
	for _, it := range p.Items {
		m[it.Image.ID] = it.Reason
	}
	return m
}

// TestPlanKeepsEachChannelsPreviousKnownGood: channel beta's newer
// known-good image does not take default's rollback target.
func TestPlanKeepsEachChannelsPreviousKnownGood(t *testing.T) {
	imgs := mkImages(
		imgSpec{id: "def-new", owned: true, status: StatusCandidate, age: day, statusAge: day},
		imgSpec{id: "def-kg", owned: true, status: StatusKnownGood, age: 60 * day, statusAge: 50 * day},
		imgSpec{id: "beta-kg2", owned: true, status: StatusKnownGood, age: 5 * day, statusAge: 4 * day},
		imgSpec{id: "beta-kg1", owned: true, status: StatusKnownGood, age: 20 * day, statusAge: 10 * day},
	)
	f := factsOf(map[string][]provider.ChannelEntry{
		"default": entries("default", "def-kg", "def-new"),
		"beta":    entries("beta", "beta-kg1", "beta-kg2"),
	})
	for _, keep := range []int{-1, 1} {
		p := planWith(imgs, f, CleanupPolicy{Channels: []string{"default", "beta"}, KeepKnownGood: keep}, planNow)
		d, r := decisions(p), reasons(p)
		assert.Equal(t, ActionKeep, d["def-kg"], "KeepKnownGood %d: default's rollback target: %s", keep, r["def-kg"])
		assert.Contains(t, r["def-kg"], "previous known-good of channel default")
		assert.Equal(t, ActionKeep, d["def-new"])
		assert.Equal(t, ActionKeep, d["beta-kg2"])
	}
	// Beta's image is known-good: its own previous one is not kept for it
	// (only as the newest known-good with KeepKnownGood 1).
	p := planWith(imgs, f, CleanupPolicy{Channels: []string{"default", "beta"}, KeepKnownGood: -1}, planNow)
	assert.Equal(t, ActionDelete, decisions(p)["beta-kg1"])
}

// TestPlanOncePromotedCandidate: an image promoted and superseded before it
// became known-good is never a "never promoted" candidate: it has its own
// rule, timed from its last status change.
func TestPlanOncePromotedCandidate(t *testing.T) {
	imgs := mkImages(
		imgSpec{id: "cur", owned: true, status: StatusKnownGood, age: day, statusAge: day},
		imgSpec{id: "was-old", owned: true, status: StatusCandidate, age: 30 * day, statusAge: 10 * day},
		imgSpec{id: "was-recent", owned: true, status: StatusCandidate, age: 30 * day, statusAge: day},
		imgSpec{id: "never", owned: true, status: StatusCandidate, age: 30 * day, statusAge: 30 * day},
	)
	f := factsOf(map[string][]provider.ChannelEntry{"default": entries("default", "was-old", "was-recent", "cur")})
	p := planWith(imgs, f, CleanupPolicy{}, planNow)
	d, r := decisions(p), reasons(p)
	assert.Equal(t, ActionDelete, d["was-old"])
	assert.Equal(t, "superseded promotion in channel default, never known-good", r["was-old"])
	assert.Equal(t, ActionKeep, d["was-recent"])
	assert.Contains(t, r["was-recent"], "superseded promotion in channel default; kept until")
	assert.Equal(t, "stale candidate, never promoted", r["never"])
	for id, why := range r {
		if id != "never" {
			assert.NotContains(t, why, "never promoted", id)
		}
	}
}

// TestOwnershipNeedsBothLabels: an image tagged crabbox=true by another
// tool (created-by=terraform), or created-by=crabbox alone, is foreign.
func TestOwnershipNeedsBothLabels(t *testing.T) {
	assert.True(t, ownedLabels(map[string]string{LabelManaged: "true", LabelCreatedBy: "crabbox"}))
	assert.False(t, ownedLabels(map[string]string{LabelManaged: "true", LabelCreatedBy: "terraform"}))
	assert.False(t, ownedLabels(map[string]string{LabelManaged: "true"}))
	assert.False(t, ownedLabels(map[string]string{LabelCreatedBy: "crabbox"}))
	c := &Client{}
	img := c.imageFrom(&provider.Image{ID: "tf", Labels: map[string]string{LabelManaged: "true", LabelCreatedBy: "terraform",
		LabelStatus: StatusCandidate}, Created: planNow.Add(-30 * day)})
	assert.False(t, img.Owned)
	p := planCleanup([]*Image{img}, nil, nil, CleanupPolicy{}, planNow)
	assert.Equal(t, ActionKeep, decisions(p)["tf"])
	assert.Contains(t, reasons(p)["tf"], `not created by crabbox (crabbox=true but created-by="terraform")`)
}

// TestPlanCountsSharedSnapshotsOnce: a snapshot is freed only when every
// image using it is deleted, and counted once.
func TestPlanCountsSharedSnapshotsOnce(t *testing.T) {
	imgs := mkImages(
		imgSpec{id: "old1", owned: true, status: StatusCandidate, age: 10 * day, snaps: 1},
		imgSpec{id: "old2", owned: true, status: StatusCandidate, age: 10 * day, snaps: 1},
		imgSpec{id: "old3", owned: true, status: StatusCandidate, age: 10 * day, snaps: 1},
		imgSpec{id: "recent", owned: true, status: StatusCandidate, age: time.Hour, snaps: 1},
	)
	// old1 and old2 share a snapshot; old3 shares one with the kept image.
	imgs[1].Snapshots[0] = imgs[0].Snapshots[0]
	imgs[2].Snapshots[0] = imgs[3].Snapshots[0]
	p := planCleanup(imgs, nil, nil, CleanupPolicy{}, planNow)
	assert.Equal(t, 3, p.Deletes)
	assert.Equal(t, 1, p.SnapshotsFreed)
	assert.InDelta(t, 8.0, p.GiBReclaimed, 0.001)
	for _, it := range p.Items {
		if it.Image.ID == "old3" {
			assert.Equal(t, []string{"snap-recent-0"}, it.SharedSnapshots)
			assert.Contains(t, it.Reason, "snapshot snap-recent-0 kept: shared with recent")
		} else {
			assert.Empty(t, it.SharedSnapshots, it.Image.ID)
		}
	}
}
