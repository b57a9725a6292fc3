// ImageUsage (provider.UsageFinder) and ImagesUsage
// (provider.BatchUsageFinder): the servers of the project that booted a
// snapshot.

package hetzner

import (
	"context"
	"errors"
	"strconv"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"

	"github.com/crabbox/crabbox-go/provider"
)

var _ provider.BatchUsageFinder = (*Driver)(nil)

// ImageUsage implements provider.UsageFinder: every server of the project
// (crabbox's or not) whose image is the snapshot id, as "server <id>
// (<name>)". An unknown image is ErrNotFound.
func (d *Driver) ImageUsage(ctx context.Context, id string) ([]string, error) {
	im, err := d.getImage(ctx, id)
	if err != nil {
		return nil, err
	}
	servers, err := d.c.Server.All(ctx)
	if err != nil {
		return nil, mapErr("list servers", err)
	}
	return serversUsing(servers)[im.ID], nil
}

// ImagesUsage implements provider.BatchUsageFinder: ImageUsage's answer for
// every id from one snapshot listing and one server listing (an id the
// snapshot listing lacks is looked up by itself: a vanished image is an
// ErrNotFound entry).
func (d *Driver) ImagesUsage(ctx context.Context, ids []string) (map[string]provider.ImageUse, error) {
	snaps, err := d.c.Image.AllWithOpts(ctx, hcloud.ImageListOpts{Type: []hcloud.ImageType{hcloud.ImageTypeSnapshot}})
	if err != nil {
		return nil, mapErr("list images", err)
	}
	known := map[string]int64{}
	for _, im := range snaps {
		if im != nil && im.Deleted.IsZero() {
			known[strconv.FormatInt(im.ID, 10)] = im.ID
		}
	}
	out := make(map[string]provider.ImageUse, len(ids))
	for _, id := range ids {
		if _, ok := known[id]; ok {
			continue
		}
		im, err := d.getImage(ctx, id)
		switch {
		case err == nil:
			known[id] = im.ID
		case errors.Is(err, provider.ErrNotFound):
			out[id] = provider.ImageUse{Err: err}
		default:
			return nil, err
		}
	}
	servers, err := d.c.Server.All(ctx)
	if err != nil {
		return nil, mapErr("list servers", err)
	}
	use := serversUsing(servers)
	for _, id := range ids {
		if n, ok := known[id]; ok {
			out[id] = provider.ImageUse{Refs: use[n]}
		}
	}
	return out, nil
}

// serversUsing maps each image id to the servers booted from it.
func serversUsing(servers []*hcloud.Server) map[int64][]string {
	use := map[int64][]string{}
	for _, s := range servers {
		if s != nil && s.Image != nil {
			use[s.Image.ID] = append(use[s.Image.ID], serverRef(s))
		}
	}
	return use
}

func serverRef(s *hcloud.Server) string {
	return "server " + strconv.FormatInt(s.ID, 10) + " (" + s.Name + ")"
}
