package providertest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/crabbox/crabbox-go/provider"
)

func memHarness(d provider.Driver) Harness {
	h := Harness{
		Driver:       d,
		UserData:     func(key string) []byte { return []byte("#cloud-config\n# " + key + "\n") },
		PollInterval: 5 * time.Millisecond,
		Timeout:      2 * time.Second,
	}
	if md, ok := d.(*memDriver); ok {
		h = md.harnessFor(h)
	}
	return h
}

// TestMemDriverConforms proves a driver keeping the contract passes, and
// that the suite leaves nothing behind.
func TestMemDriverConforms(t *testing.T) {
	d := newMemDriver(t)
	t.Run("suite", func(t *testing.T) { Run(t, memHarness(d)) })
	if m, i, c := d.counts(); m != 0 || i != 0 || c != 0 {
		t.Errorf("after the suite, the driver still holds %d machines, %d images and %d channels: want none (ChannelDeleter)", m, i, c)
	}
}

// TestDefaultUserData: with Harness.UserData nil the suite renders
// cloud-init user-data that installs the key it sends as AuthorizedKey.
func TestDefaultUserData(t *testing.T) {
	d := newMemDriver(t)
	h := memHarness(d)
	h.UserData = nil
	t.Run("suite", func(t *testing.T) { Run(t, h) })
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.requests) == 0 {
		t.Fatal("the suite created no machine")
	}
	for _, req := range d.requests {
		key := strings.TrimSpace(string(req.AuthorizedKey))
		ud := string(req.UserData)
		if !strings.HasPrefix(ud, "#cloud-config\n") || key == "" || !strings.Contains(ud, key) {
			t.Errorf("user-data for %s does not install the authorized key %q:\n%s", req.Name, key, ud)
		}
		if !strings.Contains(ud, req.Token) {
			t.Errorf("user-data for %s does not record the lease id %q", req.Name, req.Token)
		}
	}
}

// TestCapabilitiesSkipped: a driver with machines only passes, with the
// image and channel subtests skipped rather than failed.
func TestCapabilitiesSkipped(t *testing.T) {
	d := newMemDriver(t)
	t.Run("suite", func(t *testing.T) { Run(t, memHarness(machinesOnly{d})) })
	if m, i, _ := d.counts(); m != 0 || i != 0 {
		t.Errorf("after the suite, the driver still holds %d machines and %d images", m, i)
	}
}

// TestSkipHarness: a subtest named in Harness.Skip is skipped even when the
// driver would fail it.
func TestSkipHarness(t *testing.T) {
	h := memHarness(newMemDriver(t, "get-image-nil-nil", "channel-ignores-ifversion"))
	h.Skip = map[string]string{SubtestImages: "test", SubtestChannels: "test"}
	Run(t, h)
}

func TestMissingID(t *testing.T) {
	for in, want := range map[string]string{
		"i-0123456789abcdef0": "i-fffffffffffffffff",
		"58123456":            "99999999",
		"m-00000001":          "m-99999999",
		"host-0a1b2c":         "host-ffffff",
		"ami-abc":             "ami-fff",
		"xyz":                 "xyz-missing",
		"99":                  "99-missing",
		"":                    "-missing",
	} {
		if got := missingID(in); got != want {
			t.Errorf("missingID(%q) = %q, want %q", in, got, want)
		}
	}
}

// brokenCases maps a break of memDriver to the subtest that must fail.
var brokenCases = []struct {
	brk      string
	failing  string   // subtest path under TestBrokenDriverHelper that must fail
	leftover bool     // the break itself prevents cleanup
	also     []string // other subtests allowed to fail as a consequence
}{
	{brk: "unknown-class-ok", failing: "MachineTypes"},
	{brk: "empty-types", failing: "MachineTypes"},
	{brk: "get-machine-nil-nil", failing: "Machines", also: []string{"UsageFinder", "OrphanSweeper"}},                       // they wait for a machine to go
	{brk: "delete-machine-not-idempotent", failing: "Machines", also: []string{"UsageFinder", "OrphanSweeper"}},             // their cleanup deletes again
	{brk: "delete-machine-noop", failing: "Machines", leftover: true, also: []string{"UsageFinder"}},                        // its machine never goes
	{brk: "never-running", failing: "Machines", also: []string{"Images", "UsageFinder", "OrphanSweeper", "AccessProvider"}}, // their machines never run
	{brk: "list-ignores-labels", failing: "Machines"},
	{brk: "machine-labels-replace", failing: "Machines"},
	{brk: "create-drops-labels", failing: "Machines", also: []string{"Images", "UsageFinder", "OrphanSweeper", "AccessProvider", "Faults", "Faults/lost-reply"}}, // their machines lack labels
	{brk: "get-image-nil-nil", failing: "Images"},
	{brk: "image-no-snapshots", failing: "Images"},
	{brk: "image-fails", failing: "Images"},
	{brk: "image-empty-label-kept", failing: "Images", also: []string{"Images/RegionCopier"}},                         // the copy lacks the kept label
	{brk: "protect-ignored", failing: "Images/Protector", also: []string{"Images/Deprecator", "Images/RegionCopier"}}, // the image is gone
	{brk: "deprecate-ignored", failing: "Images/Deprecator"},
	{brk: "channel-ignores-ifversion", failing: "Channels"},
	{brk: "channel-racy", failing: "Channels"},
	{brk: "history-newest-first", failing: "Channels"},
	{brk: "copy-drops-labels", failing: "Images/RegionCopier"},
	{brk: "copy-ignores-name", failing: "Images/RegionCopier"},
	{brk: "usage-never", failing: "UsageFinder"},
	{brk: "usage-stale", failing: "UsageFinder"},
	{brk: "usage-unknown-unavailable", failing: "UsageFinder"},
	{brk: "ctx-unavailable", failing: "UsageFinder"},
	{brk: "mark-ignored", failing: "ChannelVersionMarker"},
	{brk: "mark-moves-channel", failing: "ChannelVersionMarker"},
	{brk: "mark-unknown-ok", failing: "ChannelVersionMarker"},
	{brk: "sweep-noop", failing: "OrphanSweeper"},
	{brk: "sweep-ignores-grace", failing: "OrphanSweeper"},
	{brk: "sweep-deletes-live", failing: "OrphanSweeper"},
	{brk: "access-no-signer", failing: "AccessProvider"},
	{brk: "access-unknown-ok", failing: "AccessProvider"},
	{brk: "unknown-skip-key", failing: ""},
	{brk: "machine-token-ignored", failing: "Machines", also: []string{"OrphanSweeper", "Faults", "Faults/lost-reply"}}, // they rely on tokens too
	{brk: "image-token-ignored", failing: "Images"},
	{brk: "ctx-unavailable-machines", failing: "Machines"},
	{brk: "name-unsanitized", failing: "Machines", also: []string{"Images", "UsageFinder", "OrphanSweeper", "AccessProvider"}}, // every machine has the name
	{brk: "capacity-unmapped", failing: "Faults/capacity", also: []string{"Faults/quota"}},
	{brk: "throttle-unmapped", failing: "Faults/throttled"},
	{brk: "protected-delete-unavailable", failing: "Images/Protector"},
	{brk: "machine-empty-label-kept", failing: "Machines"},
	{brk: "lost-reply-not-adopted", failing: "Faults/lost-reply"},
	{brk: "image-lost-reply-not-adopted", failing: "Images", also: []string{"Images/Protector", "Images/Deprecator", "Images/RegionCopier"}},
}

// TestSuiteCatchesBrokenDrivers runs the suite in a child process against a
// driver with one rule broken and checks that exactly the right subtest
// fails, and that the suite's cleanup still removed what it created.
func TestSuiteCatchesBrokenDrivers(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range append(brokenCases, struct {
		brk      string
		failing  string
		leftover bool
		also     []string
	}{brk: "none"}) {
		t.Run(tc.brk, func(t *testing.T) {
			t.Parallel()
			counts := filepath.Join(t.TempDir(), "counts")
			cmd := exec.CommandContext(t.Context(), exe, "-test.run=^TestBrokenDriverHelper$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), "PROVIDERTEST_BREAK="+tc.brk, "PROVIDERTEST_COUNTS="+counts)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if tc.brk == "none" {
				if err != nil {
					t.Fatalf("suite failed a correct driver: %v\n%s", err, out)
				}
			} else {
				if !errors.As(err, &exit) {
					t.Fatalf("suite did not fail with break %q (err %v):\n%s", tc.brk, err, out)
				}
				want := "--- FAIL: TestBrokenDriverHelper"
				if tc.failing != "" {
					want += "/" + tc.failing + " "
				}
				if !strings.Contains(string(out), want) {
					t.Fatalf("break %q: output lacks %q:\n%s", tc.brk, want, out)
				}
				// Only the named subtest fails (its parents fail with it).
				for _, line := range strings.Split(string(out), "\n") {
					line = strings.TrimSpace(line)
					if !strings.HasPrefix(line, "--- FAIL: TestBrokenDriverHelper/") {
						continue
					}
					name := strings.Fields(strings.TrimPrefix(line, "--- FAIL: TestBrokenDriverHelper/"))[0]
					if name != tc.failing && !strings.HasPrefix(tc.failing, name+"/") && !slices.Contains(tc.also, name) {
						t.Errorf("break %q: subtest %s failed too, want only %s:\n%s", tc.brk, name, tc.failing, out)
					}
				}
			}
			b, err := os.ReadFile(counts)
			if err != nil {
				t.Fatalf("the child left no counts: %v\n%s", err, out)
			}
			if got := strings.TrimSpace(string(b)); got != "0 0 0" && !tc.leftover {
				t.Errorf("break %q: after the suite the driver holds machines, images, channels = %s: want 0 0 0 (cleanup on failure)", tc.brk, got)
			}
		})
	}
}

// TestBrokenDriverHelper is the child of TestSuiteCatchesBrokenDrivers.
func TestBrokenDriverHelper(t *testing.T) {
	brk := os.Getenv("PROVIDERTEST_BREAK")
	if brk == "" {
		t.Skip("child process of TestSuiteCatchesBrokenDrivers")
	}
	d := newMemDriver(t, brk)
	t.Cleanup(func() { // registered first, runs last
		m, i, c := d.counts()
		if err := os.WriteFile(os.Getenv("PROVIDERTEST_COUNTS"), fmt.Appendf(nil, "%d %d %d", m, i, c), 0o600); err != nil {
			t.Error(err)
		}
	})
	h := memHarness(d)
	if brk == "unknown-skip-key" {
		h.Skip = map[string]string{"Imagez": "typo"}
	}
	Run(t, h)
}
