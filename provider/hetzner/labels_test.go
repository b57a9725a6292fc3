// Tests of labels.go: the label prefix.

package hetzner_test

import (
	"context"
	"errors"
	"testing"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"

	"github.com/crabbox/crabbox-go/internal/testenv/hcloudfake"
	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/hetzner"
)

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
