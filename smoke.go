// The smoke engine: Smoke runs checks concurrently over the lease's one
// connection (with WithBatchedChecks its shell checks share one session,
// smoke_batch.go), with timeouts and retries, into a SmokeReport.

package crabbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// smokeTarget is what checks run against: a lease in production, a local
// shell in the package's own tests.
type smokeTarget interface {
	// runCommand runs a shell command. A command that ran returns its exit
	// code and a nil error whatever the code; err is for everything else
	// (transport, context).
	runCommand(ctx context.Context, command string, stdout, stderr io.Writer) (exitCode int, err error)
	screenshot(ctx context.Context) ([]byte, error)
}

type leaseTarget struct{ l *Lease }

func (t leaseTarget) runCommand(ctx context.Context, command string, stdout, stderr io.Writer) (int, error) {
	res, err := t.l.Run(ctx, command, WithStdout(stdout), WithStderr(stderr), WithTailBytes(outputTailBytes))
	if err != nil {
		if res != nil && errors.Is(err, ErrCommandFailed) {
			return res.ExitCode, nil
		}
		return -1, err
	}
	return res.ExitCode, nil
}

func (t leaseTarget) screenshot(ctx context.Context) ([]byte, error) { return t.l.Screenshot(ctx) }

type smokeOptions struct {
	evidenceDir string
	concurrency int
	batch       bool
}

// SmokeOption configures Smoke.
type SmokeOption func(*smokeOptions) error

// WithEvidenceDir writes evidence (screenshots) as files into dir, created
// if missing, and lists their paths in CheckResult.Evidence. Without it,
// screenshots are kept only in CheckResult.PNG.
func WithEvidenceDir(dir string) SmokeOption {
	return func(o *smokeOptions) error {
		if strings.TrimSpace(dir) == "" {
			return fmt.Errorf("%w: empty evidence dir", ErrInvalidArgument)
		}
		o.evidenceDir = dir
		return nil
	}
}

// WithSmokeConcurrency runs at most n checks at once. The default runs all
// of them at once: they share the lease's one SSH connection, whose
// transport waits for a free session slot when the server's MaxSessions is
// reached.
func WithSmokeConcurrency(n int) SmokeOption {
	return func(o *smokeOptions) error {
		if n < 1 {
			return fmt.Errorf("%w: smoke concurrency %d < 1", ErrInvalidArgument, n)
		}
		o.concurrency = n
		return nil
	}
}

// Smoke runs checks concurrently on the lease, over its one SSH connection,
// and returns a report of every check. Each attempt of a check is bounded by
// its Timeout; a failing check is retried as it says. Progress is reported
// as EventSmokeCheck events (states "running", "retrying", "passed",
// "failed").
//
// When the provider has images, the outcome is recorded on the image the
// lease's machine booted, as a ProofRecord holding the report's Digest
// (the report's lease, image and image source are set from the machine's
// own labels): that record, not the report, is what Promote and
// MarkKnownGood accept as proof. The report can be written with WriteJSON
// and handed to another process; an edited report no longer matches.
//
// The report is returned whenever l is not nil, also with an error. The
// error matches ErrSmokeFailed when any check failed and names the failing
// checks (it also matches ctx's error if ctx ended); a nil lease, no checks
// or a bad option is ErrInvalidArgument.
func Smoke(ctx context.Context, l *Lease, checks []SmokeCheck, opts ...SmokeOption) (*SmokeReport, error) {
	if l == nil {
		return nil, &OpError{Op: "smoke", Err: fmt.Errorf("%w: nil lease", ErrInvalidArgument)}
	}
	rep := &SmokeReport{LeaseID: l.ID, LeaseSlug: l.Slug, ImageID: l.ImageID, ImageSource: l.ImageSource,
		Provider: l.Provider, Results: []CheckResult{}}
	if l.c == nil {
		return rep, &OpError{Op: "smoke", Provider: l.Provider, ID: l.ID,
			Err: fmt.Errorf("%w: lease not obtained from a Client (use Warmup or Lease)", ErrInvalidArgument)}
	}
	subject := l.readSmokeSubject(ctx)
	var t smokeTarget = leaseTarget{l}
	var b *batcher
	if wantsBatch(opts) {
		b = newBatcher(l)
		t = batchTarget{leaseTarget{l}, b}
	}
	err := runSmoke(ctx, t, rep, l.c.emit, l.c.o.now, checks, opts)
	if b != nil {
		b.wait()
	}
	if subject != nil && len(rep.Results) > 0 {
		// The outcome, pass or fail, becomes the image's proof record. A
		// failed smoke's record is best effort: without it the report
		// cannot prove anything either.
		if rerr := l.recordProof(ctx, <-subject, rep); rerr != nil && err == nil {
			err = fmt.Errorf("the checks passed, but the proof was not recorded: %w", rerr)
		}
	}
	if err != nil {
		return rep, &OpError{Op: "smoke", Provider: l.Provider, ID: l.ID, Err: err}
	}
	return rep, nil
}

// WithBatchedChecks runs the smoke's shell checks in one SSH session (a
// runner on the box runs them concurrently, with per-check timeouts, and
// streams a result frame per check), saving a round trip per check on a
// slow link; screenshot, desktop and fetch checks keep their own sessions.
// Off by default: on a busy box the runner's processes cost more than the
// round trips they save (see BENCHMARKS.md).
func WithBatchedChecks() SmokeOption {
	return func(o *smokeOptions) error { o.batch = true; return nil }
}

// wantsBatch reports whether opts ask for batched checks (a bad option is
// reported by runSmoke).
func wantsBatch(opts []SmokeOption) bool {
	var o smokeOptions
	for _, opt := range opts {
		if opt != nil {
			_ = opt(&o)
		}
	}
	return o.batch
}

// Smoke runs checks on the lease; see the package-level Smoke.
func (l *Lease) Smoke(ctx context.Context, checks []SmokeCheck, opts ...SmokeOption) (*SmokeReport, error) {
	return Smoke(ctx, l, checks, opts...)
}

// runSmoke fills rep by running checks against t.
func runSmoke(ctx context.Context, t smokeTarget, rep *SmokeReport, emit func(Event), now func() time.Time,
	checks []SmokeCheck, opts []SmokeOption) error {
	if emit == nil {
		emit = func(Event) {}
	}
	rep.Started = now()
	var o smokeOptions
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return err
		}
	}
	if len(checks) == 0 {
		return fmt.Errorf("%w: no smoke checks", ErrInvalidArgument)
	}
	if o.evidenceDir != "" {
		if err := os.MkdirAll(o.evidenceDir, 0o755); err != nil {
			return fmt.Errorf("%w: evidence dir: %v", ErrInvalidArgument, err)
		}
	}
	start := time.Now()
	results := make([]CheckResult, len(checks))
	var sem chan struct{}
	if o.concurrency > 0 {
		sem = make(chan struct{}, o.concurrency)
	}
	// A batching target learns how many shell checks run, so that it
	// sends their commands as soon as all of them are waiting. The first
	// wave (every check, or as many as the concurrency limit lets run) is
	// counted, each check holding its slot, before any starts: a check
	// that sent its command while the others were still being counted
	// would go alone, in a session of its own. A later check counts once
	// it has a slot (a check waiting for one sends nothing).
	tr, _ := t.(checkTracker)
	batchable := func(i int) bool { return tr != nil && batchableKind(checks[i].Kind) }
	var wg sync.WaitGroup
	launch := func(i int) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if sem != nil {
				defer func() { <-sem }()
			}
			if batchable(i) {
				defer tr.checkActive(-1) // before the slot is freed
			}
			results[i] = runCheck(ctx, t, rep.LeaseID, i, checks[i], o, emit)
		}()
	}
	first := len(checks)
	if sem != nil {
		first = min(cap(sem), len(checks))
	}
	for i := range first {
		if sem != nil {
			sem <- struct{}{} // the first wave fits: never blocks
		}
		if batchable(i) {
			tr.checkActive(1)
		}
	}
	for i := range first {
		launch(i)
	}
	for i := first; i < len(checks); i++ {
		if ctx.Err() == nil {
			select {
			case sem <- struct{}{}:
				if batchable(i) {
					tr.checkActive(1)
				}
				launch(i)
				continue
			case <-ctx.Done():
			}
		}
		results[i] = CheckResult{Title: checks[i].Title, Kind: checks[i].Kind, Fingerprint: checks[i].Fingerprint(), ExitCode: -1,
			Error: "not started: " + ctx.Err().Error()}
		emit(Event{Kind: EventSmokeCheck, Resource: "smoke", ID: rep.LeaseID, State: "failed",
			Message: checks[i].Title + ": " + results[i].Error})
	}
	wg.Wait()
	rep.Duration = time.Since(start)
	rep.Results = results
	var failed []string
	for _, r := range results {
		if r.Passed {
			rep.Passed++
		} else {
			rep.Failed++
			failed = append(failed, fmt.Sprintf("%q", r.Title))
		}
	}
	if len(failed) == 0 {
		return nil
	}
	msg := fmt.Sprintf("%d of %d checks failed: %s", len(failed), len(results), strings.Join(failed, ", "))
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrSmokeFailed, msg, err)
	}
	return fmt.Errorf("%w: %s", ErrSmokeFailed, msg)
}

// permanent reports errors a retry cannot fix. A missing display is not
// among them: a desktop may still be starting.
func permanent(err error) bool {
	return errors.Is(err, ErrInvalidArgument) || errors.Is(err, ErrHostKeyMismatch) ||
		errors.Is(err, ErrMissingTool) || errors.Is(err, ErrExpired)
}

func runCheck(ctx context.Context, t smokeTarget, leaseID string, idx int, c SmokeCheck, o smokeOptions, emit func(Event)) CheckResult {
	res := CheckResult{Title: c.Title, Kind: c.Kind, Fingerprint: c.Fingerprint(), ExitCode: -1}
	if res.Title == "" {
		res.Title = fmt.Sprintf("check %d", idx+1)
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultSmokeTimeout
	}
	retries := max(c.Retries, 0)
	start := time.Now()
	var last attempt
	for n := 1; ; n++ {
		res.Attempts = n
		emit(Event{Kind: EventSmokeCheck, Resource: "smoke", ID: leaseID, State: "running", Attempt: n, Message: res.Title})
		if c.run == nil {
			last = attempt{exitCode: -1, err: fmt.Errorf("%w: zero SmokeCheck (build checks with the constructors)", ErrInvalidArgument)}
		} else {
			actx, cancel := context.WithTimeout(ctx, timeout)
			last = c.run(actx, t)
			if last.err != nil && actx.Err() == context.DeadlineExceeded && ctx.Err() == nil {
				last.err = fmt.Errorf("timed out after %s: %w", timeout, last.err)
			}
			cancel()
		}
		if last.err == nil || n > retries || permanent(last.err) || ctx.Err() != nil {
			break
		}
		emit(Event{Kind: EventSmokeCheck, Resource: "smoke", ID: leaseID, State: "retrying", Attempt: n,
			Message: res.Title + ": " + last.err.Error()})
		if err := sleep(ctx, c.RetryDelay); err != nil {
			break
		}
	}
	res.Duration = time.Since(start)
	res.ExitCode = last.exitCode
	res.Output = last.output
	res.Passed = last.err == nil
	if last.err != nil {
		res.Error = last.err.Error()
	}
	if last.png != nil {
		res.PNG = last.png
		if o.evidenceDir != "" {
			name := fmt.Sprintf("%s-%02d-%s.png", fileSafe(leaseID, 40), idx+1, fileSafe(res.Title, 48))
			p := filepath.Join(o.evidenceDir, name)
			if err := os.WriteFile(p, last.png, 0o644); err != nil {
				res.Passed = false
				res.Error = strings.TrimPrefix(res.Error+"; ", "; ") + "keeping evidence: " + err.Error()
			} else {
				res.Evidence = append(res.Evidence, p)
			}
		}
	}
	for j, f := range last.files {
		if o.evidenceDir == "" {
			break
		}
		name := fmt.Sprintf("%s-%02d-%s", fileSafe(leaseID, 40), idx+1, fileSafe(res.Title, 48))
		// The screenshot, if any, has the plain name; other files are
		// numbered after it.
		if n := j + btoi(last.png != nil); n > 0 {
			name += fmt.Sprintf("-%d", n+1)
		}
		p := filepath.Join(o.evidenceDir, name+"."+fileSafe(f.ext, 8))
		if err := os.WriteFile(p, f.data, 0o644); err != nil {
			res.Passed = false
			res.Error = strings.TrimPrefix(res.Error+"; ", "; ") + "keeping evidence: " + err.Error()
		} else {
			res.Evidence = append(res.Evidence, p)
		}
	}
	state, msg := "passed", res.Title
	if !res.Passed {
		state, msg = "failed", res.Title+": "+res.Error
	}
	emit(Event{Kind: EventSmokeCheck, Resource: "smoke", ID: leaseID, State: state, Attempt: res.Attempts, Message: msg})
	return res
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// fileSafe maps s to [a-z0-9-], at most n bytes.
func fileSafe(s string, n int) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' {
			b.WriteRune(r)
			dash = false
		} else if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
	}
	out := strings.Trim(b.String(), "-")
	if len(out) > n {
		out = strings.TrimRight(out[:n], "-")
	}
	if out == "" {
		out = "x"
	}
	return out
}

// Output bounds.
const (
	outputTailBytes = 4 << 10 // kept for the report, per stream and combined
	outputHeadBytes = 1 << 20 // kept for expectations
)

// capture is an io.Writer that keeps the first outputHeadBytes (for
// expectations) and the last outputTailBytes (for the report).
type capture struct {
	mu    sync.Mutex
	head  []byte
	tail  []byte
	total int64
}

func newCapture() *capture { return &capture{} }

func (c *capture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total += int64(len(p))
	if room := outputHeadBytes - len(c.head); room > 0 {
		c.head = append(c.head, p[:min(room, len(p))]...)
	}
	if len(p) >= outputTailBytes {
		c.tail = append(c.tail[:0], p[len(p)-outputTailBytes:]...)
	} else {
		c.tail = append(c.tail, p...)
		if over := len(c.tail) - outputTailBytes; over > 0 {
			c.tail = append(c.tail[:0], c.tail[over:]...)
		}
	}
	return len(p), nil
}

// absorb makes c hold what o captured (o is no longer written to).
func (c *capture) absorb(o *capture) {
	o.mu.Lock()
	head, tail, total := o.head, o.tail, o.total
	o.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.head, c.tail, c.total = head, tail, total
}

func (c *capture) headString() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return string(c.head)
}

func (c *capture) tailString() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return trimToRunes(string(c.tail))
}

// trimToRunes drops bytes of a rune cut in half at the start.
func trimToRunes(s string) string {
	for i := 0; i < len(s) && i < utf8.UTFMax; i++ {
		if utf8.RuneStart(s[i]) {
			return s[i:]
		}
	}
	return s
}

// combineOutput joins stdout and stderr tails (stdout first) and keeps the
// last outputTailBytes.
func combineOutput(stdout, stderr string) string {
	out := stdout
	if stderr != "" {
		if out != "" && !strings.HasSuffix(out, "\n") {
			out += "\n"
		}
		out += stderr
	}
	if len(out) > outputTailBytes {
		out = trimToRunes(out[len(out)-outputTailBytes:])
	}
	return out
}
