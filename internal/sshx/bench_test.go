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
