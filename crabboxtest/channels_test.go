// Tests of channels.go.

package crabboxtest

import (
	"errors"
	"testing"

	"github.com/crabbox/crabbox-go/provider"
)

func TestChannels(t *testing.T) {
	c := Start(t)
	ctx := ctxT(t)
	if _, err := c.CurrentChannel(ctx, "default"); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("unset channel: %v", err)
	}
	e, err := c.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: BaseImageID, IfVersion: -1, Operator: "me"})
	if err != nil || e.Version != 1 || e.Operator != "me" {
		t.Fatalf("first set: %+v, %v", e, err)
	}
	if _, err := c.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: BaseImageID, IfVersion: -1}); !errors.Is(err, provider.ErrConflict) {
		t.Fatalf("second never-set: %v", err)
	}
	if _, err := c.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: "img-nope"}); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("unknown image: %v", err)
	}
	if e, err := c.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: BaseImageID, IfVersion: 1}); err != nil || e.Version != 2 {
		t.Fatalf("conditional set: %+v, %v", e, err)
	}
	h, err := c.ChannelHistory(ctx, "default")
	if err != nil || len(h) != 2 || h[0].Version != 1 || h[1].Version != 2 {
		t.Fatalf("history: %+v, %v", h, err)
	}
}
