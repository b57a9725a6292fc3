// Rules every subtest's resources are held to: idempotency by token, SSH
// login with the lease's keys, context errors, and the fault hook the
// harness may offer to check error mapping and adoption after a lost reply.

package providertest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/crabbox/crabbox-go/internal/cloudinit"
	"github.com/crabbox/crabbox-go/provider"
)

// unsafeName is a machine name that breaks every backend's naming rules
// (spaces, a slash, non-ASCII, upper case, too long): the driver must
// sanitize it.
func unsafeName(role, runID string) string {
	return "Conformance " + role + "/" + runID + " Ünïcode! " + strings.Repeat("x", 64)
}

// checkMachineToken creates the machine again with the same request: the
// Token must give the same machine, not a second one.
func (s *suite) checkMachineToken(t *testing.T, req provider.CreateMachineRequest, id string) {
	t.Helper()
	d := s.h.Driver
	again, err := d.CreateMachine(t.Context(), req)
	switch {
	case err != nil:
		t.Errorf("CreateMachine retried with the Token of machine %s: %v: want that machine", id, err)
	case again == nil || again.ID != id:
		t.Errorf("CreateMachine retried with the Token of machine %s returned %+v: want the same machine (idempotent by Token)", id, again)
	}
	s.checkOneMachine(t, req.Labels, "after a create retried with the same Token")
}

// checkOneMachine checks that exactly one machine that is not terminated
// carries labels.
func (s *suite) checkOneMachine(t *testing.T, labels map[string]string, after string) {
	t.Helper()
	ms, err := s.h.Driver.ListMachines(t.Context(), labels)
	if err != nil {
		t.Fatalf("ListMachines(%v): %v", labels, err)
	}
	var live []string
	for _, m := range ms {
		if m != nil && m.State != provider.MachineTerminated {
			live = append(live, m.ID)
		}
	}
	if len(live) != 1 {
		t.Errorf("%s, %d machines carry labels %v (%v): want exactly one", after, len(live), labels, live)
	}
}

// checkImageToken creates the image again with the same request: the Token
// must give the same image.
func checkImageToken(t *testing.T, imgs provider.Images, req provider.CreateImageRequest, id string) {
	t.Helper()
	again, err := imgs.CreateImage(t.Context(), req)
	switch {
	case err != nil:
		t.Errorf("CreateImage retried with the Token of image %s: %v: want that image", id, err)
	case again == nil || again.ID != id:
		t.Errorf("CreateImage retried with the Token of image %s returned %+v: want the same image (idempotent by Token)", id, again)
	}
}

// checkLogin logs in to a running machine over SSH with the client key the
// machine was created with and runs a command, when the harness can reach
// machines (Harness.Dial). The host key is pinned when the suite rendered
// the user-data; otherwise the harness's user-data decides it and it is not
// checked.
func (s *suite) checkLogin(t *testing.T, m *provider.Machine, token string, key ed25519.PrivateKey) {
	t.Helper()
	if s.h.Dial == nil {
		t.Logf("SSH login not checked: the harness cannot reach machines (Harness.Dial is nil)")
		return
	}
	signer, err := ssh.NewSignerFromKey(key)
	if err != nil {
		t.Fatalf("client key: %v", err)
	}
	hostKey := ssh.InsecureIgnoreHostKey() //nolint:gosec // pinned below when known
	if hk := s.hostKey(token); hk != nil {
		hostKey = ssh.FixedHostKey(hk)
	}
	user := s.h.SSHUser
	if user == "" {
		user = cloudinit.DefaultUser
	}
	cfg := &ssh.ClientConfig{User: user, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)}, HostKeyCallback: hostKey,
		Timeout: 10 * time.Second}
	var out string
	s.poll(t, fmt.Sprintf("an SSH login to machine %s at %s", m.ID, m.SSHAddr), func(ctx context.Context) (bool, string, error) {
		got, err := runOver(ctx, s.h.Dial, m.SSHAddr, cfg, "echo crabbox-conformance-ok")
		if err != nil {
			// A booting box refuses for a while: keep polling.
			return false, err.Error(), nil
		}
		out = got
		return true, "", nil
	})
	if strings.TrimSpace(out) != "crabbox-conformance-ok" {
		t.Errorf("command over SSH on machine %s printed %q", m.ID, out)
	}
}

func runOver(ctx context.Context, dial func(ctx context.Context, network, addr string) (net.Conn, error),
	addr string, cfg *ssh.ClientConfig, cmd string) (string, error) {
	dctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	conn, err := dial(dctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	_ = conn.SetDeadline(time.Now().Add(cfg.Timeout))
	cc, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	if err != nil {
		_ = conn.Close()
		return "", err
	}
	c := ssh.NewClient(cc, chans, reqs)
	defer c.Close()
	sess, err := c.NewSession()
	if err != nil {
		return "", err
	}
	defer sess.Close()
	b, err := sess.Output(cmd)
	return string(b), err
}

// checkDoneContexts calls the machine methods with a cancelled and an
// expired context: each returns the context's error, never mapped to
// ErrUnavailable, and a create makes nothing.
func (s *suite) checkDoneContexts(t *testing.T, id string) {
	t.Helper()
	d := s.h.Driver
	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	for _, c := range []struct {
		name string
		ctx  context.Context
		want error
	}{{"cancelled", cancelledCtx(), context.Canceled}, {"expired", expired, context.DeadlineExceeded}} {
		req := s.machineRequest(t, "done-context")
		labels := req.Labels
		check := func(call string, err error) { checkCtxErr(t, c.name, call, err, c.want) }
		_, err := d.GetMachine(c.ctx, id)
		check("GetMachine", err)
		_, err = d.ListMachines(c.ctx, labels)
		check("ListMachines", err)
		check("UpdateMachineLabels", d.UpdateMachineLabels(c.ctx, id, map[string]string{LabelExtra: "x"}))
		m, err := d.CreateMachine(c.ctx, req)
		check("CreateMachine", err)
		if m != nil {
			_ = d.DeleteMachine(context.Background(), m.ID)
		}
		if ms, err := d.ListMachines(t.Context(), labels); err != nil {
			t.Errorf("ListMachines(%v): %v", labels, err)
		} else if len(ms) > 0 {
			t.Errorf("CreateMachine with a %s context made machines %v", c.name, machineIDs(ms))
			for _, m := range ms {
				_ = d.DeleteMachine(context.Background(), m.ID)
			}
		}
		if imgs, ok := d.(provider.Images); ok {
			_, err := imgs.GetImage(c.ctx, s.image(t))
			check("GetImage", err)
			_, err = imgs.ListImages(c.ctx, labels)
			check("ListImages", err)
		}
		if chs, ok := d.(provider.Channels); ok {
			_, err := chs.CurrentChannel(c.ctx, "conformance-done-"+s.runID)
			check("CurrentChannel", err)
			_, err = chs.ChannelHistory(c.ctx, "conformance-done-"+s.runID)
			check("ChannelHistory", err)
		}
	}
}

// checkCtxErr checks what a call with a done context returned.
func checkCtxErr(t *testing.T, how, call string, err, want error) {
	t.Helper()
	switch {
	case err == nil:
		t.Errorf("%s with a %s context returned no error: want one matching %v", call, how, want)
	case !errors.Is(err, want):
		t.Errorf("%s with a %s context: %v: want an error matching %v", call, how, err, want)
	case provider.Retryable(err):
		t.Errorf("%s with a %s context: %v: matches a retryable code, so the SDK would retry it: pass context errors through unmapped", call, how, err)
	}
}

// FaultKind is a class of backend failure the suite asks Harness.Inject
// to make, to check the driver's error mapping and adoption.
type FaultKind string

const (
	// FaultCapacity: no capacity for the machine type (want ErrCapacity).
	FaultCapacity FaultKind = "capacity"
	// FaultQuota: the account's or project's limit is used up (want
	// ErrQuota, not ErrCapacity: another type counts against the same
	// limit, so falling back would be futile and the message misleading).
	FaultQuota FaultKind = "quota"
	// FaultThrottled: the request is rate limited (want ErrThrottled).
	FaultThrottled FaultKind = "throttled"
	// FaultPermission: the credentials lack a permission (want
	// ErrPermission).
	FaultPermission FaultKind = "permission"
	// FaultLostReply: the backend applies the request, but its reply is
	// lost (a server error or a dropped connection): a retry with the same
	// Token must give the resource the request made, not a second one.
	FaultLostReply FaultKind = "lost-reply"
)

// Calls whose backend request Harness.Inject targets.
const (
	CallCreateMachine = "CreateMachine"
	CallCreateImage   = "CreateImage"
)

// wantCode is the portable code each fault must map to.
var wantCode = map[FaultKind]error{
	FaultCapacity: provider.ErrCapacity, FaultQuota: provider.ErrQuota,
	FaultThrottled: provider.ErrThrottled, FaultPermission: provider.ErrPermission,
}

// testFaults checks, with Harness.Inject, that each fault class on
// CreateMachine maps to its code and leaves no machine, and that a create
// whose reply was lost is adopted by its Token. Without Inject it says
// these rules were not checked.
func (s *suite) testFaults(t *testing.T) {
	if s.h.Inject == nil {
		t.Skip("not checked: the harness has no fault hook (Harness.Inject)")
	}
	d := s.h.Driver
	for _, kind := range []FaultKind{FaultCapacity, FaultQuota, FaultThrottled, FaultPermission} {
		t.Run(string(kind), func(t *testing.T) {
			restore, err := s.h.Inject(CallCreateMachine, kind)
			if errors.Is(err, provider.ErrUnsupported) {
				t.Skipf("not checked: the harness cannot make %s faults: %v", kind, err)
			}
			if err != nil {
				t.Fatalf("Inject(%s, %s): %v", CallCreateMachine, kind, err)
			}
			req := s.machineRequest(t, "fault-"+string(kind))
			m, err := d.CreateMachine(t.Context(), req)
			restore()
			if !errors.Is(err, wantCode[kind]) {
				t.Errorf("CreateMachine answered with a %s fault: %+v, %v: want an error wrapping %v", kind, m, err, wantCode[kind])
			}
			s.deleteLabelled(t, req.Labels, m)
		})
	}
	t.Run(string(FaultLostReply), func(t *testing.T) {
		restore, err := s.h.Inject(CallCreateMachine, FaultLostReply)
		if errors.Is(err, provider.ErrUnsupported) {
			t.Skipf("not checked: the harness cannot lose replies: %v", err)
		}
		if err != nil {
			t.Fatalf("Inject(%s, %s): %v", CallCreateMachine, FaultLostReply, err)
		}
		req := s.machineRequest(t, "fault-lost-reply")
		first, ferr := d.CreateMachine(t.Context(), req)
		restore()
		again, err := d.CreateMachine(t.Context(), req)
		switch {
		case err != nil:
			t.Errorf("CreateMachine retried after a lost reply (first: %+v, %v): %v: want the machine the first request made", first, ferr, err)
		case again == nil:
			t.Errorf("CreateMachine retried after a lost reply returned nil, nil")
		case first != nil && first.ID != again.ID:
			t.Errorf("CreateMachine after a lost reply returned %s, the retry %s: want the same machine", first.ID, again.ID)
		}
		s.checkOneMachine(t, req.Labels, "after a lost reply and a retry with the same Token")
		s.deleteLabelled(t, req.Labels, first, again)
	})
}

// machineRequest is a create request for a test machine with a role, whose
// machines are deleted when t ends.
func (s *suite) machineRequest(t *testing.T, role string) provider.CreateMachineRequest {
	t.Helper()
	labels := s.machineLabels(role)
	t.Cleanup(func() { s.deleteLabelled(t, labels) })
	token := "cbx_" + randomHex(6)
	authorized, _ := newClientKey(t)
	return provider.CreateMachineRequest{Token: token, Name: unsafeName(role, s.runID), Image: s.image(t),
		Type: s.machineType(t), UserData: s.userData(t, token, authorized),
		Labels: maps.Clone(labels), AuthorizedKey: []byte(authorized + "\n")}
}

// newClientKey makes a client key: its authorized_keys line and the
// private key.
func newClientKey(t *testing.T) (string, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatalf("generating the client key: %v", err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatalf("generating the client key: %v", err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))), priv
}

// deleteLabelled deletes every machine carrying labels, and the machines
// given, with a fresh context.
func (s *suite) deleteLabelled(t *testing.T, labels map[string]string, known ...*provider.Machine) {
	ctx, cancel := s.cleanupCtx()
	defer cancel()
	ms, err := s.h.Driver.ListMachines(ctx, labels)
	if err != nil {
		t.Errorf("cleanup: ListMachines(%v): %v", labels, err)
	}
	seen := map[string]bool{}
	for _, m := range append(ms, known...) {
		if m == nil || seen[m.ID] {
			continue
		}
		seen[m.ID] = true
		if err := s.h.Driver.DeleteMachine(ctx, m.ID); err != nil {
			t.Errorf("cleanup: DeleteMachine(%s): %v", m.ID, err)
		}
	}
}

// checkImageLostReply creates a second image from req's machine with a
// reply the harness loses (Harness.Inject): the retry with the same Token
// must give the image the first request made. The image is deleted after.
func (s *suite) checkImageLostReply(t *testing.T, imgs provider.Images, req provider.CreateImageRequest) {
	t.Helper()
	if s.h.Inject == nil {
		return
	}
	req.Token += "-lost"
	req.Name += "-lost"
	req.Labels = maps.Clone(req.Labels)
	req.Labels[LabelExtra] = "lost-reply"
	restore, err := s.h.Inject(CallCreateImage, FaultLostReply)
	if errors.Is(err, provider.ErrUnsupported) {
		t.Logf("image adoption after a lost reply not checked: %v", err)
		return
	}
	if err != nil {
		t.Fatalf("Inject(%s, %s): %v", CallCreateImage, FaultLostReply, err)
	}
	first, ferr := imgs.CreateImage(t.Context(), req)
	restore()
	again, err := imgs.CreateImage(t.Context(), req)
	defer func() {
		ctx, cancel := s.cleanupCtx()
		defer cancel()
		list, _ := imgs.ListImages(ctx, req.Labels)
		for _, im := range append(list, first, again) {
			if im != nil {
				_ = imgs.DeleteImage(ctx, im.ID)
			}
		}
	}()
	switch {
	case err != nil:
		t.Errorf("CreateImage retried after a lost reply (first: %+v, %v): %v: want the image the first request made", first, ferr, err)
	case again == nil:
		t.Errorf("CreateImage retried after a lost reply returned nil, nil")
	case first != nil && first.ID != again.ID:
		t.Errorf("CreateImage after a lost reply returned %s, the retry %s: want the same image", first.ID, again.ID)
	}
	list, err := imgs.ListImages(t.Context(), req.Labels)
	if err != nil {
		t.Fatalf("ListImages(%v): %v", req.Labels, err)
	}
	if len(list) != 1 {
		t.Errorf("after a lost reply and a retry with the same Token, %d images carry labels %v: want exactly one", len(list), req.Labels)
	}
}
