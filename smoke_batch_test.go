// Tests of smoke batching against a real sshd: the shell checks of a smoke
// share one session, keep their own exit codes, output, timeouts and
// retries, and fall back to a session each where the runner cannot set up.

package crabbox_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/internal/testenv/sshd"
	"github.com/crabbox/crabbox-go/provider/sshhost"
)

func batchLease(t *testing.T, extra ...string) *crabbox.Lease {
	t.Helper()
	srv := sshd.Start(t, sshd.Options{Extra: extra})
	c, _ := sshhostClient(t, []sshhost.Host{hostFor(srv)})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := c.Warmup(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { l.Release(context.Background()) })
	return l
}

// gatedChecks are n checks that each wait (up to 20 s) until all n have
// started: they pass only if all run at the same time.
func gatedChecks(n int) []crabbox.SmokeCheck {
	gate := fmt.Sprintf("$HOME/gate-%d", time.Now().UnixNano())
	var checks []crabbox.SmokeCheck
	for i := range n {
		cmd := fmt.Sprintf(`mkdir -p %[1]s && touch %[1]s/%[2]d
i=0; while [ "$(ls %[1]s | wc -l)" -lt %[3]d ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done
[ "$(ls %[1]s | wc -l)" -ge %[3]d ] && echo check-%[2]d`, gate, i, n)
		checks = append(checks, crabbox.CommandSucceeds(fmt.Sprintf("gated %d", i), cmd,
			crabbox.OutputContains(fmt.Sprintf("check-%d", i))).WithTimeout(40*time.Second))
	}
	return checks
}

// TestSmokeBatchRunsShellChecksInOneSession: with MaxSessions 1, 14 checks
// that each wait for all 14 can only pass if they share one session.
func TestSmokeBatchRunsShellChecksInOneSession(t *testing.T) {
	l := batchLease(t, "MaxSessions 1")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := crabbox.Smoke(ctx, l, gatedChecks(14), crabbox.WithBatchedChecks())
	for _, r := range rep.Results {
		if !r.Passed {
			t.Logf("%s: %s %q", r.Title, r.Error, r.Output)
		}
	}
	require.NoError(t, err)
	assert.Equal(t, 14, rep.Passed)
}

// TestSmokeBatchKeepsPerCheckResults: exit codes, output tails (stdout and
// stderr), expectations, a check's timeout and retries come back per check
// as they did with a session each.
func TestSmokeBatchKeepsPerCheckResults(t *testing.T) {
	l := batchLease(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	flag := fmt.Sprintf("$HOME/flaky-%d", time.Now().UnixNano())
	big := 2 << 20 // more than a capture keeps from the start
	checks := []crabbox.SmokeCheck{
		crabbox.CommandSucceeds("exit 3", "echo out; echo err >&2; exit 3", crabbox.ExitCode(3), crabbox.OutputContains("out")),
		crabbox.CommandSucceeds("fails", "echo nope >&2; exit 1"),
		crabbox.CommandSucceeds("hangs", "sleep 60").WithTimeout(time.Second),
		crabbox.CommandSucceeds("flaky", fmt.Sprintf("[ -e %[1]s ] && echo attempt 2 || { touch %[1]s; exit 1; }", flag),
			crabbox.OutputContains("attempt 2")).WithRetry(2, 100*time.Millisecond),
		crabbox.CommandSucceeds("big", fmt.Sprintf("head -c %d /dev/zero | tr '\\0' a; echo; echo the-end", big),
			crabbox.OutputMatches(`^a{100}`)),
		crabbox.CommandExists("sh"),
		crabbox.CommandExists("crabbox-no-such-tool"),
		crabbox.DirExists("/"),
		// Every process's command line, the runner's included: neither the
		// frame boundary nor the other checks' commands are in it.
		crabbox.CommandSucceeds("process list", `cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\0' ' '; echo listed`,
			crabbox.OutputContains("listed")),
	}
	start := time.Now()
	rep, err := crabbox.Smoke(ctx, l, checks, crabbox.WithBatchedChecks())
	require.ErrorIs(t, err, crabbox.ErrSmokeFailed)
	assert.Less(t, time.Since(start), 50*time.Second, "the hung check must not hold the smoke for its 60 s")
	byTitle := map[string]crabbox.CheckResult{}
	for _, r := range rep.Results {
		byTitle[r.Title] = r
	}
	r := byTitle["exit 3"]
	assert.True(t, r.Passed, r.Error)
	assert.Equal(t, 3, r.ExitCode)
	assert.Equal(t, "out\nerr\n", r.Output)
	r = byTitle["fails"]
	assert.False(t, r.Passed)
	assert.Equal(t, 1, r.ExitCode)
	assert.Equal(t, "nope\n", r.Output)
	assert.Contains(t, r.Error, "exit code 1, want 0")
	r = byTitle["hangs"]
	assert.False(t, r.Passed)
	assert.Equal(t, -1, r.ExitCode)
	assert.Contains(t, r.Error, "timed out after 1s")
	r = byTitle["flaky"]
	assert.True(t, r.Passed, r.Error)
	assert.Equal(t, 2, r.Attempts)
	r = byTitle["big"]
	assert.True(t, r.Passed, r.Error)
	assert.True(t, strings.HasSuffix(r.Output, "a\nthe-end\n"), "the tail is the output's end")
	assert.LessOrEqual(t, len(r.Output), 4<<10)
	assert.True(t, byTitle["command -v sh"].Passed)
	assert.False(t, byTitle["command -v crabbox-no-such-tool"].Passed)
	assert.Contains(t, byTitle["command -v crabbox-no-such-tool"].Output, "not found on PATH")
	assert.True(t, byTitle["test -d /"].Passed)
	assert.True(t, byTitle["process list"].Passed, byTitle["process list"].Error)
	assert.Equal(t, 6, rep.Passed)
	assert.Equal(t, 3, rep.Failed)
}

// TestSmokeBatchFallsBackWithoutARunner: where the runner cannot set up
// (here: no usable temp dir), every check runs in a session of its own.
func TestSmokeBatchFallsBackWithoutARunner(t *testing.T) {
	l := batchLease(t, "SetEnv TMPDIR=/nonexistent/crabbox")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := crabbox.Smoke(ctx, l, []crabbox.SmokeCheck{
		crabbox.CommandSucceeds("tmpdir", `echo "$TMPDIR"`, crabbox.OutputContains("/nonexistent/crabbox")),
		crabbox.CommandSucceeds("exit 4", "exit 4", crabbox.ExitCode(4)),
	}, crabbox.WithBatchedChecks())
	require.NoError(t, err)
	assert.Equal(t, 2, rep.Passed)
}
