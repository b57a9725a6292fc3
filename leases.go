// Leases that already exist: re-attaching by id or slug (Client.Lease),
// listing (Client.Leases) and reaping expired ones (Client.Reap).

package crabbox

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/crabbox/crabbox-go/internal/cloudinit"
	"github.com/crabbox/crabbox-go/provider"
)

// Lease re-attaches to a live lease by id (cbx_...) or slug, e.g. from
// another process. Its keys come from the client's state dir. A machine whose
// lease-id label is not a valid lease id is never re-attached
// (ErrInvalidArgument) nor listed by Leases.
func (c *Client) Lease(ctx context.Context, idOrSlug string) (*Lease, error) {
	sel := map[string]string{LabelManaged: "true"}
	switch {
	case ValidLeaseID(idOrSlug):
		sel[LabelLease] = idOrSlug
	case slugRe.MatchString(idOrSlug):
		sel[LabelSlug] = idOrSlug
	default:
		return nil, c.opErr("lease", idOrSlug, fmt.Errorf("%w: %q is neither a lease id nor a slug", ErrInvalidArgument, idOrSlug))
	}
	ms, err := retry(ctx, c, "lease", func(ctx context.Context) ([]*provider.Machine, error) {
		return c.drv.ListMachines(ctx, sel)
	})
	if err != nil {
		return nil, c.opErr("lease", idOrSlug, err)
	}
	live, invalid := ms[:0], 0
	for _, m := range ms {
		switch {
		case m.State == provider.MachineTerminated:
		case !ValidLeaseID(m.Labels[LabelLease]):
			// Not re-attached: its lease id would name a state-dir path.
			invalid++
		default:
			live = append(live, m)
		}
	}
	ms = live
	if len(ms) == 0 && invalid > 0 {
		return nil, c.opErr("lease", idOrSlug, fmt.Errorf("%w: the machine of %s carries no valid lease id", ErrInvalidArgument, idOrSlug))
	}
	if len(ms) == 0 {
		return nil, c.opErr("lease", idOrSlug, fmt.Errorf("no live lease %s: %w", idOrSlug, ErrNotFound))
	}
	if len(ms) > 1 {
		return nil, c.opErr("lease", idOrSlug, fmt.Errorf("%w: %d machines carry lease %s", ErrConflict, len(ms), idOrSlug))
	}
	return c.leaseFromMachine(ms[0]), nil
}

// Leases lists the live leases crabbox created on this provider.
func (c *Client) Leases(ctx context.Context) ([]*Lease, error) {
	ms, err := retry(ctx, c, "lease", func(ctx context.Context) ([]*provider.Machine, error) {
		return c.drv.ListMachines(ctx, map[string]string{LabelManaged: "true"})
	})
	if err != nil {
		return nil, c.opErr("leases", "", err)
	}
	out := make([]*Lease, 0, len(ms))
	for _, m := range ms {
		if !ValidLeaseID(m.Labels[LabelLease]) || m.State == provider.MachineTerminated {
			continue
		}
		out = append(out, c.leaseFromMachine(m))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// Reap releases leases past their expiry and returns them. A lease still
// labelled creating is left alone while its Warmup may still be waiting for
// it: until its readiness deadline (its creation plus the Warmup's ready
// timeout, recorded on the machine) plus WithCreatingGrace (default 10
// minutes); after that its Warmup died or lost it, and it is released (a
// lease without a recorded deadline, made by an older SDK, an hour after
// its creation). Machines that already
// terminated themselves (the box's own TTL shutdown) are released too,
// so the driver removes what it made for them (key pairs, SSH keys). Reap
// goes on past individual failures and returns them joined. Where the
// driver can (provider.OrphanSweeper), it then deletes keys left by
// machines that vanished without a release.
func (c *Client) Reap(ctx context.Context) ([]*Lease, error) {
	ms, err := retry(ctx, c, "lease", func(ctx context.Context) ([]*provider.Machine, error) {
		return c.drv.ListMachines(ctx, map[string]string{LabelManaged: "true"})
	})
	if err != nil {
		return nil, c.opErr("reap", "", err)
	}
	now := c.o.now()
	var reaped []*Lease
	var errs []error
	for _, m := range ms {
		if m.Labels[LabelLease] == "" {
			continue
		}
		l := c.leaseFromMachine(m)
		switch {
		case m.State == provider.MachineTerminated:
		case m.Labels[LabelState] == "creating":
			// Its Warmup died or lost it once the deadline passed: the
			// lease's idle expiry does not matter.
			if now.Before(c.creatingDeadline(l)) {
				continue
			}
		case l.Expires.IsZero() || now.Before(l.Expires):
			continue
		}
		if err := l.Release(ctx); err != nil {
			errs = append(errs, err)
			continue
		}
		reaped = append(reaped, l)
	}
	if sw := c.caps.orphanSweeper; sw != nil {
		n, err := retry(ctx, c, "lease", sw.SweepOrphans)
		if err != nil {
			errs = append(errs, c.opErr("reap", "", fmt.Errorf("sweeping orphaned keys: %w", err)))
		} else if n > 0 {
			c.emit(Event{Kind: EventOrphansSwept, Resource: "lease", State: "swept",
				Message: fmt.Sprintf("deleted %d keys left by machines that no longer exist", n)})
		}
	}
	return reaped, errors.Join(errs...)
}

// labelReadyBy records on a lease's machine when its Warmup gives up
// waiting for readiness: its creation plus the ready timeout.
const labelReadyBy = provider.LabelReadyBy

// creatingDeadline is when Reap releases a lease still labelled creating:
// the creating grace past its recorded readiness deadline, an hour after
// its creation when it has none (leases of SDKs that did not record it).
func (c *Client) creatingDeadline(l *Lease) time.Time {
	if t, ok := parseLabelTime(l.Labels[labelReadyBy]); ok {
		return t.Add(c.o.creatingGrace)
	}
	return l.Created.Add(time.Hour)
}

func (c *Client) leaseFromMachine(m *provider.Machine) *Lease {
	lb := m.Labels
	l := &Lease{
		ID: lb[LabelLease], Slug: lb[LabelSlug], Provider: c.info.Name, Region: c.info.Region,
		Class: lb[LabelClass], MachineID: m.ID, MachineType: m.Type, ImageID: lb[LabelImage],
		ImageSource: ImageSource(lb[LabelImageSource]), Channel: lb[LabelChannel], Operator: lb[LabelOperator],
		Desktop: lb[LabelDesktop] == "true", Browser: lb[LabelBrowser] == "true",
		SSHAddr: m.SSHAddr, Labels: copyLabels(lb), c: c, machine: m.ID, user: cloudinit.DefaultUser,
	}
	if l.ImageID == "" {
		l.ImageID = m.Image
	}
	if t, ok := parseLabelTime(lb[LabelCreated]); ok {
		l.Created = t
	} else {
		l.Created = m.Created
	}
	if t, ok := parseLabelTime(lb[LabelExpires]); ok {
		l.Expires = t
	}
	if n, err := strconv.Atoi(lb[LabelTTL]); err == nil {
		l.TTL = time.Duration(n) * time.Second
	}
	if n, err := strconv.Atoi(lb[LabelIdle]); err == nil {
		l.IdleTimeout = time.Duration(n) * time.Second
	}
	return l
}

func copyLabels(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
