// Tests of channel_list.go: ListChannels on the Hetzner fake.

package hetzner_test

import (
	"context"
	"strings"
	"testing"

	"github.com/crabbox/crabbox-go/internal/testenv/hcloudfake"
	"github.com/crabbox/crabbox-go/provider"
)

func TestListChannels(t *testing.T) {
	e := newEnv(t, hcloudfake.Options{}, 0)
	ctx := context.Background()
	m := e.runningMachine(t, "cbx_11570000000a")
	im, err := e.d.CreateImage(ctx, provider.CreateImageRequest{MachineID: m.ID, Name: "a-b-list-20260101-0000"})
	if err != nil {
		t.Fatal(err)
	}
	id := e.waitImage(t, im.ID).ID
	if got, err := e.d.ListChannels(ctx); err != nil || len(got) != 0 {
		t.Fatalf("ListChannels with none set = %q, %v", got, err)
	}
	for _, ch := range []string{"default", "beta", "default"} {
		if _, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: ch, ImageID: id}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := e.d.ListChannels(ctx)
	if err != nil || strings.Join(got, ",") != "beta,default" {
		t.Errorf("ListChannels = %q, %v; want [beta default]", got, err)
	}
}
