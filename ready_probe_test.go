// Tests and benchmarks of the readiness probe schedule: the SSH port is
// probed often while the cloud API is asked on its own slower schedule, and
// the lag from sshd coming up to Warmup returning.

package crabbox_test

import (
	"context"
	"math/rand/v2"
	"net"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/internal/testenv/sshd"
	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/sshhost"
)

// countingDriver counts GetMachine calls (the cloud API of readiness).
type countingDriver struct {
	*sshhost.Driver
	gets atomic.Int64
}

func (d *countingDriver) GetMachine(ctx context.Context, id string) (*provider.Machine, error) {
	d.gets.Add(1)
	return d.Driver.GetMachine(ctx, id)
}

// lateWarmup warms up a lease on srv, started after delay, with the default
// poll backoff, and returns the driver, the number of dials and how long
// after sshd accepted connections Warmup returned.
func lateWarmup(tb testing.TB, srv *sshd.Server, delay time.Duration) (*countingDriver, int64, time.Duration) {
	tb.Helper()
	drv := &countingDriver{Driver: mustDriverTB(tb, hostFor(srv))}
	var dials atomic.Int64
	dialer := &net.Dialer{}
	c, err := crabbox.New(drv, crabbox.WithStateDir(tb.TempDir()), crabbox.WithOperator("tester"),
		crabbox.WithDialer(func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return dialer.DialContext(ctx, network, addr)
		}))
	require.NoError(tb, err)
	up := make(chan time.Time, 1)
	go func() {
		time.Sleep(delay)
		if err := srv.Start(); err != nil {
			tb.Errorf("late sshd: %v", err)
		}
		up <- time.Now()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := c.Warmup(ctx)
	done := time.Now()
	require.NoError(tb, err)
	require.NoError(tb, l.Release(ctx))
	return drv, dials.Load(), done.Sub(<-up)
}

func mustDriverTB(tb testing.TB, h sshhost.Host) *sshhost.Driver {
	tb.Helper()
	d, err := sshhost.New([]sshhost.Host{h})
	require.NoError(tb, err)
	return d
}

// TestReadinessProbesSSHNotTheCloud: while sshd is down, the SSH port is
// probed several times a second but the cloud API on the poll backoff
// (default 1 s doubling), at most about once a second.
func TestReadinessProbesSSHNotTheCloud(t *testing.T) {
	srv := sshd.New(t, sshd.Options{})
	start := time.Now()
	drv, dials, _ := lateWarmup(t, srv, 3*time.Second)
	secs := time.Since(start).Seconds()
	gets := drv.gets.Load()
	// Default backoff 1 s, 2 s, 4 s ...: over ~3 s at most 4 polls (plus
	// the one that picked the lease); never one per probe.
	assert.LessOrEqual(t, float64(gets), secs+2, "cloud API polled %d times in %.1fs", gets, secs)
	assert.Greater(t, dials, 3*gets, "SSH probes (%d) should far outnumber cloud polls (%d)", dials, gets)
	assert.LessOrEqual(t, float64(dials), secs*10+3, "SSH probes are bounded (~100-250 ms apart): %d in %.1fs", dials, secs)
}

// BenchmarkReadinessLag: sshd comes up 3-8 s after Warmup starts; the
// metric is the lag from sshd accepting connections to Warmup returning
// (median and worst over the iterations; run with -benchtime=Nx).
func BenchmarkReadinessLag(b *testing.B) {
	srv := sshd.New(b, sshd.Options{})
	var lags, floors []time.Duration
	for b.Loop() {
		srv.Stop()
		delay := 3*time.Second + rand.N(5*time.Second)
		_, _, lag := lateWarmup(b, srv, delay)
		lags = append(lags, lag)
		floors = append(floors, connectAndTrue(b, srv))
	}
	sortDurations(lags)
	sortDurations(floors)
	b.ReportMetric(float64(lags[len(lags)/2].Milliseconds()), "median-lag-ms")
	b.ReportMetric(float64(lags[len(lags)-1].Milliseconds()), "worst-lag-ms")
	// The floor: one fresh connection (handshake, auth) and "true" on the
	// running sshd, which any readiness wait has to pay after sshd is up.
	b.ReportMetric(float64(floors[len(floors)/2].Milliseconds()), "median-connect-true-ms")
}

func sortDurations(d []time.Duration) { sort.Slice(d, func(i, j int) bool { return d[i] < d[j] }) }

// connectAndTrue times one fresh x/crypto/ssh connection running "true".
func connectAndTrue(tb testing.TB, srv *sshd.Server) time.Duration {
	tb.Helper()
	start := time.Now()
	cl, err := ssh.Dial("tcp", srv.Addr, &ssh.ClientConfig{User: srv.User,
		Auth: []ssh.AuthMethod{ssh.PublicKeys(srv.ClientKey.Signer)}, HostKeyCallback: ssh.FixedHostKey(srv.HostKey)})
	require.NoError(tb, err)
	defer cl.Close()
	sess, err := cl.NewSession()
	require.NoError(tb, err)
	require.NoError(tb, sess.Run("true"))
	return time.Since(start)
}
