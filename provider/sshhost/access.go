// MachineAccess: the user, key and host key of an allocated host.

package sshhost

import (
	"context"

	"github.com/crabbox/crabbox-go/provider"
)

// MachineAccess returns the user, client key, pinned host key and work root
// of the host allocated as m.ID. An unknown or freed id wraps
// provider.ErrNotFound; an allocation (made by another process) of a host
// this Driver was not configured with wraps provider.ErrInvalidArgument.
func (d *Driver) MachineAccess(ctx context.Context, m *provider.Machine) (*provider.Access, error) {
	if m == nil {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "sshhost: nil machine")
	}
	cur, err := d.GetMachine(ctx, m.ID)
	if err != nil {
		return nil, err
	}
	i, ok := d.byAddr[cur.SSHAddr]
	if !ok {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "sshhost: machine %s is host %s, which is not in this driver's pool", m.ID, cur.SSHAddr)
	}
	h := d.hosts[i]
	return &provider.Access{User: h.User, Signer: h.Signer, HostKey: h.HostKey, WorkRoot: h.WorkRoot}, nil
}
