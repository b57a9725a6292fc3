// Tag keys the driver writes, labels to and from EC2 tags and tag filters.

package awsec2

import (
	"context"
	"sort"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/crabbox/crabbox-go/provider"
)

// Tag keys the driver itself writes. Their values match the root package's
// label keys (crabbox.LabelManaged is "crabbox").
const (
	// TagManaged marks everything the driver created ("true"). The driver
	// never deregisters an image or deletes a snapshot without it.
	TagManaged = provider.LabelManaged
	// TagCreatedBy is the second ownership tag ("crabbox"), written by the
	// driver on everything it creates: what the orphan sweep deletes must
	// carry both (a resource with crabbox=true alone, or made by another
	// tool, is foreign).
	TagCreatedBy = provider.LabelCreatedBy
	// TagCreateToken carries CreateImageRequest.Token on an image, so an
	// image whose creation returned an ambiguous error is found again.
	TagCreateToken = "crabbox-create-token"
	// TagCopyToken carries the ClientToken of the CopyImage that made a
	// copy, so a copy whose reply was lost is found again.
	TagCopyToken = "crabbox-copy-token"
	// TagClientToken carries CreateMachineRequest.Token on an instance (its
	// EC2 ClientToken may differ: see WithSpot). DeleteMachine derives the
	// key pair name from it when the instance has no KeyName.
	TagClientToken = "crabbox-client-token"
	// TagDeleted ("true") marks an instance DeleteMachine deleted, so
	// ListMachines stops listing it once it is terminated.
	TagDeleted = "crabbox-deleted"
	// TagName is EC2's display name tag.
	TagName = "Name"
)

func tagSpec(rt types.ResourceType, tags map[string]string) types.TagSpecification {
	ts := types.TagSpecification{ResourceType: rt}
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		ts.Tags = append(ts.Tags, types.Tag{Key: aws.String(k), Value: aws.String(tags[k])})
	}
	return ts
}

func tagMap(tags []types.Tag) map[string]string {
	m := make(map[string]string, len(tags))
	for _, t := range tags {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m
}

func withManaged(labels map[string]string, extra map[string]string) map[string]string {
	m := map[string]string{}
	for k, v := range labels {
		if v != "" {
			m[k] = v
		}
	}
	for k, v := range extra {
		m[k] = v
	}
	m[TagManaged] = "true"
	m[TagCreatedBy] = provider.CreatedByValue
	return m
}

// ownedTags reports whether tags carry both ownership tags.
func ownedTags(tags map[string]string) bool {
	return tags[TagManaged] == "true" && tags[TagCreatedBy] == provider.CreatedByValue
}

// ownedFilters select what carries both ownership tags.
func ownedFilters() []types.Filter {
	return []types.Filter{
		{Name: aws.String("tag:" + TagManaged), Values: []string{"true"}},
		{Name: aws.String("tag:" + TagCreatedBy), Values: []string{provider.CreatedByValue}},
	}
}

func tagFilters(labels map[string]string) []types.Filter {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var f []types.Filter
	for _, k := range keys {
		f = append(f, types.Filter{Name: aws.String("tag:" + k), Values: []string{labels[k]}})
	}
	return f
}

func (d *Driver) updateTags(ctx context.Context, ids []string, labels map[string]string) error {
	var set []types.Tag
	var del []types.Tag
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if k == TagManaged {
			continue // ownership is not the caller's to change
		}
		if v := labels[k]; v == "" {
			del = append(del, types.Tag{Key: aws.String(k)})
		} else {
			set = append(set, types.Tag{Key: aws.String(k), Value: aws.String(v)})
		}
	}
	if len(set) > 0 {
		if _, err := d.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: ids, Tags: set}); err != nil {
			return mapErr(err)
		}
	}
	if len(del) > 0 {
		if _, err := d.ec2.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: ids, Tags: del}); err != nil {
			return mapErr(err)
		}
	}
	return nil
}

// Tags the driver writes on images and snapshots as records of its own
// (never read from AWS's descriptions, whose text AWS does not document).
const (
	// TagSnapshotOf is written on an image's owned snapshots right before
	// DeleteImage deregisters it, naming the image: a delete interrupted
	// after the deregistration finds the snapshots again by it.
	TagSnapshotOf = "crabbox-snapshot-of"
	// TagCooldownUntil is written on an image right before ProtectImage
	// lifts protection that was enabled with AWS's cooldown: when (RFC 3339,
	// the driver's clock) deregistration becomes possible again.
	TagCooldownUntil = "crabbox-protection-cooldown-until"
)
