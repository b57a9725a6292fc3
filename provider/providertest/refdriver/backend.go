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
	mu sync.Mutex
	s  state
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
