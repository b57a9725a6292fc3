package hcloudfake

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"
	"golang.org/x/crypto/ssh"
)

func newClient(t *testing.T, f *Fake, opts ...hcloud.ClientOption) *hcloud.Client {
	t.Helper()
	base := []hcloud.ClientOption{
		hcloud.WithEndpoint(f.URL()),
		hcloud.WithToken("test-token"),
		hcloud.WithPollOpts(hcloud.PollOpts{BackoffFunc: hcloud.ConstantBackoff(time.Millisecond)}),
		hcloud.WithRetryOpts(hcloud.RetryOpts{BackoffFunc: hcloud.ConstantBackoff(time.Millisecond), MaxRetries: 0}),
	}
	return hcloud.NewClient(append(base, opts...)...)
}

func newFake(t *testing.T, opts Options) *Fake {
	t.Helper()
	f := New(opts)
	t.Cleanup(f.Close)
	return f
}

func pubKey(t *testing.T) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp)))
}

func createServer(t *testing.T, c *hcloud.Client, name string, labels map[string]string) hcloud.ServerCreateResult {
	t.Helper()
	res, _, err := c.Server.Create(context.Background(), hcloud.ServerCreateOpts{
		Name:       name,
		ServerType: &hcloud.ServerType{Name: "cx22"},
		Image:      &hcloud.Image{Name: "ubuntu-24.04"},
		Labels:     labels,
		UserData:   "#cloud-config\n",
	})
	if err != nil {
		t.Fatalf("create server: %v", err)
	}
	return res
}

func TestServerLifecycleThroughActions(t *testing.T) {
	f := newFake(t, Options{ActionSteps: 3})
	c := newClient(t, f)
	ctx := context.Background()

	res := createServer(t, c, "box-1", map[string]string{"crabbox": "true"})
	if res.Server.Status != hcloud.ServerStatusInitializing {
		t.Fatalf("new server status = %q, want initializing", res.Server.Status)
	}
	if res.Action.Status != hcloud.ActionStatusRunning || res.Action.Command != "create_server" {
		t.Fatalf("create action = %+v, want running create_server", res.Action)
	}
	ip := res.Server.PublicNet.IPv4.IP
	if ip == nil || !strings.HasPrefix(ip.String(), "203.0.113.") {
		t.Fatalf("public IPv4 = %v, want one in 203.0.113.0/24", ip)
	}
	if res.Server.ServerType.Architecture != hcloud.ArchitectureX86 {
		t.Fatalf("architecture = %q", res.Server.ServerType.Architecture)
	}

	var progress []int
	err := c.Action.WaitForFunc(ctx, func(a *hcloud.Action) error {
		progress = append(progress, a.Progress)
		return nil
	}, res.Action)
	if err != nil {
		t.Fatalf("wait: %v", err)
	}
	if len(progress) < 2 || progress[len(progress)-1] != 100 {
		t.Fatalf("progress sequence = %v, want increasing to 100", progress)
	}
	for i := 1; i < len(progress); i++ {
		if progress[i] < progress[i-1] {
			t.Fatalf("progress went backwards: %v", progress)
		}
	}
	s, _, err := c.Server.GetByID(ctx, res.Server.ID)
	if err != nil || s == nil {
		t.Fatalf("get server: %v %v", s, err)
	}
	if s.Status != hcloud.ServerStatusRunning {
		t.Fatalf("status after create action = %q, want running", s.Status)
	}
	if ud, _ := f.UserData(s.ID); ud != "#cloud-config\n" {
		t.Fatalf("user data = %q", ud)
	}

	// Polling the server alone also brings it up (clients that only poll the server).
	res2 := createServer(t, c, "box-2", nil)
	var st hcloud.ServerStatus
	for i := 0; i < 10 && st != hcloud.ServerStatusRunning; i++ {
		s2, _, err := c.Server.GetByID(ctx, res2.Server.ID)
		if err != nil {
			t.Fatal(err)
		}
		st = s2.Status
	}
	if st != hcloud.ServerStatusRunning {
		t.Fatalf("server never reached running by polling it, last %q", st)
	}

	del, _, err := c.Server.DeleteWithResult(ctx, s)
	if err != nil {
		t.Fatalf("delete: %v", err)
	}
	if err := c.Action.WaitFor(ctx, del.Action); err != nil {
		t.Fatalf("wait delete: %v", err)
	}
	gone, _, err := c.Server.GetByID(ctx, s.ID)
	if err != nil || gone != nil {
		t.Fatalf("deleted server still readable: %v %v", gone, err)
	}
	if got := f.State().Servers; got != 1 {
		t.Fatalf("servers left = %d, want 1", got)
	}
}

func TestErrorShapes(t *testing.T) {
	f := newFake(t, Options{})
	c := newClient(t, f)
	ctx := context.Background()

	// 404 not_found.
	_, resp, err := c.Server.DeleteWithResult(ctx, &hcloud.Server{ID: 424242})
	if !hcloud.IsError(err, hcloud.ErrorCodeNotFound) || resp == nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("delete unknown server: err=%v resp=%v, want not_found 404", err, resp)
	}
	// GetByID maps not_found to nil, nil as documented by hcloud-go.
	if s, _, err := c.Server.GetByID(ctx, 424242); s != nil || err != nil {
		t.Fatalf("GetByID unknown = %v, %v", s, err)
	}

	// 409 uniqueness_error on server names.
	createServer(t, c, "dup", nil)
	_, resp, err = c.Server.Create(ctx, hcloud.ServerCreateOpts{Name: "dup",
		ServerType: &hcloud.ServerType{Name: "cx22"}, Image: &hcloud.Image{Name: "ubuntu-24.04"}})
	if !hcloud.IsError(err, hcloud.ErrorCodeUniquenessError) || resp.StatusCode != http.StatusConflict {
		t.Fatalf("duplicate name: %v (status %d), want uniqueness_error 409", err, resp.StatusCode)
	}

	// 400 invalid_input with field details.
	_, resp, err = c.Server.Create(ctx, hcloud.ServerCreateOpts{Name: "bad-labels",
		ServerType: &hcloud.ServerType{Name: "cx22"}, Image: &hcloud.Image{Name: "ubuntu-24.04"},
		Labels: map[string]string{"ok": "has space"}})
	var herr hcloud.Error
	if !errors.As(err, &herr) || herr.Code != hcloud.ErrorCodeInvalidInput || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("invalid label: %v, want invalid_input 400", err)
	}
	if d, ok := herr.Details.(hcloud.ErrorDetailsInvalidInput); !ok || len(d.Fields) != 1 || d.Fields[0].Name != "labels" {
		t.Fatalf("invalid_input details = %#v", herr.Details)
	}

	// Unknown server type is invalid input, not a crash.
	_, _, err = c.Server.Create(ctx, hcloud.ServerCreateOpts{Name: "x",
		ServerType: &hcloud.ServerType{Name: "nope"}, Image: &hcloud.Image{Name: "ubuntu-24.04"}})
	if !hcloud.IsError(err, hcloud.ErrorCodeInvalidInput) {
		t.Fatalf("unknown type: %v", err)
	}

	// Architecture mismatch between image and type.
	_, _, err = c.Server.Create(ctx, hcloud.ServerCreateOpts{Name: "x",
		ServerType: &hcloud.ServerType{Name: "cax11"}, Image: &hcloud.Image{ID: 161547269}})
	if !hcloud.IsError(err, hcloud.ErrorCodeInvalidInput) {
		t.Fatalf("arch mismatch: %v", err)
	}

	// 401 with a wrong token when the fake requires one.
	f2 := newFake(t, Options{Token: "right"})
	c2 := newClient(t, f2, hcloud.WithToken("wrong"))
	_, resp, err = c2.Server.List(ctx, hcloud.ServerListOpts{})
	if !hcloud.IsError(err, hcloud.ErrorCodeUnauthorized) || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong token: %v", err)
	}
}

func TestRateLimitFault(t *testing.T) {
	f := newFake(t, Options{})
	c := newClient(t, f)
	ctx := context.Background()
	f.InjectFault(Fault{Method: "GET", Path: "/servers", Code: "rate_limit_exceeded", Times: 2})

	_, resp, err := c.Server.List(ctx, hcloud.ServerListOpts{})
	if !hcloud.IsError(err, hcloud.ErrorCodeRateLimitExceeded) {
		t.Fatalf("err = %v, want rate_limit_exceeded", err)
	}
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("status = %d, want 429", resp.StatusCode)
	}
	if resp.Meta.Ratelimit.Limit != 3600 || resp.Meta.Ratelimit.Remaining != 0 || resp.Meta.Ratelimit.Reset.IsZero() {
		t.Fatalf("rate limit meta = %+v", resp.Meta.Ratelimit)
	}

	// hcloud-go's own retry policy retries rate limits: with retries enabled
	// the second fault is absorbed and the call succeeds.
	cr := newClient(t, f, hcloud.WithRetryOpts(hcloud.RetryOpts{BackoffFunc: hcloud.ConstantBackoff(time.Millisecond), MaxRetries: 3}))
	if _, _, err := cr.Server.List(ctx, hcloud.ServerListOpts{}); err != nil {
		t.Fatalf("retried list: %v", err)
	}
	if n := f.PendingFaults(); n != 0 {
		t.Fatalf("pending faults = %d", n)
	}
}

func TestCapacityFaultForOneType(t *testing.T) {
	f := newFake(t, Options{})
	c := newClient(t, f)
	ctx := context.Background()
	f.InjectFault(Fault{ServerType: "cx22", Code: "resource_limit_exceeded"})

	_, resp, err := c.Server.Create(ctx, hcloud.ServerCreateOpts{Name: "a",
		ServerType: &hcloud.ServerType{Name: "cx22"}, Image: &hcloud.Image{Name: "ubuntu-24.04"}})
	if !hcloud.IsError(err, hcloud.ErrorCodeResourceLimitExceeded) || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("err = %v, want resource_limit_exceeded 403", err)
	}
	if f.State().Servers != 0 {
		t.Fatal("a failed create left a server")
	}
	if _, _, err := c.Server.Create(ctx, hcloud.ServerCreateOpts{Name: "a",
		ServerType: &hcloud.ServerType{Name: "cx32"}, Image: &hcloud.Image{Name: "ubuntu-24.04"}}); err != nil {
		t.Fatalf("other type: %v", err)
	}
}

func TestPagination(t *testing.T) {
	f := newFake(t, Options{})
	c := newClient(t, f)
	ctx := context.Background()
	for i := 0; i < 60; i++ {
		if _, _, err := c.SSHKey.Create(ctx, hcloud.SSHKeyCreateOpts{Name: fmt.Sprintf("k%02d", i), PublicKey: pubKey(t),
			Labels: map[string]string{"n": fmt.Sprint(i % 3)}}); err != nil {
			t.Fatal(err)
		}
	}
	keys, resp, err := c.SSHKey.List(ctx, hcloud.SSHKeyListOpts{ListOpts: hcloud.ListOpts{Page: 1, PerPage: 50}})
	if err != nil {
		t.Fatal(err)
	}
	p := resp.Meta.Pagination
	if len(keys) != 50 || p == nil || p.Page != 1 || p.NextPage != 2 || p.LastPage != 2 || p.TotalEntries != 60 || p.PreviousPage != 0 {
		t.Fatalf("page 1: %d keys, pagination %+v", len(keys), p)
	}
	// per_page above 50 is capped at 50, like the API.
	keys, _, err = c.SSHKey.List(ctx, hcloud.SSHKeyListOpts{ListOpts: hcloud.ListOpts{PerPage: 100}})
	if err != nil || len(keys) != 50 {
		t.Fatalf("per_page 100: %d keys, %v", len(keys), err)
	}
	all, err := c.SSHKey.AllWithOpts(ctx, hcloud.SSHKeyListOpts{ListOpts: hcloud.ListOpts{PerPage: 7}})
	if err != nil || len(all) != 60 {
		t.Fatalf("all: %d, %v", len(all), err)
	}
	seen := map[int64]bool{}
	for _, k := range all {
		if seen[k.ID] {
			t.Fatalf("key %d returned twice across pages", k.ID)
		}
		seen[k.ID] = true
	}
	sel, err := c.SSHKey.AllWithOpts(ctx, hcloud.SSHKeyListOpts{ListOpts: hcloud.ListOpts{LabelSelector: "n=1", PerPage: 5}})
	if err != nil || len(sel) != 20 {
		t.Fatalf("selector across pages: %d, %v", len(sel), err)
	}
}

func TestLabelSelectors(t *testing.T) {
	f := newFake(t, Options{})
	c := newClient(t, f)
	ctx := context.Background()
	sets := map[string]map[string]string{
		"a": {"env": "prod", "team": "x"},
		"b": {"env": "dev"},
		"c": {"team": "y", "example.com/tier": "1"},
		"d": {},
	}
	for name, l := range sets {
		if _, _, err := c.SSHKey.Create(ctx, hcloud.SSHKeyCreateOpts{Name: name, PublicKey: pubKey(t), Labels: l}); err != nil {
			t.Fatal(err)
		}
	}
	cases := map[string]string{
		"env":                   "ab",
		"!env":                  "cd",
		"env=prod":              "a",
		"env==dev":              "b",
		"env!=prod":             "bcd",
		"env in (prod,dev)":     "ab",
		"env notin (prod)":      "bcd",
		"team,env=prod":         "a",
		"team, !env":            "c",
		"example.com/tier=1":    "c",
		"team in (x, y),!env":   "c",
		"env=prod,env=dev":      "",
		"env in (prod),team=x ": "a",
	}
	for selector, want := range cases {
		keys, err := c.SSHKey.AllWithOpts(ctx, hcloud.SSHKeyListOpts{ListOpts: hcloud.ListOpts{LabelSelector: selector}})
		if err != nil {
			t.Fatalf("%q: %v", selector, err)
		}
		got := ""
		for _, n := range []string{"a", "b", "c", "d"} {
			for _, k := range keys {
				if k.Name == n {
					got += n
				}
			}
		}
		if got != want {
			t.Errorf("selector %q matched %q, want %q", selector, got, want)
		}
	}
	for _, bad := range []string{"env in (prod", "=x", "a b", "env=has space"} {
		_, err := c.SSHKey.AllWithOpts(ctx, hcloud.SSHKeyListOpts{ListOpts: hcloud.ListOpts{LabelSelector: bad}})
		if !hcloud.IsError(err, hcloud.ErrorCodeInvalidInput) {
			t.Errorf("selector %q: err = %v, want invalid_input", bad, err)
		}
	}
}

func TestSSHKeyUniqueness(t *testing.T) {
	f := newFake(t, Options{})
	c := newClient(t, f)
	ctx := context.Background()
	pk := pubKey(t)
	k, _, err := c.SSHKey.Create(ctx, hcloud.SSHKeyCreateOpts{Name: "one", PublicKey: pk})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(k.Fingerprint, ":") || len(k.Fingerprint) != 47 {
		t.Fatalf("fingerprint = %q, want MD5 hex pairs", k.Fingerprint)
	}
	if _, _, err := c.SSHKey.Create(ctx, hcloud.SSHKeyCreateOpts{Name: "two", PublicKey: pk}); !hcloud.IsError(err, hcloud.ErrorCodeUniquenessError) {
		t.Fatalf("same key twice: %v", err)
	}
	if _, _, err := c.SSHKey.Create(ctx, hcloud.SSHKeyCreateOpts{Name: "one", PublicKey: pubKey(t)}); !hcloud.IsError(err, hcloud.ErrorCodeUniquenessError) {
		t.Fatalf("same name twice: %v", err)
	}
	byFP, _, err := c.SSHKey.GetByFingerprint(ctx, k.Fingerprint)
	if err != nil || byFP == nil || byFP.ID != k.ID {
		t.Fatalf("by fingerprint: %v %v", byFP, err)
	}
	if _, err := c.SSHKey.Delete(ctx, k); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SSHKey.Delete(ctx, k); !hcloud.IsError(err, hcloud.ErrorCodeNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}

func TestSnapshotLifecycle(t *testing.T) {
	f := newFake(t, Options{ImageSizeGB: 2.5})
	c := newClient(t, f)
	ctx := context.Background()
	res := createServer(t, c, "src", nil)

	// The server is locked while its create action runs.
	_, _, err := c.Server.CreateImage(ctx, res.Server, &hcloud.ServerCreateImageOpts{Type: hcloud.ImageTypeSnapshot})
	if !hcloud.IsError(err, hcloud.ErrorCodeLocked) {
		t.Fatalf("create_image on initializing server: %v, want locked", err)
	}
	if err := c.Action.WaitFor(ctx, res.Action); err != nil {
		t.Fatal(err)
	}
	desc := "owner-product-purpose-20260506-0235"
	ci, _, err := c.Server.CreateImage(ctx, res.Server, &hcloud.ServerCreateImageOpts{
		Type: hcloud.ImageTypeSnapshot, Description: &desc, Labels: map[string]string{"crabbox": "true", "tok": "t1"}})
	if err != nil {
		t.Fatal(err)
	}
	if ci.Image.Status != hcloud.ImageStatusCreating || ci.Image.Type != hcloud.ImageTypeSnapshot || ci.Image.ImageSize != 0 {
		t.Fatalf("new image = %+v", ci.Image)
	}
	if ci.Image.Description != desc || ci.Image.Labels["tok"] != "t1" || ci.Image.CreatedFrom == nil || ci.Image.CreatedFrom.ID != res.Server.ID {
		t.Fatalf("new image fields = %+v", ci.Image)
	}
	// A second create_image while the first runs is locked.
	if _, _, err := c.Server.CreateImage(ctx, res.Server, nil); !hcloud.IsError(err, hcloud.ErrorCodeLocked) {
		t.Fatalf("concurrent create_image: %v, want locked", err)
	}
	if err := c.Action.WaitFor(ctx, ci.Action); err != nil {
		t.Fatal(err)
	}
	im, _, err := c.Image.GetByID(ctx, ci.Image.ID)
	if err != nil || im == nil {
		t.Fatal(err)
	}
	if im.Status != hcloud.ImageStatusAvailable || im.ImageSize != 2.5 || im.Architecture != hcloud.ArchitectureX86 {
		t.Fatalf("finished image = %+v", im)
	}
	// Selector and type filters.
	list, err := c.Image.AllWithOpts(ctx, hcloud.ImageListOpts{Type: []hcloud.ImageType{hcloud.ImageTypeSnapshot},
		ListOpts: hcloud.ListOpts{LabelSelector: "crabbox=true,tok=t1"}})
	if err != nil || len(list) != 1 || list[0].ID != im.ID {
		t.Fatalf("list by selector: %v %v", list, err)
	}
	sys, err := c.Image.AllWithOpts(ctx, hcloud.ImageListOpts{Name: "ubuntu-24.04", Architecture: []hcloud.Architecture{hcloud.ArchitectureARM}})
	if err != nil || len(sys) != 1 || sys[0].Type != hcloud.ImageTypeSystem {
		t.Fatalf("system image by name+arch: %v %v", sys, err)
	}

	// Protection.
	act, _, err := c.Image.ChangeProtection(ctx, im, hcloud.ImageChangeProtectionOpts{Delete: hcloud.Ptr(true)})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Action.WaitFor(ctx, act); err != nil {
		t.Fatal(err)
	}
	resp, err := c.Image.Delete(ctx, im)
	if !hcloud.IsError(err, hcloud.ErrorCodeProtected) || resp.StatusCode != http.StatusLocked {
		t.Fatalf("delete protected: %v", err)
	}
	if _, _, err := c.Image.ChangeProtection(ctx, im, hcloud.ImageChangeProtectionOpts{Delete: hcloud.Ptr(false)}); err != nil {
		t.Fatal(err)
	}
	// Labels update replaces the set.
	up, _, err := c.Image.Update(ctx, im, hcloud.ImageUpdateOpts{Labels: map[string]string{"only": "this"}})
	if err != nil || len(up.Labels) != 1 || up.Labels["only"] != "this" {
		t.Fatalf("update labels: %v %v", up, err)
	}
	if _, err := c.Image.Delete(ctx, im); err != nil {
		t.Fatal(err)
	}
	if f.State().Images != 0 {
		t.Fatal("image left after delete")
	}
	// System images cannot be deleted.
	if _, err := c.Image.Delete(ctx, &hcloud.Image{ID: 161547269}); !hcloud.IsError(err, hcloud.ErrorCodeForbidden) {
		t.Fatalf("delete system image: %v", err)
	}
}

func TestAmbiguousCreateImageFault(t *testing.T) {
	f := newFake(t, Options{})
	c := newClient(t, f)
	ctx := context.Background()
	res := createServer(t, c, "src", nil)
	if err := c.Action.WaitFor(ctx, res.Action); err != nil {
		t.Fatal(err)
	}
	f.InjectFault(Fault{Path: "/servers/*/actions/create_image", Code: "service_error", After: true})
	_, resp, err := c.Server.CreateImage(ctx, res.Server, &hcloud.ServerCreateImageOpts{Type: hcloud.ImageTypeSnapshot,
		Labels: map[string]string{"token": "abc"}})
	if !hcloud.IsError(err, hcloud.ErrorCodeServiceError) || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("err = %v, want service_error 503", err)
	}
	ims := f.Images()
	if len(ims) != 1 || ims[0].Labels["token"] != "abc" {
		t.Fatalf("the ambiguous create should have created the image: %+v", ims)
	}
}

type echoBox struct {
	ln     net.Listener
	closed chan struct{}
	once   sync.Once
}

func (b *echoBox) Addr() string { return b.ln.Addr().String() }
func (b *echoBox) Close() error {
	b.once.Do(func() { close(b.closed) })
	return b.ln.Close()
}

func TestBootHookAndDial(t *testing.T) {
	var mu sync.Mutex
	var boxes []*echoBox
	var reqs []BootRequest
	f := newFake(t, Options{Boot: func(ctx context.Context, r BootRequest) (Box, error) {
		if r.Name == "broken" {
			return nil, errors.New("no sshd")
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		b := &echoBox{ln: ln, closed: make(chan struct{})}
		go func() {
			for {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				_, _ = io.WriteString(conn, r.Name+"\n")
				conn.Close()
			}
		}()
		mu.Lock()
		boxes = append(boxes, b)
		reqs = append(reqs, r)
		mu.Unlock()
		return b, nil
	}})
	c := newClient(t, f)
	ctx := context.Background()
	res := createServer(t, c, "boxed", map[string]string{"k": "v"})
	if len(reqs) != 1 || reqs[0].UserData != "#cloud-config\n" || reqs[0].Labels["k"] != "v" || reqs[0].IPv4 != res.Server.PublicNet.IPv4.IP.String() {
		t.Fatalf("boot requests = %+v", reqs)
	}
	conn, err := f.Dial(ctx, "tcp", net.JoinHostPort(res.Server.PublicNet.IPv4.IP.String(), "22"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(conn)
	conn.Close()
	if string(b) != "boxed\n" {
		t.Fatalf("dial reached %q", b)
	}
	if _, err := f.Dial(ctx, "tcp", "203.0.113.250:22"); err == nil {
		t.Fatal("dial to an unknown fake address succeeded")
	}
	if f.State().Boxes != 1 {
		t.Fatal("box not counted")
	}
	if _, _, err := c.Server.DeleteWithResult(ctx, res.Server); err != nil {
		t.Fatal(err)
	}
	select {
	case <-boxes[0].closed:
	default:
		t.Fatal("deleting the server did not close its box")
	}
	if _, err := f.Dial(ctx, "tcp", net.JoinHostPort(res.Server.PublicNet.IPv4.IP.String(), "22")); err == nil {
		t.Fatal("dial after delete succeeded")
	}

	// A failing boot fails the create action and leaves the server off.
	br := createServer(t, c, "broken", nil)
	if err := c.Action.WaitFor(ctx, br.Action); err == nil || !strings.Contains(err.Error(), "no sshd") {
		t.Fatalf("broken boot: wait = %v, want the boot error", err)
	}
	s, _, _ := c.Server.GetByID(ctx, br.Server.ID)
	if s == nil || s.Status != hcloud.ServerStatusOff {
		t.Fatalf("broken boot server = %+v", s)
	}
}

func TestResourceActionLists(t *testing.T) {
	f := newFake(t, Options{ActionSteps: 3, Snapshot: func(_ context.Context, _, imageID int64) error {
		if imageID%2 == 0 {
			return errors.New("disk read error")
		}
		return nil
	}})
	c := newClient(t, f)
	ctx := context.Background()
	res := createServer(t, c, "box", nil)

	// The running create_server action is listed for the server, and
	// waiting for what the list returns brings the server up.
	running, _, err := c.Server.Action.ListFor(ctx, res.Server, hcloud.ActionListOpts{Status: []hcloud.ActionStatus{hcloud.ActionStatusRunning}})
	if err != nil || len(running) != 1 || running[0].ID != res.Action.ID || running[0].Command != "create_server" {
		t.Fatalf("running server actions = %+v, %v; want the create_server action", running, err)
	}
	var progress []int
	if err := c.Action.WaitForFunc(ctx, func(a *hcloud.Action) error {
		progress = append(progress, a.Progress)
		return nil
	}, running...); err != nil {
		t.Fatal(err)
	}
	if progress[len(progress)-1] != 100 {
		t.Fatalf("progress = %v", progress)
	}
	if running, _, _ = c.Server.Action.ListFor(ctx, res.Server, hcloud.ActionListOpts{Status: []hcloud.ActionStatus{hcloud.ActionStatusRunning}}); len(running) != 0 {
		t.Fatalf("running actions after the wait = %+v", running)
	}
	all, _, err := c.Server.Action.ListFor(ctx, res.Server, hcloud.ActionListOpts{})
	if err != nil || len(all) != 1 || all[0].Status != hcloud.ActionStatusSuccess {
		t.Fatalf("all server actions = %+v, %v", all, err)
	}

	// Snapshots: one succeeds, one fails; each image lists its create_image
	// action, the failed one with the action's error.
	var ok, failed *hcloud.Image
	for ok == nil || failed == nil {
		ci, _, err := c.Server.CreateImage(ctx, res.Server, &hcloud.ServerCreateImageOpts{Type: hcloud.ImageTypeSnapshot})
		if err != nil {
			t.Fatal(err)
		}
		werr := c.Action.WaitFor(ctx, ci.Action)
		if ci.Image.ID%2 == 0 {
			var ae hcloud.ActionError
			if !errors.As(werr, &ae) || !strings.Contains(ae.Message, "disk read error") {
				t.Fatalf("wait for a failing snapshot: %v, want an ActionError", werr)
			}
			failed = ci.Image
		} else {
			if werr != nil {
				t.Fatal(werr)
			}
			ok = ci.Image
		}
	}
	acts, _, err := c.Image.Action.ListFor(ctx, failed, hcloud.ActionListOpts{Status: []hcloud.ActionStatus{hcloud.ActionStatusError}})
	if err != nil || len(acts) != 1 || acts[0].Command != "create_image" || !strings.Contains(acts[0].ErrorMessage, "disk read error") {
		t.Fatalf("failed image's error actions = %+v, %v", acts, err)
	}
	acts, _, err = c.Image.Action.ListFor(ctx, ok, hcloud.ActionListOpts{})
	if err != nil || len(acts) != 1 || acts[0].Status != hcloud.ActionStatusSuccess || acts[0].Progress != 100 {
		t.Fatalf("good image's actions = %+v, %v", acts, err)
	}
	if _, _, err := c.Server.Action.ListFor(ctx, &hcloud.Server{ID: 999999}, hcloud.ActionListOpts{}); !hcloud.IsError(err, hcloud.ErrorCodeNotFound) {
		t.Fatalf("actions of a missing server: %v, want not_found", err)
	}
}

// A Late fault applies the request after the client gave up: the client sees
// its context's error, the key exists once WaitLate returns.
func TestLateFault(t *testing.T) {
	f := newFake(t, Options{})
	c := newClient(t, f)
	ctx, cancel := context.WithCancel(t.Context())
	f.InjectFault(Fault{Method: "POST", Path: "/ssh_keys", Late: 100 * time.Millisecond, OnHold: cancel})
	_, _, err := c.SSHKey.Create(ctx, hcloud.SSHKeyCreateOpts{Name: "late", PublicKey: pubKey(t)})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("held request = %v, want context.Canceled", err)
	}
	f.WaitLate()
	if n := len(f.SSHKeys()); n != 1 {
		t.Fatalf("%d keys after a late request, want 1", n)
	}
	if l := f.LateFailures(); len(l) != 0 {
		t.Errorf("LateFailures = %v", l)
	}
}
