// Waiting for Hetzner actions and settling servers and images after them.

package hetzner

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"

	"github.com/crabbox/crabbox-go/internal/pollsched"
	"github.com/crabbox/crabbox-go/provider"
)

// PollSchedule is the driver's default wait schedule (WithPollSchedule):
// the pause after a poll made when waited had passed since the wait began,
// 1 s for the first 10 s, then a tenth of the time waited, at most 30 s.
// A wait so ends within max(2 s, 10 %) of the action finishing, and a
// 10-minute snapshot wait asks the API PollBudget10m times at most (where
// hcloud-go's default of a poll every 500 ms asks 1,200 times), so several
// bakes fit in Hetzner's 3,600 requests per hour (docs/providers.md).
func PollSchedule(waited time.Duration) time.Duration { return pollsched.After(waited) }

// PollBudget10m is the most polls PollSchedule makes in a 10-minute wait.
const PollBudget10m = 60

// PollOpts is PollSchedule as hcloud-go poll options, for other uses of
// the hcloud client (hcloud.WithPollOpts(hetzner.PollOpts())). The
// driver's own waits keep their budget without it (WithPollSchedule is a
// floor under the client's poll backoff); with it they pause about twice
// the schedule, so a client for the driver alone is best left at
// hcloud-go's default or given a short poll backoff.
func PollOpts() hcloud.PollOpts {
	return hcloud.PollOpts{BackoffFunc: func(retries int) time.Duration { return pollsched.Delay(retries + 1) }}
}

// waitActions waits until the actions finished, through hcloud-go's
// action waiting (which sleeps the poll backoff of the hcloud client,
// hcloud.WithPollOpts, before each poll) with the driver's schedule as a
// floor: after each poll that found an action running, the driver first
// pauses for WithPollSchedule (PollSchedule by default), so the rate
// budget holds whatever poll options the client was built with. The
// actions are waited for one after the other (each poll asks for one).
// It stops when ctx ends.
//
// The error tells the three outcomes apart: when ctx ended it matches the
// context's error and carries no provider code (nobody retries it); when an
// action failed it wraps the hcloud.ActionError with the portable code of
// the action's error code (see actionClass); any other failure (the API
// could not be asked) is mapped like every API error.
func (d *Driver) waitActions(ctx context.Context, what string, actions ...*hcloud.Action) error {
	err := d.pollActions(ctx, actions)
	if err == nil {
		return nil
	}
	if cerr := ctx.Err(); cerr != nil {
		if !errors.Is(err, cerr) {
			err = errors.Join(cerr, err)
		}
		return fmt.Errorf("hetzner: wait for %s: %w", what, err)
	}
	var ae hcloud.ActionError
	if errors.As(err, &ae) {
		return provider.Wrap(actionClass(ae.Code), fmt.Errorf("hetzner: %s failed: %w", what, err))
	}
	return mapErr("wait for "+what, err)
}

// pollActions waits for the actions, one after the other: nil when all
// succeeded, the hcloud.ActionError of the first that failed, the
// context's error when ctx ended, or the API's error.
func (d *Driver) pollActions(ctx context.Context, actions []*hcloud.Action) error {
	start := time.Now()
	for _, a := range actions {
		if a == nil {
			continue
		}
		err := d.c.Action.WaitForFunc(ctx, func(u *hcloud.Action) error {
			switch u.Status {
			case hcloud.ActionStatusError:
				return u.Error()
			case hcloud.ActionStatusRunning:
				// Still running after this poll: the driver's pause
				// before hcloud-go's own.
				return sleep(ctx, d.o.pollSchedule(time.Since(start)))
			}
			return nil
		}, a)
		if err != nil {
			return err
		}
	}
	return nil
}

// sleep waits for d or until ctx ends (then it returns ctx's error).
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// unlocked runs op, a mutating request on the server or image id (kind
// "server" or "image"), until the API stops answering 423 locked: Hetzner
// runs one action at a time on a resource and refuses other changes
// meanwhile ("locked: there is already an Action running",
// https://docs.hetzner.cloud/#errors). After a locked answer the driver
// waits for the actions running on the resource (on its poll schedule; a
// failed action unlocks too) and tries again; when none shows, it pauses
// on the schedule first. A conflict ("the resource has changed during the
// request, please retry") is retried the same way when the hcloud client
// does not retry requests itself (WithClientRetries(false)); hcloud-go
// retries it otherwise, and the two are not stacked. hcloud-go does not
// retry locked and the crabbox client never retries ErrConflict, so this
// is the one layer that retries a lock. It returns op's last error
// (unmapped), or, when ctx ended while the resource was still locked, an
// error matching the context's error and no provider code.
func (d *Driver) unlocked(ctx context.Context, kind string, id int64, what string, op func(context.Context) error) error {
	start := time.Now()
	for {
		err := op(ctx)
		if err == nil || !(hcloud.IsError(err, hcloud.ErrorCodeLocked) || d.o.noRetries && hcloud.IsError(err, hcloud.ErrorCodeConflict)) {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("hetzner: %s: %s %d still locked when the context ended: %w", what, kind, id, ctx.Err())
		}
		var running []*hcloud.Action
		var lerr error
		opts := hcloud.ActionListOpts{Status: []hcloud.ActionStatus{hcloud.ActionStatusRunning}}
		if kind == "image" {
			running, lerr = d.c.Image.Action.AllFor(ctx, &hcloud.Image{ID: id}, opts)
		} else {
			running, lerr = d.c.Server.Action.AllFor(ctx, &hcloud.Server{ID: id}, opts)
		}
		switch {
		case ctx.Err() != nil:
			return fmt.Errorf("hetzner: %s: %s %d still locked when the context ended: %w", what, kind, id, ctx.Err())
		case hcloud.IsError(lerr, hcloud.ErrorCodeNotFound):
			// Gone meanwhile: the next attempt says so.
		case lerr != nil:
			return lerr
		case len(running) > 0:
			if werr := d.pollActions(ctx, running); werr != nil && ctx.Err() != nil {
				return fmt.Errorf("hetzner: %s: %s %d still locked when the context ended: %w", what, kind, id, ctx.Err())
			}
			continue
		}
		if serr := sleep(ctx, d.o.pollSchedule(time.Since(start))); serr != nil {
			return fmt.Errorf("hetzner: %s: %s %d still locked when the context ended: %w", what, kind, id, serr)
		}
	}
}

// actionFailure returns the action error in err, if an action failed.
func actionFailure(ctx context.Context, err error) (hcloud.ActionError, bool) {
	var ae hcloud.ActionError
	if ctx.Err() != nil || !errors.As(err, &ae) {
		return hcloud.ActionError{}, false
	}
	return ae, true
}

// settleServer waits for a server's create actions (the create_server
// action and its next actions; for an adopted server, whatever is still
// running on it) and returns the server as it stands afterwards: running,
// with its address.
//
// When ctx ends first, the server is handed back with the error, so the
// caller can release it. When an action failed, the server never came up:
// it is released here (server and lease key) and only the error is
// returned, unless the release failed too, in which case the server comes
// back with both errors for the caller to release.
func (d *Driver) settleServer(ctx context.Context, s *hcloud.Server, actions []*hcloud.Action, ownKey *hcloud.SSHKey) (*provider.Machine, error) {
	what := "creation of server " + strconv.FormatInt(s.ID, 10)
	if actions == nil {
		// Adopted: wait for what still runs on it, and a create_server
		// action that already failed means the server never came up, as
		// if its wait had seen it fail.
		all, err := d.c.Server.Action.AllFor(ctx, s, hcloud.ActionListOpts{})
		if err != nil {
			return d.machine(s), mapErr("list actions of server "+strconv.FormatInt(s.ID, 10), err)
		}
		actions = []*hcloud.Action{}
		for _, a := range all {
			switch {
			case a.Status == hcloud.ActionStatusRunning:
				actions = append(actions, a)
			case a.Command == "create_server" && a.Status == hcloud.ActionStatusError:
				ferr := provider.Wrap(actionClass(a.ErrorCode), fmt.Errorf("hetzner: %s failed: %w", what, a.Error()))
				if rerr := d.releaseServer(ctx, s, ownKey); rerr != nil {
					return d.machine(s), errors.Join(ferr, rerr)
				}
				return nil, ferr
			}
		}
	}
	if err := d.waitActions(ctx, what, actions...); err != nil {
		if _, failed := actionFailure(ctx, err); failed {
			if rerr := d.releaseServer(ctx, s, ownKey); rerr != nil {
				return d.machine(s), errors.Join(err, rerr)
			}
			return nil, err
		}
		return d.machine(s), err
	}
	got, _, err := d.c.Server.GetByID(ctx, s.ID)
	switch {
	case err != nil && ctx.Err() != nil:
		return d.machine(s), mapErr("get server", err)
	case err != nil:
		// The server is up; only reading it back failed. The caller polls
		// it anyway.
		return d.machine(s), nil
	case got == nil || got.Status == hcloud.ServerStatusDeleting:
		// Deleted behind our back while it came up: take the key back and
		// let the caller create another.
		if rerr := d.releaseServer(ctx, s, ownKey); rerr != nil {
			return nil, errors.Join(provider.Errorf(provider.ErrUnavailable, "hetzner: server %d vanished while it was created", s.ID), rerr)
		}
		return nil, provider.Errorf(provider.ErrUnavailable, "hetzner: server %d vanished while it was created", s.ID)
	}
	return d.machine(got), nil
}

// releaseServer deletes a server that failed to come up and the lease key
// created for it, with a detached context (it runs when the caller's work
// already failed).
func (d *Driver) releaseServer(ctx context.Context, s *hcloud.Server, ownKey *hcloud.SSHKey) error {
	cctx, cancel := d.detached(ctx)
	defer cancel()
	var errs []error
	if err := d.deleteServer(cctx, s.ID, "delete failed server"); err != nil {
		errs = append(errs, err)
	}
	if tok := s.Labels[d.rk(LabelToken)]; tok != "" {
		if err := d.deleteLeaseKeys(cctx, tok); err != nil {
			errs = append(errs, err)
		}
	} else if ownKey != nil {
		if _, err := d.c.SSHKey.Delete(cctx, ownKey); err != nil && !hcloud.IsError(err, hcloud.ErrorCodeNotFound) {
			errs = append(errs, mapErr("delete ssh key", err))
		}
	}
	return errors.Join(errs...)
}

// settleImage waits for a snapshot's create_image action (for an adopted
// snapshot, whatever is still running on it) and returns the image as it
// stands afterwards, normally available with its size.
//
// When ctx ends first, the (pending) image is handed back with the error.
// When the action failed, the image is returned in state failed with the
// action's error message as StateReason and no error: a failed image is a
// result, not a failed call (as on other providers, where the SDK's
// WaitImage turns it into ErrImageFailed with that reason), and retrying
// the call would not mend it. Only a failure to ask the API is an error.
func (d *Driver) settleImage(ctx context.Context, im *hcloud.Image, actions []*hcloud.Action) (*provider.Image, error) {
	what := "snapshot " + strconv.FormatInt(im.ID, 10)
	if actions == nil {
		if im.Status != hcloud.ImageStatusCreating {
			return d.imageView(ctx, im), nil
		}
		running, err := d.c.Image.Action.AllFor(ctx, im, hcloud.ActionListOpts{Status: []hcloud.ActionStatus{hcloud.ActionStatusRunning}})
		if err != nil {
			return d.toImage(im), mapErr("list actions of image "+strconv.FormatInt(im.ID, 10), err)
		}
		actions = running
	}
	if err := d.waitActions(ctx, what, actions...); err != nil {
		if ae, failed := actionFailure(ctx, err); failed {
			out := d.toImage(im)
			out.State = provider.ImageFailed
			out.StateReason = ae.Message
			return out, nil
		}
		return d.toImage(im), err
	}
	got, _, err := d.c.Image.GetByID(ctx, im.ID)
	switch {
	case err != nil && ctx.Err() != nil:
		return d.toImage(im), mapErr("get image", err)
	case err != nil:
		// The snapshot is done; only reading it back failed. The caller
		// polls it anyway.
		return d.toImage(im), nil
	case got == nil || !got.Deleted.IsZero():
		return nil, provider.Errorf(provider.ErrNotFound, "hetzner: snapshot %d was deleted while it was created", im.ID)
	}
	return d.imageView(ctx, got), nil
}

// imageView converts an image; for a failed one it looks up the message of
// the action that failed it, so StateReason says why.
func (d *Driver) imageView(ctx context.Context, im *hcloud.Image) *provider.Image {
	out := d.toImage(im)
	if out.State != provider.ImageFailed {
		return out
	}
	acts, err := d.c.Image.Action.AllFor(ctx, im, hcloud.ActionListOpts{Status: []hcloud.ActionStatus{hcloud.ActionStatusError}})
	if err != nil {
		return out
	}
	for i := len(acts) - 1; i >= 0; i-- {
		if acts[i].ErrorMessage != "" {
			out.StateReason = acts[i].ErrorMessage
			break
		}
	}
	return out
}
