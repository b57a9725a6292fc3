// ImageUsage (provider.UsageFinder): the servers of the project that booted
// a snapshot.

package hetzner

import (
	"context"
	"strconv"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"
)

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
	var refs []string
	for _, s := range servers {
		if s != nil && s.Image != nil && s.Image.ID == im.ID {
			refs = append(refs, serverRef(s))
		}
	}
	return refs, nil
}

func serverRef(s *hcloud.Server) string {
	return "server " + strconv.FormatInt(s.ID, 10) + " (" + s.Name + ")"
}
