// Promotion channels as chains of SSH-key records.

package hetzner

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"
	"golang.org/x/crypto/ssh"

	"github.com/crabbox/crabbox-go/provider"
)

// MaxChannelLen is the longest channel name the driver accepts.
const MaxChannelLen = 40

var channelRe = regexp.MustCompile(`^[a-z0-9A-Z]([-_.a-z0-9A-Z]*[a-z0-9A-Z])?$`)

const chTimeLayout = "20060102T150405Z"

// maxSetAttempts bounds how often an unconditional SetChannel retries on
// top of racing promotions before it gives up with ErrConflict.
const maxSetAttempts = 8

func checkChannel(ch string) error {
	if len(ch) > MaxChannelLen || !channelRe.MatchString(ch) {
		return provider.Errorf(provider.ErrInvalidArgument,
			"hetzner: channel %q must be 1-%d characters of [-_.a-zA-Z0-9], alphanumeric at both ends", ch, MaxChannelLen)
	}
	return nil
}

// channelRecordName is the SSH key name of a channel version. Hetzner keeps
// SSH key names unique, which makes creating it an atomic claim of the
// version. The numeric suffix keeps names of different channels distinct;
// with a label prefix, the prefix keeps installations apart.
func (d *Driver) channelRecordName(ch string, version int64) string {
	p := "crabbox-channel-"
	if d.o.labelPrefix != "" {
		p = "crabbox-channel-" + d.o.labelPrefix + "/"
	}
	return p + ch + "-v" + strconv.FormatInt(version, 10)
}

// CurrentChannel returns the channel's highest version; ErrNotFound when the
// channel was never set.
func (d *Driver) CurrentChannel(ctx context.Context, channel string) (*provider.ChannelEntry, error) {
	if err := checkChannel(channel); err != nil {
		return nil, err
	}
	entries, _, err := d.channelRecords(ctx, channel)
	if err != nil {
		return nil, err
	}
	if len(entries) == 0 {
		return nil, provider.Errorf(provider.ErrNotFound, "hetzner: channel %q was never set", channel)
	}
	e := entries[len(entries)-1]
	return &e, nil
}

// ChannelHistory returns every value the channel had, oldest first.
func (d *Driver) ChannelHistory(ctx context.Context, channel string) ([]provider.ChannelEntry, error) {
	if err := checkChannel(channel); err != nil {
		return nil, err
	}
	entries, _, err := d.channelRecords(ctx, channel)
	return entries, err
}

// SetChannel points the channel at an image by creating the record of the
// next version. With IfVersion set it succeeds only if the channel is still
// at that version (-1: never set); a racing promotion that claimed the next
// version first makes it fail with ErrConflict. Without IfVersion it lands on
// top of whatever won.
//
// After the record is created, the channel is mirrored onto image labels
// (see ChannelLabelKey): the new image is labelled current, the displaced
// one previous, and the label is removed from the image that was previous
// before. Should that fail, the entry is returned with an error saying that
// the channel moved; SyncChannelLabels (or the next SetChannel) repairs the
// labels.
func (d *Driver) SetChannel(ctx context.Context, req provider.SetChannelRequest) (*provider.ChannelEntry, error) {
	if err := checkChannel(req.Channel); err != nil {
		return nil, err
	}
	if req.IfVersion < -1 {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "hetzner: IfVersion %d is invalid", req.IfVersion)
	}
	if _, err := d.getImage(ctx, req.ImageID); err != nil {
		return nil, err
	}
	for attempt := 0; attempt < maxSetAttempts; attempt++ {
		entries, _, err := d.channelRecords(ctx, req.Channel)
		if err != nil {
			return nil, err
		}
		var cur int64
		if len(entries) > 0 {
			cur = entries[len(entries)-1].Version
		}
		switch {
		case req.IfVersion == -1 && cur != 0:
			return nil, provider.Errorf(provider.ErrConflict, "hetzner: channel %q is already set (version %d)", req.Channel, cur)
		case req.IfVersion > 0 && cur != req.IfVersion:
			return nil, provider.Errorf(provider.ErrConflict, "hetzner: channel %q is at version %d, not %d", req.Channel, cur, req.IfVersion)
		}
		e, err := d.claimVersion(ctx, req, cur+1)
		if err == nil {
			// The record decided the promotion; now mirror it onto the
			// image labels. This finishes even if ctx ends meanwhile
			// (bounded by the cleanup timeout): the channel has moved.
			mctx, cancel := d.detached(ctx)
			merr := d.mirrorChannel(mctx, req.Channel)
			cancel()
			if merr != nil {
				return e, fmt.Errorf("hetzner: channel %s now points at image %s (version %d), but its image labels could not be written (SyncChannelLabels repairs them): %w",
					req.Channel, e.ImageID, e.Version, merr)
			}
			return e, nil
		}
		if !errors.Is(err, provider.ErrConflict) || req.IfVersion != 0 {
			return nil, err
		}
		// Unconditional: another promotion took this version; go on top.
	}
	return nil, provider.Errorf(provider.ErrConflict, "hetzner: channel %q: gave up after %d racing promotions", req.Channel, maxSetAttempts)
}

// claimVersion creates the record of a channel version. Losing the name to
// another writer is ErrConflict.
func (d *Driver) claimVersion(ctx context.Context, req provider.SetChannelRequest, version int64) (*provider.ChannelEntry, error) {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, provider.Wrap(provider.ErrUnavailable, err)
	}
	spub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, provider.Wrap(provider.ErrUnavailable, err)
	}
	nonce := make([]byte, 8)
	_, _ = rand.Read(nonce)
	at := d.o.now().UTC().Truncate(time.Second)
	labels := map[string]string{
		d.rk(labelManaged):   "true",
		d.rk(labelCreatedBy): provider.CreatedByValue,
		d.rk(LabelKind):      kindChannelEntry,
		d.rk(labelChannel):   req.Channel,
		d.rk(labelChVersion): strconv.FormatInt(version, 10),
		d.rk(labelChImage):   req.ImageID,
		d.rk(labelChAt):      at.Format(chTimeLayout),
		d.rk(LabelToken):     hex.EncodeToString(nonce),
	}
	if op := provider.SanitizeLabelValue(req.Operator); op != "" {
		labels[d.rk(labelChBy)] = op
	}
	if p := provider.SanitizeLabelValue(req.Proof); p != "" {
		labels[d.rk(labelChProof)] = p
	}
	name := d.channelRecordName(req.Channel, version)
	authorized := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(spub))) + " crabbox-channel-record-no-private-key"
	k, _, err := d.c.SSHKey.Create(ctx, hcloud.SSHKeyCreateOpts{Name: name, PublicKey: authorized, Labels: labels})
	if err != nil {
		taken := hcloud.IsError(err, hcloud.ErrorCodeUniquenessError)
		merr := mapErr("create channel record", err)
		if taken {
			merr = provider.Wrap(provider.ErrConflict, errors.Join(
				errors.New("hetzner: channel "+req.Channel+" version "+strconv.FormatInt(version, 10)+" was set concurrently"), err))
		}
		if !taken && !ambiguous(merr) {
			return nil, merr
		}
		// The create may have landed, also when the name is taken: hcloud-go
		// retries a create that timed out, and the retry then finds our own
		// record. The record with our nonce decides.
		cctx, cancel := d.detached(ctx)
		defer cancel()
		keys, lerr := d.c.SSHKey.AllWithOpts(cctx, hcloud.SSHKeyListOpts{ListOpts: hcloud.ListOpts{
			LabelSelector: d.rk(LabelKind) + "=" + kindChannelEntry + "," + d.rk(LabelToken) + "=" + labels[d.rk(LabelToken)]}})
		if lerr != nil || len(keys) == 0 {
			return nil, merr
		}
		k = keys[0]
		if ctx.Err() != nil {
			// The caller gave up: a cancelled promotion leaves no record.
			d.dropRecord(ctx, k)
			return nil, merr
		}
	}
	// Hetzner keeps SSH key names unique, so normally nobody else holds this
	// version. Should a rival record of the same version exist anyway, the
	// first one created (the lowest id: ids only grow) wins, and every later
	// writer sees it here because it was written before its own record.
	rivals, err := d.c.SSHKey.AllWithOpts(ctx, hcloud.SSHKeyListOpts{ListOpts: hcloud.ListOpts{
		LabelSelector: d.rk(LabelKind) + "=" + kindChannelEntry + "," + d.rk(labelChannel) + "=" + req.Channel +
			"," + d.rk(labelChVersion) + "=" + strconv.FormatInt(version, 10)}})
	if err != nil {
		d.dropRecord(ctx, k)
		return nil, mapErr("verify channel record", err)
	}
	for _, r := range rivals {
		if r.ID < k.ID && r.Name == k.Name {
			d.dropRecord(ctx, k)
			return nil, provider.Errorf(provider.ErrConflict, "hetzner: channel %s version %d was set concurrently (record %d came first)", req.Channel, version, r.ID)
		}
	}
	e, ok := d.recordEntry(k)
	if !ok {
		d.dropRecord(ctx, k)
		return nil, provider.Errorf(provider.ErrUnavailable, "hetzner: channel record %s came back malformed", name)
	}
	return &e, nil
}

// dropRecord deletes a channel record this call created and did not keep.
func (d *Driver) dropRecord(ctx context.Context, k *hcloud.SSHKey) {
	cctx, cancel := d.detached(ctx)
	defer cancel()
	_, _ = d.c.SSHKey.Delete(cctx, k)
}

// channelRecords returns a channel's entries sorted by version, and the SSH
// keys holding them in the same order. Of records sharing a version, only
// the first created counts.
func (d *Driver) channelRecords(ctx context.Context, channel string) ([]provider.ChannelEntry, []*hcloud.SSHKey, error) {
	keys, err := d.c.SSHKey.AllWithOpts(ctx, hcloud.SSHKeyListOpts{ListOpts: hcloud.ListOpts{
		LabelSelector: d.rk(LabelKind) + "=" + kindChannelEntry + "," + d.rk(labelChannel) + "=" + channel}})
	if err != nil {
		return nil, nil, mapErr("list channel records", err)
	}
	type rec struct {
		e provider.ChannelEntry
		k *hcloud.SSHKey
	}
	var recs []rec
	for _, k := range keys {
		if e, ok := d.recordEntry(k); ok && e.Channel == channel {
			recs = append(recs, rec{e, k})
		}
	}
	sort.Slice(recs, func(i, j int) bool {
		if recs[i].e.Version != recs[j].e.Version {
			return recs[i].e.Version < recs[j].e.Version
		}
		return recs[i].k.ID < recs[j].k.ID
	})
	entries := make([]provider.ChannelEntry, 0, len(recs))
	out := make([]*hcloud.SSHKey, 0, len(recs))
	for i, r := range recs {
		if i > 0 && recs[i-1].e.Version == r.e.Version {
			continue // a rival of the same version that lost (see claimVersion)
		}
		entries = append(entries, r.e)
		out = append(out, r.k)
	}
	return entries, out, nil
}

func (d *Driver) recordEntry(k *hcloud.SSHKey) (provider.ChannelEntry, bool) {
	l := d.fromLabels(k.Labels)
	v, err := strconv.ParseInt(l[labelChVersion], 10, 64)
	if err != nil || v <= 0 || k.Name != d.channelRecordName(l[labelChannel], v) {
		return provider.ChannelEntry{}, false
	}
	e := provider.ChannelEntry{
		Channel:  l[labelChannel],
		ImageID:  l[labelChImage],
		Version:  v,
		Operator: l[labelChBy],
		Proof:    l[labelChProof],
		At:       k.Created,
	}
	if t, err := time.Parse(chTimeLayout, l[labelChAt]); err == nil {
		e.At = t
	}
	return e, true
}

// DeleteChannel removes every record of a channel and its image labels.
// Deleting a channel that does not exist is not an error.
func (d *Driver) DeleteChannel(ctx context.Context, channel string) error {
	if err := checkChannel(channel); err != nil {
		return err
	}
	keys, err := d.c.SSHKey.AllWithOpts(ctx, hcloud.SSHKeyListOpts{ListOpts: hcloud.ListOpts{
		LabelSelector: d.rk(LabelKind) + "=" + kindChannelEntry + "," + d.rk(labelChannel) + "=" + channel}})
	if err != nil {
		return mapErr("list channel records", err)
	}
	if err := d.deleteKeys(ctx, keys); err != nil {
		return err
	}
	key, err := d.ChannelLabelKey(channel)
	if err != nil {
		return err
	}
	return d.writeChannelLabels(ctx, key, channelHead{})
}

// PruneChannel deletes the oldest records of a channel so that at most keep
// remain (keep >= 1: the current version always stays). It returns how many
// records it deleted.
func (d *Driver) PruneChannel(ctx context.Context, channel string, keep int) (int, error) {
	if err := checkChannel(channel); err != nil {
		return 0, err
	}
	if keep < 1 {
		return 0, provider.Errorf(provider.ErrInvalidArgument, "hetzner: prune channel: keep %d < 1", keep)
	}
	_, keys, err := d.channelRecords(ctx, channel)
	if err != nil || len(keys) <= keep {
		return 0, err
	}
	drop := keys[:len(keys)-keep]
	return len(drop), d.deleteKeys(ctx, drop)
}

func (d *Driver) deleteKeys(ctx context.Context, keys []*hcloud.SSHKey) error {
	var errs []error
	for _, k := range keys {
		if _, err := d.c.SSHKey.Delete(ctx, k); err != nil && !hcloud.IsError(err, hcloud.ErrorCodeNotFound) {
			errs = append(errs, mapErr("delete channel record", err))
		}
	}
	return errors.Join(errs...)
}
