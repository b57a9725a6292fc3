// Smoke batching: the shell checks of one Smoke that are running at the
// same moment go to the box together, in one SSH session, where a generated
// runner (smoke_batch.sh) runs them concurrently with per-check timeouts
// and streams each check's exit code and output back in a frame as it
// finishes.

package crabbox

import (
	"bytes"
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/crabbox/crabbox-go/internal/sshx"
	"github.com/crabbox/crabbox-go/provider"
)

//go:embed smoke_batch.sh
var smokeBatchScript string

const (
	// batchWindow is how long a batch waits for more commands when not
	// every running shell check has sent one yet; firstBatchWindow for the
	// smoke's first batch, when every check starts at once but a loaded
	// machine may start their goroutines tens of milliseconds apart (a
	// check left out of it needs a session of its own).
	batchWindow      = 5 * time.Millisecond
	firstBatchWindow = 250 * time.Millisecond
	// batchMaxBytes bounds the commands of one batch (Linux refuses a
	// single argument over 128 KiB; sshd passes the command line as one,
	// and the runner quotes the commands twice).
	batchMaxBytes = 32 << 10
	// batchSetupFailed is the runner's exit code when it could not set up
	// (no mktemp or mkfifo): its commands then run one session each.
	batchSetupFailed = 97
	// batchMarker starts every frame header.
	batchMarker = "crabbox-frame"
)

// batchableKind reports the kinds whose checks run one shell command per
// attempt into captured output (commandCheck), and so can share a batch.
func batchableKind(kind string) bool {
	switch kind {
	case KindCommandExists, KindDirExists, KindFileExists, KindCommand, KindHygiene:
		return true
	}
	return false
}

// checkTracker is implemented by targets that want to know how many
// batchable checks are running (runSmoke tells them).
type checkTracker interface {
	checkActive(delta int)
}

// batchTarget is a lease target whose captured shell commands are batched;
// everything else (screenshots, desktop scripts, fetches) goes to the lease
// as before.
type batchTarget struct {
	leaseTarget
	b *batcher
}

func (t batchTarget) runCommand(ctx context.Context, command string, stdout, stderr io.Writer) (int, error) {
	so, ok1 := stdout.(*capture)
	se, ok2 := stderr.(*capture)
	if !ok1 || !ok2 {
		// Output that is streamed or longer than a capture keeps needs
		// its own session.
		return t.leaseTarget.runCommand(ctx, command, stdout, stderr)
	}
	return t.b.run(ctx, command, so, se)
}

func (t batchTarget) checkActive(delta int) { t.b.checkActive(delta) }

// batcher collects the commands of concurrently running checks.
type batcher struct {
	l *Lease

	mu      sync.Mutex
	active  int         // batchable checks running
	pending []*batchReq // commands not yet sent
	sent    bool        // a batch was sent
	timer   *time.Timer
	wg      sync.WaitGroup // batches in flight
}

func newBatcher(l *Lease) *batcher { return &batcher{l: l} }

// wait returns when no batch is in flight.
func (b *batcher) wait() { b.wg.Wait() }

// batchReq is one command waiting for its frame.
type batchReq struct {
	ctx            context.Context
	orig           string // the command as the check gave it
	cmd            string // as Lease.Run would send it
	stdout, stderr *capture
	run            *batchRun // set when sent

	mu       sync.Mutex
	finished bool // result delivered or abandoned
	done     chan batchResult
}

type batchResult struct {
	code int
	err  error
}

// deliver hands the result (and output) to the waiting check, unless it
// gave up waiting.
func (r *batchReq) deliver(code int, stdout, stderr *capture, err error) {
	r.mu.Lock()
	if r.finished {
		r.mu.Unlock()
		return
	}
	r.finished = true
	if stdout != nil {
		r.stdout.absorb(stdout)
	}
	if stderr != nil {
		r.stderr.absorb(stderr)
	}
	r.mu.Unlock()
	r.done <- batchResult{code, err}
	r.run.finished(false)
}

// abandon marks the request given up; false if its result was delivered
// (or is being delivered) already.
func (r *batchReq) abandon() bool {
	r.mu.Lock()
	if r.finished {
		r.mu.Unlock()
		return false
	}
	r.finished = true
	r.mu.Unlock()
	r.run.finished(true)
	return true
}

// run sends command with the next batch and waits for its frame; the
// result is what leaseTarget.runCommand would return.
func (b *batcher) run(ctx context.Context, command string, stdout, stderr *capture) (int, error) {
	l := b.l
	if err := l.usable("run"); err != nil {
		return -1, err
	}
	if strings.TrimSpace(command) == "" {
		return -1, l.c.opErr("run", l.ID, fmt.Errorf("%w: empty command", ErrInvalidArgument))
	}
	if err := ctx.Err(); err != nil {
		return -1, l.c.opErr("run", l.ID, fmt.Errorf("sshx: run on %s: %w", l.SSHAddr, err))
	}
	// The client first, as in Run: it loads a re-attached lease's access.
	if _, err := l.sshClient(ctx); err != nil {
		return -1, l.c.opErr("run", l.ID, err)
	}
	cmd, err := l.commandLine(command, runOptions{})
	if err != nil {
		return -1, l.c.opErr("run", l.ID, err)
	}
	r := &batchReq{ctx: ctx, orig: command, cmd: cmd, stdout: stdout, stderr: stderr, done: make(chan batchResult, 1)}
	b.enqueue(r)
	select {
	case res := <-r.done:
		return res.code, res.err
	case <-ctx.Done():
		b.mu.Lock()
		sent := r.run != nil
		if !sent {
			b.dropLocked(r)
		}
		b.mu.Unlock()
		if !sent || r.abandon() {
			return -1, l.c.opErr("run", l.ID, fmt.Errorf("sshx: command interrupted: %w", ctx.Err()))
		}
		res := <-r.done
		return res.code, res.err
	}
}

func (b *batcher) enqueue(r *batchReq) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pending = append(b.pending, r)
	if len(b.pending) >= b.active {
		b.flushLocked()
		return
	}
	if b.timer == nil {
		window := batchWindow
		if !b.sent {
			window = firstBatchWindow
		}
		b.timer = time.AfterFunc(window, func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			b.flushLocked()
		})
	}
}

func (b *batcher) checkActive(delta int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.active += delta
	if len(b.pending) > 0 && len(b.pending) >= b.active {
		b.flushLocked()
	}
}

// dropLocked removes an unsent request.
func (b *batcher) dropLocked(r *batchReq) {
	for i, p := range b.pending {
		if p == r {
			b.pending = append(b.pending[:i], b.pending[i+1:]...)
			break
		}
	}
	r.finished = true
}

// flushLocked sends the pending commands, in batches whose command line
// stays under batchMaxBytes.
func (b *batcher) flushLocked() {
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	reqs := b.pending
	b.pending = nil
	if len(reqs) > 0 {
		b.sent = true
	}
	for len(reqs) > 0 {
		n, size := 0, 0
		for n < len(reqs) && (n == 0 || size+len(reqs[n].cmd) < batchMaxBytes) {
			size += len(reqs[n].cmd) + 64
			n++
		}
		chunk := reqs[:n]
		reqs = reqs[n:]
		br := &batchRun{left: len(chunk)}
		br.ctx, br.cancel = context.WithCancel(context.Background())
		for _, r := range chunk {
			r.run = br
		}
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			defer br.cancel()
			b.send(br, chunk)
		}()
	}
}

// batchRun is one batch's session. Once every one of its checks has its
// result or gave up waiting, and one did give up (its command may still
// run on the box, without a deadline even), the session is cancelled: the
// runner is killed rather than waited for.
type batchRun struct {
	ctx       context.Context
	cancel    context.CancelFunc
	mu        sync.Mutex
	left      int
	abandoned bool
}

func (br *batchRun) finished(abandoned bool) {
	br.mu.Lock()
	br.left--
	br.abandoned = br.abandoned || abandoned
	stop := br.left == 0 && br.abandoned
	br.mu.Unlock()
	if stop {
		br.cancel()
	}
}

// batchScript renders the runner for reqs, its frames' streams ending in
// boundary: the command that starts it, and the runner itself, which goes
// to the command's stdin (so neither the checks' commands nor the boundary
// show in a process list a check may print).
func batchScript(reqs []*batchReq, boundary string) (command, runner string) {
	var sb strings.Builder
	fmt.Fprintf(&sb, "N=%d\nM=%s\nB=%s\nHEAD=%d\nTAIL=%d\n", len(reqs), batchMarker, boundary, outputHeadBytes, outputTailBytes)
	for i, r := range reqs {
		fmt.Fprintf(&sb, "c%d=%s\nt%d=%d\n", i, ShellQuote(r.cmd), i, remoteTimeout(r.ctx))
	}
	sb.WriteString(smokeBatchScript)
	// The login shell starts the runner under /bin/sh and names itself
	// for the checks; no /bin/sh is a runner that could not set up.
	return `[ -x /bin/sh ] && exec /bin/sh -s "$(readlink /proc/$$/exe 2>/dev/null)"` +
		fmt.Sprintf("\nexit %d", batchSetupFailed), sb.String()
}

// remoteTimeout is when the runner kills a command: a second after the
// check's own deadline (which ends the wait here first), 0 without one.
func remoteTimeout(ctx context.Context) int {
	dl, ok := ctx.Deadline()
	if !ok {
		return 0
	}
	return int(math.Ceil(time.Until(dl).Seconds())) + 1
}

// send runs one batch and delivers every request's result.
func (b *batcher) send(br *batchRun, reqs []*batchReq) {
	l := b.l
	fw := newFrameWriter(reqs)
	errTail := newTail(outputTailBytes)
	var res sshx.Result
	client, err := l.sshClient(br.ctx)
	if err == nil {
		command, runner := batchScript(reqs, fw.boundary)
		res, err = client.Run(br.ctx, sshx.Request{Command: command, Stdin: strings.NewReader(runner), Stdout: fw, Stderr: errTail})
	}
	if err == nil && res.ExitCode == batchSetupFailed && fw.frames == 0 {
		// No runner on this box: one session per command, as without
		// batching.
		var wg sync.WaitGroup
		for _, r := range reqs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				code, err := leaseTarget{l}.runCommand(r.ctx, r.orig, r.stdout, r.stderr)
				r.deliver(code, nil, nil, err)
			}()
		}
		wg.Wait()
		return
	}
	for _, r := range reqs {
		switch {
		case err != nil:
			r.deliver(-1, nil, nil, l.c.opErr("run", l.ID, err))
		default:
			r.deliver(-1, nil, nil, l.c.opErr("run", l.ID, provider.Wrap(provider.ErrUnavailable,
				fmt.Errorf("the smoke batch runner ended (exit %d%s) before this check finished%s",
					res.ExitCode, signalSuffix(res.Signal), stderrSuffix(errTail.String(), fw.err)))))
		}
	}
}

func signalSuffix(sig string) string {
	if sig == "" {
		return ""
	}
	return ", signal " + sig
}

func stderrSuffix(stderr string, ferr error) string {
	var parts []string
	if ferr != nil {
		parts = append(parts, ferr.Error())
	}
	if s := strings.TrimSpace(stderr); s != "" {
		parts = append(parts, s)
	}
	if len(parts) == 0 {
		return ""
	}
	return ": " + strings.Join(parts, "; ")
}

// frameWriter parses the runner's stdout into frames and delivers each:
// a header line "<marker> <index> <exit code>", then the check's stdout
// up to the line boundary, then its stderr up to the line boundary again.
// The boundary is random per batch and the runner arrives on stdin, so a
// check's output does not end a stream by accident (a check that reads the
// runner's files on purpose can, as it can fake its own exit code). The transport calls Write from one goroutine at a
// time.
type frameWriter struct {
	reqs     []*batchReq
	boundary string
	delim    []byte // boundary and newline
	frames   int
	err      error // the stream stopped making sense

	header  []byte
	cur     *batchReq
	code    int
	stream  int    // 0: stdout, 1: stderr
	pending []byte // bytes that may start the delimiter
	out     [2]*capture
}

func newFrameWriter(reqs []*batchReq) *frameWriter {
	var b [16]byte
	_, _ = rand.Read(b[:])
	boundary := "--crabbox-end-" + hex.EncodeToString(b[:]) + "--"
	return &frameWriter{reqs: reqs, boundary: boundary, delim: []byte(boundary + "\n")}
}

func (w *frameWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 && w.err == nil {
		if w.cur == nil {
			i := bytes.IndexByte(p, '\n')
			if i < 0 {
				w.header = append(w.header, p...)
				if len(w.header) > 256 {
					w.err = errors.New("frame header too long")
				}
				break
			}
			w.header = append(w.header, p[:i]...)
			p = p[i+1:]
			w.startFrame(string(w.header))
			w.header = w.header[:0]
			continue
		}
		w.pending = append(w.pending, p...)
		p = nil
		for w.cur != nil {
			i := bytes.Index(w.pending, w.delim)
			if i < 0 {
				// Keep what could be the delimiter's start.
				if keep := len(w.delim) - 1; len(w.pending) > keep {
					_, _ = w.out[w.stream].Write(w.pending[:len(w.pending)-keep])
					w.pending = append(w.pending[:0], w.pending[len(w.pending)-keep:]...)
				}
				break
			}
			_, _ = w.out[w.stream].Write(w.pending[:i])
			rest := w.pending[i+len(w.delim):]
			w.stream++
			if w.stream == 2 {
				w.endFrame()
				// What follows is the next frame's header.
				p, w.pending = rest, nil
				break
			}
			w.pending = append(w.pending[:0], rest...)
		}
	}
	return n, nil
}

func (w *frameWriter) startFrame(h string) {
	f := strings.Fields(h)
	ok := len(f) == 3 && f[0] == batchMarker
	var idx, code int
	var err error
	if ok {
		idx, err = strconv.Atoi(f[1])
		ok = err == nil && idx >= 0 && idx < len(w.reqs)
	}
	if ok {
		code, err = strconv.Atoi(f[2])
		ok = err == nil && code >= 0
	}
	if !ok {
		w.err = fmt.Errorf("bad frame header %q", h)
		return
	}
	w.cur, w.code, w.stream = w.reqs[idx], code, 0
	w.out = [2]*capture{newCapture(), newCapture()}
}

func (w *frameWriter) endFrame() {
	w.frames++
	w.cur.deliver(w.code, w.out[0], w.out[1], nil)
	w.cur, w.out = nil, [2]*capture{}
}
