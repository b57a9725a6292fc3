// The allocation state, in memory or in a JSON state file.

package sshhost

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/crabbox/crabbox-go/provider"
)

// stateVersion is the format version of the state file.
const stateVersion = 1

// allocation is one host leased as a machine.
type allocation struct {
	ID      string            `json:"id"`
	Host    string            `json:"host"` // Host.Addr, normalized
	Token   string            `json:"token,omitempty"`
	Name    string            `json:"name,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
	Created time.Time         `json:"created"`
}

// state is the whole allocation state, as stored in the state file.
type state struct {
	Version     int          `json:"version"`
	Allocations []allocation `json:"allocations"`
}

func (s *state) find(id string) *allocation {
	for i := range s.Allocations {
		if s.Allocations[i].ID == id {
			return &s.Allocations[i]
		}
	}
	return nil
}

func (s *state) clone() *state {
	c := &state{Version: s.Version, Allocations: make([]allocation, len(s.Allocations))}
	for i, a := range s.Allocations {
		a.Labels = maps.Clone(a.Labels)
		c.Allocations[i] = a
	}
	return c
}

// errNoChange, returned by an update function, means "nothing to write":
// update then returns nil without writing.
var errNoChange = errors.New("sshhost: no change")

// store holds the state. view passes fn a state it must not modify; update
// passes fn a copy and stores it when fn returns nil, atomically with
// respect to every other update (in this process and, for the file store,
// in others).
type store interface {
	view(ctx context.Context, fn func(*state) error) error
	update(ctx context.Context, fn func(*state) error) error
}

// memStore keeps the state in memory.
type memStore struct {
	mu sync.Mutex
	st state
}

func (m *memStore) view(ctx context.Context, fn func(*state) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return fn(&m.st)
}

func (m *memStore) update(ctx context.Context, fn func(*state) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	next := m.st.clone()
	if err := fn(next); err != nil {
		if errors.Is(err, errNoChange) {
			return nil
		}
		return err
	}
	m.st = *next
	return nil
}

// fileStore keeps the state in a JSON file, replaced atomically (write a
// temporary file, sync, rename) on each update, which runs under an
// exclusive flock of path+".lock". Readers need no lock: they see either
// the old or the new file.
type fileStore struct {
	path string
	mu   sync.Mutex // serializes this process's updates before the flock
}

func (f *fileStore) view(ctx context.Context, fn func(*state) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	st, err := f.read()
	if err != nil {
		return err
	}
	return fn(st)
}

func (f *fileStore) update(ctx context.Context, fn func(*state) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := os.MkdirAll(filepath.Dir(f.path), 0o700); err != nil {
		return ioError("creating the state directory", err)
	}
	unlock, err := lockFile(ctx, f.path+".lock")
	if err != nil {
		return err
	}
	defer unlock()
	st, err := f.read()
	if err != nil {
		return err
	}
	if err := fn(st); err != nil {
		if errors.Is(err, errNoChange) {
			return nil
		}
		return err
	}
	return f.write(st)
}

func (f *fileStore) read() (*state, error) {
	b, err := os.ReadFile(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		return &state{Version: stateVersion}, nil
	}
	if err != nil {
		return nil, ioError("reading the state file", err)
	}
	st := &state{Version: stateVersion}
	if len(b) == 0 {
		return st, nil
	}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "sshhost: state file %s is corrupt: %v", f.path, err)
	}
	if st.Version != stateVersion {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "sshhost: state file %s has version %d, want %d", f.path, st.Version, stateVersion)
	}
	return st, nil
}

func (f *fileStore) write(st *state) (err error) {
	st.Version = stateVersion
	if st.Allocations == nil {
		st.Allocations = []allocation{}
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return provider.Wrap(provider.ErrInvalidArgument, err)
	}
	b = append(b, '\n')
	dir := filepath.Dir(f.path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(f.path)+".tmp-*")
	if err != nil {
		return ioError("writing the state file", err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return ioError("writing the state file", err)
	}
	if _, err := tmp.Write(b); err != nil {
		return ioError("writing the state file", err)
	}
	if err := tmp.Sync(); err != nil {
		return ioError("writing the state file", err)
	}
	if err := tmp.Close(); err != nil {
		return ioError("writing the state file", err)
	}
	if err := os.Rename(tmp.Name(), f.path); err != nil {
		return ioError("replacing the state file", err)
	}
	if d, err := os.Open(dir); err == nil { // make the rename durable; best effort
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// ioError wraps a file system error with a portable code.
func ioError(what string, err error) error {
	code := provider.ErrUnavailable
	if errors.Is(err, fs.ErrPermission) {
		code = provider.ErrPermission
	}
	return provider.Errorf(code, "sshhost: %s: %w", what, err)
}
