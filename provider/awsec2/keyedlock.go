// keyedLock: a mutex per key (an instance id) that a waiter can give up on
// when its context ends.

package awsec2

import (
	"context"
	"sync"
)

// keyedLock serializes work per key. The zero value is ready to use.
type keyedLock struct {
	mu   sync.Mutex
	held map[string]chan struct{} // closed when the key's holder unlocks
}

// lock waits until no one holds key, then holds it; unlock releases it. It
// returns ctx's error, holding nothing, if ctx ends first.
func (k *keyedLock) lock(ctx context.Context, key string) (unlock func(), err error) {
	for {
		k.mu.Lock()
		busy, ok := k.held[key]
		if !ok {
			if k.held == nil {
				k.held = map[string]chan struct{}{}
			}
			done := make(chan struct{})
			k.held[key] = done
			k.mu.Unlock()
			return func() {
				k.mu.Lock()
				delete(k.held, key)
				k.mu.Unlock()
				close(done)
			}, nil
		}
		k.mu.Unlock()
		select {
		case <-busy:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
