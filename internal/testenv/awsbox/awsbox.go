// Package awsbox emulates the boxes behind moto's EC2 instances: for each
// instance the SDK dials, it starts a real OpenSSH sshd on loopback with the
// host key, login user and authorized keys from that instance's user-data
// (read back from moto with DescribeInstanceAttribute userData), after
// "booting" the box's file system the way cloud-init would: the user-data's
// files, work root and bootstrap marker under a per-box directory that
// sessions see as CRABBOX_FS_ROOT (sshd SetEnv).
//
// The SDK reaches boxes through Emulator.Dial (crabbox.WithDialer), which
// maps the public or private address moto handed out to the box's loopback
// sshd. Addresses moto hands out are never dialled: an address that is not
// an emulated running instance is refused without touching the network.
//
// A box booted from an image made of another emulated box starts from a
// copy of that box's file system (the image's SourceInstanceId), so what a
// bake installed under CRABBOX_FS_ROOT is there on the candidate.
//
// Commands run on the host as the box's login user (created if missing; the
// tests run as root). Kill simulates box death. The box half (user-data,
// user, file system, sshd) is internal/testenv/box; this package is the
// EC2 half: finding instances, their user-data and images in moto.
//
// With Options.RealCloudInit (NewWith; Start with CRABBOX_REAL_CLOUDINIT=1)
// the boxes are booted by the real cloud-init instead
// (internal/testenv/cloudbox): a Debian image in namespaces of its own
// reads the instance's user-data from its NoCloud seed, and the box's own
// sshd answers. Such a box boots in the background when first dialled
// (Dial refuses it until its sshd is up, like a real instance that is still
// booting); a box booted from an image made of another box starts from a
// snapshot of what that box changed on the image, and Root is "" (the box's
// file system is in its own mount namespace).
package awsbox

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/crabbox/crabbox-go/internal/testenv/box"
	"github.com/crabbox/crabbox-go/internal/testenv/cloudbox"
	"github.com/crabbox/crabbox-go/internal/testenv/sshd"
)

// EC2API is what the emulator asks moto.
type EC2API interface {
	DescribeInstances(ctx context.Context, in *ec2.DescribeInstancesInput, optFns ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
	DescribeInstanceAttribute(ctx context.Context, in *ec2.DescribeInstanceAttributeInput, optFns ...func(*ec2.Options)) (*ec2.DescribeInstanceAttributeOutput, error)
	DescribeImages(ctx context.Context, in *ec2.DescribeImagesInput, optFns ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error)
}

// ErrRefused is returned by Dial for addresses without a running emulated
// box (booting, killed, terminated, or not an instance at all).
var ErrRefused = errors.New("awsbox: connection refused")

// Options choose how boxes boot. The zero value boots them in process.
type Options struct {
	// RealCloudInit boots every box with the real cloud-init
	// (internal/testenv/cloudbox) instead of parsing its user-data.
	RealCloudInit bool
}

// Emulator runs the boxes. Its methods are safe for concurrent use.
type Emulator struct {
	ec2   EC2API
	dir   string
	image string // cloudbox image when booting with the real cloud-init

	bctx   context.Context // real boots run under it; Close cancels it
	cancel context.CancelFunc

	mu     sync.Mutex
	boxes  map[string]*instanceBox // by instance id
	closed bool
}

// machine is a booted box: in process (box.Box) or real (cloudbox.Box).
type machine interface {
	Addr() string
	Log() string
	Stop()
	Close() error
}

// instanceBox is an instance's box: booted once, when first dialled.
type instanceBox struct {
	id   string
	root string

	mu      sync.Mutex
	box     machine       // nil until booted
	real    *cloudbox.Box // the same box when booted by the real cloud-init
	booted  chan struct{} // real boots: closed when the boot ended
	bootErr error         // real boots: why it failed
	killed  bool
}

// New returns an emulator asking c (a client of the moto server the driver
// uses) about instances. Everything it starts stops when t ends. Missing
// sshd skips t (fails it when CI=true).
func New(t testing.TB, c EC2API) *Emulator {
	t.Helper()
	return NewWith(t, c, Options{})
}

// NewWith is New with options. With RealCloudInit a host that cannot run
// real cloud-init boxes skips t (fails it when CI=true).
func NewWith(t testing.TB, c EC2API, o Options) *Emulator {
	t.Helper()
	var image string
	if o.RealCloudInit {
		image = cloudbox.Require(t)
	} else {
		sshd.Require(t)
	}
	e, err := newEmulator(c, image)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			e.logBoxes(t)
		}
		e.Close()
	})
	return e
}

// Start returns an emulator outside of tests (the runbook example). Close
// it when done. CRABBOX_REAL_CLOUDINIT=1 in the environment boots its boxes
// with the real cloud-init (Options.RealCloudInit).
func Start(c EC2API) (*Emulator, error) {
	if os.Getenv("CRABBOX_REAL_CLOUDINIT") == "1" {
		if err := cloudbox.Available(); err != nil {
			return nil, err
		}
		image, err := cloudbox.EnsureImage(context.Background())
		if err != nil {
			return nil, err
		}
		return newEmulator(c, image)
	}
	if err := box.Available(); err != nil {
		return nil, err
	}
	return newEmulator(c, "")
}

func newEmulator(c EC2API, image string) (*Emulator, error) {
	dir, err := os.MkdirTemp("", "cbx-awsbox-")
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	bctx, cancel := context.WithCancel(context.Background())
	return &Emulator{ec2: c, dir: dir, image: image, bctx: bctx, cancel: cancel, boxes: map[string]*instanceBox{}}, nil
}

// Close stops every box (waiting for real boots in progress to end) and
// removes their file systems.
func (e *Emulator) Close() {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	e.closed = true
	e.cancel()
	boxes := make([]*instanceBox, 0, len(e.boxes))
	for _, b := range e.boxes {
		boxes = append(boxes, b)
	}
	e.mu.Unlock()
	for _, b := range boxes {
		b.mu.Lock()
		booted := b.booted
		b.mu.Unlock()
		if booted != nil {
			<-booted
		}
		b.mu.Lock()
		if b.box != nil {
			_ = b.box.Close()
		}
		b.killed = true
		b.mu.Unlock()
	}
	os.RemoveAll(e.dir)
}

// logBoxes logs every box's sshd output, for a failed test.
func (e *Emulator) logBoxes(t testing.TB) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for id, b := range e.boxes {
		b.mu.Lock()
		if b.box != nil {
			t.Logf("awsbox: %s sshd %s log:\n%s", id, b.box.Addr(), b.box.Log())
		}
		b.mu.Unlock()
	}
}

// Dial is a crabbox.DialFunc: it connects to the sshd of the emulated box
// whose moto address is addr (host:22). Loopback addresses are dialled as
// is; any other address that is not a running emulated instance fails with
// ErrRefused and is never dialled.
func (e *Emulator) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return d.DialContext(ctx, network, addr)
	}
	b, err := e.boxFor(ctx, host)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	booted := b.booted
	b.mu.Unlock()
	if booted != nil {
		select {
		case <-booted:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %s (instance %s is still booting)", ErrRefused, addr, b.id)
		}
	}
	b.mu.Lock()
	var target string
	if !b.killed && b.box != nil {
		target = b.box.Addr()
	}
	bootErr := b.bootErr
	b.mu.Unlock()
	if bootErr != nil {
		return nil, fmt.Errorf("%w: %s (instance %s did not boot: %v)", ErrRefused, addr, b.id, bootErr)
	}
	if target == "" {
		return nil, fmt.Errorf("%w: %s (instance %s is down)", ErrRefused, addr, b.id)
	}
	return d.DialContext(ctx, "tcp", target)
}

// boxFor finds the instance with address host and boots its box once.
func (e *Emulator) boxFor(ctx context.Context, host string) (*instanceBox, error) {
	in, err := e.instanceByAddr(ctx, host)
	if err != nil {
		return nil, err
	}
	id := aws.ToString(in.InstanceId)
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil, fmt.Errorf("%w: the emulator is closed", ErrRefused)
	}
	b, ok := e.boxes[id]
	if !ok {
		b = &instanceBox{id: id, root: filepath.Join(e.dir, id, "root")}
		e.boxes[id] = b
	}
	e.mu.Unlock()
	if in.State == nil || in.State.Name != types.InstanceStateNameRunning {
		b.mu.Lock()
		if b.box != nil {
			b.box.Stop() // stopped or terminated in moto: the box is gone
			b.killed = true
		}
		b.mu.Unlock()
		return nil, fmt.Errorf("%w: instance %s is %v", ErrRefused, id, in.State)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.box != nil || b.killed || b.booted != nil {
		return b, nil
	}
	if err := e.boot(ctx, b, in); err != nil {
		return nil, fmt.Errorf("awsbox: booting %s: %w", id, err)
	}
	return b, nil
}

func (e *Emulator) instanceByAddr(ctx context.Context, host string) (*types.Instance, error) {
	for _, f := range []string{"ip-address", "private-ip-address"} {
		out, err := e.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []types.Filter{
			{Name: aws.String(f), Values: []string{host}},
		}})
		if err != nil {
			return nil, fmt.Errorf("awsbox: looking up %s: %w", host, err)
		}
		var found *types.Instance
		for _, r := range out.Reservations {
			for i := range r.Instances {
				in := &r.Instances[i]
				// Prefer a live instance if moto reused an address.
				if found == nil || (in.State != nil && in.State.Name == types.InstanceStateNameRunning) {
					found = in
				}
			}
		}
		if found != nil {
			return found, nil
		}
	}
	return nil, fmt.Errorf("%w: %s is not an emulated instance (never dialled)", ErrRefused, host)
}

// boot reads the instance's user-data and boots its box under b.root
// (from the image's source box, if emulated). Called with b.mu held.
func (e *Emulator) boot(ctx context.Context, b *instanceBox, in *types.Instance) error {
	attr, err := e.ec2.DescribeInstanceAttribute(ctx, &ec2.DescribeInstanceAttributeInput{
		InstanceId: in.InstanceId, Attribute: types.InstanceAttributeNameUserData,
	})
	if err != nil {
		return err
	}
	if attr.UserData == nil || aws.ToString(attr.UserData.Value) == "" {
		return errors.New("instance has no user-data")
	}
	raw, err := base64.StdEncoding.DecodeString(aws.ToString(attr.UserData.Value))
	if err != nil {
		return fmt.Errorf("user-data: %w", err)
	}
	if e.image != "" {
		return e.bootReal(ctx, b, in, raw)
	}
	bx, err := box.Boot(ctx, raw, box.Options{Root: b.root, From: e.imageSourceRoot(ctx, aws.ToString(in.ImageId))})
	if err != nil {
		return err
	}
	b.box = bx
	return nil
}

// bootReal starts booting the instance's box with the real cloud-init in
// the background (from a snapshot of the image's source box, if emulated).
// Called with b.mu held.
func (e *Emulator) bootReal(ctx context.Context, b *instanceBox, in *types.Instance, userData []byte) error {
	var layers []string
	if src := e.imageSource(ctx, aws.ToString(in.ImageId)); src != nil {
		l, err := src.Snapshot(ctx, filepath.Join(e.dir, b.id, "image"))
		if err != nil {
			return err
		}
		layers = l
	}
	b.booted = make(chan struct{})
	o := cloudbox.Options{Image: e.image, Layers: layers, Dir: filepath.Join(e.dir, b.id, "cloudbox"),
		InstanceID: b.id, Hostname: b.id}
	go func() {
		ctx, cancel := context.WithTimeout(e.bctx, 10*time.Minute)
		defer cancel()
		cb, err := cloudbox.Boot(ctx, userData, o)
		b.mu.Lock()
		defer b.mu.Unlock()
		defer close(b.booted)
		switch {
		case err != nil:
			b.bootErr = err
		case b.killed || e.bctx.Err() != nil:
			_ = cb.Close()
		default:
			b.box, b.real = cb, cb
		}
	}()
	return nil
}

// imageSource returns the real box the image was made from, if any.
func (e *Emulator) imageSource(ctx context.Context, imageID string) *cloudbox.Box {
	out, err := e.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{imageID}})
	if err != nil || len(out.Images) == 0 {
		return nil
	}
	src := aws.ToString(out.Images[0].SourceInstanceId)
	e.mu.Lock()
	sb := e.boxes[src]
	e.mu.Unlock()
	if src == "" || sb == nil {
		return nil
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return sb.real
}

// imageSourceRoot returns the file-system root of the emulated box the
// image was made from, if any.
func (e *Emulator) imageSourceRoot(ctx context.Context, imageID string) string {
	out, err := e.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{imageID}})
	if err != nil || len(out.Images) == 0 {
		return ""
	}
	src := aws.ToString(out.Images[0].SourceInstanceId)
	if src == "" {
		return ""
	}
	e.mu.Lock()
	sb := e.boxes[src]
	e.mu.Unlock()
	if sb == nil {
		return ""
	}
	if _, err := os.Stat(sb.root); err != nil {
		return ""
	}
	return sb.root
}

// Kill simulates the death of an instance's box: its sshd stops and new
// connections are refused (moto still lists the instance).
func (e *Emulator) Kill(instanceID string) error {
	e.mu.Lock()
	b := e.boxes[instanceID]
	e.mu.Unlock()
	if b == nil {
		return fmt.Errorf("awsbox: no box for %s", instanceID)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.killed = true
	if b.box != nil {
		b.box.Stop()
	}
	return nil
}

// Root returns the box's file-system root (CRABBOX_FS_ROOT), "" if the box
// never booted or was booted by the real cloud-init.
func (e *Emulator) Root(instanceID string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if b := e.boxes[instanceID]; b != nil && e.image == "" {
		return b.root
	}
	return ""
}
