package crabbox

// Tests of smoke.go, the smoke engine, on a real local shell: retries,
// timeouts, concurrency, arguments, cancellation, output capture, evidence.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// shellTarget runs checks with a real /bin/sh on this machine, inside a
// directory tree standing for the box's file system (CRABBOX_FS_ROOT), the
// way the embedded local cloud does. Screenshots come from shot.
type shellTarget struct {
	root  string
	home  string
	shell string // default /bin/sh
	shot  func() ([]byte, error)

	inflight, maxInflight atomic.Int64
	calls                 atomic.Int64
}

func newShellTarget(t *testing.T) *shellTarget {
	t.Helper()
	root := t.TempDir()
	home := filepath.Join(root, "home", "crabbox")
	for _, d := range []string{home, filepath.Join(root, "root"), filepath.Join(root, "work", "crabbox")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return &shellTarget{root: root, home: home}
}

func (s *shellTarget) runCommand(ctx context.Context, command string, stdout, stderr io.Writer) (int, error) {
	n := s.inflight.Add(1)
	defer s.inflight.Add(-1)
	for {
		m := s.maxInflight.Load()
		if n <= m || s.maxInflight.CompareAndSwap(m, n) {
			break
		}
	}
	s.calls.Add(1)
	shell := s.shell
	if shell == "" {
		shell = "/bin/sh"
	}
	cmd := exec.CommandContext(ctx, shell, "-c", command)
	cmd.Dir = s.home
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + s.home, "CRABBOX_FS_ROOT=" + s.root}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		return -1, ctx.Err()
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), nil
	}
	if err != nil {
		return -1, err
	}
	return 0, nil
}

func (s *shellTarget) screenshot(ctx context.Context) ([]byte, error) {
	if s.shot == nil {
		return nil, errors.New("no display")
	}
	return s.shot()
}

func (s *shellTarget) plant(t *testing.T, rel, content string) string {
	t.Helper()
	p := filepath.Join(s.root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func (s *shellTarget) mkdir(t *testing.T, rel string) string {
	t.Helper()
	p := filepath.Join(s.root, rel)
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

type eventLog struct {
	mu     sync.Mutex
	events []Event
}

func (l *eventLog) add(e Event) { l.mu.Lock(); l.events = append(l.events, e); l.mu.Unlock() }

func (l *eventLog) states(title string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, e := range l.events {
		if e.Kind == EventSmokeCheck && strings.HasPrefix(e.Message, title) {
			out = append(out, e.State)
		}
	}
	return out
}

func smokeOn(t *testing.T, tg *shellTarget, checks []SmokeCheck, opts ...SmokeOption) (*SmokeReport, *eventLog, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log := &eventLog{}
	rep := &SmokeReport{LeaseID: "cbx_0123456789ab", LeaseSlug: "brisk-crab", ImageID: "img-1", Provider: "shell", Results: []CheckResult{}}
	err := runSmoke(ctx, tg, rep, log.add, time.Now, checks, opts)
	return rep, log, err
}

func one(t *testing.T, tg *shellTarget, c SmokeCheck) CheckResult {
	t.Helper()
	rep, _, _ := smokeOn(t, tg, []SmokeCheck{c})
	if len(rep.Results) != 1 {
		t.Fatalf("results: %d", len(rep.Results))
	}
	return rep.Results[0]
}

func TestRetryMakesFlakyCheckPass(t *testing.T) {
	tg := newShellTarget(t)
	counter := filepath.Join(tg.root, "counter")
	script := fmt.Sprintf(`n=$(cat %[1]s 2>/dev/null || echo 0); n=$((n+1)); echo $n > %[1]s; echo attempt $n; [ "$n" -ge 2 ]`, ShellQuote(counter))
	flaky := CommandSucceeds("flaky", script)
	rep, log, err := smokeOn(t, tg, []SmokeCheck{flaky.WithRetry(2, 10*time.Millisecond)})
	if err != nil {
		t.Fatalf("flaky with retry: %v", err)
	}
	r := rep.Results[0]
	if !r.Passed || r.Attempts != 2 || !strings.Contains(r.Output, "attempt 2") {
		t.Fatalf("result %+v", r)
	}
	if got := strings.Join(log.states("flaky"), ","); got != "running,retrying,running,passed" {
		t.Fatalf("events %s", got)
	}
	// Without retries the same kind of check fails on its first attempt.
	os.Remove(counter)
	rep, _, err = smokeOn(t, tg, []SmokeCheck{flaky})
	if !errors.Is(err, ErrSmokeFailed) || rep.Results[0].Attempts != 1 || rep.Results[0].ExitCode != 1 {
		t.Fatalf("flaky without retry: %v %+v", err, rep.Results[0])
	}
	// Retries are bounded.
	rep, _, _ = smokeOn(t, tg, []SmokeCheck{CommandSucceeds("always", "exit 1").WithRetry(2, 0)})
	if rep.Results[0].Attempts != 3 || rep.Results[0].Passed {
		t.Fatalf("always failing: %+v", rep.Results[0])
	}
}

func TestCheckTimeout(t *testing.T) {
	tg := newShellTarget(t)
	rep, _, err := smokeOn(t, tg, []SmokeCheck{
		CommandSucceeds("slow", "sleep 30").WithTimeout(100 * time.Millisecond),
		CommandSucceeds("quick", "true"),
	})
	if !errors.Is(err, ErrSmokeFailed) || !strings.Contains(err.Error(), `"slow"`) || strings.Contains(err.Error(), `"quick"`) {
		t.Fatalf("err = %v", err)
	}
	r := rep.Results[0]
	if r.Passed || !strings.Contains(r.Error, "timed out") || r.ExitCode != -1 {
		t.Fatalf("slow: %+v", r)
	}
	if !rep.Results[1].Passed || rep.Passed != 1 || rep.Failed != 1 || rep.OK() {
		t.Fatalf("report %+v", rep)
	}
}

func TestSmokeConcurrency(t *testing.T) {
	tg := newShellTarget(t)
	// Each check waits until a file shows that 5 checks have started (or a
	// bound passes), so full concurrency is observed, not assumed.
	dir := tg.mkdir(t, "gate")
	var checks []SmokeCheck
	for i := range 5 {
		script := fmt.Sprintf(`touch %s/%d; i=0; while [ $(ls %s | wc -l) -lt 5 ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; echo started $(ls %s | wc -l)`,
			ShellQuote(dir), i, ShellQuote(dir), ShellQuote(dir))
		checks = append(checks, CommandSucceeds(fmt.Sprintf("c%d", i), script, OutputContains("started 5")))
	}
	rep, _, err := smokeOn(t, tg, checks)
	if err != nil || tg.maxInflight.Load() != 5 {
		t.Fatalf("default concurrency: %v, max in flight %d", err, tg.maxInflight.Load())
	}
	if len(rep.Results) != 5 || rep.Passed != 5 {
		t.Fatalf("report %+v", rep)
	}
	for i, r := range rep.Results {
		if r.Title != fmt.Sprintf("c%d", i) {
			t.Fatalf("results out of order: %d %q", i, r.Title)
		}
	}

	tg2 := newShellTarget(t)
	var many []SmokeCheck
	for range 12 {
		many = append(many, CommandSucceeds("sleepy", "sleep 0.05"))
	}
	if _, _, err := smokeOn(t, tg2, many, WithSmokeConcurrency(3)); err != nil {
		t.Fatal(err)
	}
	if m := tg2.maxInflight.Load(); m > 3 || m < 1 || tg2.calls.Load() != 12 {
		t.Fatalf("limit 3: max in flight %d, calls %d", m, tg2.calls.Load())
	}
}

func TestSmokeArguments(t *testing.T) {
	tg := newShellTarget(t)
	if _, _, err := smokeOn(t, tg, nil); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("no checks: %v", err)
	}
	if _, _, err := smokeOn(t, tg, []SmokeCheck{WorkRootExists()}, WithSmokeConcurrency(0)); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("concurrency 0: %v", err)
	}
	if _, _, err := smokeOn(t, tg, []SmokeCheck{WorkRootExists()}, WithEvidenceDir("")); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("empty evidence dir: %v", err)
	}
	rep, err := Smoke(context.Background(), nil, []SmokeCheck{WorkRootExists()})
	if rep != nil || !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("nil lease: %v %v", rep, err)
	}
	l := &Lease{ID: "cbx_0123456789ab", ImageID: "img-9", ImageSource: ImageExplicit, Provider: "x"}
	rep, err = Smoke(context.Background(), l, nil)
	if rep == nil || !errors.Is(err, ErrInvalidArgument) || rep.ImageID != "img-9" || rep.ImageSource != ImageExplicit {
		t.Fatalf("no checks on a lease: %+v %v", rep, err)
	}
}

func TestSmokeCancelled(t *testing.T) {
	tg := newShellTarget(t)
	ctx, cancel := context.WithCancel(context.Background())
	rep := &SmokeReport{}
	go func() { time.Sleep(100 * time.Millisecond); cancel() }()
	err := runSmoke(ctx, tg, rep, nil, time.Now, []SmokeCheck{
		CommandSucceeds("long", "sleep 30").WithRetry(5, time.Hour),
	}, nil)
	if !errors.Is(err, ErrSmokeFailed) || !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if rep.Results[0].Attempts != 1 || rep.OK() {
		t.Fatalf("cancelled check: %+v", rep.Results[0])
	}
}

func TestCaptureBounds(t *testing.T) {
	c := newCapture()
	big := strings.Repeat("a", outputHeadBytes) + "TAIL-" + strings.Repeat("é", outputTailBytes)
	for i := 0; i < len(big); i += 1000 {
		c.Write([]byte(big[i:min(i+1000, len(big))]))
	}
	if len(c.headString()) != outputHeadBytes {
		t.Fatalf("head %d", len(c.headString()))
	}
	tail := c.tailString()
	if len(tail) > outputTailBytes || !strings.HasSuffix(tail, "é") || !strings.HasPrefix(tail, "é") {
		t.Fatalf("tail %d %q...", len(tail), tail[:8])
	}
	if got := combineOutput("out", "err"); got != "out\nerr" {
		t.Fatalf("combine %q", got)
	}
	if got := combineOutput(strings.Repeat("x", outputTailBytes), "err\n"); len(got) != outputTailBytes || !strings.HasSuffix(got, "x\nerr\n") {
		t.Fatalf("combine long %d", len(got))
	}
}

func TestFileSafe(t *testing.T) {
	for in, want := range map[string]string{
		"screenshot of display :99 is not blank": "screenshot-of-display-99-is-not-blank",
		"../../etc/passwd":                       "etc-passwd",
		"":                                       "x",
		"cbx_0123456789ab":                       "cbx_0123456789ab",
	} {
		if got := fileSafe(in, 48); got != want {
			t.Errorf("fileSafe(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestEvidenceFilesDoNotCollide(t *testing.T) {
	tg := newShellTarget(t)
	dir := t.TempDir()
	c := SmokeCheck{Title: "two pictures", Kind: "test", run: func(context.Context, smokeTarget) attempt {
		return attempt{exitCode: -1, png: []byte("shot"), files: []evidenceFile{{ext: "png", data: []byte("other")}, {ext: "webm", data: []byte("video")}}}
	}}
	rep, _, err := smokeOn(t, tg, []SmokeCheck{c}, WithEvidenceDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	ev := rep.Results[0].Evidence
	if len(ev) != 3 {
		t.Fatalf("evidence %v", ev)
	}
	want := []string{"shot", "other", "video"}
	for i, p := range ev {
		b, err := os.ReadFile(p)
		if err != nil || string(b) != want[i] {
			t.Fatalf("%s: %q %v", p, b, err)
		}
	}
}
