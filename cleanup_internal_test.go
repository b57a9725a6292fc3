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
