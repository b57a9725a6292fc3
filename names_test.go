package crabbox

// Tests of names.go: lease ids and slugs, image names, label values.

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNewLeaseIDShapeAndUniqueness(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 2000; i++ {
		id, err := NewLeaseID()
		require.NoError(t, err)
		require.True(t, ValidLeaseID(id), id)
		require.Len(t, id, 16)
		require.False(t, seen[id], "duplicate id %s", id)
		seen[id] = true
	}
}

func TestParseLeaseID(t *testing.T) {
	for _, bad := range []string{"", "cbx_", "cbx_0123456789a", "cbx_0123456789abc", "cbx_0123456789AB", "CBX_0123456789ab", "cbx-0123456789ab", "cbx_0123456789ag", " cbx_0123456789ab"} {
		_, err := ParseLeaseID(bad)
		assert.ErrorIs(t, err, ErrInvalidArgument, bad)
	}
	id, err := ParseLeaseID("cbx_0123456789ab")
	require.NoError(t, err)
	assert.Equal(t, "cbx_0123456789ab", id)
}

func TestLeaseSlugStableAndFriendly(t *testing.T) {
	a := LeaseSlug("cbx_0123456789ab")
	assert.Equal(t, a, LeaseSlug("cbx_0123456789ab"), "slug must be derived deterministically from the id")
	assert.Regexp(t, `^[a-z]+-[a-z]+(-[a-z]+)?$`, a)
	assert.True(t, slugRe.MatchString(a))
	// Different ids spread over many slugs.
	slugs := map[string]bool{}
	for i := 0; i < 500; i++ {
		id, _ := NewLeaseID()
		slugs[LeaseSlug(id)] = true
	}
	assert.Greater(t, len(slugs), 200)
}

func TestUniqueSlugSuffixOnCollision(t *testing.T) {
	taken := map[string]bool{"salty-crab": true, "salty-crab-2": true}
	assert.Equal(t, "salty-crab-3", uniqueSlug("salty-crab", taken))
	assert.Equal(t, "calm-krill", uniqueSlug("calm-krill", taken))
	assert.True(t, slugRe.MatchString("salty-crab-3"))
}

func TestImageNameRoundTrip(t *testing.T) {
	ts := time.Date(2026, 5, 6, 2, 35, 59, 0, time.UTC)
	n, err := NewImageName("openclaw", "crabbox", "linux-desktop-browser", ts)
	require.NoError(t, err)
	assert.Equal(t, "openclaw-crabbox-linux-desktop-browser-20260506-0235", n.String())
	p, err := ParseImageName(n.String())
	require.NoError(t, err)
	assert.Equal(t, n, p)
}

func TestImageNameRejects(t *testing.T) {
	for _, s := range []string{
		"",
		"openclaw-crabbox-20260506-0235",                                 // no purpose
		"openclaw-crabbox-linux-2026056-0235",                            // short date
		"openclaw-crabbox-linux-20261306-0235",                           // month 13
		"openclaw-crabbox-linux-20260506-2561",                           // minute 61
		"OpenClaw-crabbox-linux-20260506-0235",                           // upper case
		"openclaw-crabbox-linux--x-20260506-0235",                        // empty word
		"openclaw-crabbox-linux_x-20260506-0235",                         // underscore
		"openclaw-crabbox-" + strings.Repeat("x", 40) + "-20260506-0235", // too long
	} {
		_, err := ParseImageName(s)
		assert.True(t, errors.Is(err, ErrInvalidArgument), "%q: %v", s, err)
	}
	_, err := NewImageName("a b", "c", "d", time.Now())
	assert.ErrorIs(t, err, ErrInvalidArgument)
	_, err = NewImageName("a", "c", "d", time.Time{})
	assert.ErrorIs(t, err, ErrInvalidArgument)
}

func TestSanitizeLabelValue(t *testing.T) {
	cases := map[string]string{
		"alice":                 "alice",
		"Alice Smith":           "Alice-Smith",
		"dom\\user":             "dom-user",
		"-x-":                   "x",
		"ünï":                   "n",
		"@@@":                   "",
		strings.Repeat("a", 80): strings.Repeat("a", 63),
	}
	for in, want := range cases {
		assert.Equal(t, want, sanitizeLabelValue(in), in)
	}
}

func FuzzParseImageName(f *testing.F) {
	f.Add("openclaw-crabbox-linux-desktop-browser-20260506-0235")
	f.Add("a-b-c-20000101-0000")
	f.Add("x--y-20260506-0235")
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseImageName(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("error not ErrInvalidArgument: %v", err)
			}
			return
		}
		if n.String() != s {
			t.Fatalf("round trip: %q -> %q", s, n.String())
		}
		if n.Validate() != nil || len(s) > MaxImageNameLen {
			t.Fatalf("accepted invalid %q", s)
		}
	})
}

func FuzzParseLeaseID(f *testing.F) {
	f.Add("cbx_0123456789ab")
	f.Add("cbx_")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseLeaseID(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("error not ErrInvalidArgument: %v", err)
			}
			return
		}
		if id != s || len(s) != 16 || !strings.HasPrefix(s, "cbx_") || strings.ToLower(s) != s {
			t.Fatalf("accepted %q", s)
		}
		if LeaseSlug(s) == "" {
			t.Fatal("empty slug")
		}
	})
}
