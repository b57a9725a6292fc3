package sshx_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/crabbox/crabbox-go/internal/sshx"
	"github.com/crabbox/crabbox-go/internal/testenv/sshd"
	"github.com/crabbox/crabbox-go/internal/testenv/tcpproxy"
)

// BenchmarkFourteenCommands runs 14 short commands concurrently, either as
// sessions on one shared connection or with a new connection per command,
// over loopback and over a proxy adding 100 ms round-trip time.
func BenchmarkFourteenCommands(b *testing.B) {
	// MaxStartups raised so the per-command variant's 14 simultaneous
	// handshakes are not dropped by sshd's default 10:30:100.
	srv := sshd.Start(b, sshd.Options{Extra: []string{"MaxStartups 100"}})
	for _, rtt := range []time.Duration{0, 100 * time.Millisecond} {
		px := tcpproxy.Start(b, srv.Addr, rtt/2)
		cfg := config(srv)
		cfg.Addr = px.Addr
		run14 := func(b *testing.B, run func(ctx context.Context) error) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var wg sync.WaitGroup
			errs := make(chan error, 14)
			for range 14 {
				wg.Add(1)
				go func() { defer wg.Done(); errs <- run(ctx) }()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					b.Fatal(err)
				}
			}
		}
		b.Run(fmt.Sprintf("rtt=%v/shared", rtt), func(b *testing.B) {
			for b.Loop() {
				c, err := sshx.New(cfg)
				if err != nil {
					b.Fatal(err)
				}
				run14(b, func(ctx context.Context) error {
					_, err := c.Run(ctx, sshx.Request{Command: "true"})
					return err
				})
				c.Close()
			}
		})
		b.Run(fmt.Sprintf("rtt=%v/per-command", rtt), func(b *testing.B) {
			for b.Loop() {
				run14(b, func(ctx context.Context) error {
					c, err := sshx.New(cfg)
					if err != nil {
						return err
					}
					defer c.Close()
					_, err = c.Run(ctx, sshx.Request{Command: "true"})
					return err
				})
			}
		})
	}
}

// BenchmarkMaxSessionsOne runs 14 short commands on one connection to an
// sshd allowing one session at a time, concurrently (they queue for the one
// slot) and one after another, and reports the concurrent run's time as a
// multiple of the sequential one measured in the same iteration
// (concurrent/sequential): the slot wait should add little to the
// commands' own time (about 1.3 at most).
func BenchmarkMaxSessionsOne(b *testing.B) {
	srv := sshd.Start(b, sshd.Options{Extra: []string{"MaxSessions 1"}})
	cfg := config(srv)
	const n = 14
	run := func(ctx context.Context, c *sshx.Client) error {
		res, err := c.Run(ctx, sshx.Request{Command: "true"})
		if err == nil && res.ExitCode != 0 {
			err = fmt.Errorf("exit %d", res.ExitCode)
		}
		return err
	}
	var seqTotal, concTotal time.Duration
	for b.Loop() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		c, err := sshx.New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Connect(ctx); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		for range n {
			if err := run(ctx, c); err != nil {
				b.Fatal(err)
			}
		}
		seqTotal += time.Since(start)

		start = time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for range n {
			wg.Add(1)
			go func() { defer wg.Done(); errs <- run(ctx, c) }()
		}
		wg.Wait()
		concTotal += time.Since(start)
		close(errs)
		for err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
		c.Close()
		cancel()
	}
	b.ReportMetric(float64(concTotal)/float64(seqTotal), "concurrent/sequential")
	b.ReportMetric(float64(seqTotal.Milliseconds())/float64(b.N), "sequential-ms/op")
	b.ReportMetric(float64(concTotal.Milliseconds())/float64(b.N), "concurrent-ms/op")
}
