package refdriver_test

import (
	"context"
	"errors"
	"testing"

	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/providertest/refdriver"
)

// TestTokensAndNames: a retried create with the same token returns what the
// first created; names and label values are sanitized; everything is
// managed; options refuse bad values; cancelled calls return the context's
// error unmapped.
func TestTokensAndNames(t *testing.T) {
	ctx := t.Context()
	d := mustNew(t, refdriver.WithBootPolls(0))
	req := provider.CreateMachineRequest{
		Token: "cbx_1", Name: "Brave Crab!", Image: refdriver.BaseImageID(provider.ArchAMD64), Type: "ref-2c-amd64",
		Labels: map[string]string{provider.LabelOperator: "Jane Doe <jane@example.com>"},
	}
	m1, err := d.CreateMachine(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := d.CreateMachine(ctx, req)
	if err != nil || m2.ID != m1.ID {
		t.Fatalf("retried CreateMachine = %+v, %v: want machine %s again", m2, err, m1.ID)
	}
	if m1.Name != "Brave-Crab" || m1.Labels[provider.LabelOperator] != "Jane-Doe--jane-example.com" || m1.Labels[provider.LabelManaged] != "true" {
		t.Errorf("machine name %q labels %v: want sanitized and managed", m1.Name, m1.Labels)
	}
	ireq := provider.CreateImageRequest{MachineID: m1.ID, Name: "img", Token: "tok"}
	i1, err := d.CreateImage(ctx, ireq)
	if err != nil {
		t.Fatal(err)
	}
	if i2, err := d.CreateImage(ctx, ireq); err != nil || i2.ID != i1.ID {
		t.Fatalf("retried CreateImage = %+v, %v: want image %s again", i2, err, i1.ID)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := d.GetMachine(cancelled, m1.ID); !errors.Is(err, context.Canceled) || errors.Is(err, provider.ErrUnavailable) {
		t.Errorf("GetMachine with a cancelled context: %v: want context.Canceled, unmapped", err)
	}
	if _, err := d.GetMachine(ctx, "m-missing"); !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("GetMachine(unknown): %v: want ErrNotFound", err)
	}
	for _, opt := range []refdriver.Option{refdriver.WithRegion(""), refdriver.WithClock(nil), refdriver.WithBootPolls(-1),
		refdriver.WithOrphanGrace(-1), refdriver.WithOrphanGrace(0), refdriver.WithRegionPeer("x", nil)} {
		if _, err := refdriver.New(opt); !errors.Is(err, provider.ErrInvalidArgument) {
			t.Errorf("New with a bad option: %v: want ErrInvalidArgument", err)
		}
	}
}

// TestNewSkipsNilOptions: a nil option is skipped, never a panic, as in
// every driver.
func TestNewSkipsNilOptions(t *testing.T) {
	if _, err := refdriver.New(nil, refdriver.WithBootPolls(0), nil); err != nil {
		t.Fatalf("New with nil options: %v", err)
	}
}
