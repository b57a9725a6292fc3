// DeleteOrphanKeys and SweepOrphans: lease keys left without a server.

package hetzner

import (
	"context"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"

	"github.com/crabbox/crabbox-go/provider"
)

// DeleteOrphanKeys deletes lease SSH keys whose server no longer exists
// (left behind when a release was interrupted between the server and the
// key). It returns how many keys it deleted.
//
// A lease uploads its key before it creates its server, so a key without a
// server may belong to a lease being created at this moment. Only keys older
// than the orphan key grace (WithOrphanGrace, default 10 minutes, counted
// from the key's creation time on Hetzner) are deleted; younger ones, and
// keys whose creation time is unknown, are left for a later run.
func (d *Driver) DeleteOrphanKeys(ctx context.Context) (int, error) {
	// Both ownership labels and the kind: a key another tool labelled like
	// ours, or with one ownership label alone, is foreign.
	keys, err := d.c.SSHKey.AllWithOpts(ctx, hcloud.SSHKeyListOpts{ListOpts: hcloud.ListOpts{LabelSelector: d.rk(labelManaged) + "=true," +
		d.rk(labelCreatedBy) + "=" + provider.CreatedByValue + "," + d.rk(LabelKind) + "=" + kindLeaseKey}})
	if err != nil {
		return 0, mapErr("list lease keys", err)
	}
	// The servers are listed after the keys: a key old enough to be
	// considered had its server created (if ever) before this list.
	servers, err := d.c.Server.AllWithOpts(ctx, hcloud.ServerListOpts{ListOpts: hcloud.ListOpts{LabelSelector: d.rk(LabelToken)}})
	if err != nil {
		return 0, mapErr("list servers", err)
	}
	live := map[string]bool{}
	for _, s := range servers {
		if s.Status != hcloud.ServerStatusDeleting {
			live[s.Labels[d.rk(LabelToken)]] = true
		}
	}
	cutoff := d.o.now().Add(-d.o.orphanGrace)
	n := 0
	for _, k := range keys {
		tok := k.Labels[d.rk(LabelToken)]
		if tok == "" || live[tok] || k.Created.IsZero() || k.Created.After(cutoff) {
			continue
		}
		if _, err := d.c.SSHKey.Delete(ctx, k); err != nil && !hcloud.IsError(err, hcloud.ErrorCodeNotFound) {
			return n, mapErr("delete ssh key", err)
		}
		n++
	}
	return n, nil
}

// SweepOrphans implements provider.OrphanSweeper with DeleteOrphanKeys, so
// crabbox.Client.Reap removes keys of servers that vanished unreleased.
func (d *Driver) SweepOrphans(ctx context.Context) (int, error) { return d.DeleteOrphanKeys(ctx) }

var _ provider.OrphanSweeper = (*Driver)(nil)
