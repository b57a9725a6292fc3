// Channel listing for cleanup: ListChannels, from the channel records.

package hetzner

import (
	"context"
	"sort"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"

	"github.com/crabbox/crabbox-go/provider"
)

var _ provider.ChannelLister = (*Driver)(nil)

// ListChannels implements provider.ChannelLister: every channel with at
// least one valid record (an SSH key of kind channel entry).
func (d *Driver) ListChannels(ctx context.Context) ([]string, error) {
	keys, err := d.c.SSHKey.AllWithOpts(ctx, hcloud.SSHKeyListOpts{ListOpts: hcloud.ListOpts{
		LabelSelector: d.rk(LabelKind) + "=" + kindChannelEntry}})
	if err != nil {
		return nil, mapErr("list channel records", err)
	}
	seen := map[string]bool{}
	var out []string
	for _, k := range keys {
		if e, ok := d.recordEntry(k); ok && !seen[e.Channel] && checkChannel(e.Channel) == nil {
			seen[e.Channel] = true
			out = append(out, e.Channel)
		}
	}
	sort.Strings(out)
	return out, nil
}
