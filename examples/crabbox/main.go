// Command crabbox is the operator tool of the runbook, built on the SDK: it
// accepts the runbook's commands as written (warmup, run, screenshot,
// smoke, image create|promote|rollback|list|cleanup, release, list) and
// prints the JSON records the runbook says to keep.
//
//	crabbox warmup --provider aws --class standard --desktop --browser --ttl 2h --idle-timeout 30m
//	crabbox run --id cbx_0123456789ab --no-sync --shell -- 'echo ok'
//	crabbox image create --id cbx_0123456789ab --name crabbox-openclaw-desktop-20260101-1200 --wait --json
//	CRABBOX_AWS_AMI=ami-0123 crabbox warmup --provider aws ...
//	crabbox smoke --id cbx_fedcba987654 --output report.json
//	crabbox image promote ami-0123 --proof report.json --json
//
// --provider local runs on the embedded local cloud kept in the state dir
// (no account), so the runbook can be followed command by command; aws
// uses the default AWS credential chain, hetzner HCLOUD_TOKEN. Leases warmed
// by one invocation are used by the next through the state dir (--state-dir,
// CRABBOX_STATE_DIR). run exits with the command's own exit code.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/hetznercloud/hcloud-go/v2/hcloud"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/crabboxtest"
	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/awsec2"
	"github.com/crabbox/crabbox-go/provider/hetzner"
)

// Exit codes besides a run command's own.
const (
	exitFailed = 1 // the operation failed (or the smoke, or promotion was refused)
	exitUsage  = 2 // bad command line
)

// usageError is a bad command line.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// exitError carries an exit code (run's command, a failed smoke).
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit code %d", e.code)
	}
	return e.err.Error()
}

const usage = `usage: crabbox <command> [flags]

commands:
  warmup      lease a machine (--class --desktop --browser --ttl --idle-timeout --image --channel)
  run         run a command on a lease (--id [--no-sync] [--shell] -- command...)
  screenshot  save a screenshot of a lease's display (--id --output)
  smoke       run the candidate smoke that applies to a lease and record its proof (--id [--output])
  release     release a lease (--id)
  vnc         forward the lease's VNC server to 127.0.0.1 until interrupted (--id)
  list        list live leases
  image create    image a lease (--id --name [--wait] [--prepare])
  image promote   point a channel at an image (IMAGE --proof REPORT | --force REASON)
  image known-good  mark the promoted image known-good (IMAGE --proof REPORT of a normal lease)
  image rollback  move a channel back to the previous known-good image (--channel --reason)
  image list      list images ([--all])
  image cleanup   plan (or, with --dry-run=false, apply) the image cleanup

common flags: --provider local|aws|hetzner (CRABBOX_PROVIDER, default local),
  --state-dir DIR (CRABBOX_STATE_DIR), --operator NAME, --json (records are JSON always)
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command line and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runOn(ctx, builtinClouds(), args, stdout, stderr)
}

// runOn is run with the providers clouds opens (a test swaps one for an
// emulated cloud).
func runOn(ctx context.Context, clouds map[string]cloudFunc, args []string, stdout, stderr io.Writer) int {
	err := dispatch(ctx, clouds, args, stdout, stderr)
	var ee exitError
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		if ee.err != nil {
			fmt.Fprintf(stderr, "crabbox: %v\n", ee.err)
		}
		return ee.code
	case errors.As(err, &ue), errors.Is(err, flag.ErrHelp):
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stderr, "crabbox: %v\n", err)
		}
		fmt.Fprint(stderr, usage)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "crabbox: %v\n", err)
		return exitFailed
	}
}

func dispatch(ctx context.Context, clouds map[string]cloudFunc, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{"no command"}
	}
	cmd, rest := args[0], args[1:]
	if cmd == "image" {
		if len(rest) == 0 {
			return usageError{"image: no subcommand (create, promote, rollback, list, cleanup)"}
		}
		cmd, rest = "image "+rest[0], rest[1:]
	}
	c, ok := commands[cmd]
	if !ok {
		if cmd == "help" || cmd == "-h" || cmd == "--help" {
			return flag.ErrHelp
		}
		return usageError{fmt.Sprintf("unknown command %q", cmd)}
	}
	e := &env{stdout: stdout, stderr: stderr, clouds: clouds}
	fs := flag.NewFlagSet("crabbox "+cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	e.commonFlags(fs)
	c.flags(fs, e)
	pos, err := parseInterleaved(fs, rest)
	if err != nil {
		return usageError{fmt.Sprintf("%s: %v", cmd, err)}
	}
	e.args = pos
	return c.run(ctx, e)
}

// parseInterleaved parses flags anywhere among the positional arguments
// (image promote IMAGE --json), up to "--", after which everything is
// positional.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		consumed := len(args) - len(rest)
		if consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// env is one invocation: its flags, its client and where it writes.
type env struct {
	stdout, stderr io.Writer
	args           []string
	clouds         map[string]cloudFunc

	provider, stateDir, operator, region string
	jsonOut                              bool
	awsCIDR, awsSG, awsSubnet            string

	// leaseID is --id, for the commands that take one.
	leaseID string

	closers []func() error
}

func (e *env) commonFlags(fs *flag.FlagSet) {
	fs.StringVar(&e.provider, "provider", envOr("CRABBOX_PROVIDER", "local"), "local, aws or hetzner")
	fs.StringVar(&e.stateDir, "state-dir", os.Getenv("CRABBOX_STATE_DIR"), "state dir (lease keys; the local cloud)")
	fs.StringVar(&e.operator, "operator", envOr("CRABBOX_OPERATOR", os.Getenv("USER")), "operator recorded on leases and images")
	fs.StringVar(&e.region, "region", "", "aws region or hetzner location")
	fs.BoolVar(&e.jsonOut, "json", true, "print JSON records (always on; accepted as the runbook writes it)")
	fs.StringVar(&e.awsCIDR, "aws-ssh-cidr", os.Getenv("CRABBOX_AWS_SSH_CIDR"), "aws: source CIDR allowed to SSH")
	fs.StringVar(&e.awsSG, "aws-security-group", os.Getenv("CRABBOX_AWS_SECURITY_GROUP"), "aws: existing security group")
	fs.StringVar(&e.awsSubnet, "aws-subnet", os.Getenv("CRABBOX_AWS_SUBNET"), "aws: subnet")
}

func (e *env) idFlag(fs *flag.FlagSet) { fs.StringVar(&e.leaseID, "id", "", "lease id or slug") }

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// stateRoot is the state dir in use.
func (e *env) stateRoot() (string, error) {
	if e.stateDir != "" {
		return e.stateDir, nil
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("no state dir: give --state-dir or CRABBOX_STATE_DIR: %w", err)
	}
	return filepath.Join(dir, "crabbox"), nil
}

// cloudFunc opens one provider's driver, with the client options it needs;
// root is the state dir.
type cloudFunc func(ctx context.Context, e *env, root string) (provider.Driver, []crabbox.Option, error)

// builtinClouds are the providers --provider names.
func builtinClouds() map[string]cloudFunc {
	return map[string]cloudFunc{"local": localCloud, "aws": awsCloud, "hetzner": hetznerCloud}
}

// localCloud is the embedded local cloud, kept in the state dir.
func localCloud(ctx context.Context, e *env, root string) (provider.Driver, []crabbox.Option, error) {
	cloud, err := crabboxtest.New(crabboxtest.WithPersistentDir(filepath.Join(root, "local-cloud")), crabboxtest.WithImagePendingPolls(0))
	if err != nil {
		return nil, nil, err
	}
	e.closers = append(e.closers, cloud.Close)
	return cloud, []crabbox.Option{crabbox.WithPollBackoff(crabbox.ConstantBackoff(20 * time.Millisecond)),
		crabbox.WithImagePollBackoff(crabbox.ConstantBackoff(20 * time.Millisecond))}, nil
}

// awsCloud is Amazon EC2 with the default credential chain.
func awsCloud(ctx context.Context, e *env, root string) (provider.Driver, []crabbox.Option, error) {
	var lo []func(*config.LoadOptions) error
	if e.region != "" {
		lo = append(lo, config.WithRegion(e.region))
	}
	cfg, err := config.LoadDefaultConfig(ctx, lo...)
	if err != nil {
		return nil, nil, err
	}
	var opts []awsec2.Option
	if e.awsCIDR != "" {
		opts = append(opts, awsec2.WithSSHCIDR(e.awsCIDR))
	}
	if e.awsSG != "" {
		opts = append(opts, awsec2.WithSecurityGroup(e.awsSG))
	}
	if e.awsSubnet != "" {
		opts = append(opts, awsec2.WithSubnet(e.awsSubnet))
	}
	drv, err := awsec2.New(cfg, opts...)
	return drv, nil, err
}

// hetznerCloud is Hetzner Cloud (HCLOUD_TOKEN).
func hetznerCloud(ctx context.Context, e *env, root string) (provider.Driver, []crabbox.Option, error) {
	token := os.Getenv("HCLOUD_TOKEN")
	if token == "" {
		return nil, nil, errors.New("hetzner: HCLOUD_TOKEN is not set")
	}
	var opts []hetzner.Option
	if e.region != "" {
		opts = append(opts, hetzner.WithLocation(e.region))
	}
	drv, err := hetzner.New(hcloud.NewClient(hcloud.WithToken(token), hcloud.WithApplication("crabbox", "")), opts...)
	return drv, nil, err
}

// client opens the provider and the SDK client; close releases what it
// opened (the local cloud saves its state).
func (e *env) client(ctx context.Context) (*crabbox.Client, error) {
	root, err := e.stateRoot()
	if err != nil {
		return nil, err
	}
	open, ok := e.clouds[e.provider]
	if !ok {
		return nil, usageError{fmt.Sprintf("--provider %q: local, aws or hetzner", e.provider)}
	}
	drv, extra, err := open(ctx, e, root)
	if err != nil {
		return nil, err
	}
	opts := []crabbox.Option{crabbox.WithStateDir(filepath.Join(root, "sdk"))}
	if e.operator != "" {
		opts = append(opts, crabbox.WithOperator(e.operator))
	}
	return crabbox.New(drv, append(opts, extra...)...)
}

func (e *env) close() error {
	var errs []error
	for i := len(e.closers) - 1; i >= 0; i-- {
		errs = append(errs, e.closers[i]())
	}
	e.closers = nil
	return errors.Join(errs...)
}

// withClient runs fn with the client and closes what it opened.
func (e *env) withClient(ctx context.Context, fn func(c *crabbox.Client) error) error {
	c, err := e.client(ctx)
	if err != nil {
		return errors.Join(err, e.close())
	}
	err = fn(c)
	return errors.Join(err, e.close())
}

// lease re-attaches the --id lease.
func (e *env) lease(ctx context.Context, c *crabbox.Client) (*crabbox.Lease, error) {
	if e.leaseID == "" {
		return nil, usageError{"--id is required"}
	}
	l, err := c.Lease(ctx, e.leaseID)
	if err != nil {
		return nil, err
	}
	e.closers = append(e.closers, l.Close)
	return l, nil
}

// withLease runs fn with the client and the --id lease.
func (e *env) withLease(ctx context.Context, fn func(l *crabbox.Lease) error) error {
	return e.withClient(ctx, func(c *crabbox.Client) error {
		l, err := e.lease(ctx, c)
		if err != nil {
			return err
		}
		return fn(l)
	})
}

func (e *env) print(v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// command is one subcommand: its own flags and what it does.
type command struct {
	flags func(fs *flag.FlagSet, e *env)
	run   func(ctx context.Context, e *env) error
}

var commands = map[string]command{
	"warmup":           warmupCmd(),
	"run":              runCmd(),
	"screenshot":       screenshotCmd(),
	"smoke":            smokeCmd(),
	"release":          releaseCmd(),
	"list":             listCmd(),
	"image create":     imageCreateCmd(),
	"image promote":    imagePromoteCmd(),
	"image rollback":   imageRollbackCmd(),
	"image known-good": imageKnownGoodCmd(),
	"image list":       imageListCmd(),
	"image cleanup":    imageCleanupCmd(),
}

func noFlags(*flag.FlagSet, *env) {}

func warmupCmd() command {
	var class, image, channel string
	var desktop, browser, keep bool
	var ttl, idle time.Duration
	return command{
		flags: func(fs *flag.FlagSet, e *env) {
			fs.StringVar(&class, "class", crabbox.ClassStandard, "lease class")
			fs.BoolVar(&desktop, "desktop", false, "a desktop (Xvfb) lease")
			fs.BoolVar(&browser, "browser", false, "with a browser")
			fs.DurationVar(&ttl, "ttl", 90*time.Minute, "hard lifetime")
			fs.DurationVar(&idle, "idle-timeout", 30*time.Minute, "idle expiry")
			fs.StringVar(&image, "image", "", "boot this image (CRABBOX_AWS_AMI on aws, CRABBOX_HETZNER_IMAGE on hetzner)")
			fs.StringVar(&channel, "channel", crabbox.DefaultChannel, "channel whose promoted image boots")
			fs.BoolVar(&keep, "keep-on-failure", false, "keep a machine that never became ready")
		},
		run: func(ctx context.Context, e *env) error {
			if len(e.args) > 0 {
				return usageError{"warmup takes no arguments"}
			}
			if image == "" {
				switch e.provider {
				case "aws":
					image = os.Getenv("CRABBOX_AWS_AMI")
				case "hetzner":
					image = os.Getenv("CRABBOX_HETZNER_IMAGE")
				}
			}
			opts := []crabbox.LeaseOption{crabbox.WithClass(class), crabbox.WithTTL(ttl), crabbox.WithIdleTimeout(idle), crabbox.WithChannel(channel)}
			if desktop {
				opts = append(opts, crabbox.WithDesktop())
			}
			if browser {
				opts = append(opts, crabbox.WithBrowser())
			}
			if image != "" {
				opts = append(opts, crabbox.WithImage(image))
			}
			if keep {
				opts = append(opts, crabbox.WithKeepOnFailure())
			}
			return e.withClient(ctx, func(c *crabbox.Client) error {
				fmt.Fprintf(e.stderr, "crabbox: warming a %s lease on %s (waits for the machine to boot and answer SSH)...\n", class, c.Provider().Name)
				l, err := c.Warmup(ctx, opts...)
				if l != nil {
					e.closers = append(e.closers, l.Close)
					if perr := e.print(l); perr != nil {
						return errors.Join(err, perr)
					}
				}
				return err
			})
		},
	}
}

func runCmd() command {
	var noSync, shell bool
	return command{
		flags: func(fs *flag.FlagSet, e *env) {
			e.idFlag(fs)
			fs.BoolVar(&noSync, "no-sync", false, "do not copy the current directory to the box first")
			fs.BoolVar(&shell, "shell", false, "the arguments are one shell command line")
		},
		run: func(ctx context.Context, e *env) error {
			if len(e.args) == 0 {
				return usageError{"run: no command (run --id ID [--shell] -- command...)"}
			}
			command := strings.Join(e.args, " ")
			if !shell {
				q := make([]string, len(e.args))
				for i, a := range e.args {
					q[i] = crabbox.ShellQuote(a)
				}
				command = strings.Join(q, " ")
			}
			var wd string
			if !noSync {
				var err error
				if wd, err = os.Getwd(); err != nil {
					return err
				}
				if home, _ := os.UserHomeDir(); wd == "/" || wd == home {
					return usageError{fmt.Sprintf("run: refusing to sync %s to the box; cd into the project, or give --no-sync", wd)}
				}
			}
			return e.withLease(ctx, func(l *crabbox.Lease) error {
				if !noSync {
					res, err := l.SyncDir(ctx, wd, crabbox.WorkRoot)
					if err != nil {
						return fmt.Errorf("syncing %s (give --no-sync to skip): %w", wd, err)
					}
					fmt.Fprintf(e.stderr, "crabbox: synced %d files (%d bytes) to %s, left out %d private paths\n",
						res.Files, res.Bytes, crabbox.WorkRoot, len(res.Excluded))
					command = `cd "${CRABBOX_FS_ROOT:-}"` + crabbox.ShellQuote(crabbox.WorkRoot) + " && " + command
				}
				res, err := l.Run(ctx, command, crabbox.WithStdout(e.stdout), crabbox.WithStderr(e.stderr))
				if res != nil && errors.Is(err, crabbox.ErrCommandFailed) {
					code := res.ExitCode
					if res.Signal != "" || code <= 0 {
						code = 128 + 9
					}
					return exitError{code: code}
				}
				return err
			})
		},
	}
}

func screenshotCmd() command {
	var output string
	return command{
		flags: func(fs *flag.FlagSet, e *env) {
			e.idFlag(fs)
			fs.StringVar(&output, "output", "", "PNG file to write")
		},
		run: func(ctx context.Context, e *env) error {
			if output == "" {
				return usageError{"screenshot: --output is required"}
			}
			return e.withLease(ctx, func(l *crabbox.Lease) error {
				png, err := l.Screenshot(ctx)
				if err != nil {
					return err
				}
				if err := os.WriteFile(output, png, 0o644); err != nil {
					return err
				}
				st, _ := crabbox.JudgeScreenshot(png)
				return e.print(map[string]any{"lease": l.ID, "output": output, "bytes": len(png), "stats": st})
			})
		},
	}
}

func smokeCmd() command {
	var output, tools, evidence string
	return command{
		flags: func(fs *flag.FlagSet, e *env) {
			e.idFlag(fs)
			fs.StringVar(&output, "output", "", "write the report (JSON) here; image promote --proof takes it")
			fs.StringVar(&tools, "tools", "", "comma-separated tools that must exist (default: the runbook's list; sh on --provider local)")
			fs.StringVar(&evidence, "evidence-dir", "", "keep screenshots and recordings here")
		},
		run: func(ctx context.Context, e *env) error {
			return e.withLease(ctx, func(l *crabbox.Lease) error {
				o := crabbox.CheckSetOptions{Desktop: l.Desktop, Browser: l.Browser}
				switch {
				case tools != "":
					o.Tools = strings.Split(tools, ",")
				case e.provider == "local":
					o.Tools = []string{"sh"}
				}
				// The candidate smoke for an image booted explicitly, the
				// promoted smoke (with hygiene) for a normal lease.
				checks := crabbox.CandidateSmoke(o)
				if l.ImageSource == crabbox.ImagePromoted {
					o.Hygiene = true
					checks = crabbox.PromotedSmoke(o)
				}
				var sopts []crabbox.SmokeOption
				if evidence != "" {
					sopts = append(sopts, crabbox.WithEvidenceDir(evidence))
				}
				fmt.Fprintf(e.stderr, "crabbox: running %d smoke checks on %s...\n", len(checks), l.ID)
				rep, err := crabbox.Smoke(ctx, l, checks, sopts...)
				if rep == nil || len(rep.Results) == 0 {
					return err
				}
				// The report, passing or failing, is written: a failing
				// one is the record of why the image is not promoted.
				if output != "" {
					f, err := os.Create(output)
					if err != nil {
						return err
					}
					werr := rep.WriteJSON(f)
					if err := errors.Join(werr, f.Close()); err != nil {
						return err
					}
				}
				if err := rep.WriteJSON(e.stdout); err != nil {
					return err
				}
				if !rep.OK() {
					return exitError{code: exitFailed, err: fmt.Errorf("smoke of %s (image %s) failed: %s", l.ID, l.ImageID, failedChecks(rep))}
				}
				return err
			})
		},
	}
}

func failedChecks(rep *crabbox.SmokeReport) string {
	var names []string
	for _, r := range rep.Results {
		if !r.Passed {
			names = append(names, r.Title)
		}
	}
	return strings.Join(names, ", ")
}

func vncCmd() command {
	return command{
		flags: func(fs *flag.FlagSet, e *env) { e.idFlag(fs) },
		run: func(ctx context.Context, e *env) error {
			return e.withLease(ctx, func(l *crabbox.Lease) error {
				t, err := l.ForwardVNC(ctx)
				if err != nil {
					return err
				}
				defer t.Close()
				if err := e.print(map[string]string{"lease": l.ID, "vnc": t.LocalAddr(), "box": t.RemoteAddr()}); err != nil {
					return err
				}
				fmt.Fprintf(e.stderr, "crabbox: point a VNC viewer at %s; Ctrl-C ends the tunnel\n", t.LocalAddr())
				select {
				case <-ctx.Done():
					return nil
				case <-t.Done():
					return t.Err()
				}
			})
		},
	}
}

func releaseCmd() command {
	return command{
		flags: func(fs *flag.FlagSet, e *env) { e.idFlag(fs) },
		run: func(ctx context.Context, e *env) error {
			return e.withLease(ctx, func(l *crabbox.Lease) error {
				if err := l.Release(ctx); err != nil {
					return err
				}
				return e.print(map[string]any{"released": l.ID, "machine_id": l.MachineID})
			})
		},
	}
}

func listCmd() command {
	return command{
		flags: noFlags,
		run: func(ctx context.Context, e *env) error {
			return e.withClient(ctx, func(c *crabbox.Client) error {
				ls, err := c.Leases(ctx)
				if err != nil {
					return err
				}
				return e.print(ls)
			})
		},
	}
}

func imageCreateCmd() command {
	var name string
	var wait, prepare bool
	var timeout time.Duration
	return command{
		flags: func(fs *flag.FlagSet, e *env) {
			e.idFlag(fs)
			fs.StringVar(&name, "name", "", "image name (owner-product-purpose-YYYYMMDD-HHMM)")
			fs.BoolVar(&wait, "wait", false, "wait until the image is available")
			fs.DurationVar(&timeout, "wait-timeout", 45*time.Minute, "how long --wait waits")
			fs.BoolVar(&prepare, "prepare", true, "prepare the box first (clean caches, lock the lease's key out)")
		},
		run: func(ctx context.Context, e *env) error {
			if name == "" || e.leaseID == "" {
				return usageError{"image create: --id and --name are required"}
			}
			var opts []crabbox.ImageOption
			if wait {
				opts = append(opts, crabbox.WithWait(timeout))
			}
			if prepare {
				opts = append(opts, crabbox.WithPrepare())
			}
			return e.withClient(ctx, func(c *crabbox.Client) error {
				if wait {
					fmt.Fprintf(e.stderr, "crabbox: creating image %s from %s and waiting until it is available (up to %s)...\n", name, e.leaseID, timeout)
				}
				img, err := c.CreateImage(ctx, e.leaseID, name, opts...)
				if img != nil {
					if perr := e.print(img); perr != nil {
						return errors.Join(err, perr)
					}
				}
				return err
			})
		},
	}
}

func imagePromoteCmd() command {
	var proof, force, channel string
	return command{
		flags: func(fs *flag.FlagSet, e *env) {
			fs.StringVar(&proof, "proof", "", "the report file `crabbox smoke --output` wrote for a lease booted with --image IMAGE")
			fs.StringVar(&force, "force", "", "promote without proof, recording this reason (break glass)")
			fs.StringVar(&channel, "channel", crabbox.DefaultChannel, "channel")
		},
		run: func(ctx context.Context, e *env) error {
			if len(e.args) != 1 {
				return usageError{"image promote: give one image id"}
			}
			id := e.args[0]
			opts := []crabbox.PromoteOption{crabbox.WithPromoteChannel(channel)}
			switch {
			case force != "":
				opts = append(opts, crabbox.Force(force))
			case proof != "":
				rep, err := readReport(proof)
				if err != nil {
					return err
				}
				opts = append(opts, crabbox.WithProof(rep))
			}
			how := fmt.Sprintf("warm a lease on it (crabbox warmup --provider %s --image %s), smoke it (crabbox smoke --id LEASE --output report.json) and promote with --proof report.json", e.provider, id)
			if force == "" && proof == "" {
				return exitError{code: exitFailed, err: fmt.Errorf("refusing to promote %s without a passing proof: %s", id, how)}
			}
			return e.withClient(ctx, func(c *crabbox.Client) error {
				p, err := c.Promote(ctx, id, opts...)
				if errors.Is(err, crabbox.ErrNoProof) {
					return exitError{code: exitFailed, err: fmt.Errorf("%w\nto get a passing proof: %s", err, how)}
				}
				if err != nil {
					return err
				}
				return e.print(p)
			})
		},
	}
}

// readReport reads a report file smoke --output wrote.
func readReport(path string) (*crabbox.SmokeReport, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var rep crabbox.SmokeReport
	if err := json.Unmarshal(b, &rep); err != nil {
		return nil, fmt.Errorf("%s is not a smoke report: %w", path, err)
	}
	return &rep, nil
}

func imageKnownGoodCmd() command {
	var proof, channel string
	return command{
		flags: func(fs *flag.FlagSet, e *env) {
			fs.StringVar(&proof, "proof", "", "the report `crabbox smoke --output` wrote for a normal lease on the promoted image")
			fs.StringVar(&channel, "channel", crabbox.DefaultChannel, "channel")
		},
		run: func(ctx context.Context, e *env) error {
			if len(e.args) != 1 || proof == "" {
				return usageError{"image known-good: give one image id and --proof REPORT"}
			}
			rep, err := readReport(proof)
			if err != nil {
				return err
			}
			return e.withClient(ctx, func(c *crabbox.Client) error {
				img, err := c.MarkKnownGood(ctx, e.args[0], rep, crabbox.WithPromoteChannel(channel))
				if err != nil {
					return err
				}
				return e.print(img)
			})
		},
	}
}

func imageRollbackCmd() command {
	var channel, reason string
	return command{
		flags: func(fs *flag.FlagSet, e *env) {
			fs.StringVar(&channel, "channel", crabbox.DefaultChannel, "channel")
			fs.StringVar(&reason, "reason", "", "why (recorded)")
		},
		run: func(ctx context.Context, e *env) error {
			if reason == "" {
				return usageError{"image rollback: --reason is required"}
			}
			return e.withClient(ctx, func(c *crabbox.Client) error {
				p, err := c.Rollback(ctx, channel, reason)
				if err != nil {
					return err
				}
				return e.print(p)
			})
		},
	}
}

func imageListCmd() command {
	var all bool
	return command{
		flags: func(fs *flag.FlagSet, e *env) {
			fs.BoolVar(&all, "all", false, "include images crabbox did not create")
		},
		run: func(ctx context.Context, e *env) error {
			f := crabbox.OwnedImages()
			if all {
				f = crabbox.AllImages()
			}
			return e.withClient(ctx, func(c *crabbox.Client) error {
				imgs, err := c.Images(ctx, f)
				if err != nil {
					return err
				}
				return e.print(imgs)
			})
		},
	}
}

func imageCleanupCmd() command {
	dryRun := true
	return command{
		flags: func(fs *flag.FlagSet, e *env) {
			fs.BoolVar(&dryRun, "dry-run", true, "only print the plan (--dry-run=false applies it)")
		},
		run: func(ctx context.Context, e *env) error {
			return e.withClient(ctx, func(c *crabbox.Client) error {
				plan, err := c.PlanCleanup(ctx, crabbox.CleanupPolicy{})
				if err != nil {
					return err
				}
				if dryRun {
					return e.print(plan)
				}
				res, err := plan.Apply(ctx)
				if res != nil {
					if perr := e.print(res); perr != nil {
						return errors.Join(err, perr)
					}
				}
				return err
			})
		},
	}
}
