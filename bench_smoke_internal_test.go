// Benchmark of Warmup plus the runbook's source verification over a
// latency proxy, side by side with OpenSSH baselines measured in the same
// iteration: `ssh HOST true`, one ssh per check, one ControlMaster with a
// client per check, and one ssh running every check as one script.

package crabbox

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/crabbox/crabbox-go/internal/testenv/sshd"
	"github.com/crabbox/crabbox-go/internal/testenv/tcpproxy"
	"github.com/crabbox/crabbox-go/provider/sshhost"
)

// benchChecks is the runbook's source verification, 14 checks: eight of
// its tools, the work root, the pnpm cache dir and the four hygiene checks.
func benchChecks() []SmokeCheck {
	return SourceVerification(CheckSetOptions{Tools: sourceTools[:8], Hygiene: true})
}

// checkScript is the shell command a command check runs.
func checkScript(c SmokeCheck) string {
	s, _, _ := strings.Cut(c.spec, "\x00")
	return s
}

// openSSH runs the OpenSSH client against one address.
type openSSH struct {
	dir, addr, user string
}

func newOpenSSH(tb testing.TB, srv *sshd.Server, addr string) *openSSH {
	tb.Helper()
	if _, err := exec.LookPath("ssh"); err != nil {
		tb.Skip("no OpenSSH client")
	}
	dir := tb.TempDir()
	host, port, _ := strings.Cut(addr, ":")
	key := filepath.Join(dir, "id")
	if err := os.WriteFile(key, srv.ClientKey.PEM, 0o600); err != nil {
		tb.Fatal(err)
	}
	kh := fmt.Sprintf("[%s]:%s %s", host, port, ssh.MarshalAuthorizedKey(srv.HostKey))
	if err := os.WriteFile(filepath.Join(dir, "known_hosts"), []byte(kh), 0o600); err != nil {
		tb.Fatal(err)
	}
	return &openSSH{dir: dir, addr: addr, user: srv.User}
}

func (o *openSSH) args(extra ...string) []string {
	host, port, _ := strings.Cut(o.addr, ":")
	a := []string{"-F", "/dev/null", "-i", filepath.Join(o.dir, "id"), "-o", "IdentitiesOnly=yes",
		"-o", "UserKnownHostsFile=" + filepath.Join(o.dir, "known_hosts"), "-o", "StrictHostKeyChecking=yes",
		"-o", "BatchMode=yes", "-p", port}
	a = append(a, extra...)
	return append(a, o.user+"@"+host)
}

func (o *openSSH) run(ctx context.Context, extra []string, command string) error {
	cmd := exec.CommandContext(ctx, "ssh", append(o.args(extra...), command)...)
	cmd.Stdin = nil
	out, err := cmd.CombinedOutput()
	if err != nil {
		if _, ok := err.(*exec.ExitError); ok {
			return nil // the check ran and failed: that is a result too
		}
		return fmt.Errorf("ssh: %v: %s", err, out)
	}
	return nil
}

func timeIt(tb testing.TB, fn func() error) time.Duration {
	tb.Helper()
	start := time.Now()
	if err := fn(); err != nil {
		tb.Fatal(err)
	}
	return time.Since(start)
}

func parallel(n int, fn func(i int) error) error {
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = fn(i) }()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func median(d []float64) float64 {
	s := append([]float64(nil), d...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// BenchmarkWarmupSmoke: Warmup (fresh Client, fresh connection) and the 14
// source verification checks with per-check results, against `ssh HOST
// true` and the other OpenSSH ways of running the same 14 scripts, at 0
// and 100 ms round-trip time. Metrics are medians over the iterations of
// each variant's time divided by `ssh HOST true` in the same iteration
// (x-ssh-true), and the median `ssh HOST true` itself.
func BenchmarkWarmupSmoke(b *testing.B) {
	// The checks look below an empty file system root, so that they cost
	// the box little (the host's real homes are large) and the transport
	// is what is measured. MaxStartups raised for the 14 simultaneous
	// handshakes of the ssh-per-check baseline.
	root := b.TempDir()
	if err := os.Chmod(root, 0o755); err != nil {
		b.Fatal(err)
	}
	srv := sshd.Start(b, sshd.Options{Extra: []string{"MaxStartups 100", "SetEnv CRABBOX_FS_ROOT=" + root}})
	// "runbook": the 14 source verification checks; "trivial": 14 checks
	// costing the box next to nothing, to show the transport alone.
	sets := map[string][]SmokeCheck{"runbook": benchChecks()}
	for range 14 {
		sets["trivial"] = append(sets["trivial"], CommandExists("sh"))
	}
	for _, set := range []string{"runbook", "trivial"} {
		checks := sets[set]
		if len(checks) != 14 {
			b.Fatalf("%d checks", len(checks))
		}
		scripts := make([]string, len(checks))
		for i, c := range checks {
			scripts[i] = checkScript(c)
		}
		var one strings.Builder
		for _, s := range scripts {
			fmt.Fprintf(&one, "( %s\n) >/dev/null 2>&1; echo $?\n", s)
		}
		benchWarmupSmoke(b, srv, set, checks, scripts, one.String())
	}
}

func benchWarmupSmoke(b *testing.B, srv *sshd.Server, set string, checks []SmokeCheck, scripts []string, one string) {
	for _, rtt := range []time.Duration{100 * time.Millisecond, 0} {
		b.Run(fmt.Sprintf("checks=%s/rtt=%v", set, rtt), func(b *testing.B) {
			px := tcpproxy.Start(b, srv.Addr, rtt/2)
			o := newOpenSSH(b, srv, px.Addr)
			host := sshhost.Host{Addr: px.Addr, User: srv.User, Signer: srv.ClientKey.Signer, HostKey: srv.HostKey}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			var sdk, sdkBatched, perCheck, master, script, base []float64
			for b.Loop() {
				tTrue := timeIt(b, func() error { return o.run(ctx, nil, "true") })
				sdkRun := func(opts ...SmokeOption) time.Duration {
					return timeIt(b, func() error {
						drv, err := sshhost.New([]sshhost.Host{host})
						if err != nil {
							return err
						}
						c, err := New(drv, WithStateDir(b.TempDir()), WithOperator("bench"))
						if err != nil {
							return err
						}
						l, err := c.Warmup(ctx)
						if err != nil {
							return err
						}
						rep, err := Smoke(ctx, l, checks, opts...)
						if rep == nil || len(rep.Results) != 14 {
							return fmt.Errorf("smoke: %v", err)
						}
						b.StopTimer()
						defer b.StartTimer()
						return l.Release(ctx)
					})
				}
				tSDK := sdkRun()
				tSDKB := sdkRun(WithBatchedChecks())
				tPer := timeIt(b, func() error {
					return parallel(len(scripts), func(i int) error { return o.run(ctx, nil, scripts[i]) })
				})
				sock := filepath.Join(o.dir, "cm")
				tMaster := timeIt(b, func() error {
					if err := exec.CommandContext(ctx, "ssh", o.args("-M", "-S", sock, "-f", "-N")...).Run(); err != nil {
						return fmt.Errorf("control master: %w", err)
					}
					return parallel(len(scripts), func(i int) error { return o.run(ctx, []string{"-S", sock}, scripts[i]) })
				})
				_ = exec.Command("ssh", o.args("-S", sock, "-O", "exit")...).Run()
				tScript := timeIt(b, func() error { return o.run(ctx, nil, one) })
				base = append(base, float64(tTrue.Milliseconds()))
				sdk = append(sdk, tSDK.Seconds()/tTrue.Seconds())
				sdkBatched = append(sdkBatched, tSDKB.Seconds()/tTrue.Seconds())
				perCheck = append(perCheck, tPer.Seconds()/tTrue.Seconds())
				master = append(master, tMaster.Seconds()/tTrue.Seconds())
				script = append(script, tScript.Seconds()/tTrue.Seconds())
			}
			b.ReportMetric(median(base), "ssh-true-ms")
			b.ReportMetric(median(sdk), "sdk-x-ssh-true")
			b.ReportMetric(median(sdkBatched), "sdk-batched-x-ssh-true")
			b.ReportMetric(median(perCheck), "ssh-per-check-x-ssh-true")
			b.ReportMetric(median(master), "controlmaster-x-ssh-true")
			b.ReportMetric(median(script), "one-script-x-ssh-true")
		})
	}
}
