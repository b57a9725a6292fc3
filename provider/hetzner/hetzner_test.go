package hetzner_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"
	"golang.org/x/crypto/ssh"

	"github.com/crabbox/crabbox-go/internal/testenv/hcloudfake"
	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/hetzner"
	"github.com/crabbox/crabbox-go/provider/providertest"
)

type env struct {
	fake   *hcloudfake.Fake
	client *hcloud.Client
	d      *hetzner.Driver

	mu   sync.Mutex
	hook func(*http.Request)
}

// fakeBefore sets (or clears, with nil) a hook run before the fake handles
// each request.
func (e *env) fakeBefore(h func(*http.Request)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.hook = h
}

func newEnv(t *testing.T, fo hcloudfake.Options, retries int, opts ...hetzner.Option) *env {
	t.Helper()
	e := &env{}
	prev := fo.BeforeRequest
	fo.BeforeRequest = func(r *http.Request) {
		if prev != nil {
			prev(r)
		}
		e.mu.Lock()
		h := e.hook
		e.mu.Unlock()
		if h != nil {
			h(r)
		}
	}
	f := hcloudfake.New(fo)
	t.Cleanup(f.Close)
	c := hcloud.NewClient(
		hcloud.WithEndpoint(f.URL()),
		hcloud.WithToken("test"),
		hcloud.WithPollOpts(hcloud.PollOpts{BackoffFunc: hcloud.ConstantBackoff(time.Millisecond)}),
		hcloud.WithRetryOpts(hcloud.RetryOpts{BackoffFunc: hcloud.ConstantBackoff(time.Millisecond), MaxRetries: retries}),
	)
	d, err := hetzner.New(c, opts...)
	if err != nil {
		t.Fatal(err)
	}
	e.fake, e.client, e.d = f, c, d
	return e
}

func authorizedKey(t testing.TB) []byte {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return ssh.MarshalAuthorizedKey(sp)
}

func (e *env) baseImage(t *testing.T) string {
	t.Helper()
	img, err := e.d.BaseImage(context.Background(), "amd64")
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func (e *env) createReq(t *testing.T, token, typ string) provider.CreateMachineRequest {
	return provider.CreateMachineRequest{
		Token: token, Name: "brave-crab", Image: e.baseImage(t), Type: typ,
		UserData: []byte("#cloud-config\n"), Labels: map[string]string{"crabbox-lease": token},
		AuthorizedKey: authorizedKey(t),
	}
}

// waitRunning polls GetMachine like the SDK does.
func (e *env) waitRunning(t *testing.T, id string) *provider.Machine {
	t.Helper()
	for i := 0; i < 50; i++ {
		m, err := e.d.GetMachine(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if m.State == provider.MachineRunning {
			return m
		}
	}
	t.Fatalf("machine %s never became running", id)
	return nil
}

func TestConformance(t *testing.T) {
	e := newEnv(t, hcloudfake.Options{}, 2)
	providertest.Run(t, providertest.Harness{
		Driver:       e.d,
		PollInterval: time.Millisecond,
		Timeout:      30 * time.Second,
	})
	// The suite cleans up after itself: the fake must be empty.
	if st := e.fake.State(); st.Servers != 0 || st.Images != 0 || st.SSHKeys != 0 {
		t.Fatalf("conformance run left resources behind: %+v (keys %+v)", st, e.fake.SSHKeys())
	}
}

func TestMachineLifecycle(t *testing.T) {
	e := newEnv(t, hcloudfake.Options{ActionSteps: 3}, 0, hetzner.WithLocation("nbg1"))
	ctx := context.Background()
	req := e.createReq(t, "cbx_0123456789ab", "cx32")
	req.Labels["Bad Value"] = "x"
	if _, err := e.d.CreateMachine(ctx, req); !errors.Is(err, provider.ErrInvalidArgument) {
		t.Fatalf("invalid label key: %v, want ErrInvalidArgument", err)
	}
	delete(req.Labels, "Bad Value")
	req.Labels["crabbox-operator"] = "Jane Doe <jane@example.com>"

	m, err := e.d.CreateMachine(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	// CreateMachine waited for the create action: the server is up.
	if m.State != provider.MachineRunning || e.fake.State().RunningActions != 0 {
		t.Fatalf("new machine state = %q (running actions %d), want running", m.State, e.fake.State().RunningActions)
	}
	if !strings.HasPrefix(m.SSHAddr, "203.0.113.") || !strings.HasSuffix(m.SSHAddr, ":22") {
		t.Fatalf("SSHAddr = %q", m.SSHAddr)
	}
	if m.Labels["crabbox-operator"] != "Jane-Doe--jane-example.com" {
		t.Fatalf("sanitized operator = %q", m.Labels["crabbox-operator"])
	}
	// The deprecated hetzner.SanitizeLabelValue is provider.SanitizeLabelValue.
	for _, v := range []string{"Jane Doe <jane@example.com>", "ok-value", "", "---", strings.Repeat("a", 70), "-x-"} {
		if got, want := hetzner.SanitizeLabelValue(v), provider.SanitizeLabelValue(v); got != want {
			t.Errorf("hetzner.SanitizeLabelValue(%q) = %q, provider gives %q", v, got, want)
		}
	}
	if got := hetzner.SanitizeLabelValue("Jane Doe <jane@example.com>"); got != "Jane-Doe--jane-example.com" {
		t.Errorf("hetzner.SanitizeLabelValue = %q", got)
	}
	if m.Labels[hetzner.LabelToken] != "cbx_0123456789ab" || m.Labels["crabbox"] != "true" {
		t.Fatalf("labels = %v", m.Labels)
	}
	servers := e.fake.Servers()
	if len(servers) != 1 || servers[0].Location.Name != "nbg1" || servers[0].ServerType.Name != "cx32" || servers[0].Name != "brave-crab" {
		t.Fatalf("fake servers = %+v", servers)
	}
	if ud, _ := e.fake.UserData(servers[0].ID); ud != "#cloud-config\n" {
		t.Fatalf("user data = %q", ud)
	}
	keys := e.fake.SSHKeys()
	if len(keys) != 1 || keys[0].Labels[hetzner.LabelToken] != "cbx_0123456789ab" || keys[0].PublicKey != strings.TrimSpace(string(req.AuthorizedKey)) {
		t.Fatalf("lease key = %+v", keys)
	}

	m = e.waitRunning(t, m.ID)
	if m.Type != "cx32" || m.Image != req.Image {
		t.Fatalf("machine = %+v", m)
	}

	// A retried create with the same token adopts the server.
	again, err := e.d.CreateMachine(ctx, req)
	if err != nil || again.ID != m.ID {
		t.Fatalf("retried create = %+v, %v; want machine %s", again, err, m.ID)
	}
	if st := e.fake.State(); st.Servers != 1 || st.SSHKeys != 1 {
		t.Fatalf("retried create made more: %+v", st)
	}

	if err := e.d.UpdateMachineLabels(ctx, m.ID, map[string]string{"crabbox-state": "ready", "crabbox-lease": ""}); err != nil {
		t.Fatal(err)
	}
	got, _ := e.d.GetMachine(ctx, m.ID)
	if got.Labels["crabbox-state"] != "ready" || got.Labels["crabbox-lease"] != "" || got.Labels[hetzner.LabelToken] == "" {
		t.Fatalf("merged labels = %v", got.Labels)
	}

	if err := e.d.DeleteMachine(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	if st := e.fake.State(); st.Servers != 0 || st.SSHKeys != 0 {
		t.Fatalf("delete left %+v", st)
	}
	if _, err := e.d.GetMachine(ctx, m.ID); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("get deleted: %v", err)
	}
	if err := e.d.DeleteMachine(ctx, m.ID); err != nil {
		t.Fatalf("second delete: %v", err)
	}
}

func TestNameTakenBySomeoneElse(t *testing.T) {
	e := newEnv(t, hcloudfake.Options{}, 0)
	ctx := context.Background()
	// A foreign server already uses the name.
	if _, _, err := e.client.Server.Create(ctx, hcloud.ServerCreateOpts{Name: "brave-crab",
		ServerType: &hcloud.ServerType{Name: "cx22"}, Image: &hcloud.Image{Name: "ubuntu-24.04"}}); err != nil {
		t.Fatal(err)
	}
	m, err := e.d.CreateMachine(ctx, e.createReq(t, "cbx_aaaaaaaaaaaa", "cx22"))
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "brave-crab-cbx-aaaaaaaaaaaa" {
		t.Fatalf("name = %q, want the token-suffixed name", m.Name)
	}
}

func TestCapacityErrorsAndNoLeftovers(t *testing.T) {
	for _, code := range []string{"resource_limit_exceeded", "resource_unavailable", "placement_error",
		"server_type_not_available", "location_not_available"} {
		t.Run(code, func(t *testing.T) {
			e := newEnv(t, hcloudfake.Options{}, 0)
			e.fake.InjectFault(hcloudfake.Fault{ServerType: "cx32", Code: code})
			m, err := e.d.CreateMachine(context.Background(), e.createReq(t, "cbx_0123456789ab", "cx32"))
			if !errors.Is(err, provider.ErrCapacity) || m != nil {
				t.Fatalf("CreateMachine = %v, %v; want nil, ErrCapacity", m, err)
			}
			var herr hcloud.Error
			if !errors.As(err, &herr) || string(herr.Code) != code {
				t.Fatalf("raw hcloud error not reachable: %v", err)
			}
			if st := e.fake.State(); st.Servers != 0 || st.SSHKeys != 0 {
				t.Fatalf("failed create left %+v", st)
			}
			// The next type of the class works.
			if _, err := e.d.CreateMachine(context.Background(), e.createReq(t, "cbx_0123456789ab", "cpx21")); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestErrorMapping(t *testing.T) {
	cases := []struct {
		code string
		want error
	}{
		{"not_found", provider.ErrNotFound},
		{"conflict", provider.ErrConflict},
		{"locked", provider.ErrConflict},
		{"uniqueness_error", provider.ErrConflict},
		{"protected", provider.ErrConflict},
		{"rate_limit_exceeded", provider.ErrThrottled},
		{"service_error", provider.ErrUnavailable},
		{"timeout", provider.ErrUnavailable},
		{"server_error", provider.ErrUnavailable},
		{"maintenance", provider.ErrUnavailable},
		{"forbidden", provider.ErrPermission},
		{"unauthorized", provider.ErrPermission},
		{"invalid_input", provider.ErrInvalidArgument},
		{"json_error", provider.ErrInvalidArgument},
		{"resource_limit_exceeded", provider.ErrCapacity},
		{"unsupported_error", provider.ErrUnsupported},
		{"some_new_code", provider.ErrUnavailable},
	}
	e := newEnv(t, hcloudfake.Options{}, 0)
	for _, c := range cases {
		e.fake.InjectFault(hcloudfake.Fault{Method: "GET", Path: "/servers", Code: c.code})
		_, err := e.d.ListMachines(context.Background(), nil)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.code, err, c.want)
		}
		var pe *provider.Error
		if !errors.As(err, &pe) || pe.Code != c.want {
			t.Errorf("%s: not a single provider.Error with code %v: %#v", c.code, c.want, err)
		}
	}
	// An error without a code falls back to its HTTP status.
	e.fake.InjectFault(hcloudfake.Fault{Method: "GET", Path: "/servers", Code: "", Status: http.StatusBadGateway})
	if _, err := e.d.ListMachines(context.Background(), nil); !errors.Is(err, provider.ErrUnavailable) {
		t.Errorf("bare 502: %v", err)
	}
}

func TestAmbiguousServerCreateAdopts(t *testing.T) {
	e := newEnv(t, hcloudfake.Options{}, 0)
	e.fake.InjectFault(hcloudfake.Fault{Method: "POST", Path: "/servers", Code: "service_error", After: true})
	m, err := e.d.CreateMachine(context.Background(), e.createReq(t, "cbx_0123456789ab", "cx22"))
	if err != nil || m == nil {
		t.Fatalf("CreateMachine after an ambiguous 503 = %v, %v; want the adopted server", m, err)
	}
	if st := e.fake.State(); st.Servers != 1 || st.SSHKeys != 1 {
		t.Fatalf("state = %+v", st)
	}
	if e.fake.Servers()[0].ID != mustID(t, m.ID) {
		t.Fatal("adopted a different server")
	}
}

func TestFailedServerCreateDropsKey(t *testing.T) {
	e := newEnv(t, hcloudfake.Options{}, 0)
	e.fake.InjectFault(hcloudfake.Fault{Method: "POST", Path: "/servers", Code: "service_error"})
	m, err := e.d.CreateMachine(context.Background(), e.createReq(t, "cbx_0123456789ab", "cx22"))
	if !errors.Is(err, provider.ErrUnavailable) || m != nil {
		t.Fatalf("CreateMachine = %v, %v; want ErrUnavailable", m, err)
	}
	if st := e.fake.State(); st.Servers != 0 || st.SSHKeys != 0 {
		t.Fatalf("state = %+v", st)
	}
}

func mustID(t *testing.T, s string) int64 {
	t.Helper()
	var n int64
	for _, c := range s {
		if c < '0' || c > '9' {
			t.Fatalf("id %q is not numeric", s)
		}
		n = n*10 + int64(c-'0')
	}
	return n
}

func (e *env) runningMachine(t *testing.T, token string) *provider.Machine {
	t.Helper()
	m, err := e.d.CreateMachine(context.Background(), e.createReq(t, token, "cx22"))
	if err != nil {
		t.Fatal(err)
	}
	return e.waitRunning(t, m.ID)
}

func (e *env) waitImage(t *testing.T, id string) *provider.Image {
	t.Helper()
	for i := 0; i < 50; i++ {
		im, err := e.d.GetImage(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if im.State == provider.ImageAvailable {
			return im
		}
		if im.State != provider.ImagePending {
			t.Fatalf("image %s state %q", id, im.State)
		}
	}
	t.Fatalf("image %s never became available", id)
	return nil
}

func TestImages(t *testing.T) {
	e := newEnv(t, hcloudfake.Options{ImageSizeGB: 3.25}, 0)
	ctx := context.Background()
	m := e.runningMachine(t, "cbx_0123456789ab")
	req := provider.CreateImageRequest{
		MachineID: m.ID, Name: "openclaw-crabbox-linux-desktop-20260506-0235", Token: "img_1",
		Labels: map[string]string{"crabbox-source-lease": "cbx_0123456789ab", "crabbox-status": "candidate"},
	}
	im, err := e.d.CreateImage(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	// CreateImage waited for the create_image action.
	if im.State != provider.ImageAvailable || im.Name != req.Name || im.SizeGiB != 3.25 {
		t.Fatalf("new image = %+v", im)
	}
	// A retried create with the same token adopts the first image.
	again, err := e.d.CreateImage(ctx, req)
	if err != nil || again.ID != im.ID || e.fake.State().Images != 1 {
		t.Fatalf("retried CreateImage = %+v, %v (images %d)", again, err, e.fake.State().Images)
	}
	got := e.waitImage(t, im.ID)
	if got.SizeGiB != 3.25 || len(got.Snapshots) != 1 || got.Snapshots[0].SizeGiB != 3.25 || got.Arch != "amd64" {
		t.Fatalf("available image = %+v", got)
	}
	if got.Labels["crabbox-status"] != "candidate" || got.Labels["created-by"] != "crabbox" || got.Labels[hetzner.LabelToken] != "img_1" {
		t.Fatalf("labels = %v", got.Labels)
	}
	// ListImages: snapshots only, by label.
	list, err := e.d.ListImages(ctx, nil)
	if err != nil || len(list) != 1 || list[0].ID != im.ID {
		t.Fatalf("ListImages(nil) = %v, %v; want only the snapshot (no system images)", list, err)
	}
	list, err = e.d.ListImages(ctx, map[string]string{"crabbox-status": "known-good"})
	if err != nil || len(list) != 0 {
		t.Fatalf("ListImages(known-good) = %v, %v", list, err)
	}
	// Protection makes delete fail with ErrConflict.
	if err := e.d.ProtectImage(ctx, im.ID, true); err != nil {
		t.Fatal(err)
	}
	if err := e.d.DeleteImage(ctx, im.ID); !errors.Is(err, provider.ErrConflict) {
		t.Fatalf("delete protected: %v", err)
	}
	if err := e.d.ProtectImage(ctx, im.ID, false); err != nil {
		t.Fatal(err)
	}
	if err := e.d.DeleteImage(ctx, im.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.GetImage(ctx, im.ID); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("get deleted image: %v", err)
	}
	if _, ok := any(e.d).(provider.Deprecator); ok {
		t.Fatal("the driver claims Deprecator, but Hetzner cannot deprecate snapshots")
	}
}

func TestAmbiguousCreateImageAdoptsOnce(t *testing.T) {
	e := newEnv(t, hcloudfake.Options{}, 0)
	ctx := context.Background()
	m := e.runningMachine(t, "cbx_0123456789ab")
	e.fake.InjectFault(hcloudfake.Fault{Path: "/servers/*/actions/create_image", Code: "service_error", After: true})
	im, err := e.d.CreateImage(ctx, provider.CreateImageRequest{MachineID: m.ID, Name: "a-b-c-20260101-0000", Token: "tok1"})
	if err != nil || im == nil {
		t.Fatalf("CreateImage after an ambiguous 503 = %v, %v; want the adopted image", im, err)
	}
	if n := len(e.fake.Images()); n != 1 {
		t.Fatalf("%d images, want exactly 1", n)
	}
	// A definite failure is returned as is, and creates nothing.
	e.fake.InjectFault(hcloudfake.Fault{Path: "/servers/*/actions/create_image", Code: "forbidden"})
	if _, err := e.d.CreateImage(ctx, provider.CreateImageRequest{MachineID: m.ID, Name: "a-b-c-20260101-0001", Token: "tok2"}); !errors.Is(err, provider.ErrPermission) {
		t.Fatalf("forbidden create: %v", err)
	}
	if n := len(e.fake.Images()); n != 1 {
		t.Fatalf("%d images after a refused create, want 1", n)
	}
}

func TestCreateImageRetriedInsideHcloudGo(t *testing.T) {
	// hcloud-go retries a request that failed with "timeout". When the first
	// attempt landed, the retry is refused as locked (the snapshot runs):
	// a definite-looking error that hides a created image. The driver looks
	// the image up by its token on every failure and adopts it.
	e := newEnv(t, hcloudfake.Options{}, 3)
	ctx := context.Background()
	m := e.runningMachine(t, "cbx_0123456789ab")
	e.fake.InjectFault(hcloudfake.Fault{Path: "/servers/*/actions/create_image", Code: "timeout", After: true})
	im, err := e.d.CreateImage(ctx, provider.CreateImageRequest{MachineID: m.ID, Name: "a-b-c-20260101-0000", Token: "tok1"})
	if err != nil || im == nil {
		t.Fatalf("CreateImage = %+v, %v; want the image the first attempt made", im, err)
	}
	if ims := e.fake.Images(); len(ims) != 1 || ims[0].ID != mustID(t, im.ID) {
		t.Fatalf("fake images = %+v", ims)
	}
}

func TestCreateImageAdoptsOldestAndDropsDuplicates(t *testing.T) {
	e := newEnv(t, hcloudfake.Options{}, 0)
	ctx := context.Background()
	var ids []int64
	for _, tok := range []string{"cbx_00000000000a", "cbx_00000000000b"} {
		m := e.runningMachine(t, tok)
		res, _, err := e.client.Server.CreateImage(ctx, &hcloud.Server{ID: mustID(t, m.ID)}, &hcloud.ServerCreateImageOpts{
			Type: hcloud.ImageTypeSnapshot, Labels: map[string]string{hetzner.LabelToken: "dup"}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.Image.ID)
	}
	m := e.runningMachine(t, "cbx_00000000000c")
	im, err := e.d.CreateImage(ctx, provider.CreateImageRequest{MachineID: m.ID, Name: "x-y-z-20260101-0000", Token: "dup"})
	if err != nil || mustID(t, im.ID) != ids[0] {
		t.Fatalf("CreateImage = %+v, %v; want the oldest image %d", im, err, ids[0])
	}
	if ims := e.fake.Images(); len(ims) != 1 || ims[0].ID != ids[0] {
		t.Fatalf("images = %+v, want only %d", ims, ids[0])
	}
}

func TestCancelDuringCreateImageHandsImageBack(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var fo hcloudfake.Options
	fo.AfterRequest = func(r *http.Request, status int) {
		if r.Method == "POST" && strings.HasSuffix(r.URL.Path, "/actions/create_image") {
			cancel()
			select { // let the client see the cancellation before answering
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}
	}
	e := newEnv(t, fo, 0)
	m := e.runningMachine(t, "cbx_0123456789ab")
	im, err := e.d.CreateImage(ctx, provider.CreateImageRequest{MachineID: m.ID, Name: "a-b-c-20260101-0000", Token: "tok1"})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if im == nil {
		t.Fatalf("the snapshot created before the cancellation was not handed back (fake holds %d images)", len(e.fake.Images()))
	}
	// The caller cleans up with what it got: nothing is left.
	if err := e.d.DeleteImage(context.Background(), im.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.d.DeleteMachine(context.Background(), m.ID); err != nil {
		t.Fatal(err)
	}
	if st := e.fake.State(); st.Servers != 0 || st.Images != 0 || st.SSHKeys != 0 {
		t.Fatalf("left %+v", st)
	}
}

func TestCancelDuringCreateMachineHandsServerBack(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var fo hcloudfake.Options
	fo.AfterRequest = func(r *http.Request, status int) {
		if r.Method == "POST" && r.URL.Path == "/servers" {
			cancel()
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}
	}
	e := newEnv(t, fo, 0)
	req := e.createReq(t, "cbx_0123456789ab", "cx22")
	m, err := e.d.CreateMachine(ctx, req)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if m == nil {
		t.Fatal("the server created before the cancellation was not handed back")
	}
	if err := e.d.DeleteMachine(context.Background(), m.ID); err != nil {
		t.Fatal(err)
	}
	if st := e.fake.State(); st.Servers != 0 || st.SSHKeys != 0 {
		t.Fatalf("left %+v", st)
	}
}

func TestChannelsAndRace(t *testing.T) {
	e := newEnv(t, hcloudfake.Options{}, 0, hetzner.WithClock(func() time.Time { return time.Date(2026, 5, 6, 2, 35, 0, 0, time.UTC) }))
	ctx := context.Background()
	m := e.runningMachine(t, "cbx_0123456789ab")
	var imgs []string
	for i := 0; i < 3; i++ {
		im, err := e.d.CreateImage(ctx, provider.CreateImageRequest{MachineID: m.ID, Name: "a-b-c-20260101-000" + string(rune('0'+i))})
		if err != nil {
			t.Fatal(err)
		}
		imgs = append(imgs, e.waitImage(t, im.ID).ID)
	}
	if _, err := e.d.CurrentChannel(ctx, "default"); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("unset channel: %v", err)
	}
	for _, bad := range []string{"", "has space", "-lead", strings.Repeat("x", 41)} {
		if _, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: bad, ImageID: imgs[0]}); !errors.Is(err, provider.ErrInvalidArgument) {
			t.Errorf("channel %q: %v", bad, err)
		}
	}
	if _, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: "999999"}); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("missing image: %v", err)
	}
	e1, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: imgs[0], Operator: "jane doe", IfVersion: -1})
	if err != nil || e1.Version != 1 || e1.Operator != "jane-doe" || !e1.At.Equal(time.Date(2026, 5, 6, 2, 35, 0, 0, time.UTC)) {
		t.Fatalf("first set = %+v, %v", e1, err)
	}

	// The race: two promotions from version 1 read the channel before
	// either writes (the fake holds both record creations until both
	// arrived). Exactly one wins: the one whose record Hetzner created
	// first; the other gets ErrConflict and leaves no trace.
	e.fakeBefore(holdSSHKeyCreates(2))
	var wg sync.WaitGroup
	results := make([]*provider.ChannelEntry, 2)
	errs := make([]error, 2)
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			results[i], errs[i] = e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: imgs[1+i], IfVersion: 1})
		}(i)
	}
	wg.Wait()
	e.fakeBefore(nil)
	winner := -1
	for i := range errs {
		switch {
		case errs[i] == nil:
			if winner != -1 {
				t.Fatal("both racing promotions won")
			}
			winner = i
		case !errors.Is(errs[i], provider.ErrConflict):
			t.Fatalf("loser error = %v, want ErrConflict", errs[i])
		}
	}
	if winner == -1 {
		t.Fatalf("no racing promotion won: %v", errs)
	}
	cur, err := e.d.CurrentChannel(ctx, "default")
	if err != nil || cur.Version != 2 || cur.ImageID != imgs[1+winner] {
		t.Fatalf("current after race = %+v, %v; want version 2 image %s", cur, err, imgs[1+winner])
	}
	hist, err := e.d.ChannelHistory(ctx, "default")
	if err != nil || len(hist) != 2 || hist[0].ImageID != imgs[0] || hist[1].ImageID != imgs[1+winner] {
		t.Fatalf("history = %+v, %v", hist, err)
	}

	// Rollback = set the previous image again; history keeps every step.
	if _, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: imgs[0], IfVersion: 2}); err != nil {
		t.Fatal(err)
	}
	hist, _ = e.d.ChannelHistory(ctx, "default")
	if len(hist) != 3 || hist[2].ImageID != imgs[0] || hist[2].Version != 3 {
		t.Fatalf("history after rollback = %+v", hist)
	}
	// Unconditional sets always land, on top.
	if e4, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: imgs[2]}); err != nil || e4.Version != 4 {
		t.Fatalf("unconditional = %+v, %v", e4, err)
	}
	// Channels are independent.
	if _, err := e.d.CurrentChannel(ctx, "default-2"); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("other channel: %v", err)
	}
	// Prune keeps the newest records.
	if n, err := e.d.PruneChannel(ctx, "default", 2); err != nil || n != 2 {
		t.Fatalf("prune = %d, %v", n, err)
	}
	cur, _ = e.d.CurrentChannel(ctx, "default")
	if cur.Version != 4 || cur.ImageID != imgs[2] {
		t.Fatalf("current after prune = %+v", cur)
	}
	if err := e.d.DeleteChannel(ctx, "default"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.CurrentChannel(ctx, "default"); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("deleted channel: %v", err)
	}
}

func TestRaceWithoutNameUniqueness(t *testing.T) {
	// Should Hetzner ever accept two SSH keys with one name, the record
	// created first still wins and the other racer gets ErrConflict.
	for _, conditional := range []bool{true, false} {
		e := newEnv(t, hcloudfake.Options{AllowDuplicateSSHKeyNames: true}, 0)
		ctx := context.Background()
		img := e.baseImage(t)
		if _, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "ch", ImageID: img}); err != nil {
			t.Fatal(err)
		}
		e.fakeBefore(holdSSHKeyCreates(2))
		ifv := int64(0)
		if conditional {
			ifv = 1
		}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i := 0; i < 2; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				_, errs[i] = e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "ch", ImageID: img, IfVersion: ifv})
			}(i)
		}
		wg.Wait()
		e.fakeBefore(nil)
		hist, err := e.d.ChannelHistory(ctx, "ch")
		if err != nil {
			t.Fatal(err)
		}
		if conditional {
			won := 0
			for _, err := range errs {
				if err == nil {
					won++
				} else if !errors.Is(err, provider.ErrConflict) {
					t.Fatalf("loser: %v", err)
				}
			}
			if won != 1 || len(hist) != 2 {
				t.Fatalf("conditional race without name uniqueness: %d won (errors %v), history %+v", won, errs, hist)
			}
		} else if errs[0] != nil || errs[1] != nil || len(hist) != 3 || hist[2].Version != 3 {
			t.Fatalf("unconditional race without name uniqueness: errors %v, history %+v", errs, hist)
		}
		// The loser's record is gone: one record per version.
		if n := len(e.fake.SSHKeys()); n != len(hist) {
			t.Fatalf("%d records for %d versions", n, len(hist))
		}
	}
}

func TestUnconditionalRaceBothLand(t *testing.T) {
	e := newEnv(t, hcloudfake.Options{}, 0)
	ctx := context.Background()
	img := e.baseImage(t)
	e.fakeBefore(holdSSHKeyCreates(2))
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, errs[i] = e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "ch", ImageID: img})
		}(i)
	}
	wg.Wait()
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("unconditional racing sets: %v", errs)
	}
	hist, err := e.d.ChannelHistory(ctx, "ch")
	if err != nil || len(hist) != 2 || hist[0].Version != 1 || hist[1].Version != 2 {
		t.Fatalf("history = %+v, %v", hist, err)
	}
}

func TestLabelPrefixSeparatesInstallations(t *testing.T) {
	e := newEnv(t, hcloudfake.Options{}, 0)
	ctx := context.Background()
	a, err := hetzner.New(e.client, hetzner.WithLabelPrefix("a.crabbox.example"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hetzner.New(e.client, hetzner.WithLabelPrefix("hetzner.cloud")); !errors.Is(err, provider.ErrInvalidArgument) {
		t.Fatalf("reserved prefix: %v", err)
	}
	req := e.createReq(t, "cbx_0123456789ab", "cx22")
	ma, err := a.CreateMachine(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if ma.Labels["crabbox-lease"] != "cbx_0123456789ab" || ma.Labels["crabbox"] != "true" {
		t.Fatalf("prefixed driver's view = %v", ma.Labels)
	}
	raw := e.fake.Servers()[0].Labels
	if raw["a.crabbox.example/crabbox-lease"] != "cbx_0123456789ab" || raw["crabbox-lease"] != "" {
		t.Fatalf("stored labels = %v", raw)
	}
	// Each installation sees only its own machines.
	if ms, _ := e.d.ListMachines(ctx, map[string]string{"crabbox": "true"}); len(ms) != 0 {
		t.Fatalf("unprefixed driver sees %d foreign machines", len(ms))
	}
	if ms, _ := a.ListMachines(ctx, map[string]string{"crabbox": "true"}); len(ms) != 1 {
		t.Fatalf("prefixed driver sees %d machines", len(ms))
	}
	// A foreign label on the server survives label updates.
	if _, _, err := e.client.Server.Update(ctx, &hcloud.Server{ID: mustID(t, ma.ID)}, hcloud.ServerUpdateOpts{
		Labels: mergeRaw(raw, map[string]string{"team": "x"})}); err != nil {
		t.Fatal(err)
	}
	if err := a.UpdateMachineLabels(ctx, ma.ID, map[string]string{"crabbox-state": "ready"}); err != nil {
		t.Fatal(err)
	}
	raw = e.fake.Servers()[0].Labels
	if raw["team"] != "x" || raw["a.crabbox.example/crabbox-state"] != "ready" {
		t.Fatalf("labels after update = %v", raw)
	}
	// Channels are separate too, even with the same channel name.
	img := e.baseImage(t)
	if _, err := a.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: img, IfVersion: -1}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: img, IfVersion: -1}); err != nil {
		t.Fatalf("unprefixed channel collides with the prefixed one: %v", err)
	}
	if err := a.DeleteMachine(ctx, ma.ID); err != nil {
		t.Fatal(err)
	}
	if st := e.fake.State(); st.Servers != 0 || st.SSHKeys != 2 {
		t.Fatalf("state = %+v, want no servers and the two channel records", st)
	}
}

func mergeRaw(a, b map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

func TestCancelWhileUploadingKeyLeavesNothing(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var fo hcloudfake.Options
	fo.AfterRequest = func(r *http.Request, status int) {
		if r.Method == "POST" && r.URL.Path == "/ssh_keys" {
			cancel()
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}
	}
	e := newEnv(t, fo, 0)
	m, err := e.d.CreateMachine(ctx, e.createReq(t, "cbx_0123456789ab", "cx22"))
	if !errors.Is(err, context.Canceled) || m != nil {
		t.Fatalf("CreateMachine = %v, %v; want nil, context.Canceled", m, err)
	}
	if st := e.fake.State(); st.Servers != 0 || st.SSHKeys != 0 {
		t.Fatalf("left %+v: the key uploaded before the cancellation must be deleted", st)
	}
}

// clock is a settable clock shared by the fake and the driver.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestDeleteOrphanKeys(t *testing.T) {
	clk := &clock{t: time.Date(2026, 5, 6, 2, 0, 0, 0, time.UTC)}
	e := newEnv(t, hcloudfake.Options{Now: clk.now}, 0, hetzner.WithClock(clk.now))
	ctx := context.Background()
	live, err := e.d.CreateMachine(ctx, e.createReq(t, "cbx_00000000000a", "cx22"))
	if err != nil {
		t.Fatal(err)
	}
	gone, err := e.d.CreateMachine(ctx, e.createReq(t, "cbx_00000000000b", "cx22"))
	if err != nil {
		t.Fatal(err)
	}
	// The server vanishes behind the driver's back (deleted in the console).
	if _, _, err := e.client.Server.DeleteWithResult(ctx, &hcloud.Server{ID: mustID(t, gone.ID)}); err != nil {
		t.Fatal(err)
	}
	// A foreign key is never touched.
	if _, _, err := e.client.SSHKey.Create(ctx, hcloud.SSHKeyCreateOpts{Name: "someone", PublicKey: string(authorizedKey(t))}); err != nil {
		t.Fatal(err)
	}
	// Within the grace period even the orphan stays: it could be a lease
	// whose server is not created yet.
	clk.advance(9 * time.Minute)
	if n, err := e.d.DeleteOrphanKeys(ctx); err != nil || n != 0 {
		t.Fatalf("DeleteOrphanKeys within the grace = %d, %v; want 0", n, err)
	}
	clk.advance(2 * time.Minute)
	// A lease being created right now: its key is uploaded, its server is
	// not there yet. Its key must survive the sweep.
	creating := e.createReq(t, "cbx_00000000000c", "cx22")
	var mu sync.Mutex
	var swept int
	var sweepErr error
	sweptOnce := false // the create may be retried under another name
	e.fakeBefore(func(r *http.Request) {
		if r.Method == "POST" && r.URL.Path == "/servers" {
			// Between the key upload and the server create, sweep.
			mu.Lock()
			defer mu.Unlock()
			if !sweptOnce {
				sweptOnce = true
				swept, sweepErr = e.d.DeleteOrphanKeys(ctx)
			}
		}
	})
	m, err := e.d.CreateMachine(ctx, creating)
	e.fakeBefore(nil)
	if err != nil {
		t.Fatalf("create with a sweep in the middle: %v", err)
	}
	mu.Lock()
	if sweepErr != nil || swept != 1 {
		t.Fatalf("DeleteOrphanKeys past the grace = %d, %v; want 1 (the orphan only)", swept, sweepErr)
	}
	mu.Unlock()
	keys := e.fake.SSHKeys()
	toks := map[string]bool{}
	for _, k := range keys {
		toks[k.Labels[hetzner.LabelToken]] = true
	}
	if toks["cbx_00000000000b"] || !toks["cbx_00000000000a"] || !toks["cbx_00000000000c"] || len(keys) != 3 {
		t.Fatalf("keys left = %+v; want the live lease's, the creating lease's and the foreign key", keys)
	}
	// The new lease's server got its key.
	if s := e.fake.Servers(); len(s) != 2 {
		t.Fatalf("servers = %+v", s)
	}
	// A key whose lease never got a server is deleted once it is old enough.
	if _, _, err := e.client.SSHKey.Create(ctx, hcloud.SSHKeyCreateOpts{Name: "crabbox-cbx_00000000000d", PublicKey: string(authorizedKey(t)),
		Labels: map[string]string{hetzner.LabelKind: "lease-key", hetzner.LabelToken: "cbx_00000000000d"}}); err != nil {
		t.Fatal(err)
	}
	if n, err := e.d.DeleteOrphanKeys(ctx); err != nil || n != 0 {
		t.Fatalf("young serverless key: %d, %v; want 0", n, err)
	}
	clk.advance(11 * time.Minute)
	if n, err := e.d.DeleteOrphanKeys(ctx); err != nil || n != 1 {
		t.Fatalf("old serverless key: %d, %v; want 1", n, err)
	}
	if n := len(e.fake.SSHKeys()); n != 3 {
		t.Fatalf("%d keys left, want 3", n)
	}
	for _, id := range []string{live.ID, m.ID} {
		if err := e.d.DeleteMachine(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := hetzner.New(e.client, hetzner.WithOrphanGrace(0)); !errors.Is(err, provider.ErrInvalidArgument) {
		t.Fatalf("zero grace: %v", err)
	}
	t.Run("deprecated WithOrphanKeyGrace", func(t *testing.T) {
		if _, err := hetzner.New(e.client, hetzner.WithOrphanKeyGrace(0)); !errors.Is(err, provider.ErrInvalidArgument) {
			t.Fatalf("zero grace: %v", err)
		}
		if _, err := hetzner.New(e.client, hetzner.WithOrphanKeyGrace(time.Minute)); err != nil {
			t.Fatalf("one minute grace: %v", err)
		}
		if hetzner.DefaultOrphanKeyGrace != hetzner.DefaultOrphanGrace {
			t.Fatalf("DefaultOrphanKeyGrace = %v, DefaultOrphanGrace = %v", hetzner.DefaultOrphanKeyGrace, hetzner.DefaultOrphanGrace)
		}
	})
}

func TestPrivateNetworkSSH(t *testing.T) {
	if _, err := hetzner.New(hcloud.NewClient(), hetzner.WithPrivateSSH()); !errors.Is(err, provider.ErrInvalidArgument) {
		t.Fatalf("WithPrivateSSH without networks: %v", err)
	}
	e := newEnv(t, hcloudfake.Options{}, 0, hetzner.WithNetworks(42), hetzner.WithPrivateSSH(), hetzner.WithIPv6(false), hetzner.WithSSHPort(2222))
	m, err := e.d.CreateMachine(context.Background(), e.createReq(t, "cbx_0123456789ab", "cx22"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(m.SSHAddr, "10.") || !strings.HasSuffix(m.SSHAddr, ":2222") {
		t.Fatalf("SSHAddr = %q, want the private address on port 2222", m.SSHAddr)
	}
	s := e.fake.Servers()[0]
	if s.PublicNet.IPv4.IP != "" || s.PublicNet.IPv6.IP != "" || len(s.PrivateNet) != 1 || s.PrivateNet[0].Network != 42 {
		t.Fatalf("server networking = %+v / %+v", s.PublicNet, s.PrivateNet)
	}
}

func TestChannelSetRetriedInsideHcloudGo(t *testing.T) {
	// The record create lands but answers "timeout"; hcloud-go retries and
	// the retry hits our own record's name. The set must succeed once.
	e := newEnv(t, hcloudfake.Options{}, 2)
	ctx := context.Background()
	img := e.baseImage(t)
	e.fake.InjectFault(hcloudfake.Fault{Method: "POST", Path: "/ssh_keys", Code: "timeout", After: true})
	got, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "ch", ImageID: img, IfVersion: -1})
	if err != nil || got.Version != 1 {
		t.Fatalf("SetChannel = %+v, %v; want version 1", got, err)
	}
	if n := len(e.fake.SSHKeys()); n != 1 {
		t.Fatalf("%d records, want 1", n)
	}
	if e.fake.PendingFaults() != 0 {
		t.Fatal("the fault did not fire")
	}
}

func TestDefaultServerTypesIsACopy(t *testing.T) {
	def := hetzner.DefaultServerTypes()
	if got := def["small"]["amd64"]; len(got) == 0 || got[0] != "cx32" {
		t.Fatalf("default small/amd64 = %v", got)
	}
	// A user scribbling over the result changes nothing in the package.
	def["small"]["amd64"][0] = "mutated"
	def["small"]["arm64"] = nil
	delete(def, "tiny")
	again := hetzner.DefaultServerTypes()
	if again["small"]["amd64"][0] != "cx32" || len(again["small"]["arm64"]) == 0 || again["tiny"] == nil {
		t.Fatalf("DefaultServerTypes changed after mutating a returned copy: %v", again)
	}
	d, err := hetzner.New(hcloud.NewClient())
	if err != nil {
		t.Fatal(err)
	}
	ts, err := d.MachineTypes("small", "amd64")
	if err != nil || ts[0] != "cx32" {
		t.Fatalf("driver types after mutating a returned copy = %v, %v", ts, err)
	}
	// Nor does mutating what MachineTypes returns.
	ts[0] = "mutated"
	if ts, _ := d.MachineTypes("small", "amd64"); ts[0] != "cx32" {
		t.Fatalf("MachineTypes shares its slice: %v", ts)
	}
	if _, err := d.MachineTypes("tiny", "amd64"); err != nil {
		t.Fatal(err)
	}
	// WithMachineTypes and its deprecated alias WithServerTypes replace one
	// class and architecture and reject what cannot be a list.
	for name, opt := range map[string]func(class, arch string, types ...string) hetzner.Option{
		"WithMachineTypes": hetzner.WithMachineTypes,
		"WithServerTypes":  hetzner.WithServerTypes,
	} {
		t.Run(name, func(t *testing.T) {
			d, err := hetzner.New(hcloud.NewClient(), opt("small", "arm64", "cax41", "cax31"))
			if err != nil {
				t.Fatal(err)
			}
			if ts, err := d.MachineTypes("small", "arm64"); err != nil || strings.Join(ts, ",") != "cax41,cax31" {
				t.Fatalf("small/arm64 = %v, %v", ts, err)
			}
			if ts, _ := d.MachineTypes("small", "amd64"); ts[0] != "cx32" {
				t.Fatalf("small/amd64 changed: %v", ts)
			}
			for _, bad := range []hetzner.Option{opt("", "amd64", "cx22"), opt("small", "riscv", "cx22"), opt("small", "amd64"), opt("small", "amd64", "")} {
				if _, err := hetzner.New(hcloud.NewClient(), bad); !errors.Is(err, provider.ErrInvalidArgument) {
					t.Errorf("bad types: %v, want ErrInvalidArgument", err)
				}
			}
		})
	}
}

// holdSSHKeyCreates returns a fake hook that holds each SSH-key create
// (a channel record write) until n of them have arrived, so racing
// promotions reach Hetzner at the same time. It gives up after 10 s.
func holdSSHKeyCreates(n int) func(*http.Request) {
	var mu sync.Mutex
	arrived := 0
	all := make(chan struct{})
	return func(r *http.Request) {
		if r.Method != "POST" || r.URL.Path != "/ssh_keys" {
			return
		}
		mu.Lock()
		arrived++
		if arrived == n {
			close(all)
		}
		mu.Unlock()
		select {
		case <-all:
		case <-time.After(10 * time.Second):
		}
	}
}
