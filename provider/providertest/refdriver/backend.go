// The in-memory backend: the stand-in for a cloud API that a real driver
// replaces with its cloud's SDK client, and the hooks tests use in place of
// that API's raw calls. Not part of the driver template.

package refdriver

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/crabbox/crabbox-go/provider"
)

// apiError is a raw backend error, as a cloud SDK returns one: an HTTP
// status and a message. mapErr gives it its provider code.
type apiError struct {
	Status int
	Code   string // for what a status cannot tell: "capacity", "quota"
	Msg    string
}

func (e *apiError) Error() string { return fmt.Sprintf("backend: %d %s", e.Status, e.Msg) }

func apiErrorf(status int, format string, args ...any) error {
	return &apiError{Status: status, Msg: fmt.Sprintf(format, args...)}
}

type machine struct {
	m     provider.Machine
	token string
	polls int // GetMachine calls seen while pending
}

type image struct {
	im    provider.Image
	polls int // GetImage calls seen while pending
}

// state is everything the backend holds.
type state struct {
	next       int
	machines   map[string]*machine
	byToken    map[string]string    // machine idempotency token -> machine id
	keys       map[string]time.Time // per-machine key, by token -> creation time
	images     map[string]*image
	imgByToken map[string]string // image idempotency token -> image id
	channels   map[string][]provider.ChannelEntry
	knownGood  map[string]int64 // channel -> version marked known-good
}

type backend struct {
	mu     sync.Mutex
	s      state
	faults map[string]Fault // by call, see InjectFault
}

func newBackend() *backend {
	return &backend{s: state{
		machines:   map[string]*machine{},
		byToken:    map[string]string{},
		keys:       map[string]time.Time{},
		images:     map[string]*image{},
		imgByToken: map[string]string{},
		channels:   map[string][]provider.ChannelEntry{},
		knownGood:  map[string]int64{},
	}}
}

// call is one API call: it fails with the context's error when ctx is done,
// as a network call would, and otherwise runs f on the state.
func (b *backend) call(ctx context.Context, f func(s *state) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return f(&b.s)
}

func (s *state) newID(prefix string) string {
	s.next++
	return fmt.Sprintf("%s-%08x", prefix, s.next)
}

// Vanish removes machine id from the backend without deleting its key, as
// if it had terminated on its own and been forgotten: the orphan
// SweepOrphans exists for. It is the hook a test uses in place of the raw
// API call a real backend's test makes.
func (d *Driver) Vanish(id string) error {
	return d.be.call(context.Background(), func(s *state) error {
		m, ok := s.machines[id]
		if !ok {
			return provider.Wrap(provider.ErrNotFound, apiErrorf(404, "machine %s", id))
		}
		delete(s.machines, id)
		delete(s.byToken, m.token)
		return nil
	})
}

// HasKey reports whether the key CreateMachine made for token still exists.
func (d *Driver) HasKey(token string) bool {
	ok := false
	_ = d.be.call(context.Background(), func(s *state) error {
		_, ok = s.keys[token]
		return nil
	})
	return ok
}

// Fault is a failure the backend answers a call's request with (see
// InjectFault): an HTTP status and, for failures a status cannot tell
// apart, an error code ("capacity", "quota"). With LostReply the backend
// applies the request first and then answers with Status, once.
type Fault struct {
	Status    int
	Code      string
	LostReply bool
}

// InjectFault makes the backend answer the requests of call (the driver
// method's name: "CreateMachine", "CreateImage") with f until restore is
// called (a LostReply fault only the next one). It is the hook
// providertest.Harness.Inject uses in place of a real backend's faults.
func (d *Driver) InjectFault(call string, f Fault) (restore func()) {
	d.be.mu.Lock()
	defer d.be.mu.Unlock()
	if d.be.faults == nil {
		d.be.faults = map[string]Fault{}
	}
	d.be.faults[call] = f
	return func() {
		d.be.mu.Lock()
		defer d.be.mu.Unlock()
		delete(d.be.faults, call)
	}
}

// callFault is call for a request that faults can target: a fault refuses
// it before f runs, or, with LostReply, fails its reply after f ran.
func (b *backend) callFault(ctx context.Context, name string, f func(s *state) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	flt, ok := b.faults[name]
	if ok && !flt.LostReply {
		return &apiError{Status: flt.Status, Code: flt.Code, Msg: "injected fault"}
	}
	if err := f(&b.s); err != nil {
		return err
	}
	if ok {
		delete(b.faults, name)
		return &apiError{Status: flt.Status, Code: flt.Code, Msg: "injected fault: the request was applied, its reply lost"}
	}
	return nil
}

// faultsByKind are the backend's answers to providertest's fault kinds.
var faultsByKind = map[string]Fault{
	"capacity":   {Status: 503, Code: "capacity"},
	"quota":      {Status: 403, Code: "quota"},
	"throttled":  {Status: 429},
	"permission": {Status: 403},
	"lost-reply": {Status: 500, LostReply: true},
}

// Inject is InjectFault for a providertest fault kind ("capacity",
// "quota", "throttled", "permission", "lost-reply"), the shape
// providertest.Harness.Inject wants.
func (d *Driver) Inject(call, kind string) (restore func(), err error) {
	f, ok := faultsByKind[kind]
	if !ok {
		return nil, provider.Errorf(provider.ErrUnsupported, "refdriver: no fault %q", kind)
	}
	return d.InjectFault(call, f), nil
}
