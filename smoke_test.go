package crabbox_test

// Integration tests of the smoke engine on leases of the embedded local
// cloud (crabboxtest): real in-process SSH servers that allow 10 concurrent
// sessions per connection, commands run by /bin/sh in the machine's
// directory.

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/crabboxtest"
	"github.com/crabbox/crabbox-go/internal/testenv/sshd"
	"github.com/crabbox/crabbox-go/provider/sshhost"
)

type smokeEvents struct {
	mu     sync.Mutex
	events []crabbox.Event
}

func (s *smokeEvents) add(e crabbox.Event) {
	s.mu.Lock()
	s.events = append(s.events, e)
	s.mu.Unlock()
}

func (s *smokeEvents) count(state string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, e := range s.events {
		if e.Kind == crabbox.EventSmokeCheck && e.State == state {
			n++
		}
	}
	return n
}

func (s *smokeEvents) reset() {
	s.mu.Lock()
	s.events = nil
	s.mu.Unlock()
}

func localLease(t *testing.T) (*crabbox.Lease, *smokeEvents) {
	t.Helper()
	cloud := crabboxtest.Start(t)
	ev := &smokeEvents{}
	c, err := crabbox.New(cloud, crabbox.WithStateDir(t.TempDir()),
		crabbox.WithPollBackoff(crabbox.ConstantBackoff(50*time.Millisecond)), crabbox.WithEvents(ev.add))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := c.Warmup(ctx, crabbox.WithClass("small"))
	if err != nil {
		t.Fatalf("warmup: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = l.Release(ctx)
	})
	return l, ev
}

func smokeCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func resultFor(t *testing.T, rep *crabbox.SmokeReport, title string) crabbox.CheckResult {
	t.Helper()
	for _, r := range rep.Results {
		if r.Title == title {
			return r
		}
	}
	t.Fatalf("no result %q in report", title)
	return crabbox.CheckResult{}
}

func TestSmokeLocalCloudPassAndFail(t *testing.T) {
	l, ev := localLease(t)
	ctx := smokeCtx(t)

	pass := []crabbox.SmokeCheck{
		crabbox.CommandExists("sh"),
		crabbox.CommandExists("crabbox-no-such-browser", "sh"),
		crabbox.WorkRootExists(),
		crabbox.CommandSucceeds("echo image-smoke-ok", "echo image-smoke-ok", crabbox.OutputContains("image-smoke-ok")),
		crabbox.CommandSucceeds("uname", "uname -srm", crabbox.OutputMatches(`^\S+ \S+ \S+`)),
	}
	rep, err := crabbox.Smoke(ctx, l, pass)
	if err != nil {
		t.Fatalf("passing checks: %v", err)
	}
	if !rep.OK() || rep.Passed != len(pass) || rep.Failed != 0 {
		t.Fatalf("report %+v", rep)
	}
	if rep.LeaseID != l.ID || rep.LeaseSlug != l.Slug || rep.ImageID != l.ImageID || rep.ImageID == "" ||
		rep.ImageSource != l.ImageSource || rep.Provider != l.Provider || rep.Started.IsZero() {
		t.Fatalf("report does not describe the lease: %+v vs %+v", rep, l)
	}
	if r := resultFor(t, rep, "command -v sh"); !strings.Contains(r.Output, "/sh") || r.ExitCode != 0 {
		t.Fatalf("command -v sh: %+v", r)
	}
	if ev.count("passed") != len(pass) {
		t.Fatalf("passed events %d", ev.count("passed"))
	}

	missing := crabbox.CommandExists("crabbox-no-such-tool")
	rep, err = crabbox.Smoke(ctx, l, append(pass, missing))
	if !errors.Is(err, crabbox.ErrSmokeFailed) || !strings.Contains(err.Error(), "command -v crabbox-no-such-tool") {
		t.Fatalf("missing command: err = %v", err)
	}
	if rep == nil || rep.OK() || rep.Failed != 1 || rep.Passed != len(pass) {
		t.Fatalf("report %+v", rep)
	}
	r := resultFor(t, rep, "command -v crabbox-no-such-tool")
	if r.Passed || r.ExitCode != 1 || !strings.Contains(r.Output, "not found on PATH") {
		t.Fatalf("missing result %+v", r)
	}

	// The report writes valid JUnit with the right counts.
	var b bytes.Buffer
	if err := rep.WriteJUnit(&b); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Suites []struct {
			Tests    int `xml:"tests,attr"`
			Failures int `xml:"failures,attr"`
			Cases    []struct {
				Name    string `xml:"name,attr"`
				Failure *struct {
					Message string `xml:"message,attr"`
				} `xml:"failure"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(b.Bytes(), &doc); err != nil {
		t.Fatalf("JUnit: %v", err)
	}
	if len(doc.Suites) != 1 || doc.Suites[0].Tests != len(pass)+1 || doc.Suites[0].Failures != 1 {
		t.Fatalf("JUnit counts %+v", doc)
	}
}

func TestSmokeLocalCloudConcurrentChecksShareOneConnection(t *testing.T) {
	l, ev := localLease(t)
	ctx := smokeCtx(t)
	// 25 checks at once on one connection whose server allows 10 sessions.
	// Each records its start and waits (bounded) until 10 checks have
	// started, so the run proves 10 sessions were open at the same time and
	// that the other 15 waited for a slot instead of failing.
	gate := "smoke-gate"
	if _, err := l.Run(ctx, "mkdir -p "+gate); err != nil {
		t.Fatal(err)
	}
	var checks []crabbox.SmokeCheck
	for i := range 25 {
		script := fmt.Sprintf(`touch %[1]s/%[2]d
i=0
while [ "$(ls %[1]s | wc -l)" -lt %[3]d ] && [ $i -lt 300 ]; do sleep 0.05; i=$((i+1)); done
echo started "$(ls %[1]s | wc -l)"`, gate, i, crabboxtest.MaxSessions)
		checks = append(checks, crabbox.CommandSucceeds(fmt.Sprintf("concurrent %02d", i), script,
			crabbox.OutputMatches(`started (1\d|2\d)\n`)))
	}
	rep, err := crabbox.Smoke(ctx, l, checks)
	if err != nil {
		for _, r := range rep.Results {
			if !r.Passed {
				t.Logf("%s: %s %q", r.Title, r.Error, r.Output)
			}
		}
		t.Fatalf("25 concurrent checks: %v", err)
	}
	if rep.Passed != 25 || ev.count("passed") != 25 {
		t.Fatalf("passed %d, events %d", rep.Passed, ev.count("passed"))
	}
	for i, r := range rep.Results {
		if r.Title != fmt.Sprintf("concurrent %02d", i) || r.Attempts != 1 {
			t.Fatalf("result %d: %+v", i, r)
		}
	}
}

func TestSmokeLocalCloudHygieneCatchesPlantedState(t *testing.T) {
	l, _ := localLease(t)
	ctx := smokeCtx(t)

	rep, err := crabbox.Smoke(ctx, l, crabbox.Hygiene())
	if err != nil {
		for _, r := range rep.Results {
			t.Logf("%s: %s %q", r.Title, r.Error, r.Output)
		}
		t.Fatalf("fresh lease is not clean: %v", err)
	}

	// Plant a fake token file in $HOME and a node_modules in the work root
	// (commands start in the work root).
	plant := `mkdir -p "$HOME/.aws" && printf '[default]\naws_access_key_id = AKIAFAKEFAKEFAKE\naws_secret_access_key = fake\n' > "$HOME/.aws/credentials"
mkdir -p app/node_modules/left-pad && echo 'module.exports = 1' > app/node_modules/left-pad/index.js`
	if _, err := l.Run(ctx, plant); err != nil {
		t.Fatal(err)
	}
	rep, err = crabbox.Smoke(ctx, l, crabbox.Hygiene())
	if !errors.Is(err, crabbox.ErrSmokeFailed) || rep.Failed != 2 || rep.Passed != 2 {
		t.Fatalf("planted state: %v, report %+v", err, rep)
	}
	creds := resultFor(t, rep, crabbox.NoCredentials().Title)
	if creds.Passed || !strings.Contains(creds.Output, "aws credentials: ") || !strings.Contains(creds.Output, "/.aws/credentials") {
		t.Fatalf("credentials: %+v", creds)
	}
	repo := resultFor(t, rep, crabbox.NoRepositoryCheckouts().Title)
	if repo.Passed || !strings.Contains(repo.Output, "/work/crabbox/app/node_modules") {
		t.Fatalf("checkouts: %+v", repo)
	}
	if !strings.Contains(err.Error(), crabbox.NoCredentials().Title) || !strings.Contains(err.Error(), crabbox.NoRepositoryCheckouts().Title) {
		t.Fatalf("error does not name the failing checks: %v", err)
	}
	// Findings are paths inside the machine, not elsewhere on the host.
	if root := boxRoot(t, l); !strings.Contains(creds.Output, root) {
		t.Fatalf("finding outside the machine's fs root %s: %q", root, creds.Output)
	}
}

func TestSmokeLocalCloudRetryMakesFlakyCheckPass(t *testing.T) {
	l, ev := localLease(t)
	ctx := smokeCtx(t)
	script := `n=$(cat flaky-counter 2>/dev/null || echo 0); n=$((n+1)); echo $n > flaky-counter; echo attempt $n; [ "$n" -ge 2 ]`
	flaky := crabbox.CommandSucceeds("flaky", script).WithRetry(2, 50*time.Millisecond)
	rep, err := crabbox.Smoke(ctx, l, []crabbox.SmokeCheck{flaky})
	if err != nil {
		t.Fatalf("flaky with retry: %v", err)
	}
	r := rep.Results[0]
	if !r.Passed || r.Attempts != 2 || !strings.Contains(r.Output, "attempt 2") {
		t.Fatalf("result %+v", r)
	}
	if ev.count("retrying") != 1 {
		t.Fatalf("retrying events %d", ev.count("retrying"))
	}

	// The same check without retries fails on a fresh counter.
	if _, err := l.Run(ctx, "rm -f flaky-counter"); err != nil {
		t.Fatal(err)
	}
	rep, err = crabbox.Smoke(ctx, l, []crabbox.SmokeCheck{flaky.WithRetry(0, 0)})
	if !errors.Is(err, crabbox.ErrSmokeFailed) || rep.Results[0].Attempts != 1 {
		t.Fatalf("without retry: %v %+v", err, rep.Results[0])
	}
}

func TestSmokeLocalCloudCheckSets(t *testing.T) {
	l, _ := localLease(t)
	ctx := smokeCtx(t)
	evidence := t.TempDir()
	rep, err := crabbox.Smoke(ctx, l, crabbox.SourceVerification(crabbox.CheckSetOptions{Tools: []string{"sh", "cat"}, Hygiene: true}),
		crabbox.WithEvidenceDir(evidence))
	if err != nil {
		for _, r := range rep.Results {
			t.Logf("%s: %s %q", r.Title, r.Error, r.Output)
		}
		t.Fatalf("source verification: %v", err)
	}
	st, err := os.Stat(filepath.Join(boxRoot(t, l), "var/cache/crabbox/pnpm"))
	if err != nil || st.Mode()&os.ModeSticky == 0 || st.Mode().Perm() != 0o777 {
		t.Fatalf("pnpm cache dir: %v %v", st, err)
	}
	rep, err = crabbox.Smoke(ctx, l, crabbox.CandidateSmoke(crabbox.CheckSetOptions{Tools: []string{"sh"}}))
	if err != nil || !rep.OK() {
		t.Fatalf("candidate smoke: %v", err)
	}
	rep, err = l.Smoke(ctx, crabbox.PromotedSmoke(crabbox.CheckSetOptions{Tools: []string{"sh"}}))
	if err != nil || !rep.OK() || rep.Results[0].Output != "promoted-image-smoke-ok\n" {
		t.Fatalf("promoted smoke: %v %+v", err, rep)
	}
}

func TestSmokeLocalCloudScreenshot(t *testing.T) {
	needTools(t, "Xvfb", "scrot")
	cloud := crabboxtest.Start(t)
	c, err := crabbox.New(cloud, crabbox.WithStateDir(t.TempDir()),
		crabbox.WithPollBackoff(crabbox.ConstantBackoff(50*time.Millisecond)))
	if err != nil {
		t.Fatal(err)
	}
	ctx := smokeCtx(t)
	l, err := c.Warmup(ctx, crabbox.WithClass("small"), crabbox.WithDesktop())
	if err != nil {
		t.Fatalf("desktop warmup: %v", err)
	}
	t.Cleanup(func() { _ = l.Release(context.Background()) })
	evidence := t.TempDir()

	// An empty desktop is blank: the check fails, and keeps the picture.
	rep, err := crabbox.Smoke(ctx, l, []crabbox.SmokeCheck{crabbox.ScreenshotNotBlank().WithRetry(0, 0)},
		crabbox.WithEvidenceDir(evidence))
	if !errors.Is(err, crabbox.ErrSmokeFailed) {
		t.Fatalf("blank desktop passed: %v", err)
	}
	r := rep.Results[0]
	if r.Passed || !strings.Contains(r.Error, "blank") || len(r.Evidence) != 1 || len(r.PNG) == 0 {
		t.Fatalf("blank result %+v", r)
	}
	if st, err := crabbox.JudgeScreenshot(r.PNG); err != nil || !st.Blank() {
		t.Fatalf("kept PNG: %v %v", st, err)
	}

	// With a browser window the same check passes (retrying while the
	// window comes up). The profile lives under the machine's /tmp, so the
	// browser-profile hygiene check still passes.
	needTools(t, "chromium")
	start := `P="${CRABBOX_FS_ROOT:-}/tmp/smoke-browser"; mkdir -p "$P"
chromium --no-sandbox --disable-gpu --no-first-run --disable-background-networking --disable-component-update \
  --disable-sync --user-data-dir="$P/profile" --window-size=1280,800 --window-position=0,0 \
  "data:text/html,<body style='font:40px sans-serif'><h1>crabbox</h1><p style='color:%23c00'>smoke</p></body>" \
  </dev/null >/dev/null 2>&1 &
echo $! > "$P/pid"`
	if _, err := l.Run(ctx, start); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	t.Cleanup(func() {
		_, _ = l.Run(context.Background(), `kill "$(cat "${CRABBOX_FS_ROOT:-}/tmp/smoke-browser/pid")" 2>/dev/null; true`)
	})
	rep, err = crabbox.Smoke(ctx, l, []crabbox.SmokeCheck{
		crabbox.ScreenshotNotBlank().WithRetry(60, 500*time.Millisecond),
		crabbox.NoBrowserProfiles(),
	}, crabbox.WithEvidenceDir(evidence))
	if err != nil {
		t.Fatalf("desktop with a browser window: %v (%+v)", err, rep.Results)
	}
	r = rep.Results[0]
	if len(r.Evidence) != 1 || !strings.HasPrefix(r.Evidence[0], evidence) {
		t.Fatalf("evidence %v", r.Evidence)
	}
	data, err := os.ReadFile(r.Evidence[0])
	if err != nil || !bytes.Equal(data, r.PNG) {
		t.Fatalf("evidence file: %v", err)
	}
	t.Logf("%s after %d attempts", r.Output, r.Attempts)
}

// needTools skips outside CI when a program is missing, and fails in CI.
func needTools(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is required in CI: %v", n, err)
			}
			t.Skipf("%s not installed: %v", n, err)
		}
	}
}

// Smoke a lease with the runbook's candidate checks (here on the embedded
// local cloud, with the tools its machines have), then keep the report as
// JSON and JUnit next to the candidate image's record.
func ExampleSmoke() {
	cloud, err := crabboxtest.New()
	if err != nil {
		panic(err)
	}
	defer cloud.Close()
	stateDir, err := os.MkdirTemp("", "crabbox-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(stateDir)
	c, err := crabbox.New(cloud, crabbox.WithStateDir(stateDir))
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	l, err := c.Warmup(ctx, crabbox.WithClass("small"))
	if err != nil {
		panic(err)
	}
	defer l.Release(ctx)

	checks := crabbox.CandidateSmoke(crabbox.CheckSetOptions{Tools: []string{"sh"}})
	checks = append(checks, crabbox.CommandExists("crabbox-no-such-tool"))
	rep, err := crabbox.Smoke(ctx, l, checks)
	for _, r := range rep.Results {
		fmt.Printf("%-6v %s\n", r.Passed, r.Title)
	}
	fmt.Println(rep.Passed, "passed,", rep.Failed, "failed; ok:", rep.OK(), "; smoke failed:", errors.Is(err, crabbox.ErrSmokeFailed))

	var js, junit bytes.Buffer
	_ = rep.WriteJSON(&js)
	_ = rep.WriteJUnit(&junit)
	fmt.Println(strings.Contains(js.String(), `"image_id": "`+l.ImageID+`"`), strings.Contains(junit.String(), `failures="1"`))
	// Output:
	// true   echo image-smoke-ok
	// true   uname -srm
	// true   command -v sh
	// true   test -d /work/crabbox
	// true   no credentials or tokens
	// true   no browser profiles, cookies or chat sessions
	// true   no repository checkouts, node_modules or dist
	// true   no operator notes, screenshots or videos
	// false  command -v crabbox-no-such-tool
	// 8 passed, 1 failed; ok: false ; smoke failed: true
	// true true
}

func TestSSHDSmokeBeyondMaxSessions(t *testing.T) {
	// Default OpenSSH MaxSessions 10: 25 concurrent checks share one
	// connection and must all pass by waiting for free session slots.
	srv := sshd.Start(t, sshd.Options{})
	c, _ := sshhostClient(t, []sshhost.Host{hostFor(srv)})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := c.Warmup(ctx)
	require.NoError(t, err)
	defer l.Release(context.Background())
	// Each check waits at a gate until 10 checks have arrived, so the
	// smoke passes only if 10 run at the same time on the one connection;
	// the other 15 must wait for free session slots.
	gate := fmt.Sprintf("$HOME/gate-%d", time.Now().UnixNano())
	var checks []crabbox.SmokeCheck
	for i := 0; i < 25; i++ {
		cmd := fmt.Sprintf(`mkdir -p %[1]s && touch %[1]s/%[2]d
while [ "$(ls %[1]s | wc -l)" -lt 10 ]; do sleep 0.05; done
echo check-%[2]d`, gate, i)
		checks = append(checks, crabbox.CommandSucceeds(fmt.Sprintf("check %d", i), cmd,
			crabbox.OutputContains(fmt.Sprintf("check-%d", i))).WithTimeout(30*time.Second))
	}
	rep, err := crabbox.Smoke(ctx, l, checks)
	require.NoError(t, err)
	assert.True(t, rep.OK())
	assert.Equal(t, 25, rep.Passed)
}
