// Cleanup: PlanCleanup decides per image, with a reason, what the cleanup
// policy keeps and deletes; CleanupPlan.Apply re-checks and deletes.

package crabbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/crabbox/crabbox-go/provider"
)

// CleanupPolicy says which images PlanCleanup may delete. Whatever the
// policy, a plan always keeps: images crabbox did not create, the image
// promoted in any of Channels, the previous known-good image until the
// promoted one is known-good itself, failed images within the inspection
// period, images still being created, protected images, and images the
// provider reports in use.
type CleanupPolicy struct {
	// Channels whose promoted images are kept (default: "default").
	Channels []string
	// KeepKnownGood is how many known-good images besides the promoted one
	// are kept, newest first (default 1; negative means 0).
	KeepKnownGood int
	// FailedInspection is how long failed images are kept for inspection
	// after they were marked failed (default 7 days).
	FailedInspection time.Duration
	// CandidateMaxAge is how long a candidate that was never promoted is
	// kept (default 3 days).
	CandidateMaxAge time.Duration
}

func (p CleanupPolicy) withDefaults() CleanupPolicy {
	if len(p.Channels) == 0 {
		p.Channels = []string{DefaultChannel}
	}
	if p.KeepKnownGood == 0 {
		p.KeepKnownGood = 1
	}
	if p.KeepKnownGood < 0 {
		p.KeepKnownGood = 0
	}
	if p.FailedInspection <= 0 {
		p.FailedInspection = 7 * 24 * time.Hour
	}
	if p.CandidateMaxAge <= 0 {
		p.CandidateMaxAge = 72 * time.Hour
	}
	return p
}

// Cleanup actions.
const (
	ActionKeep   = "keep"
	ActionDelete = "delete"
)

// CleanupItem is the decision for one image.
type CleanupItem struct {
	Image  *Image `json:"image"`
	Action string `json:"action"`
	Reason string `json:"reason"`
}

// CleanupPlan lists what a cleanup would do. Print it (WriteText), marshal
// it, then Apply it.
type CleanupPlan struct {
	Provider       string        `json:"provider"`
	Region         string        `json:"region,omitempty"`
	At             time.Time     `json:"at"`
	Policy         CleanupPolicy `json:"policy"`
	Items          []CleanupItem `json:"items"`
	Deletes        int           `json:"deletes"`
	SnapshotsFreed int           `json:"snapshots_freed"`
	GiBReclaimed   float64       `json:"gib_reclaimed"`

	c *Client
}

// PlanCleanup decides, for every image the account holds, whether cleanup
// keeps or deletes it and why. It changes nothing.
func (c *Client) PlanCleanup(ctx context.Context, policy CleanupPolicy) (*CleanupPlan, error) {
	policy = policy.withDefaults()
	for _, ch := range policy.Channels {
		if err := validChannel(ch); err != nil {
			return nil, c.opErr("plan-cleanup", "", err)
		}
	}
	imgs, err := c.Images(ctx, AllImages())
	if err != nil {
		return nil, err
	}
	promoted, err := c.promotedIn(ctx, policy.Channels)
	if err != nil {
		return nil, c.opErr("plan-cleanup", "", err)
	}
	inUse := map[string]string{}
	if uf := c.caps.usageFinder; uf != nil {
		for _, img := range imgs {
			if !img.Owned {
				continue
			}
			refs, err := retry(ctx, c, "image", func(ctx context.Context) ([]string, error) { return uf.ImageUsage(ctx, img.ID) })
			if err != nil && !errors.Is(err, ErrUnsupported) {
				return nil, c.opErr("plan-cleanup", img.ID, fmt.Errorf("in-use lookup: %w", err))
			}
			if len(refs) > 0 {
				inUse[img.ID] = refs[0]
			}
		}
	}
	now := c.o.now()
	plan := planCleanup(imgs, promoted, inUse, policy, now)
	plan.Provider, plan.Region, plan.c = c.info.Name, c.info.Region, c
	return plan, nil
}

// planCleanup is the pure policy: images, which are promoted (id ->
// channel) and in use (id -> reference).
func planCleanup(imgs []*Image, promoted, inUse map[string]string, policy CleanupPolicy, now time.Time) *CleanupPlan {
	policy = policy.withDefaults()
	plan := &CleanupPlan{At: now, Policy: policy, Items: []CleanupItem{}}
	keptKG := keptKnownGood(imgs, promoted, policy)
	for _, img := range imgs {
		action, reason := decide(img, promoted, inUse, keptKG, policy, now)
		plan.Items = append(plan.Items, CleanupItem{Image: img, Action: action, Reason: reason})
		if action == ActionDelete {
			plan.Deletes++
			plan.SnapshotsFreed += len(img.Snapshots)
			plan.GiBReclaimed += imageGiB(img)
		}
	}
	sort.SliceStable(plan.Items, func(i, j int) bool {
		if plan.Items[i].Action != plan.Items[j].Action {
			return plan.Items[i].Action == ActionDelete
		}
		return plan.Items[i].Image.Created.After(plan.Items[j].Image.Created)
	})
	return plan
}

// keptKnownGood picks the known-good images the policy keeps: the newest
// KeepKnownGood owned ones that are not promoted (at least one while a
// promoted image is not yet known-good).
func keptKnownGood(imgs []*Image, promoted map[string]string, policy CleanupPolicy) map[string]bool {
	sorted := append([]*Image(nil), imgs...)
	sort.SliceStable(sorted, func(i, j int) bool {
		return statusTime(sorted[i]).After(statusTime(sorted[j]))
	})
	keepKG := policy.KeepKnownGood
	for id := range promoted {
		for _, img := range imgs {
			if img.ID == id && img.Status != StatusKnownGood && keepKG < 1 {
				// The promoted image has no real QA proof yet: keep the
				// previous known-good whatever the policy says.
				keepKG = 1
			}
		}
	}
	keptKG := map[string]bool{}
	for _, img := range sorted {
		if len(keptKG) >= keepKG {
			break
		}
		if img.Owned && img.Status == StatusKnownGood && promoted[img.ID] == "" {
			keptKG[img.ID] = true
		}
	}
	return keptKG
}

// decide is the policy for one image: keep or delete, and why.
func decide(img *Image, promoted, inUse map[string]string, keptKG map[string]bool, policy CleanupPolicy, now time.Time) (action, reason string) {
	action = ActionKeep
	switch {
	case !img.Owned:
		reason = "not created by crabbox"
	case promoted[img.ID] != "":
		reason = "promoted in channel " + promoted[img.ID]
	case img.State == string(provider.ImagePending):
		reason = "still being created"
	case img.Protected:
		reason = "deletion protection is on"
	case inUse[img.ID] != "":
		reason = "in use by " + inUse[img.ID]
	case img.Status == StatusFailed:
		until := statusTime(img).Add(policy.FailedInspection)
		if now.Before(until) {
			reason = "failed; kept for inspection until " + until.UTC().Format(time.RFC3339)
		} else {
			action, reason = ActionDelete, "failed; inspection period over"
		}
	case img.Status == StatusKnownGood:
		if keptKG[img.ID] {
			reason = "previous known-good"
		} else {
			action, reason = ActionDelete, "superseded known-good"
		}
	case img.State == string(provider.ImageFailed):
		until := img.Created.Add(policy.FailedInspection)
		if now.Before(until) {
			reason = "image creation failed; kept for inspection until " + until.UTC().Format(time.RFC3339)
		} else {
			action, reason = ActionDelete, "image creation failed; inspection period over"
		}
	default: // candidate or unknown status
		until := img.Created.Add(policy.CandidateMaxAge)
		if now.Before(until) {
			reason = "recent candidate"
		} else {
			action, reason = ActionDelete, "stale candidate, never promoted"
		}
	}
	return action, reason
}

func statusTime(img *Image) time.Time {
	if t, ok := parseLabelTime(img.Labels[LabelStatusAt]); ok {
		return t
	}
	return img.Created
}

func imageGiB(img *Image) float64 {
	if img.SizeGiB > 0 {
		return img.SizeGiB
	}
	var s float64
	for _, sn := range img.Snapshots {
		s += sn.SizeGiB
	}
	return s
}

// WriteText prints the plan as a table.
func (p *CleanupPlan) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "ACTION\tIMAGE\tNAME\tSTATUS\tSNAPSHOTS\tREASON\n")
	for _, it := range p.Items {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", it.Action, it.Image.ID, it.Image.Name, it.Image.Status, len(it.Image.Snapshots), it.Reason)
	}
	fmt.Fprintf(tw, "\n%d to delete, %d snapshots freed, %.2f GiB reclaimed\n", p.Deletes, p.SnapshotsFreed, p.GiBReclaimed)
	return tw.Flush()
}

// CleanupResult reports what Apply did.
type CleanupResult struct {
	Deleted []string `json:"deleted"`
	Skipped []string `json:"skipped,omitempty"` // changed since planning
	Failed  []string `json:"failed,omitempty"`
}

// Apply deletes the images the plan marks for deletion, with their
// snapshots. Before each deletion it re-reads the image and the channels and
// skips any image that became promoted, protected or foreign since the plan
// was made. It goes on past failures and returns them joined.
func (p *CleanupPlan) Apply(ctx context.Context) (*CleanupResult, error) {
	res := &CleanupResult{Deleted: []string{}}
	if p == nil || p.c == nil {
		return res, fmt.Errorf("crabbox: %w: plan was not made by PlanCleanup", ErrInvalidArgument)
	}
	c := p.c
	im, err := c.images()
	if err != nil {
		return res, c.opErr("cleanup", "", err)
	}
	promoted, err := c.promotedIn(ctx, p.Policy.Channels)
	if err != nil {
		return res, c.opErr("cleanup", "", err)
	}
	var errs []error
	for _, it := range p.Items {
		if it.Action != ActionDelete {
			continue
		}
		id := it.Image.ID
		cur, err := c.getImage(ctx, im, id)
		if errors.Is(err, ErrNotFound) {
			res.Deleted = append(res.Deleted, id)
			continue
		}
		if err != nil {
			res.Failed = append(res.Failed, id)
			errs = append(errs, c.opErr("cleanup", id, err))
			continue
		}
		if cur.Labels[LabelManaged] != "true" || promoted[id] != "" || cur.Protected {
			res.Skipped = append(res.Skipped, id)
			continue
		}
		if err := retryErr(ctx, c, "image", func(ctx context.Context) error { return im.DeleteImage(ctx, id) }); err != nil {
			res.Failed = append(res.Failed, id)
			errs = append(errs, c.opErr("cleanup", id, err))
			continue
		}
		res.Deleted = append(res.Deleted, id)
		c.emit(Event{Kind: EventImageDeleted, Resource: "image", ID: id, State: "deleted", Message: it.Reason})
	}
	return res, errors.Join(errs...)
}

// promotedIn maps the image each channel points at to the channel. Channels
// never set are skipped; a provider without channels promotes nothing.
func (c *Client) promotedIn(ctx context.Context, channels []string) (map[string]string, error) {
	promoted := map[string]string{}
	chs := c.caps.channels
	if chs == nil {
		return promoted, nil
	}
	for _, ch := range channels {
		e, err := c.currentChannel(ctx, chs, ch)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("channel %s: %w", ch, err)
		}
		promoted[e.ImageID] = ch
	}
	return promoted, nil
}
