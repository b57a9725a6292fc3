package awsec2

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestKeyedLockSerializesPerKey(t *testing.T) {
	var k keyedLock
	var in, most atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock, err := k.lock(context.Background(), "i-1")
			if err != nil {
				t.Error(err)
				return
			}
			n := in.Add(1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			time.Sleep(time.Millisecond)
			in.Add(-1)
			unlock()
		}()
	}
	wg.Wait()
	if most.Load() != 1 {
		t.Fatalf("%d holders of one key at once, want 1", most.Load())
	}
	// Other keys do not wait.
	unlock, _ := k.lock(context.Background(), "i-1")
	defer unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	u2, err := k.lock(ctx, "i-2")
	if err != nil {
		t.Fatalf("another key waited: %v", err)
	}
	u2()
}

func TestKeyedLockWaiterGivesUpWithItsContext(t *testing.T) {
	var k keyedLock
	unlock, _ := k.lock(context.Background(), "i-1")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := k.lock(ctx, "i-1"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("lock = %v, want the context's error", err)
	}
	unlock()
	u, err := k.lock(context.Background(), "i-1")
	if err != nil {
		t.Fatal(err)
	}
	u()
}
