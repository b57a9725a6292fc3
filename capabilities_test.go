package crabbox_test

// Tests of capabilities.go: Client.Capabilities for a driver with none,
// some and all of the optional interfaces.

import (
	"context"
	"errors"
	"testing"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/crabboxtest"
	"github.com/crabbox/crabbox-go/provider"
)

// bareDriver hides every optional interface of the driver it wraps.
type bareDriver struct{ provider.Driver }

// fullDriver adds the optional interfaces the local cloud lacks to it.
type fullDriver struct{ *crabboxtest.Cloud }

func (fullDriver) CopyImage(context.Context, string, string, string) (*provider.Image, error) {
	return nil, provider.ErrUnsupported
}
func (fullDriver) ImageUsage(context.Context, string) ([]string, error) { return nil, nil }
func (fullDriver) ImagesUsage(context.Context, []string) (map[string]provider.ImageUse, error) {
	return nil, nil
}
func (fullDriver) SweepOrphans(context.Context) (int, error)          { return 0, nil }
func (fullDriver) MarkKnownGood(context.Context, string, int64) error { return nil }
func (fullDriver) MachineAccess(context.Context, *provider.Machine) (*provider.Access, error) {
	return nil, provider.ErrUnsupported
}
func (fullDriver) RetriesRequests() bool { return true }

func TestCapabilities(t *testing.T) {
	cloud, err := crabboxtest.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cloud.Close() })
	for _, tc := range []struct {
		name string
		drv  provider.Driver
		want crabbox.Capabilities
	}{
		{"none", bareDriver{cloud}, crabbox.Capabilities{}},
		{"local cloud", cloud, crabbox.Capabilities{Images: true, Channels: true, Protector: true, Deprecator: true, UsageFinder: true,
			ChannelLister: true}},
		{"all", fullDriver{cloud}, crabbox.Capabilities{
			Images: true, Channels: true, Protector: true, Deprecator: true, RegionCopier: true,
			UsageFinder: true, BatchUsageFinder: true, OrphanSweeper: true, ChannelVersionMarker: true, AccessProvider: true,
			ChannelLister: true, RetriesRequests: true,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := crabbox.New(tc.drv, crabbox.WithStateDir(t.TempDir()))
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Capabilities(); got != tc.want {
				t.Errorf("Capabilities() = %+v, want %+v", got, tc.want)
			}
		})
	}
	// Without the capability, the calls that need it say so.
	c, err := crabbox.New(bareDriver{cloud}, crabbox.WithStateDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Images(context.Background()); !errors.Is(err, crabbox.ErrUnsupported) {
		t.Errorf("Images on a driver without images: %v, want ErrUnsupported", err)
	}
	if _, err := c.Promoted(context.Background(), crabbox.DefaultChannel); !errors.Is(err, crabbox.ErrUnsupported) {
		t.Errorf("Promoted on a driver without channels: %v, want ErrUnsupported", err)
	}
}
