// Package moto starts a moto server for tests, through launcher.py, which
// extends moto with AWS behaviour it lacks (see the comments there), and
// provides a fault-injecting HTTP transport for throttling tests.
//
// Start skips the test when python3 or moto is missing, except with CI=true,
// where a missing component fails the test.
package moto

import (
	"bytes"
	"context"
	"errors"

	_ "embed"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/crabbox/crabbox-go/internal/testenv/ports"
)

//go:embed launcher.py
var launcher []byte

// Options configure the server.
type Options struct {
	// NoCapacityTypes are instance types for which RunInstances fails with
	// InsufficientInstanceCapacity.
	NoCapacityTypes []string
	// ImagePendingPolls is how many DescribeImages calls a new image stays
	// pending for. 0 means the default (2); negative means 0.
	ImagePendingPolls int
	// SnapshotInUseAfterDeregister is how many DeleteSnapshot calls fail
	// with InvalidSnapshot.InUse right after the image was deregistered.
	// 0 means the default (1); negative means 0.
	SnapshotInUseAfterDeregister int
	// SSMImageValidation is how long a PutParameter of DataType
	// aws:ec2:image stays unwritten after its 200 (SSM validates such
	// values asynchronously; AWS documents no duration). 0 writes at once,
	// as moto does.
	SSMImageValidation time.Duration
	// SSMValidateImageExists makes that validation drop a version whose
	// AMI does not exist or is not available (AWS does); otherwise only the
	// id's format is checked, so tests may use made-up AMI ids.
	SSMValidateImageExists bool
	// SecurityGroupPropagation is how long a new security group stays
	// invisible to RunInstances and AuthorizeSecurityGroupIngress
	// (InvalidGroup.NotFound), as EC2's eventual consistency allows. 0 makes
	// it visible at once, as moto does.
	SecurityGroupPropagation time.Duration
}

// Server is a running moto server.
type Server struct {
	// Endpoint is the base URL (http://127.0.0.1:PORT).
	Endpoint  string
	cmd       *exec.Cmd
	log       *bytes.Buffer
	logMu     *sync.Mutex
	dir       string
	exited    chan struct{}
	closeOnce sync.Once
}

// Tags a test puts on an instance to steer the image CreateImage makes from
// it (see launcher.py).
const (
	TagImageState  = "moto-emu:image-state"         // "failed"
	TagImageReason = "moto-emu:image-state-reason"  // StateReason message
	TagImagePolls  = "moto-emu:image-pending-polls" // polls while pending
	// TagImageShareSnapshot names an AMI whose snapshot the new image uses
	// (images registered from one snapshot share it).
	TagImageShareSnapshot = "moto-emu:image-share-snapshot-of"
)

// TagVanishOnTerminate ("true") on an instance makes TerminateInstances
// remove it from moto at once, as EC2 stops describing a terminated
// instance after about an hour (see launcher.py).
const TagVanishOnTerminate = "moto-emu:vanish-on-terminate"

// ErrMissing is returned by Launch when python3 or moto is not installed.
var ErrMissing = errors.New("moto: python3 with moto[server] not installed (pip install 'moto[server]')")

// Require skips t (or fails it when CI=true) if err is ErrMissing, and fails
// it for any other error.
func Require(t testing.TB, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if errors.Is(err, ErrMissing) && os.Getenv("CI") != "true" {
		t.Skip(err)
	}
	t.Fatal(err)
}

// Start launches moto on a free loopback port and stops it when the test
// ends. Missing moto skips the test (fails it when CI=true).
func Start(t testing.TB, opts ...Options) *Server {
	t.Helper()
	s, err := Launch(opts...)
	Require(t, err)
	t.Cleanup(s.Close)
	return s
}

// Launch starts a server without a test (for TestMain). Close it when done.
func Launch(opts ...Options) (*Server, error) {
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	py, err := exec.LookPath("python3")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMissing, err)
	}
	if out, err := exec.Command(py, "-c", "import moto.server, flask").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("%w: %v: %s", ErrMissing, err, out)
	}
	dir, err := os.MkdirTemp("", "crabbox-moto-")
	if err != nil {
		return nil, err
	}
	script := filepath.Join(dir, "launcher.py")
	if err := os.WriteFile(script, launcher, 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("moto: free port: %w", err)
	}
	args := []string{script, "--host", "127.0.0.1", "--port", strconv.Itoa(port)}
	if len(o.NoCapacityTypes) > 0 {
		args = append(args, "--no-capacity-types", strings.Join(o.NoCapacityTypes, ","))
	}
	if o.ImagePendingPolls != 0 {
		args = append(args, "--image-pending-polls", strconv.Itoa(max(o.ImagePendingPolls, 0)))
	}
	if o.SnapshotInUseAfterDeregister != 0 {
		args = append(args, "--snapshot-inuse-after-deregister", strconv.Itoa(max(o.SnapshotInUseAfterDeregister, 0)))
	}
	if o.SSMImageValidation > 0 {
		args = append(args, "--ssm-image-validation-ms", strconv.FormatInt(max(o.SSMImageValidation.Milliseconds(), 1), 10))
	}
	if o.SSMValidateImageExists {
		args = append(args, "--ssm-validate-image-exists")
	}
	if o.SecurityGroupPropagation > 0 {
		args = append(args, "--sg-propagation-ms", strconv.FormatInt(max(o.SecurityGroupPropagation.Milliseconds(), 1), 10))
	}
	cmd := exec.Command(py, args...)
	s := &Server{Endpoint: fmt.Sprintf("http://127.0.0.1:%d", port), cmd: cmd, log: &bytes.Buffer{}, logMu: &sync.Mutex{}, dir: dir}
	w := &lockedWriter{mu: s.logMu, b: s.log}
	cmd.Stdout, cmd.Stderr = w, w
	cmd.Env = append(os.Environ(), "PYTHONUNBUFFERED=1")
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("moto: start: %w", err)
	}
	s.exited = make(chan struct{})
	go func() { _ = cmd.Wait(); close(s.exited) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-s.exited:
			s.Close()
			return nil, fmt.Errorf("moto: exited before it was ready:\n%s", s.Log())
		default:
		}
		resp, err := http.Get(s.Endpoint + "/moto-api/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return s, nil
			}
		}
		if time.Now().After(deadline) {
			s.Close()
			return nil, fmt.Errorf("moto: not ready after 60 s:\n%s", s.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Close stops the server.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		_ = s.cmd.Process.Kill()
		<-s.exited
		os.RemoveAll(s.dir)
	})
}

// Log returns what moto printed so far.
func (s *Server) Log() string {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return s.log.String()
}

// Reset clears all of moto's state (POST /moto-api/reset).
func (s *Server) Reset() error {
	resp, err := http.Post(s.Endpoint+"/moto-api/reset", "application/json", nil)
	if err != nil {
		return fmt.Errorf("moto: reset: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("moto: reset: %s", resp.Status)
	}
	return nil
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.b.Len() > 1<<20 { // keep the tail bounded
		w.b.Reset()
	}
	return w.b.Write(p)
}

// freePort is moto's port: it binds it seconds later, after importing
// moto, so not one another test's ":0" listener could be given meanwhile.
func freePort() (int, error) { return ports.Free("127.0.0.1") }

// Fault is one injection rule of a FaultTransport.
type Fault struct {
	// Action is the API operation ("RunInstances", "PutParameter"); "*"
	// matches every operation.
	Action string
	// Every, when above 1, gives the fault to every Every-th matching call
	// only (the others pass untouched): Every 3 throttles one call in three.
	Every int
	// Times is how many matching calls get the fault (then the rule is
	// spent).
	Times int
	// After forwards the call to moto first and replaces its response with
	// the fault: the call took effect, but the client sees an error (a lost
	// response). Otherwise the call never reaches moto.
	After bool
	// Code is the AWS error code; default RequestLimitExceeded for EC2,
	// ThrottlingException for SSM. Status is the HTTP status; default 503
	// for EC2 throttling, 500 for EC2's server error codes (the capacity
	// errors, InternalError, Unavailable: see serverCodes), 400 otherwise.
	Code   string
	Status int
	// Late, when positive, makes the rule a lag instead of an error: the
	// call reaches moto Late after it was sent, on a context detached from
	// the caller's, so it takes effect even when the caller gave up
	// meanwhile (a create the cloud applies after the client's
	// cancellation). The caller gets moto's answer if it still waits, its
	// context's error otherwise. Code and Status are then unused.
	Late time.Duration
	// OnHold, if set, is called when a Late call is held (before it
	// reaches moto), e.g. to cancel the caller's context at that moment.
	OnHold func()

	seen int // matching calls, for Every
}

// FaultTransport is an http.RoundTripper in front of moto that injects AWS
// errors for chosen operations. Use it as the aws.Config's HTTPClient
// transport. It is safe for concurrent use.
type FaultTransport struct {
	Base http.RoundTripper // default http.DefaultTransport

	mu       sync.Mutex
	rules    []*Fault
	injected map[string]int
	calls    map[string]int
	late     sync.WaitGroup // Late calls not yet answered by moto
	lateErrs []string       // "Action: Code" of Late calls moto refused
}

// LateFailures lists the Late calls moto refused when they reached it, as
// "Action: ErrorCode": a create refused because something it depended on
// (a key pair) was deleted while it was in flight.
func (f *FaultTransport) LateFailures() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.lateErrs...)
}

// WaitLate waits until every Late call reached moto and was answered, so a
// test can check what the calls left behind.
func (f *FaultTransport) WaitLate() { f.late.Wait() }

// Add adds a rule.
func (f *FaultTransport) Add(r Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = append(f.rules, &r)
}

// Clear removes all rules.
func (f *FaultTransport) Clear() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = nil
}

// Injected returns how many faults were injected for an action.
func (f *FaultTransport) Injected(action string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.injected[action]
}

// Calls returns how many calls of an action went through the transport
// (including injected ones).
func (f *FaultTransport) Calls(action string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[action]
}

// RoundTrip implements http.RoundTripper.
func (f *FaultTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := f.Base
	if base == nil {
		base = http.DefaultTransport
	}
	action, err := ActionOf(req)
	if err != nil {
		return nil, err
	}
	ssm := req.Header.Get("X-Amz-Target") != ""
	f.mu.Lock()
	if f.calls == nil {
		f.calls, f.injected = map[string]int{}, map[string]int{}
	}
	f.calls[action]++
	var rule *Fault
	for _, r := range f.rules {
		if (r.Action == action || r.Action == "*") && r.Times > 0 {
			if r.Every > 1 {
				if r.seen++; r.seen%r.Every != 0 {
					continue
				}
			}
			r.Times--
			rule = r
			f.injected[action]++
			break
		}
	}
	f.mu.Unlock()
	if rule == nil {
		return base.RoundTrip(req)
	}
	if rule.Late > 0 {
		return f.roundTripLate(base, req, rule)
	}
	if rule.After {
		resp, err := base.RoundTrip(req)
		if err != nil {
			return nil, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return faultResponse(req, rule, ssm), nil
}

// roundTripLate forwards req to moto rule.Late from now, whatever happens to
// the caller's context, and answers the caller with moto's response or its
// context's error, whichever comes first.
func (f *FaultTransport) roundTripLate(base http.RoundTripper, req *http.Request, rule *Fault) (*http.Response, error) {
	type result struct {
		resp *http.Response
		err  error
	}
	late := req.Clone(context.WithoutCancel(req.Context()))
	if req.GetBody != nil {
		body, err := req.GetBody()
		if err != nil {
			return nil, err
		}
		late.Body = body
	}
	done := make(chan result, 1)
	f.late.Add(1)
	if rule.OnHold != nil {
		rule.OnHold()
	}
	go func() {
		defer f.late.Done()
		time.Sleep(rule.Late)
		resp, err := base.RoundTrip(late)
		if err == nil {
			// Read the answer here: moto has applied the call by now.
			b, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			resp.Body = io.NopCloser(bytes.NewReader(b))
			err = rerr
			if resp.StatusCode >= 400 {
				code := "HTTP " + strconv.Itoa(resp.StatusCode)
				if _, rest, ok := strings.Cut(string(b), "<Code>"); ok {
					code, _, _ = strings.Cut(rest, "</Code>")
				}
				f.mu.Lock()
				f.lateErrs = append(f.lateErrs, rule.Action+": "+code)
				f.mu.Unlock()
			}
		}
		done <- result{resp, err}
	}()
	select {
	case r := <-done:
		return r.resp, r.err
	case <-req.Context().Done():
		return nil, req.Context().Err()
	}
}

// serverCodes are the EC2 error codes AWS lists as server errors (a 5xx
// status), in "Error codes for the Amazon EC2 API", Server error codes.
var serverCodes = map[string]bool{
	"InsufficientAddressCapacity":          true,
	"InsufficientCapacity":                 true,
	"InsufficientInstanceCapacity":         true,
	"InsufficientHostCapacity":             true,
	"InsufficientReservedInstanceCapacity": true,
	"InsufficientVolumeCapacity":           true,
	"InternalError":                        true,
	"Unavailable":                          true,
}

func faultResponse(req *http.Request, r *Fault, ssm bool) *http.Response {
	code, status := r.Code, r.Status
	var body, ctype string
	if ssm {
		if code == "" {
			code = "ThrottlingException"
		}
		if status == 0 {
			status = 400
		}
		ctype = "application/x-amz-json-1.1"
		body = fmt.Sprintf(`{"__type":%q,"message":"injected by moto.FaultTransport"}`, code)
	} else {
		if code == "" {
			code = "RequestLimitExceeded"
		}
		if status == 0 {
			status = 400
			if code == "RequestLimitExceeded" {
				status = 503
			} else if serverCodes[code] {
				status = 500
			}
		}
		ctype = "text/xml;charset=UTF-8"
		body = fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>`+
			`<Response><Errors><Error><Code>%s</Code><Message>injected by moto.FaultTransport</Message></Error></Errors>`+
			`<RequestID>00000000-0000-0000-0000-000000000000</RequestID></Response>`, code)
	}
	return &http.Response{
		Status:        fmt.Sprintf("%d %s", status, http.StatusText(status)),
		StatusCode:    status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"Content-Type": []string{ctype}},
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}

// ActionOf returns the API operation of an AWS request: from X-Amz-Target
// for JSON protocols (SSM), from the Action form field for EC2's query
// protocol. It reads and restores the request body.
func ActionOf(req *http.Request) (string, error) {
	if tgt := req.Header.Get("X-Amz-Target"); tgt != "" {
		_, action, _ := strings.Cut(tgt, ".")
		return action, nil
	}
	if req.Body == nil || req.Body == http.NoBody {
		return "", nil
	}
	body, err := io.ReadAll(req.Body)
	req.Body.Close()
	if err != nil {
		return "", err
	}
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	for _, kv := range strings.Split(string(body), "&") {
		if v, ok := strings.CutPrefix(kv, "Action="); ok {
			return v, nil
		}
	}
	return "", nil
}
