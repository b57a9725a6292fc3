// Cleanup: PlanCleanup decides per image, with a reason, what the cleanup
// policy keeps and deletes; CleanupPlan.Apply re-checks and deletes.

package crabbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/crabbox/crabbox-go/provider"
)

// CleanupPolicy says which images PlanCleanup may delete. Whatever the
// policy, a plan always keeps: images crabbox did not create (both
// crabbox=true and created-by=crabbox are needed), the image any channel
// points at (the policy's Channels and every channel the provider lists),
// each channel's previous known-good image (its rollback target) until the
// image it points at is known-good itself, failed images within the
// inspection period, images still being created, protected images, images
// the provider reports in use, images whose use could not be determined,
// and images that vanished while the plan was made.
type CleanupPolicy struct {
	// Channels whose promoted images are kept (default: "default"). Where
	// the provider lists its channels, every listed channel is kept too.
	Channels []string
	// KeepKnownGood is how many known-good images besides the promoted one
	// are kept, newest first (default 1; negative means 0).
	KeepKnownGood int
	// FailedInspection is how long failed images are kept for inspection
	// after they were marked failed (default 7 days).
	FailedInspection time.Duration
	// CandidateMaxAge is how long a candidate is kept: one never promoted
	// from its creation, one promoted and superseded before it became
	// known-good from its last status change (default 3 days).
	CandidateMaxAge time.Duration
	// ApplyConcurrency is how many deletions Apply runs at once (default
	// 4; 1 deletes one image at a time). Images whose snapshots overlap
	// are always deleted one after another, in plan order, so each sees
	// whether the other still holds a shared snapshot.
	ApplyConcurrency int `json:",omitempty"`
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
	if p.ApplyConcurrency <= 0 {
		p.ApplyConcurrency = defaultApplyConcurrency
	}
	return p
}

// defaultApplyConcurrency is CleanupPolicy.ApplyConcurrency's default.
const defaultApplyConcurrency = 4

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
	// SharedSnapshots are snapshots of a deleted image that an image the
	// plan keeps also uses: they are not freed (and not counted).
	SharedSnapshots []string `json:"shared_snapshots,omitempty"`
}

// CleanupPlan lists what a cleanup would do. Print it (WriteText), marshal
// it, then Apply it.
type CleanupPlan struct {
	Provider string        `json:"provider"`
	Region   string        `json:"region,omitempty"`
	At       time.Time     `json:"at"`
	Policy   CleanupPolicy `json:"policy"`
	Items    []CleanupItem `json:"items"`
	Deletes  int           `json:"deletes"`
	// SnapshotsFreed counts the distinct snapshots that no image left
	// after the plan uses; GiBReclaimed is their size.
	SnapshotsFreed int     `json:"snapshots_freed"`
	GiBReclaimed   float64 `json:"gib_reclaimed"`

	c *Client
}

// cleanupFacts is what the pure policy decides from besides the images.
type cleanupFacts struct {
	promoted map[string]string                  // image id -> channel pointing at it now
	ever     map[string]string                  // image id -> a channel whose history had it
	history  map[string][]provider.ChannelEntry // channel -> its values, oldest first (when read)
	inUse    map[string]string                  // image id -> a reference using it
	unknown  map[string]string                  // image id -> why its use could not be read
	vanished map[string]bool                    // listed, then gone before the plan was made
}

// PlanCleanup decides, for every image the account holds, whether cleanup
// keeps or deletes it and why. It changes nothing. Images that vanish or
// change while it runs are reported in the plan (kept), not an error.
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
	ch, err := c.readChannels(ctx, policy.Channels, true)
	if err != nil {
		return nil, c.opErr("plan-cleanup", "", err)
	}
	f := cleanupFacts{promoted: ch.current, ever: ch.ever, history: ch.history,
		inUse: map[string]string{}, unknown: map[string]string{}, vanished: map[string]bool{}}
	var owned []string
	for _, img := range imgs {
		if img.Owned {
			owned = append(owned, img.ID)
		}
	}
	use := c.imagesUse(ctx, owned)
	for _, id := range owned {
		u := use[id]
		switch {
		case u.gone:
			f.vanished[id] = true
		case u.why != "":
			f.unknown[id] = u.why
		case u.ref != "":
			f.inUse[id] = u.ref
		}
	}
	plan := planWith(imgs, f, policy, c.o.now())
	plan.Provider, plan.Region, plan.c = c.info.Name, c.info.Region, c
	return plan, nil
}

// imageUse asks the provider what uses an image: ref is one reference
// ("" when unused), why says why the use could not be determined, gone that
// the image no longer exists. A provider without a UsageFinder cannot
// tell what uses any image, and one that cannot tell for this image (any
// error, ErrUnsupported included) leaves its use unknown: either way the
// image is kept.
func (c *Client) imageUse(ctx context.Context, id string) (ref, why string, gone bool) {
	uf := c.caps.usageFinder
	if uf == nil {
		return "", "provider " + c.info.Name + " cannot tell what uses images (no provider.UsageFinder)", false
	}
	refs, err := retry(ctx, c, "image", func(ctx context.Context) ([]string, error) { return uf.ImageUsage(ctx, id) })
	return c.useFrom(ctx, id, refs, err)
}

// useFrom reads one image's usage answer (refs, err) as imageUse reports
// it: an ErrNotFound answer is "gone" only when the image itself is gone.
func (c *Client) useFrom(ctx context.Context, id string, refs []string, err error) (ref, why string, gone bool) {
	switch {
	case err == nil && len(refs) > 0:
		return refs[0], "", false
	case err == nil:
		return "", "", false
	case errors.Is(err, ErrNotFound):
		if im := c.caps.images; im != nil {
			if _, gerr := c.getImage(ctx, im, id); errors.Is(gerr, ErrNotFound) {
				return "", "", true
			}
		}
	}
	return "", err.Error(), false
}

// imageUseFact is what imageUse says about one image.
type imageUseFact struct {
	ref, why string
	gone     bool
}

// imagesUse asks the provider what uses each of ids, with the rules of
// imageUse, in as few calls as the provider allows: one
// provider.BatchUsageFinder call (the driver pages it) when the driver has
// one, else ImageUsage per image. A batch call that fails as a whole falls
// back to the per-image form, so a transient failure costs calls, never a
// decision; an id the batch omits is of unknown use.
func (c *Client) imagesUse(ctx context.Context, ids []string) map[string]imageUseFact {
	out := make(map[string]imageUseFact, len(ids))
	bu := c.caps.batchUsage
	if bu == nil || len(ids) == 0 {
		for _, id := range ids {
			ref, why, gone := c.imageUse(ctx, id)
			out[id] = imageUseFact{ref, why, gone}
		}
		return out
	}
	got, err := retry(ctx, c, "image", func(ctx context.Context) (map[string]provider.ImageUse, error) {
		return bu.ImagesUsage(ctx, ids)
	})
	for _, id := range ids {
		u, ok := got[id]
		switch {
		case err != nil:
			ref, why, gone := c.imageUse(ctx, id)
			out[id] = imageUseFact{ref, why, gone}
		case !ok:
			out[id] = imageUseFact{why: "provider " + c.info.Name + " did not report its use"}
		default:
			ref, why, gone := c.useFrom(ctx, id, u.Refs, u.Err)
			out[id] = imageUseFact{ref, why, gone}
		}
	}
	return out
}

// planCleanup is the pure policy with only current channel values known:
// images, which are promoted (id -> channel) and in use (id -> reference).
func planCleanup(imgs []*Image, promoted, inUse map[string]string, policy CleanupPolicy, now time.Time) *CleanupPlan {
	return planWith(imgs, cleanupFacts{promoted: promoted, inUse: inUse}, policy, now)
}

// planWith is the pure policy: the decision for each image, then the
// snapshots and storage the deletions free.
func planWith(imgs []*Image, f cleanupFacts, policy CleanupPolicy, now time.Time) *CleanupPlan {
	policy = policy.withDefaults()
	plan := &CleanupPlan{At: now, Policy: policy, Items: []CleanupItem{}}
	keptKG := keptKnownGood(imgs, f, policy)
	for _, img := range imgs {
		action, reason := decide(img, f, keptKG, policy, now)
		plan.Items = append(plan.Items, CleanupItem{Image: img, Action: action, Reason: reason})
	}
	countFreed(plan)
	sort.SliceStable(plan.Items, func(i, j int) bool {
		if plan.Items[i].Action != plan.Items[j].Action {
			return plan.Items[i].Action == ActionDelete
		}
		return plan.Items[i].Image.Created.After(plan.Items[j].Image.Created)
	})
	return plan
}

// countFreed counts the deletions and what they free: a snapshot is freed
// once, and only when every image using it is deleted; a deleted image's
// snapshots that a kept image uses are listed as shared on its item.
func countFreed(plan *CleanupPlan) {
	keptUse := map[string][]string{} // snapshot -> kept images using it
	for _, it := range plan.Items {
		if it.Action != ActionDelete {
			for _, s := range it.Image.Snapshots {
				keptUse[s.ID] = append(keptUse[s.ID], it.Image.ID)
			}
		}
	}
	freed := map[string]bool{}
	for i := range plan.Items {
		it := &plan.Items[i]
		if it.Action != ActionDelete {
			continue
		}
		plan.Deletes++
		if len(it.Image.Snapshots) == 0 {
			plan.GiBReclaimed += it.Image.SizeGiB
			continue
		}
		var sized bool
		for _, s := range it.Image.Snapshots {
			sized = sized || s.SizeGiB > 0
		}
		for _, s := range it.Image.Snapshots {
			if users := keptUse[s.ID]; len(users) > 0 {
				it.SharedSnapshots = append(it.SharedSnapshots, s.ID)
				it.Reason += fmt.Sprintf("; snapshot %s kept: shared with %s", s.ID, strings.Join(users, ", "))
				continue
			}
			if freed[s.ID] {
				continue
			}
			freed[s.ID] = true
			plan.SnapshotsFreed++
			plan.GiBReclaimed += s.SizeGiB
		}
		if !sized && len(it.SharedSnapshots) == 0 {
			plan.GiBReclaimed += it.Image.SizeGiB
		}
	}
}

// keptKnownGood picks the known-good images the policy keeps, with why:
// the newest KeepKnownGood owned ones that no channel points at, and each
// channel's rollback target (the newest earlier value of its history that
// is available and known-good) while the image the channel points at is not
// known-good. For a channel whose history is unknown, at least the newest
// known-good image is kept while its image is not known-good.
func keptKnownGood(imgs []*Image, f cleanupFacts, policy CleanupPolicy) map[string]string {
	byID := map[string]*Image{}
	for _, img := range imgs {
		byID[img.ID] = img
	}
	kept := map[string]string{}
	keepKG := policy.KeepKnownGood
	for id, ch := range f.promoted {
		cur := byID[id]
		if cur == nil || cur.Status == StatusKnownGood {
			continue
		}
		hist, ok := f.history[ch]
		if !ok {
			// The promoted image has no real QA proof yet and the
			// channel's history is unknown: keep the newest known-good
			// whatever the policy says.
			keepKG = max(keepKG, 1)
			continue
		}
		for i := len(hist) - 2; i >= 0; i-- {
			prev := byID[hist[i].ImageID]
			if hist[i].ImageID == id || prev == nil {
				continue
			}
			if prev.State == string(provider.ImageAvailable) && prev.Status == StatusKnownGood {
				if kept[prev.ID] == "" {
					kept[prev.ID] = "previous known-good of channel " + ch + " (its rollback target)"
				}
				break
			}
		}
	}
	sorted := append([]*Image(nil), imgs...)
	sort.SliceStable(sorted, func(i, j int) bool {
		return statusTime(sorted[i]).After(statusTime(sorted[j]))
	})
	n := 0
	for _, img := range sorted {
		if n >= keepKG {
			break
		}
		if img.Owned && img.Status == StatusKnownGood && f.promoted[img.ID] == "" {
			n++
			if kept[img.ID] == "" {
				kept[img.ID] = "previous known-good"
			}
		}
	}
	return kept
}

// decide is the policy for one image: keep or delete, and why.
func decide(img *Image, f cleanupFacts, keptKG map[string]string, policy CleanupPolicy, now time.Time) (action, reason string) {
	action = ActionKeep
	switch {
	case f.vanished[img.ID]:
		reason = "vanished while planning (deleted elsewhere)"
	case !img.Owned:
		reason = "not created by crabbox" + foreignDetail(img.Labels)
	case f.promoted[img.ID] != "":
		reason = "promoted in channel " + f.promoted[img.ID]
	case img.State == string(provider.ImagePending):
		reason = "still being created"
	case img.Protected:
		reason = "deletion protection is on"
		if keptKG[img.ID] != "" {
			reason = keptKG[img.ID] + "; deletion protection is on"
		}
	case f.inUse[img.ID] != "":
		reason = "in use by " + f.inUse[img.ID]
	case f.unknown[img.ID] != "":
		reason = "use unknown (" + f.unknown[img.ID] + ")"
	case img.Status == StatusFailed:
		until := statusTime(img).Add(policy.FailedInspection)
		if now.Before(until) {
			reason = "failed; kept for inspection until " + until.UTC().Format(time.RFC3339)
		} else {
			action, reason = ActionDelete, "failed; inspection period over"
		}
	case img.Status == StatusKnownGood:
		if keptKG[img.ID] != "" {
			reason = keptKG[img.ID]
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
	case f.ever[img.ID] != "":
		// Promoted once, superseded before it became known-good.
		until := statusTime(img).Add(policy.CandidateMaxAge)
		if now.Before(until) {
			reason = "superseded promotion in channel " + f.ever[img.ID] + "; kept until " + until.UTC().Format(time.RFC3339)
		} else {
			action, reason = ActionDelete, "superseded promotion in channel "+f.ever[img.ID]+", never known-good"
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

// foreignDetail says which ownership label a foreign image carries, when it
// carries one of the two.
func foreignDetail(labels map[string]string) string {
	switch {
	case labels[LabelManaged] == "true":
		return fmt.Sprintf(" (%s=true but %s=%q)", LabelManaged, LabelCreatedBy, labels[LabelCreatedBy])
	case labels[LabelCreatedBy] == provider.CreatedByValue:
		return fmt.Sprintf(" (%s=%s but %s=%q)", LabelCreatedBy, provider.CreatedByValue, LabelManaged, labels[LabelManaged])
	}
	return ""
}

func statusTime(img *Image) time.Time {
	if t, ok := parseLabelTime(img.Labels[LabelStatusAt]); ok {
		return t
	}
	return img.Created
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

// Results of one image in CleanupResult.Outcomes.
const (
	ResultDeleted = "deleted" // Apply deleted the image
	ResultGone    = "gone"    // the image was already gone (deleted elsewhere)
	ResultKept    = "kept"    // a re-check or the provider's protection kept it
	ResultFailed  = "failed"  // reading or deleting failed; the image may remain
)

// CleanupOutcome is what Apply did with one image the plan marked for
// deletion, and why.
type CleanupOutcome struct {
	ImageID string `json:"image_id"`
	Result  string `json:"result"`
	Reason  string `json:"reason,omitempty"`
	// SnapshotsKept are snapshots of the image left in place because an
	// image that remains still uses them.
	SnapshotsKept []string `json:"snapshots_kept,omitempty"`
}

// CleanupResult reports what Apply did.
type CleanupResult struct {
	// Deleted lists images deleted or found already gone.
	Deleted []string `json:"deleted"`
	// Skipped lists images kept because they changed since planning or
	// the provider's protection refused their deletion.
	Skipped []string `json:"skipped,omitempty"`
	Failed  []string `json:"failed,omitempty"`
	// Outcomes says, per image, what happened and why.
	Outcomes []CleanupOutcome `json:"outcomes"`
}

func (r *CleanupResult) add(o CleanupOutcome) {
	r.Outcomes = append(r.Outcomes, o)
	switch o.Result {
	case ResultDeleted, ResultGone:
		r.Deleted = append(r.Deleted, o.ImageID)
	case ResultKept:
		r.Skipped = append(r.Skipped, o.ImageID)
	default:
		r.Failed = append(r.Failed, o.ImageID)
	}
}

// Apply deletes the images the plan marks for deletion, with the snapshots
// no remaining image uses. It never lifts protection. Immediately before
// each deletion it re-reads the image (ownership, state, protection,
// status), the current value of every channel that may point at it, and its
// use, and keeps any image that became foreign, pending, protected,
// promoted, in use (or of unknown use) or changed status since the plan was
// made. A deletion the provider refuses because the image is protected (a
// concurrent Promote protects before it points a channel at the image), or
// because its lifted protection is still in the provider's cooldown
// (provider.CooldownError: AWS keeps protection enabled with cooldown in
// force for 24 hours after it is disabled), is reported kept, not failed.
// It runs up to Policy.ApplyConcurrency deletions at once (images sharing
// a snapshot one after another), reports the outcomes in plan order, and
// goes on past failures, returning them joined. Once ctx is done it starts
// no further deletion, waits for those under way, and reports the rest
// failed with ctx's error.
func (p *CleanupPlan) Apply(ctx context.Context) (*CleanupResult, error) {
	res := &CleanupResult{Deleted: []string{}, Outcomes: []CleanupOutcome{}}
	if p == nil || p.c == nil {
		return res, fmt.Errorf("crabbox: %w: plan was not made by PlanCleanup", ErrInvalidArgument)
	}
	c := p.c
	im, err := c.images()
	if err != nil {
		return res, c.opErr("cleanup", "", err)
	}
	var items []CleanupItem
	for _, it := range p.Items {
		if it.Action == ActionDelete {
			items = append(items, it)
		}
	}
	outs := make([]CleanupOutcome, len(items))
	errs := make([]error, len(items))
	others := &otherImages{}
	work := make(chan []int)
	var wg sync.WaitGroup
	for range min(max(p.Policy.ApplyConcurrency, 1), len(items)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for group := range work {
				deleted := map[string]bool{} // by this group, earlier in plan order
				for _, i := range group {
					it := items[i]
					if ctx.Err() != nil {
						outs[i] = CleanupOutcome{ImageID: it.Image.ID, Result: ResultFailed, Reason: context.Cause(ctx).Error()}
						errs[i] = context.Cause(ctx)
						continue
					}
					o, err := p.applyOne(ctx, im, it, others, deleted)
					outs[i], errs[i] = o, err
					if o.Result == ResultDeleted || o.Result == ResultGone {
						deleted[o.ImageID] = true
					}
					if o.Result == ResultDeleted {
						c.emit(Event{Kind: EventImageDeleted, Resource: "image", ID: o.ImageID, State: "deleted", Message: it.Reason})
					}
				}
			}
		}()
	}
	groups := snapshotGroups(items)
	for gi, group := range groups {
		if ctx.Err() != nil {
			// No new deletion once ctx is done: the rest fail with its error.
			for _, g := range groups[gi:] {
				for _, i := range g {
					outs[i] = CleanupOutcome{ImageID: items[i].Image.ID, Result: ResultFailed, Reason: context.Cause(ctx).Error()}
					errs[i] = context.Cause(ctx)
				}
			}
			break
		}
		work <- group
	}
	close(work)
	wg.Wait()
	var joined []error
	for i, o := range outs {
		res.add(o)
		if errs[i] != nil {
			joined = append(joined, c.opErr("cleanup", items[i].Image.ID, errs[i]))
		}
	}
	return res, errors.Join(joined...)
}

// snapshotGroups partitions the planned deletions (indices into items) into
// groups of images linked by shared snapshots, each group and the groups in
// plan order: a group's images are deleted one after another.
func snapshotGroups(items []CleanupItem) [][]int {
	parent := make([]int, len(items))
	for i := range parent {
		parent[i] = i
	}
	var find func(int) int
	find = func(i int) int {
		for parent[i] != i {
			parent[i] = parent[parent[i]]
			i = parent[i]
		}
		return i
	}
	bySnap := map[string]int{}
	for i, it := range items {
		for _, s := range it.Image.Snapshots {
			if j, ok := bySnap[s.ID]; ok {
				a, b := find(i), find(j)
				parent[max(a, b)] = min(a, b)
			} else {
				bySnap[s.ID] = i
			}
		}
	}
	var groups [][]int
	at := map[int]int{}
	for i := range items {
		r := find(i)
		g, ok := at[r]
		if !ok {
			g = len(groups)
			at[r] = g
			groups = append(groups, nil)
		}
		groups[g] = append(groups[g], i)
	}
	return groups
}

// applyOne re-checks one planned deletion against fresh reads and deletes
// the image when it still qualifies.
func (p *CleanupPlan) applyOne(ctx context.Context, im provider.Images, it CleanupItem, others *otherImages, deleted map[string]bool) (CleanupOutcome, error) {
	c := p.c
	id := it.Image.ID
	o := CleanupOutcome{ImageID: id}
	kept := func(reason string) (CleanupOutcome, error) {
		o.Result, o.Reason = ResultKept, reason
		return o, nil
	}
	failed := func(err error) (CleanupOutcome, error) {
		o.Result, o.Reason = ResultFailed, err.Error()
		return o, err
	}
	pi, err := c.getImage(ctx, im, id)
	if errors.Is(err, ErrNotFound) {
		o.Result, o.Reason = ResultGone, "already gone"
		return o, nil
	}
	if err != nil {
		return failed(err)
	}
	cur := c.imageFrom(pi)
	switch {
	case !ownedLabels(cur.Labels):
		return kept("no longer owned by crabbox" + foreignDetail(cur.Labels))
	case cur.State == string(provider.ImagePending):
		return kept("still being created")
	case cur.Protected:
		return kept("deletion protection is on")
	case cur.Labels[LabelStatus] != it.Image.Labels[LabelStatus] || cur.Labels[LabelStatusAt] != it.Image.Labels[LabelStatusAt]:
		return kept(fmt.Sprintf("status changed since planning (%q, now %q)", it.Image.Status, cur.Status))
	}
	ch, err := c.readChannels(ctx, p.Policy.Channels, false)
	if err != nil {
		return failed(fmt.Errorf("re-reading channels: %w", err))
	}
	if name := ch.current[id]; name != "" {
		return kept("promoted in channel " + name + " since planning")
	}
	ref, why, gone := c.imageUse(ctx, id)
	switch {
	case gone:
		o.Result, o.Reason = ResultGone, "already gone"
		return o, nil
	case why != "":
		return kept("use unknown (" + why + ")")
	case ref != "":
		return kept("in use by " + ref)
	}
	shared, err := others.shared(ctx, c, im, cur, deleted)
	if err != nil {
		return failed(fmt.Errorf("reading which images share its snapshots: %w", err))
	}
	err = retryErr(ctx, c, "image", func(ctx context.Context) error { return im.DeleteImage(ctx, id) })
	if cd := (*provider.CooldownError)(nil); errors.As(err, &cd) {
		// Protection lifted (a retire) but still in force for the
		// provider's cooldown: it goes in a later cleanup.
		if cd.Until.IsZero() {
			return kept("deregistration protection in cooldown (end unknown)")
		}
		return kept("deregistration protection in cooldown until " + cd.Until.UTC().Format(time.RFC3339))
	}
	if errors.Is(err, ErrConflict) {
		// Refused (a concurrent Promote protected it), unless the image
		// went and only its snapshots could not be deleted.
		if _, gerr := c.getImage(ctx, im, id); gerr == nil {
			return kept("the provider refused the deletion: " + err.Error())
		}
	}
	if err != nil {
		return failed(err)
	}
	o.Result, o.Reason, o.SnapshotsKept = ResultDeleted, it.Reason, shared
	return o, nil
}

// otherImages is the image listing Apply reads once (when a planned image
// has snapshots) to tell which of an image's snapshots another image uses.
type otherImages struct {
	mu   sync.Mutex
	read bool
	err  error
	all  []*provider.Image
}

// shared lists img's snapshots that another existing image uses (the
// provider's DeleteImage leaves those in place): an image of the listing
// other than img, not deleted, and not deleted by this Apply before img
// (deleted: images sharing a snapshot with img are deleted one after
// another, by the same worker).
func (o *otherImages) shared(ctx context.Context, c *Client, im provider.Images, img *Image, deleted map[string]bool) ([]string, error) {
	if len(img.Snapshots) == 0 {
		return nil, nil
	}
	o.mu.Lock()
	if !o.read {
		o.all, o.err = retry(ctx, c, "image", func(ctx context.Context) ([]*provider.Image, error) { return im.ListImages(ctx, nil) })
		o.read = o.err == nil
	}
	all, err := o.all, o.err
	o.mu.Unlock()
	if err != nil {
		return nil, err
	}
	used := map[string]bool{}
	for _, other := range all {
		if other.ID == img.ID || other.State == provider.ImageDeleted || deleted[other.ID] {
			continue
		}
		for _, s := range other.Snapshots {
			used[s.ID] = true
		}
	}
	var out []string
	for _, s := range img.Snapshots {
		if used[s.ID] {
			out = append(out, s.ID)
		}
	}
	return out, nil
}
