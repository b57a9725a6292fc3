// Tests of machines.go: servers, lease keys, server types.

package hetzner_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"

	"github.com/crabbox/crabbox-go/internal/testenv/hcloudfake"
	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/hetzner"
)

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
	for code, want := range map[string]error{"resource_limit_exceeded": provider.ErrQuota,
		"resource_unavailable": provider.ErrCapacity, "placement_error": provider.ErrCapacity,
		"server_type_not_available": provider.ErrCapacity, "location_not_available": provider.ErrCapacity} {
		t.Run(code, func(t *testing.T) {
			e := newEnv(t, hcloudfake.Options{}, 0)
			e.fake.InjectFault(hcloudfake.Fault{ServerType: "cx32", Code: code})
			m, err := e.d.CreateMachine(context.Background(), e.createReq(t, "cbx_0123456789ab", "cx32"))
			if !errors.Is(err, want) || m != nil {
				t.Fatalf("CreateMachine = %v, %v; want nil, %v", m, err, want)
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
