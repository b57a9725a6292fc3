// Tests of ready.go against a real sshd: the pinned host key, a late sshd.

package crabbox_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/internal/testenv/sshd"
	"github.com/crabbox/crabbox-go/provider/sshhost"
)

func TestSSHDHostKeyMismatchRejected(t *testing.T) {
	srv := sshd.Start(t, sshd.Options{})
	other := sshd.MustKey(t)
	h := hostFor(srv)
	h.HostKey = other.PublicKey()
	c, _ := sshhostClient(t, []sshhost.Host{h})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	l, err := c.Warmup(ctx, crabbox.WithReadyTimeout(50*time.Second))
	require.Error(t, err)
	assert.Nil(t, l)
	assert.ErrorIs(t, err, crabbox.ErrHostKeyMismatch)
	var we *crabbox.WaitError
	require.ErrorAs(t, err, &we, "readiness gives up with a WaitError")
	assert.Equal(t, 1, we.Attempts, "a host key mismatch is never retried")
	assert.Less(t, time.Since(start), 40*time.Second, "a host key mismatch must not be retried until the timeout")
	assert.Equal(t, 0, liveLeases(t, c), "the failed lease must be released")
}

func TestSSHDReadinessWaitsForLateSSHD(t *testing.T) {
	srv := sshd.New(t, sshd.Options{})
	var events []crabbox.Event
	var mu sync.Mutex
	c2, err := crabbox.New(mustDriver(t, hostFor(srv)), crabbox.WithStateDir(t.TempDir()),
		crabbox.WithPollBackoff(crabbox.ConstantBackoff(50*time.Millisecond)),
		crabbox.WithEvents(func(e crabbox.Event) { mu.Lock(); events = append(events, e); mu.Unlock() }))
	require.NoError(t, err)
	go func() {
		time.Sleep(700 * time.Millisecond)
		if err := srv.Start(); err != nil {
			t.Errorf("late sshd: %v", err)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := c2.Warmup(ctx)
	require.NoError(t, err)
	defer l.Release(context.Background())
	res, err := l.Run(ctx, "echo up")
	require.NoError(t, err)
	assert.Equal(t, "up\n", res.StdoutTail)
	mu.Lock()
	defer mu.Unlock()
	waiting := 0
	for _, e := range events {
		if e.Kind == crabbox.EventLeaseWaiting {
			waiting++
		}
	}
	assert.Greater(t, waiting, 0, "readiness should have waited for sshd")
}
