// AMIs and their snapshots: BaseImage, CreateImage, DeleteImage, deprecation, protection, copies (usage is in usage.go).

package awsec2

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/crabbox/crabbox-go/provider"
)

// protectionCooldown is how long EC2 keeps refusing deregistration after
// protection enabled with cooldown is disabled (EC2 API Reference,
// EnableImageDeregistrationProtection, WithCooldown).
const protectionCooldown = 24 * time.Hour

func (d *Driver) describeImage(ctx context.Context, id string) (*types.Image, error) {
	if !strings.HasPrefix(id, "ami-") {
		return nil, provider.Errorf(provider.ErrNotFound, "awsec2: image %q", id)
	}
	out, err := d.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{id}})
	if err != nil {
		return nil, mapErr(err)
	}
	for i := range out.Images {
		if aws.ToString(out.Images[i].ImageId) == id {
			return &out.Images[i], nil
		}
	}
	return nil, provider.Errorf(provider.ErrNotFound, "awsec2: image %s", id)
}

func toImage(im *types.Image) *provider.Image {
	tags := tagMap(im.Tags)
	img := &provider.Image{
		ID:          aws.ToString(im.ImageId),
		Name:        aws.ToString(im.Name),
		Description: aws.ToString(im.Description),
		State:       provider.ImageUnknown,
		Arch:        goArch(string(im.Architecture)),
		Labels:      tags,
		Protected:   strings.HasPrefix(aws.ToString(im.DeregistrationProtection), "enabled"),
	}
	delete(img.Labels, TagName)
	switch im.State {
	case types.ImageStatePending, types.ImageStateTransient:
		img.State = provider.ImagePending
	case types.ImageStateAvailable:
		img.State = provider.ImageAvailable
	case types.ImageStateFailed, types.ImageStateError, types.ImageStateInvalid:
		img.State = provider.ImageFailed
	case types.ImageStateDeregistered:
		img.State = provider.ImageDeleted
	}
	if im.StateReason != nil {
		img.StateReason = strings.TrimSpace(aws.ToString(im.StateReason.Code) + ": " + aws.ToString(im.StateReason.Message))
		img.StateReason = strings.TrimPrefix(img.StateReason, ": ")
	}
	if t, ok := parseAWSTime(aws.ToString(im.CreationDate)); ok {
		img.Created = t
	}
	if t, ok := parseAWSTime(aws.ToString(im.DeprecationTime)); ok {
		img.Deprecated = t
	}
	for _, b := range im.BlockDeviceMappings {
		if b.Ebs == nil || b.Ebs.SnapshotId == nil {
			continue
		}
		s := provider.Snapshot{ID: *b.Ebs.SnapshotId, SizeGiB: float64(aws.ToInt32(b.Ebs.VolumeSize))}
		img.Snapshots = append(img.Snapshots, s)
		img.SizeGiB += s.SizeGiB
	}
	return img
}

func parseAWSTime(s string) (time.Time, bool) {
	if s == "" {
		return time.Time{}, false
	}
	for _, l := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.000Z", time.RFC3339} {
		if t, err := time.Parse(l, s); err == nil {
			return t.UTC(), true
		}
	}
	return time.Time{}, false
}

// CreateImage implements provider.Images. The AMI and its snapshots are
// tagged at creation with the labels, the ownership tag and the request
// token. A retry with the same token adopts the image an earlier attempt
// created (found by the token tag, or by name when AWS reports the name as
// taken) instead of creating a second one. An image EC2 does not describe
// yet right after creating it (eventual consistency) is returned pending
// with a nil error.
func (d *Driver) CreateImage(ctx context.Context, req provider.CreateImageRequest) (*provider.Image, error) {
	if req.MachineID == "" || req.Name == "" {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "awsec2: machine and name are required")
	}
	if !amiName.MatchString(req.Name) {
		return nil, provider.Errorf(provider.ErrInvalidArgument,
			"awsec2: image name %q: AMI names are 3 to 128 letters, digits and ( ) [ ] . / - ' @ _ or spaces", req.Name)
	}
	extra := map[string]string{}
	if req.Token != "" {
		extra[TagCreateToken] = req.Token
		if img, err := d.findImageByToken(ctx, req.Token); err != nil {
			return nil, err
		} else if img != nil {
			return img, nil
		}
	}
	if _, err := d.GetMachine(ctx, req.MachineID); err != nil {
		return nil, err
	}
	tags := withManaged(req.Labels, extra)
	tags[TagName] = req.Name
	in := &ec2.CreateImageInput{
		InstanceId: aws.String(req.MachineID),
		Name:       aws.String(req.Name),
		NoReboot:   aws.Bool(req.NoReboot),
		TagSpecifications: []types.TagSpecification{
			tagSpec(types.ResourceTypeImage, tags),
			tagSpec(types.ResourceTypeSnapshot, tags),
		},
	}
	if req.Description != "" {
		in.Description = aws.String(req.Description)
	}
	out, err := d.ec2.CreateImage(ctx, in)
	if err != nil {
		if req.Token != "" {
			// Ambiguous failures (lost response, cancellation) may have
			// created the image: find it and hand it back with the error.
			if img := d.adoptImage(ctx, req.Token, err); img != nil {
				if apiCode(err) == "InvalidAMIName.Duplicate" {
					return img, nil // our own earlier attempt: adopt it
				}
				return img, mapErr(err)
			}
		}
		return nil, mapErr(err)
	}
	id := aws.ToString(out.ImageId)
	img, err := d.GetImage(ctx, id)
	if err != nil {
		pending := &provider.Image{ID: id, Name: req.Name, Description: req.Description, State: provider.ImagePending, Labels: tags}
		delete(pending.Labels, TagName)
		if errors.Is(err, provider.ErrNotFound) {
			// EC2 is eventually consistent: an image CreateImage just
			// returned may not be describable yet. It exists; report it
			// pending and let the caller's wait find it.
			return pending, nil
		}
		// Any other failure (cancellation, throttling): the image exists
		// all the same, so hand it back with the error for the caller to
		// adopt or delete.
		return pending, err
	}
	return img, nil
}

// adoptImage returns the image with the create token a CreateImage that
// failed with err made anyway, nil if none: one lookup, and, when the
// failure is ambiguous (EC2 may apply the call after the client gave up,
// and DescribeImages is eventually consistent), lookups for the adopt wait.
func (d *Driver) adoptImage(ctx context.Context, token string, err error) *provider.Image {
	find := func(ctx context.Context) (*provider.Image, bool) {
		img, ferr := d.findImageByToken(ctx, token)
		return img, ferr == nil && img != nil
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if img, ok := find(cctx); ok {
		return img
	}
	if !ambiguous(err) {
		return nil
	}
	img, _ := adopt(ctx, d, find)
	return img
}

func (d *Driver) findImageByToken(ctx context.Context, token string) (*provider.Image, error) {
	imgs, err := d.ListImages(ctx, map[string]string{TagCreateToken: token})
	if err != nil {
		return nil, err
	}
	for _, im := range imgs {
		if im.State != provider.ImageDeleted {
			return im, nil
		}
	}
	return nil, nil
}

// GetImage implements provider.Images.
func (d *Driver) GetImage(ctx context.Context, id string) (*provider.Image, error) {
	im, err := d.describeImage(ctx, id)
	if err != nil {
		return nil, err
	}
	img := toImage(im)
	if img.State == provider.ImageDeleted {
		return nil, provider.Errorf(provider.ErrNotFound, "awsec2: image %s is deregistered", id)
	}
	return img, nil
}

// ListImages implements provider.Images: images the account owns carrying
// all labels as tags, oldest first.
func (d *Driver) ListImages(ctx context.Context, labels map[string]string) ([]*provider.Image, error) {
	var res []*provider.Image
	p := ec2.NewDescribeImagesPaginator(d.ec2, &ec2.DescribeImagesInput{
		Owners:  []string{"self"},
		Filters: tagFilters(labels),
	})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return nil, mapErr(err)
		}
		for i := range out.Images {
			img := toImage(&out.Images[i])
			if img.State != provider.ImageDeleted {
				res = append(res, img)
			}
		}
	}
	sort.Slice(res, func(i, j int) bool {
		if !res[i].Created.Equal(res[j].Created) {
			return res[i].Created.Before(res[j].Created)
		}
		return res[i].ID < res[j].ID
	})
	return res, nil
}

// DeleteImage implements provider.Images: deregister the AMI, then delete
// its snapshots, retrying InvalidSnapshot.InUse and throttling with backoff
// and treating NotFound as done. Images and snapshots without the crabbox
// ownership tag are never touched; a protected image is refused with
// ErrConflict (lift protection with ProtectImage first), and one whose
// protection was lifted but is still in AWS's cooldown with a
// *provider.CooldownError (which matches ErrConflict). Snapshots another
// image of the account still uses are left in place, not retried. Before
// deregistering, the snapshots it will delete are tagged with the image
// (TagSnapshotOf): when the image is already gone, its leftover owned
// snapshots (from an interrupted earlier delete) are found by that tag and
// deleted. (Snapshots of an image deregistered elsewhere are SweepOrphans'.)
func (d *Driver) DeleteImage(ctx context.Context, id string) error {
	im, err := d.describeImage(ctx, id)
	if errors.Is(err, provider.ErrNotFound) {
		return d.deleteOrphanSnapshots(ctx, id)
	}
	if err != nil {
		return err
	}
	img := toImage(im)
	if img.State == provider.ImageDeleted {
		return d.deleteOrphanSnapshots(ctx, id)
	}
	if im.Tags == nil || tagMap(im.Tags)[TagManaged] != "true" {
		return provider.Errorf(provider.ErrInvalidArgument, "awsec2: image %s lacks the %s=true ownership tag; refusing to delete it", id, TagManaged)
	}
	if img.Protected {
		return provider.Errorf(provider.ErrConflict, "awsec2: image %s has deregistration protection", id)
	}
	owned, err := d.ownedSnapshots(ctx, img.Snapshots)
	if err != nil {
		return err
	}
	var shared map[string]bool
	if len(owned) > 0 {
		if shared, err = d.snapshotsUsedByOthers(ctx, id, owned); err != nil {
			return err
		}
	}
	var free []string
	for _, s := range owned {
		if !shared[s] {
			free = append(free, s)
		}
	}
	if len(free) > 0 {
		if err := d.updateTags(ctx, free, map[string]string{TagSnapshotOf: id}); err != nil && !errors.Is(err, provider.ErrNotFound) {
			return err
		}
	}
	if _, err := d.ec2.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(id)}); err != nil {
		merr := mapErr(err)
		if errors.Is(merr, provider.ErrConflict) {
			return d.refusedDeregistration(ctx, id, err, merr)
		}
		if !errors.Is(merr, provider.ErrNotFound) {
			return merr
		}
	}
	return d.deleteSnapshots(ctx, free)
}

// refusedDeregistration explains a DeregisterImage of an unprotected image
// that EC2 refused (raw error err, mapped merr): protection switched on
// meanwhile (merr as it is), or, since the image shows no protection,
// protection lifted but still in its cooldown. Neither the error code nor
// what DescribeImages shows during the cooldown is documented, so the
// cooldown is inferred from the refusal of an unprotected image, and its
// end read from the driver's own TagCooldownUntil record (zero without one).
func (d *Driver) refusedDeregistration(ctx context.Context, id string, err, merr error) error {
	im, derr := d.describeImage(ctx, id)
	if derr != nil {
		return merr
	}
	if toImage(im).Protected {
		return provider.Errorf(provider.ErrConflict, "awsec2: image %s has deregistration protection", id)
	}
	ce := &provider.CooldownError{ImageID: id, Err: err}
	if t, ok := parseAWSTime(tagMap(im.Tags)[TagCooldownUntil]); ok && t.After(d.o.now()) {
		ce.Until = t
	}
	return ce
}

// snapshotsUsedByOthers returns the snapshots that an image of the account
// other than except still uses, disabled images included: deleting the
// image leaves those in place (AWS refuses them with InvalidSnapshot.InUse
// for as long as that image exists). With snaps, only those snapshots are
// asked about, through DescribeImages' block-device-mapping.snapshot-id
// filter (the images sharing them, not the whole account: one call however
// many images the account holds); without, every image is listed.
func (d *Driver) snapshotsUsedByOthers(ctx context.Context, except string, snaps []string) (map[string]bool, error) {
	used := map[string]bool{}
	in := &ec2.DescribeImagesInput{Owners: []string{"self"}, IncludeDisabled: aws.Bool(true)}
	if snaps != nil {
		if len(snaps) == 0 {
			return used, nil
		}
		in.Filters = []types.Filter{{Name: aws.String("block-device-mapping.snapshot-id"), Values: snaps}}
	}
	p := ec2.NewDescribeImagesPaginator(d.ec2, in)
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return nil, mapErr(err)
		}
		for _, im := range out.Images {
			if aws.ToString(im.ImageId) == except || im.State == types.ImageStateDeregistered {
				continue
			}
			for _, bd := range im.BlockDeviceMappings {
				if bd.Ebs != nil && bd.Ebs.SnapshotId != nil {
					used[aws.ToString(bd.Ebs.SnapshotId)] = true
				}
			}
		}
	}
	return used, nil
}

func (d *Driver) ownedSnapshots(ctx context.Context, snaps []provider.Snapshot) ([]string, error) {
	if len(snaps) == 0 {
		return nil, nil
	}
	ids := make([]string, 0, len(snaps))
	for _, s := range snaps {
		ids = append(ids, s.ID)
	}
	var owned []string
	// One call for all of them; a snapshot already gone fails the whole
	// call (InvalidSnapshot.NotFound), and then each is asked alone.
	all, err := d.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: ids})
	switch {
	case err == nil:
		for _, s := range all.Snapshots {
			if tagMap(s.Tags)[TagManaged] == "true" {
				owned = append(owned, aws.ToString(s.SnapshotId))
			}
		}
		return owned, nil
	case !errors.Is(mapErr(err), provider.ErrNotFound):
		return nil, mapErr(err)
	case len(ids) == 1:
		return nil, nil
	}
	for _, id := range ids {
		out, err := d.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{id}})
		if err != nil {
			if errors.Is(mapErr(err), provider.ErrNotFound) {
				continue
			}
			return nil, mapErr(err)
		}
		for _, s := range out.Snapshots {
			if tagMap(s.Tags)[TagManaged] == "true" {
				owned = append(owned, aws.ToString(s.SnapshotId))
			}
		}
	}
	return owned, nil
}

// deleteOrphanSnapshots deletes the owned snapshots an interrupted
// DeleteImage of imageID tagged (TagSnapshotOf) before deregistering it.
func (d *Driver) deleteOrphanSnapshots(ctx context.Context, imageID string) error {
	var ids []string
	p := ec2.NewDescribeSnapshotsPaginator(d.ec2, &ec2.DescribeSnapshotsInput{
		OwnerIds: []string{"self"},
		Filters: []types.Filter{
			{Name: aws.String("tag:" + TagManaged), Values: []string{"true"}},
			{Name: aws.String("tag:" + TagSnapshotOf), Values: []string{imageID}},
		},
	})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return mapErr(err)
		}
		for _, s := range out.Snapshots {
			if t := tagMap(s.Tags); t[TagManaged] == "true" && t[TagSnapshotOf] == imageID {
				ids = append(ids, aws.ToString(s.SnapshotId))
			}
		}
	}
	return d.deleteSnapshots(ctx, ids)
}

func (d *Driver) deleteSnapshots(ctx context.Context, ids []string) error {
	for _, id := range ids {
		delay := d.o.cleanupMin
		for attempt := 1; ; attempt++ {
			_, err := d.ec2.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(id)})
			if err == nil {
				break
			}
			merr := mapErr(err)
			if errors.Is(merr, provider.ErrNotFound) {
				break
			}
			inUse := apiCode(err) == "InvalidSnapshot.InUse"
			if inUse && attempt > 1 {
				// Shared with an image that remains: it stays, no retry
				// (the in-use right after a deregistration is retried;
				// the first is retried without listing every image).
				shared, serr := d.snapshotsUsedByOthers(ctx, "", []string{id})
				if serr != nil {
					return serr
				}
				if shared[id] {
					break
				}
			}
			if !(inUse || errors.Is(merr, provider.ErrThrottled)) || attempt >= d.o.cleanupTries {
				return merr
			}
			if err := d.o.sleep(ctx, delay); err != nil {
				return err
			}
			delay *= 2
			if delay > d.o.cleanupMax {
				delay = d.o.cleanupMax
			}
		}
	}
	return nil
}

// UpdateImageLabels implements provider.Images (on the AMI only; snapshots
// keep the labels they were created with).
func (d *Driver) UpdateImageLabels(ctx context.Context, id string, labels map[string]string) error {
	if _, err := d.GetImage(ctx, id); err != nil {
		return err
	}
	return d.updateTags(ctx, []string{id}, labels)
}

// DeprecateImage implements provider.Deprecator. AWS rejects deprecation
// times in the past and rounds to the minute, so a time earlier than one
// minute from now is moved to the next whole minute after that.
func (d *Driver) DeprecateImage(ctx context.Context, id string, at time.Time) error {
	min := d.o.now().Add(time.Minute)
	if at.Before(min) {
		at = min
	}
	if t := at.Truncate(time.Minute); !t.Equal(at) {
		at = t.Add(time.Minute)
	}
	_, err := d.ec2.EnableImageDeprecation(ctx, &ec2.EnableImageDeprecationInput{
		ImageId: aws.String(id), DeprecateAt: aws.Time(at.UTC()),
	})
	return mapErr(err)
}

// ProtectImage implements provider.Protector with EC2 deregistration
// protection (with AWS's cooldown when WithProtectionCooldown is set).
// Lifting protection that was enabled with cooldown first records on the
// image when the cooldown ends (TagCooldownUntil, 24 hours on the driver's
// clock), so a DeleteImage refused meanwhile can say until when.
func (d *Driver) ProtectImage(ctx context.Context, id string, protect bool) error {
	var err error
	if protect {
		_, err = d.ec2.EnableImageDeregistrationProtection(ctx, &ec2.EnableImageDeregistrationProtectionInput{
			ImageId: aws.String(id), WithCooldown: aws.Bool(d.o.protectCool),
		})
		return mapErr(err)
	}
	im, err := d.describeImage(ctx, id)
	if err != nil {
		return err
	}
	if aws.ToString(im.DeregistrationProtection) == "enabled-with-cooldown" {
		until := d.o.now().Add(protectionCooldown).UTC().Format(time.RFC3339)
		if err := d.updateTags(ctx, []string{id}, map[string]string{TagCooldownUntil: until}); err != nil {
			return err
		}
	}
	_, err = d.ec2.DisableImageDeregistrationProtection(ctx, &ec2.DisableImageDeregistrationProtectionInput{
		ImageId: aws.String(id),
	})
	return mapErr(err)
}

// CopyImage implements provider.RegionCopier: copy the AMI into region with
// the source's tags on the copy and its snapshots. A ClientToken derived from
// (image, region, name) makes a retried copy return the same image.
func (d *Driver) CopyImage(ctx context.Context, id, region, name string) (*provider.Image, error) {
	if d.o.regionClients == nil {
		return nil, provider.Errorf(provider.ErrUnsupported, "awsec2: no client for region %s (WithRegionClients)", region)
	}
	if d.o.region == "" {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "awsec2: source region unknown (WithRegion)")
	}
	src, err := d.GetImage(ctx, id)
	if err != nil {
		return nil, err
	}
	if name == "" {
		name = src.Name
	}
	dst, err := d.o.regionClients(region)
	if err != nil {
		return nil, provider.Wrap(provider.ErrInvalidArgument, err)
	}
	sum := sha256.Sum256([]byte(id + "\x00" + region + "\x00" + name))
	token := hex.EncodeToString(sum[:16])
	// The copy carries its own token (next to the source's labels, create
	// token included), so a copy whose reply was lost can be found without
	// asking EC2 to copy again.
	tags := withManaged(src.Labels, map[string]string{TagName: name, TagCopyToken: token})
	out, err := dst.CopyImage(ctx, &ec2.CopyImageInput{
		SourceImageId: aws.String(id),
		SourceRegion:  aws.String(d.o.region),
		Name:          aws.String(name),
		Description:   aws.String(src.Description),
		ClientToken:   aws.String(token),
		TagSpecifications: []types.TagSpecification{
			tagSpec(types.ResourceTypeImage, tags),
			tagSpec(types.ResourceTypeSnapshot, tags),
		},
	})
	if err != nil {
		// An ambiguous failure (lost reply, cancellation) may have made the
		// copy: find it by its token, detached from ctx, and hand it back
		// with the error so the caller can keep or delete it.
		if ambiguous(err) {
			find := func(ctx context.Context) (string, bool) {
				id, ferr := copyByToken(ctx, dst, token)
				return id, ferr == nil && id != ""
			}
			if newID, ok := adopt(ctx, d, find); ok {
				return &provider.Image{ID: newID, Name: name, State: provider.ImagePending, Labels: tags, Arch: src.Arch}, mapErr(err)
			}
		}
		return nil, mapErr(err)
	}
	newID := aws.ToString(out.ImageId)
	dout, err := dst.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{newID}})
	if err != nil || len(dout.Images) == 0 {
		return &provider.Image{ID: newID, Name: name, State: provider.ImagePending, Labels: tags, Arch: src.Arch}, mapErr(err)
	}
	return toImage(&dout.Images[0]), nil
}

// amiName is what EC2 accepts as an AMI name (CreateImage and CopyImage,
// "Name": 3-128 alphanumeric characters, parentheses, square brackets,
// spaces, periods, slashes, dashes, single quotes, at-signs, underscores);
// checked before the call so a bad name fails before anything is asked of
// EC2.
var amiName = regexp.MustCompile(`^[A-Za-z0-9()\[\] ./'@_-]{3,128}$`)

// copyByToken returns the id of the image with copy token token in the
// region of client c, "" if there is none.
func copyByToken(ctx context.Context, c EC2API, token string) (string, error) {
	out, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"},
		Filters: []types.Filter{{Name: aws.String("tag:" + TagCopyToken), Values: []string{token}}}})
	if err != nil {
		return "", mapErr(err)
	}
	for _, im := range out.Images {
		if im.State != types.ImageStateDeregistered {
			return aws.ToString(im.ImageId), nil
		}
	}
	return "", nil
}

// BaseImage implements provider.Driver: the pinned image for arch, or the
// newest available image matching the lookup (Canonical Ubuntu 24.04).
func (d *Driver) BaseImage(ctx context.Context, arch string) (string, error) {
	if id := d.o.baseImages[arch]; id != "" {
		return id, nil
	}
	a, err := awsArch(arch)
	if err != nil {
		return "", err
	}
	out, err := d.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{
		Owners: []string{d.o.baseOwner},
		Filters: []types.Filter{
			{Name: aws.String("name"), Values: []string{fmt.Sprintf(d.o.baseNameFmt, arch)}},
			{Name: aws.String("architecture"), Values: []string{a}},
			{Name: aws.String("state"), Values: []string{"available"}},
		},
	})
	if err != nil {
		return "", mapErr(err)
	}
	var best *types.Image
	for i := range out.Images {
		im := &out.Images[i]
		if best == nil || aws.ToString(im.CreationDate) > aws.ToString(best.CreationDate) {
			best = im
		}
	}
	if best == nil {
		return "", provider.Errorf(provider.ErrNotFound, "awsec2: no base image %q owned by %s for %s",
			fmt.Sprintf(d.o.baseNameFmt, arch), d.o.baseOwner, arch)
	}
	return aws.ToString(best.ImageId), nil
}

func awsArch(arch string) (string, error) {
	switch arch {
	case provider.ArchAMD64:
		return "x86_64", nil
	case provider.ArchARM64:
		return "arm64", nil
	}
	return "", provider.Errorf(provider.ErrInvalidArgument, "awsec2: unknown architecture %q", arch)
}

func goArch(a string) string {
	switch a {
	case "x86_64":
		return provider.ArchAMD64
	case "arm64":
		return provider.ArchARM64
	}
	return a
}
