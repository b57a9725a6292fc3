package crabbox

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The frame parser recovers each check's exit code, stdout and stderr
// however the transport splits the stream, including output that contains
// the start of the boundary, no trailing newline, or nothing at all.
func TestFrameWriterSplitsAnywhere(t *testing.T) {
	outs := []struct{ stdout, stderr string }{
		{"hello\n", ""},
		{"", "only stderr"},
		{"", ""},
		{"no newline", "err\n"},
		{"--crabbox-end-", "--crabbox-end-00--\n"}, // looks like the boundary's start
		{strings.Repeat("x", 9000) + "\nend\n", "tail"},
	}
	codes := []int{0, 1, 0, 127, 3, 0}
	for _, chunk := range []int{1, 2, 7, 64, 1 << 20} {
		reqs := make([]*batchReq, len(outs))
		for i := range reqs {
			reqs[i] = &batchReq{stdout: newCapture(), stderr: newCapture(), done: make(chan batchResult, 1), run: &batchRun{left: len(outs)}}
		}
		w := newFrameWriter(reqs)
		var stream strings.Builder
		order := []int{3, 0, 5, 1, 4, 2} // frames come in the order checks finish
		for _, i := range order {
			stream.WriteString(batchMarker + " " + strconv.Itoa(i) + " " + strconv.Itoa(codes[i]) + "\n")
			stream.WriteString(outs[i].stdout + w.boundary + "\n" + outs[i].stderr + w.boundary + "\n")
		}
		s := stream.String()
		for len(s) > 0 {
			n := min(chunk, len(s))
			if _, err := w.Write([]byte(s[:n])); err != nil {
				t.Fatal(err)
			}
			s = s[n:]
		}
		if w.err != nil || w.frames != len(outs) {
			t.Fatalf("chunk %d: %d frames, err %v", chunk, w.frames, w.err)
		}
		for i, r := range reqs {
			res := <-r.done
			if res.code != codes[i] || res.err != nil {
				t.Errorf("chunk %d, check %d: code %d err %v, want %d", chunk, i, res.code, res.err, codes[i])
			}
			if got := r.stdout.headString(); got != outs[i].stdout {
				t.Errorf("chunk %d, check %d: stdout %q, want %q", chunk, i, trunc(got), trunc(outs[i].stdout))
			}
			if got := r.stderr.headString(); got != outs[i].stderr {
				t.Errorf("chunk %d, check %d: stderr %q, want %q", chunk, i, got, outs[i].stderr)
			}
			if r.stdout.total != int64(len(outs[i].stdout)) {
				t.Errorf("chunk %d, check %d: stdout total %d, want %d", chunk, i, r.stdout.total, len(outs[i].stdout))
			}
		}
	}
}

// A header that is not a frame stops the parse with an error (the batch's
// checks then fail as "runner ended before this check finished").
func TestFrameWriterRefusesBadHeaders(t *testing.T) {
	for _, h := range []string{"garbage\n", batchMarker + " 9 0\n", batchMarker + " 0 -1\n", batchMarker + " 0\n", batchMarker + " x 0\n"} {
		reqs := []*batchReq{{stdout: newCapture(), stderr: newCapture(), done: make(chan batchResult, 1), run: &batchRun{left: 1}}}
		w := newFrameWriter(reqs)
		_, _ = w.Write([]byte(h))
		if w.err == nil {
			t.Errorf("header %q accepted", h)
		}
	}
}

func trunc(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// trackingTarget is a shellTarget that counts the running shell checks as
// a batching target does, and records how many were counted when each
// command arrived.
type trackingTarget struct {
	*shellTarget
	mu       sync.Mutex
	active   int
	counted  int
	seen     []int
	arrived  chan struct{} // closed at the first command
	once     sync.Once
	holdNext func(n int)
}

func (t *trackingTarget) checkActive(delta int) {
	if delta > 0 && t.holdNext != nil {
		t.mu.Lock()
		t.counted++
		n := t.counted
		t.mu.Unlock()
		t.holdNext(n)
	}
	t.mu.Lock()
	t.active += delta
	t.mu.Unlock()
}

func (t *trackingTarget) runCommand(ctx context.Context, command string, stdout, stderr io.Writer) (int, error) {
	t.mu.Lock()
	t.seen = append(t.seen, t.active)
	t.mu.Unlock()
	t.once.Do(func() { close(t.arrived) })
	return t.shellTarget.runCommand(ctx, command, stdout, stderr)
}

// TestSmokeCountsEveryCheckBeforeTheFirstRuns: a batching target must know
// all the smoke's shell checks that may run at once before the first sends
// its command, or that check goes alone (with MaxSessions 1 it then held
// the only slot while the rest waited: TestSmokeBatchRunsShellChecksInOneSession
// failed in CI). The second count waits for the first command to arrive:
// counting while checks already run lets it. With a concurrency limit the
// first wave is the limit's worth, and no more are ever counted at once.
func TestSmokeCountsEveryCheckBeforeTheFirstRuns(t *testing.T) {
	const n = 6
	for _, limit := range []int{0, n, 3} {
		t.Run(fmt.Sprintf("limit %d", limit), func(t *testing.T) {
			tg := &trackingTarget{shellTarget: newShellTarget(t), arrived: make(chan struct{})}
			tg.holdNext = func(k int) {
				if k == 2 {
					select {
					case <-tg.arrived:
					case <-time.After(300 * time.Millisecond):
					}
				}
			}
			var checks []SmokeCheck
			for i := range n {
				checks = append(checks, CommandSucceeds(fmt.Sprintf("c%d", i), "sleep 0.05"))
			}
			var opts []SmokeOption
			want := n
			if limit > 0 {
				opts = append(opts, WithSmokeConcurrency(limit))
				want = limit
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			rep := &SmokeReport{LeaseID: "cbx_0123456789ab", Results: []CheckResult{}}
			if err := runSmoke(ctx, tg, rep, nil, time.Now, checks, opts); err != nil {
				t.Fatal(err)
			}
			if len(tg.seen) != n {
				t.Fatalf("%d commands ran, want %d", len(tg.seen), n)
			}
			if tg.seen[0] != want {
				t.Errorf("the first command arrived with %d checks counted, want %d", tg.seen[0], want)
			}
			for i, a := range tg.seen {
				if a > want {
					t.Errorf("command %d arrived with %d checks counted, more than %d run at once", i, a, want)
				}
			}
			if tg.active != 0 {
				t.Errorf("%d checks still counted after the smoke", tg.active)
			}
		})
	}
}
