// Package steps is the Crabbox image bake runbook as ordinary Go, shared by
// the runbook examples: warm a source lease, verify it, create a candidate
// image, boot the candidate explicitly and smoke it, promote it with that
// proof, verify that a normal lease boots the promoted image, show a
// candidate that fails its smoke being refused, show a rollback, and plan
// the cleanup.
//
// Each backend is its own main so that a program links only the cloud SDK
// it uses: examples/runbook (the embedded local cloud, the default),
// examples/runbook/aws (Amazon EC2, or moto) and examples/runbook/hetzner
// (Hetzner Cloud, or its API fake). They differ only in the Backends they
// hand to Main; this package imports the public crabbox API and nothing of
// any cloud SDK.
package steps

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/provider"
)

// Backend is one provider the runbook can run on.
type Backend struct {
	Name string
	Help string
	// Setup returns the driver, extra client options, the runbook
	// parameters for it, and a cleanup func.
	Setup func(ctx context.Context) (provider.Driver, []crabbox.Option, Params, func(), error)
}

// Params are the parts of the runbook that differ between a real cloud and
// the embedded default.
type Params struct {
	// Tools the source and candidate must have (nil: the runbook's full list).
	Tools []string
	// Bake runs on the source lease before imaging (installs what the image
	// should carry). Empty: nothing.
	Bake string
	// Desktop and browser leases (real clouds; needs the desktop bootstrap).
	Desktop, Browser bool
	Class            string
	Owner, Product   string
}

// programs names the program that serves each backend: provider name to
// the package to run.
var programs = map[string]string{
	"local": "./examples/runbook",
	"aws":   "./examples/runbook/aws", "moto": "./examples/runbook/aws",
	"hetzner": "./examples/runbook/hetzner", "hetzner-fake": "./examples/runbook/hetzner",
}

// Config is what the runbook's flags set.
type Config struct {
	// Provider is the backend's name.
	Provider string
	// Evidence is where smoke reports and screenshots go; empty: a temporary
	// directory removed at exit.
	Evidence string
	// ApplyCleanup deletes what the cleanup plan marks (default: dry run).
	ApplyCleanup bool
	// StateDir keeps the per-lease keys; empty: a temporary directory.
	StateDir string
	// Verbose prints every progress event.
	Verbose bool
	// Desktop uses desktop+browser leases with the real desktop proof.
	Desktop bool
	// Out receives the runbook's report (default os.Stdout).
	Out io.Writer
}

// RegisterFlags defines the runbook's flags on fs, defaulting -provider to
// def.
func (c *Config) RegisterFlags(fs *flag.FlagSet, def string) {
	fs.StringVar(&c.Provider, "provider", def, "backend to run on")
	fs.StringVar(&c.Evidence, "evidence", "", "keep smoke reports and screenshots in this directory (default: a temporary directory, removed at exit)")
	fs.BoolVar(&c.ApplyCleanup, "apply-cleanup", false, "apply the cleanup plan (default: dry run)")
	fs.StringVar(&c.StateDir, "state-dir", "", "directory for per-lease keys (default: a temp dir)")
	fs.BoolVar(&c.Verbose, "v", false, "print every progress event")
	fs.BoolVar(&c.Desktop, "desktop", false, "desktop+browser leases with the real desktop/browser proof (needs Xvfb, scrot, ffmpeg, xdotool and Chromium where the boxes run; on the local cloud: this machine)")
}

// Main parses the command line (flags the caller defined on
// flag.CommandLine included), runs the runbook on the chosen backend and
// exits non-zero on failure. def is the default -provider.
func Main(def string, backends []Backend) {
	var cfg Config
	cfg.RegisterFlags(flag.CommandLine, def)
	flag.Usage = func() {
		out := flag.CommandLine.Output()
		fmt.Fprintf(out, "usage: %s [flags]\n\nbackends:\n", filepath.Base(os.Args[0]))
		for _, b := range backends {
			fmt.Fprintf(out, "  %-14s %s\n", b.Name, b.Help)
		}
		var names []string
		for n := range programs {
			if !has(backends, n) {
				names = append(names, n)
			}
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(out, "  %-14s go run %s -provider %s\n", n, programs[n], n)
		}
		fmt.Fprintln(out)
		flag.PrintDefaults()
	}
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := Choose(ctx, cfg, backends)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "runbook: %v\n", err)
		os.Exit(1)
	}
}

// Choose runs the runbook on the backend of backends cfg.Provider names; a
// backend another program serves is an error that names that program.
func Choose(ctx context.Context, cfg Config, backends []Backend) error {
	for _, b := range backends {
		if b.Name == cfg.Provider {
			return Run(ctx, cfg, b)
		}
	}
	if pkg, ok := programs[cfg.Provider]; ok {
		return fmt.Errorf("-provider %s is its own program, so that this one does not link that cloud's SDK: go run %s -provider %s (or ./scripts/runbook -provider %s)",
			cfg.Provider, pkg, cfg.Provider, cfg.Provider)
	}
	return fmt.Errorf("unknown -provider %q (-h lists them)", cfg.Provider)
}

// has reports whether backends has one named name.
func has(backends []Backend, name string) bool {
	for _, b := range backends {
		if b.Name == name {
			return true
		}
	}
	return false
}

// Run runs the runbook on b.
func Run(ctx context.Context, cfg Config, b Backend) (err error) {
	out := cfg.Out
	if out == nil {
		out = os.Stdout
	}
	drv, opts, p, cleanup, err := b.Setup(ctx)
	if err != nil {
		return fmt.Errorf("setting up %s: %w", b.Name, err)
	}
	defer cleanup()

	evidence := cfg.Evidence
	if evidence == "" {
		if evidence, err = os.MkdirTemp("", "crabbox-evidence-"); err != nil {
			return err
		}
		defer func() {
			os.RemoveAll(evidence)
			fmt.Fprintf(out, "\nevidence removed (%s); -evidence DIR keeps it\n", evidence)
		}()
	} else {
		defer fmt.Fprintf(out, "\nevidence kept in %s\n", evidence)
	}
	if err := os.MkdirAll(evidence, 0o755); err != nil {
		return err
	}
	state := cfg.StateDir
	if state == "" {
		if state, err = os.MkdirTemp("", "crabbox-state-"); err != nil {
			return err
		}
		defer os.RemoveAll(state)
	}
	r := &runbook{p: p, evidence: evidence, drv: drv, cfg: cfg, out: out}
	opts = append(opts, crabbox.WithStateDir(state), crabbox.WithEvents(r.printEvent))
	c, err := crabbox.New(drv, opts...)
	if err != nil {
		return err
	}
	if cfg.Desktop {
		r.p.Desktop, r.p.Browser = true, true
	}
	r.c, r.opts = c, opts
	defer r.releaseAll()
	if err := r.steps(ctx); err != nil {
		return err
	}
	fmt.Fprintln(out, "\nrunbook complete: every step passed")
	return nil
}

func (r *runbook) printEvent(e crabbox.Event) {
	if !r.cfg.Verbose && e.Kind != crabbox.EventTypeFallback && e.Kind != crabbox.EventRetry {
		return
	}
	fmt.Fprintf(r.out, "      · %s %s %s %s\n", e.Kind, e.ID, e.State, e.Message)
}

type runbook struct {
	c        *crabbox.Client
	drv      provider.Driver
	opts     []crabbox.Option
	p        Params
	cfg      Config
	out      io.Writer
	evidence string
	step     int

	mu     sync.Mutex
	leases []*crabbox.Lease
}

func (r *runbook) say(format string, args ...any) {
	r.step++
	fmt.Fprintf(r.out, "\n[%2d] %s\n", r.step, fmt.Sprintf(format, args...))
}

func (r *runbook) detail(format string, args ...any) {
	fmt.Fprintf(r.out, "     %s\n", fmt.Sprintf(format, args...))
}

func (r *runbook) printJSON(v any) {
	b, _ := json.MarshalIndent(v, "     ", "  ")
	fmt.Fprintf(r.out, "     %s\n", b)
}

func (r *runbook) warmup(ctx context.Context, opts ...crabbox.LeaseOption) (*crabbox.Lease, error) {
	base := []crabbox.LeaseOption{crabbox.WithClass(r.p.Class), crabbox.WithTTL(2 * time.Hour), crabbox.WithIdleTimeout(30 * time.Minute)}
	if r.p.Desktop {
		base = append(base, crabbox.WithDesktop())
	}
	if r.p.Browser {
		base = append(base, crabbox.WithBrowser())
	}
	r.detail("waiting for a %s lease to boot and answer SSH...", r.p.Class)
	l, err := r.c.Warmup(ctx, append(base, opts...)...)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.leases = append(r.leases, l)
	r.mu.Unlock()
	r.detail("lease %s (%s) on %s, image %s (%s)", l.ID, l.Slug, l.MachineType, l.ImageID, l.ImageSource)
	return l, nil
}

func (r *runbook) release(ctx context.Context, l *crabbox.Lease) error {
	if err := l.Release(ctx); err != nil {
		return err
	}
	r.detail("released %s", l.ID)
	return nil
}

// releaseAll releases every lease the run made, even after a failure or
// ^C, with a context detached from cancellation and bounded.
func (r *runbook) releaseAll() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.leases {
		if err := l.Release(ctx); err != nil {
			fmt.Fprintf(os.Stderr, "runbook: releasing %s: %v\n", l.ID, err)
		}
	}
}

func (r *runbook) smoke(ctx context.Context, l *crabbox.Lease, label string, checks []crabbox.SmokeCheck) (*crabbox.SmokeReport, error) {
	dir := filepath.Join(r.evidence, label)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	rep, err := crabbox.Smoke(ctx, l, checks, crabbox.WithEvidenceDir(dir))
	if rep != nil {
		for _, res := range rep.Results {
			mark := "ok  "
			if !res.Passed {
				mark = "FAIL"
			}
			line := strings.TrimSpace(res.Output)
			if i := strings.LastIndexByte(line, '\n'); i >= 0 {
				line = line[i+1:]
			}
			if !res.Passed && res.Error != "" {
				line = res.Error
			}
			if len(line) > 90 {
				line = line[:90] + "..."
			}
			r.detail("%s %-40s %s", mark, res.Title, line)
		}
		r.detail("%d passed, %d failed", rep.Passed, rep.Failed)
		if werr := writeReport(dir, rep); werr != nil {
			return rep, werr
		}
	}
	return rep, err
}

func writeReport(dir string, rep *crabbox.SmokeReport) error {
	for name, write := range map[string]func(*os.File) error{
		"report.json":      func(f *os.File) error { return rep.WriteJSON(f) },
		"report.junit.xml": func(f *os.File) error { return rep.WriteJUnit(f) },
	} {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		if err := write(f); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	return nil
}

func (r *runbook) checkSet(hygiene bool) crabbox.CheckSetOptions {
	return crabbox.CheckSetOptions{Tools: r.p.Tools, Desktop: r.p.Desktop, Browser: r.p.Browser, Hygiene: hygiene}
}

func (r *runbook) imageName(purpose string) (string, error) {
	n, err := crabbox.NewImageName(r.p.Owner, r.p.Product, purpose, time.Now())
	if err != nil {
		return "", err
	}
	return n.String(), nil
}

// bakeCandidate warms a source lease, verifies it, runs the bake, creates
// the candidate image and releases the source.
func (r *runbook) bakeCandidate(ctx context.Context, purpose, extra string) (*crabbox.Image, error) {
	r.say("Warm a source lease")
	src, err := r.warmup(ctx)
	if err != nil {
		return nil, err
	}
	if r.p.Bake != "" || extra != "" {
		r.say("Bake machine capabilities into the source lease")
		for _, cmd := range []string{r.p.Bake, extra} {
			if cmd == "" {
				continue
			}
			if _, err := src.Run(ctx, cmd, crabbox.Strict(), crabbox.WithStdout(r.out), crabbox.WithStderr(r.out)); err != nil {
				return nil, fmt.Errorf("bake: %w", err)
			}
		}
	}
	r.say("Verify the source lease")
	if _, err := r.smoke(ctx, src, "source-"+src.ID, crabbox.SourceVerification(r.checkSet(false))); err != nil {
		return nil, fmt.Errorf("source verification: %w", err)
	}
	name, err := r.imageName(purpose)
	if err != nil {
		return nil, err
	}
	r.say("Create the candidate image %s (prepare, wait, JSON record)", name)
	r.detail("waiting for the image to be available (up to 45 min on a cloud)...")
	img, err := r.c.CreateImage(ctx, src.ID, name, crabbox.WithPrepare(), crabbox.WithWait(45*time.Minute))
	if err != nil {
		return img, err
	}
	r.printJSON(img)
	if err := r.release(ctx, src); err != nil {
		return img, err
	}
	return img, nil
}

func (r *runbook) smokeCandidate(ctx context.Context, img *crabbox.Image) (*crabbox.SmokeReport, error) {
	r.say("Boot candidate %s explicitly and smoke it", img.ID)
	l, err := r.warmup(ctx, crabbox.WithImage(img.ID), crabbox.WithTTL(30*time.Minute), crabbox.WithIdleTimeout(10*time.Minute))
	if err != nil {
		return nil, err
	}
	rep, err := r.smoke(ctx, l, "candidate-"+img.ID, crabbox.CandidateSmoke(r.checkSet(true)))
	if rerr := r.release(ctx, l); rerr != nil {
		return rep, errors.Join(err, rerr)
	}
	return rep, err
}

func (r *runbook) steps(ctx context.Context) error {
	info := r.c.Provider()
	fmt.Fprintf(r.out, "Crabbox image bake runbook on %s (%s), operator %s\n", info.Name, info.Region, r.c.Operator())

	// Part 1: bake, smoke, promote, verify.
	good, err := r.bakeCandidate(ctx, "linux-base", "")
	if err != nil {
		return err
	}
	rep, err := r.smokeCandidate(ctx, good)
	if err != nil {
		return fmt.Errorf("candidate smoke: %w", err)
	}
	r.say("Promote %s with the smoke proof", good.ID)
	pr, err := r.c.Promote(ctx, good.ID, crabbox.WithProof(rep))
	if err != nil {
		return err
	}
	r.printJSON(pr)

	r.say("Verify a normal lease without override boots the promoted image")
	if err := r.verifyPromoted(ctx, good.ID); err != nil {
		return err
	}

	// Part 2: a candidate that fails its smoke is refused promotion.
	bad, err := r.bakeCandidate(ctx, "linux-leaky", `mkdir -p "$HOME/.aws" && printf '[default]\naws_secret_access_key = DEMO-NOT-A-REAL-SECRET\n' > "$HOME/.aws/credentials"`)
	if err != nil {
		return err
	}
	badRep, err := r.smokeCandidate(ctx, bad)
	if err == nil || !errors.Is(err, crabbox.ErrSmokeFailed) {
		return fmt.Errorf("the leaky candidate should have failed its smoke, got %v", err)
	}
	r.detail("smoke failed as expected: %v", err)
	r.say("Try to promote the failing candidate %s: it must be refused", bad.ID)
	_, err = r.c.Promote(ctx, bad.ID, crabbox.WithProof(badRep))
	if !errors.Is(err, crabbox.ErrNoProof) {
		return fmt.Errorf("promotion of a failed candidate was not refused: %v", err)
	}
	r.detail("refused: %v", err)
	if err := r.c.MarkFailed(ctx, bad.ID); err != nil {
		return err
	}

	// Part 3: promote a second good image, then roll back to the first.
	next, err := r.bakeCandidate(ctx, "linux-next", "")
	if err != nil {
		return err
	}
	rep2, err := r.smokeCandidate(ctx, next)
	if err != nil {
		return fmt.Errorf("candidate smoke: %w", err)
	}
	r.say("Promote %s", next.ID)
	if pr, err = r.c.Promote(ctx, next.ID, crabbox.WithProof(rep2)); err != nil {
		return err
	}
	r.detail("channel %s: %s -> %s (version %d)", pr.Channel, pr.Previous, pr.Image.ID, pr.Version)
	// While the new image is not known-good, cleanup keeps the channel's
	// rollback target whatever its age (dry run, a week from now).
	r.say("Plan the cleanup as it would stand in a week with %s not yet known-good (dry run)", next.ID)
	if err := r.printPlan(ctx, 7*24*time.Hour); err != nil {
		return err
	}
	r.say("Roll back: a QA lane failed on %s", next.ID)
	rb, err := r.c.Rollback(ctx, crabbox.DefaultChannel, "demo: QA lane failed")
	if err != nil {
		return err
	}
	r.detail("channel %s back on %s (version %d); %s marked failed and kept for inspection", rb.Channel, rb.Image.ID, rb.Version, next.ID)
	r.say("Normal brokered smoke again after the rollback")
	if err := r.verifyPromoted(ctx, good.ID); err != nil {
		return err
	}

	// Cleanup.
	r.say("Plan the cleanup as it stands now (%s)", map[bool]string{true: "applied in the next step", false: "dry run; -apply-cleanup applies it"}[r.cfg.ApplyCleanup])
	plan, err := r.c.PlanCleanup(ctx, crabbox.CleanupPolicy{})
	if err != nil {
		return err
	}
	if err := plan.WriteText(r.out); err != nil {
		return err
	}
	if r.cfg.ApplyCleanup {
		if err := r.apply(ctx, plan); err != nil {
			return err
		}
	}
	// The same policy a week and a day from now: the failed images are past
	// their inspection period by then. Planning changes nothing.
	r.say("Plan the cleanup as it will stand in 8 days (dry run, never applied: it shows what a later cleanup will delete)")
	return r.printPlan(ctx, 8*24*time.Hour)
}

// apply applies plan, the cleanup plan as it stands now, and says what it
// did.
func (r *runbook) apply(ctx context.Context, plan *crabbox.CleanupPlan) error {
	r.say("Apply the cleanup plan above (the one as it stands now)")
	res, err := plan.Apply(ctx)
	if err != nil {
		return err
	}
	if len(res.Deleted) == 0 {
		r.detail("applied: nothing deleted (the plan marks no image for deletion)")
	} else {
		r.detail("applied: deleted %d image(s): %s", len(res.Deleted), strings.Join(res.Deleted, ", "))
	}
	// Apply re-checked each image just before deleting it: what it did
	// and why (kept when it changed since the plan or the provider
	// refused; snapshots another image still uses stay).
	for _, o := range res.Outcomes {
		line := fmt.Sprintf("%s %s: %s", o.Result, o.ImageID, o.Reason)
		if len(o.SnapshotsKept) > 0 {
			line += fmt.Sprintf(" (snapshots kept, shared: %v)", o.SnapshotsKept)
		}
		r.detail("%s", line)
	}
	return nil
}

// printPlan prints the cleanup plan as it would stand after d (planning
// changes nothing).
func (r *runbook) printPlan(ctx context.Context, d time.Duration) error {
	later, err := crabbox.New(r.drv, append(r.opts, crabbox.WithClock(func() time.Time { return time.Now().Add(d) }))...)
	if err != nil {
		return err
	}
	plan, err := later.PlanCleanup(ctx, crabbox.CleanupPolicy{})
	if err != nil {
		return err
	}
	return plan.WriteText(r.out)
}

func (r *runbook) verifyPromoted(ctx context.Context, want string) error {
	l, err := r.warmup(ctx, crabbox.WithTTL(30*time.Minute), crabbox.WithIdleTimeout(10*time.Minute))
	if err != nil {
		return err
	}
	if l.ImageSource != crabbox.ImagePromoted || l.ImageID != want {
		return fmt.Errorf("normal lease booted %s (%s), want promoted %s", l.ImageID, l.ImageSource, want)
	}
	rep, err := r.smoke(ctx, l, "promoted-"+l.ID, crabbox.PromotedSmoke(r.checkSet(false)))
	if err != nil {
		return err
	}
	if _, err := r.c.MarkKnownGood(ctx, want, rep); err != nil {
		return err
	}
	r.detail("%s marked known-good", want)
	return r.release(ctx, l)
}
