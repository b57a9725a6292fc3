// Package providertest is the driver conformance suite: every crabbox driver
// (the embedded local cloud, sshhost, AWS, Hetzner) runs it from its own
// tests to prove it keeps the driver contract of package provider.
//
// The suite talks to the driver only through the interfaces of package
// provider. It creates machines (and images and channels where the driver
// implements those capabilities) labelled with a unique run label, checks the
// semantics the SDK relies on (labels merge, not-found is an error and never
// nil-nil, deletes are idempotent, conditional channel sets are atomic, ...)
// and deletes everything it created when each subtest ends, with a fresh
// context, even when the subtest failed.
//
// A driver's test calls Run:
//
//	func TestConformance(t *testing.T) {
//		providertest.Run(t, providertest.Harness{Driver: d})
//	}
package providertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/crabbox/crabbox-go/provider"
)

// Subtest names. They are the keys Harness.Skip accepts. Protector,
// Deprecator and RegionCopier run inside Images (as Images/Protector, ...)
// because they need an available image. Each subtest of an optional
// interface is skipped with "driver does not implement X" when the driver
// lacks it.
const (
	SubtestInfo                 = "Info"
	SubtestMachineTypes         = "MachineTypes"
	SubtestMachines             = "Machines"
	SubtestImages               = "Images"
	SubtestProtector            = "Protector"
	SubtestDeprecator           = "Deprecator"
	SubtestRegionCopier         = "RegionCopier"
	SubtestUsageFinder          = "UsageFinder"
	SubtestChannels             = "Channels"
	SubtestChannelVersionMarker = "ChannelVersionMarker"
	SubtestOrphanSweeper        = "OrphanSweeper"
	SubtestAccessProvider       = "AccessProvider"
	SubtestFaults               = "Faults"
)

var knownSubtests = []string{
	SubtestInfo, SubtestMachineTypes, SubtestMachines, SubtestImages,
	SubtestProtector, SubtestDeprecator, SubtestRegionCopier, SubtestUsageFinder,
	SubtestChannels, SubtestChannelVersionMarker, SubtestOrphanSweeper, SubtestAccessProvider, SubtestFaults,
}

// Label keys the suite puts on what it creates. LabelRun carries a value
// unique to one Run call, so parallel runs against one account do not see
// each other's resources.
const (
	LabelRun   = "crabbox-conformance"
	LabelRole  = "crabbox-conformance-role"
	LabelExtra = "crabbox-conformance-extra"
)

// Harness configures one run of the suite against a driver.
type Harness struct {
	// Driver is the driver under test. Images, Channels and every optional
	// interface of package provider are exercised when it implements them.
	Driver provider.Driver
	// Image to boot test machines from; "" means Driver.BaseImage(ctx, "amd64").
	Image string
	// MachineType of test machines; "" means the first of
	// Driver.MachineTypes("small", "amd64").
	MachineType string
	// UserData returns the user-data for a test machine that must accept the
	// given authorized key (authorized_keys format); nil means the suite
	// renders one with internal/cloudinit.
	UserData func(authorizedKey string) []byte
	// PollInterval is the pause between polls (GetMachine, GetImage,
	// ListImages, ...); 0 means 100ms.
	PollInterval time.Duration
	// Timeout bounds each wait (machine running, image available, machine
	// gone, ...) and each cleanup; 0 means 2m.
	Timeout time.Duration
	// Skip lists subtests the driver legitimately cannot run, each with the
	// reason, e.g. {"Images": "sshhost has no images"}. Keys are the Subtest*
	// names; an unknown key fails the run (it is most likely a typo).
	Skip map[string]string
	// ChannelImage is the image id the Channels subtest points channels at;
	// "" means the resolved Image. Backends that validate channel targets
	// need an image that exists.
	ChannelImage string
	// CopyRegion is the region the RegionCopier subtest copies the test
	// image to, and CopyRegionImages the driver's images in that region,
	// used to check and delete the copy. RegionCopier is skipped when
	// either is unset.
	CopyRegion       string
	CopyRegionImages provider.Images
	// Orphans lets the OrphanSweeper subtest make and observe orphans;
	// OrphanSweeper is skipped when it is nil.
	Orphans *OrphanHooks
	// Dial reaches a machine's SSHAddr from the test (the emulators'
	// dialers); when set, the Machines subtest logs in over SSH with the
	// key the machine was created with and runs a command, pinning the
	// host key the suite rendered. Nil: that is not checked (and logged).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// SSHUser logs in with Dial ("" means the user the rendered
	// user-data creates).
	SSHUser string
	// Inject makes the backend answer the request that performs call
	// (CallCreateMachine, CallCreateImage) with a failure of kind until
	// restore is called; for FaultLostReply only the next such request,
	// which the backend applies before failing its reply. It returns an
	// error wrapping provider.ErrUnsupported for what it cannot make. The
	// Faults subtest uses it to check the driver's error mapping and
	// adoption; without it, Faults is skipped as not checked.
	Inject func(call string, kind FaultKind) (restore func(), err error)
}

// Run runs the conformance suite against h.Driver as subtests of t.
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.Driver == nil {
		t.Fatal("providertest: Harness.Driver is nil")
	}
	for k := range h.Skip {
		if !slices.Contains(knownSubtests, k) {
			t.Fatalf("providertest: Harness.Skip has unknown subtest %q (known: %s)", k, strings.Join(knownSubtests, ", "))
		}
	}
	if h.PollInterval <= 0 {
		h.PollInterval = 100 * time.Millisecond
	}
	if h.Timeout <= 0 {
		h.Timeout = 2 * time.Minute
	}
	s := &suite{h: h, runID: randomHex(6)}
	s.run(t, SubtestInfo, s.testInfo)
	s.run(t, SubtestMachineTypes, s.testMachineTypes)
	s.run(t, SubtestMachines, s.testMachines)
	s.run(t, SubtestImages, s.testImages)
	s.run(t, SubtestUsageFinder, s.testUsageFinder)
	s.run(t, SubtestChannels, s.testChannels)
	s.run(t, SubtestChannelVersionMarker, s.testChannelVersionMarker)
	s.run(t, SubtestOrphanSweeper, s.testOrphanSweeper)
	s.run(t, SubtestAccessProvider, s.testAccessProvider)
	s.run(t, SubtestFaults, s.testFaults)
}

type suite struct {
	h     Harness
	runID string

	mu       sync.Mutex
	hostKeys map[string]ssh.PublicKey // by lease token, for the keys the suite rendered
}

func (s *suite) run(t *testing.T, name string, f func(t *testing.T)) bool {
	return t.Run(name, func(t *testing.T) {
		if reason, ok := s.h.Skip[name]; ok {
			t.Skipf("skipped by the harness: %s", reason)
		}
		f(t)
	})
}

// waitCtx bounds one wait by the harness timeout.
func (s *suite) waitCtx(t *testing.T) (context.Context, context.CancelFunc) {
	return context.WithTimeout(t.Context(), s.h.Timeout)
}

// cleanupCtx is a fresh context for cleanups: t.Context is already cancelled
// when cleanups run.
func (s *suite) cleanupCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), s.h.Timeout)
}

// poll calls f every PollInterval until it reports done, fails or the
// harness timeout passes. f returns a description of what it saw last, used
// in the failure message. Retryable errors (ErrUnavailable, ErrThrottled)
// are tolerated while polling; any other error from f fails the test.
func (s *suite) poll(t *testing.T, what string, f func(ctx context.Context) (done bool, last string, err error)) {
	t.Helper()
	ctx, cancel := s.waitCtx(t)
	defer cancel()
	last := "nothing observed yet"
	for {
		done, seen, err := f(ctx)
		if seen != "" {
			last = seen
		}
		if err != nil {
			last = "error: " + err.Error()
		}
		switch {
		case err != nil && !provider.Retryable(err):
			t.Fatalf("waiting for %s: %v (last seen: %s)", what, err, last)
		case err == nil && done:
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v (last seen: %s)", what, ctx.Err(), last)
		case <-time.After(s.h.PollInterval):
		}
	}
}

func (s *suite) image(t *testing.T) string {
	t.Helper()
	if s.h.Image != "" {
		return s.h.Image
	}
	img, err := s.h.Driver.BaseImage(t.Context(), provider.DefaultArch)
	if err != nil {
		t.Fatalf("BaseImage(amd64): %v", err)
	}
	if img == "" {
		t.Fatal("BaseImage(amd64) returned an empty image id and no error")
	}
	return img
}

func (s *suite) machineType(t *testing.T) string {
	t.Helper()
	if s.h.MachineType != "" {
		return s.h.MachineType
	}
	types, err := s.h.Driver.MachineTypes(provider.ClassSmall, provider.DefaultArch)
	if err != nil {
		t.Fatalf("MachineTypes(small, amd64): %v", err)
	}
	if len(types) == 0 || types[0] == "" {
		t.Fatalf("MachineTypes(small, amd64) = %q: want a non-empty first type", types)
	}
	return types[0]
}

// --- Info and machine types -------------------------------------------------

func (s *suite) testInfo(t *testing.T) {
	info := s.h.Driver.Info()
	if info.Name == "" {
		t.Error("Info().Name is empty")
	}
	img, err := s.h.Driver.BaseImage(t.Context(), provider.DefaultArch)
	switch {
	case err != nil:
		t.Errorf("BaseImage(amd64): %v", err)
	case img == "":
		t.Error("BaseImage(amd64) returned an empty image id and no error")
	}
}

func (s *suite) testMachineTypes(t *testing.T) {
	for _, class := range provider.Classes() {
		types, err := s.h.Driver.MachineTypes(class, provider.DefaultArch)
		if err != nil {
			t.Errorf("MachineTypes(%q, amd64): %v", class, err)
			continue
		}
		if len(types) == 0 {
			t.Errorf("MachineTypes(%q, amd64) is empty", class)
		}
		if slices.Contains(types, "") {
			t.Errorf("MachineTypes(%q, amd64) = %q contains an empty type", class, types)
		}
		// arm64 is optional: a driver without arm64 machines says so with
		// ErrInvalidArgument or ErrUnsupported, never with an empty list.
		arm, err := s.h.Driver.MachineTypes(class, "arm64")
		switch {
		case err != nil && !errors.Is(err, provider.ErrInvalidArgument) && !errors.Is(err, provider.ErrUnsupported):
			t.Errorf("MachineTypes(%q, arm64): %v: want nil, ErrInvalidArgument or ErrUnsupported", class, err)
		case err == nil && (len(arm) == 0 || slices.Contains(arm, "")):
			t.Errorf("MachineTypes(%q, arm64) = %q with no error: want non-empty types", class, arm)
		}
	}
	for _, class := range []string{"", "no-such-class", "SMALL "} {
		types, err := s.h.Driver.MachineTypes(class, provider.DefaultArch)
		if !errors.Is(err, provider.ErrInvalidArgument) {
			t.Errorf("MachineTypes(%q, amd64) = %q, %v: want an error wrapping ErrInvalidArgument", class, types, err)
		}
	}
}

// --- helpers shared by the subtests ----------------------------------------

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand panics instead)
	return hex.EncodeToString(b)
}

// missingID derives, from an id the backend issued, an id of the same shape
// that does not exist: the trailing run of hex digits is replaced by 9s (all
// decimal) or fs. If id has no trailing hex run, "-missing" is appended.
func missingID(id string) string {
	i := len(id)
	for i > 0 && strings.ContainsRune("0123456789abcdef", rune(id[i-1])) {
		i--
	}
	run := id[i:]
	if run == "" {
		return id + "-missing"
	}
	fill := "f"
	if strings.Trim(run, "0123456789") == "" {
		fill = "9"
	}
	out := id[:i] + strings.Repeat(fill, len(run))
	if out == id { // the id was already all 9s / fs
		return id + "-missing"
	}
	return out
}

// missingLabels returns the keys of want that got lacks or holds with another
// value, sorted, formatted for a failure message.
func missingLabels(got, want map[string]string) []string {
	var out []string
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			out = append(out, fmt.Sprintf("%s=%q (got %q, present %v)", k, v, g, ok))
		}
	}
	sort.Strings(out)
	return out
}

func merged(a, b map[string]string) map[string]string {
	out := maps.Clone(a)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, b)
	return out
}

// cancelledCtx returns a context that is already cancelled.
func cancelledCtx() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// checkCancelled checks what a call made with an already-cancelled context
// returned: an error matching context.Canceled, not mapped to
// provider.ErrUnavailable (the SDK would retry it).
func checkCancelled(t *testing.T, call string, err error) {
	t.Helper()
	switch {
	case err == nil:
		t.Errorf("%s with a cancelled context returned no error: want one matching context.Canceled", call)
	case !errors.Is(err, context.Canceled):
		t.Errorf("%s with a cancelled context: %v: want an error matching context.Canceled", call, err)
	case errors.Is(err, provider.ErrUnavailable):
		t.Errorf("%s with a cancelled context: %v: matches ErrUnavailable too, so the SDK would retry it: pass context errors through unmapped", call, err)
	}
}

// checkSSHAddr reports whether addr is host:port with both parts set.
func checkSSHAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host == "" || port == "" {
		return fmt.Errorf("%q: host or port is empty", addr)
	}
	return nil
}
