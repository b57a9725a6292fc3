// SweepOrphans: key pairs left without an instance, snapshots left without an image.

package awsec2

import (
	"context"
	"errors"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/crabbox/crabbox-go/provider"
)

// filterChunk bounds the values of one DescribeInstances filter.
const filterChunk = 100

// SweepOrphans implements provider.OrphanSweeper: it deletes the key pairs
// CreateMachine imported (named "crabbox-<token>" and tagged crabbox=true and created-by=crabbox)
// whose instance no longer exists, is terminated or is shutting down, then
// the snapshots tagged both ways no image of the account uses (sweepSnapshots),
// and returns how many of both it deleted.
func (d *Driver) SweepOrphans(ctx context.Context) (int, error) {
	n, err := d.sweepKeys(ctx)
	if err != nil {
		return n, err
	}
	m, err := d.sweepSnapshots(ctx)
	return n + m, err
}

// sweepKeys deletes the orphan key pairs.
//
// It happens when EC2 stopped describing an instance before anyone called
// DeleteMachine (EC2 describes a terminated instance for about an hour, so
// a box that shut itself down while no Reap ran), or when a create was
// interrupted between importing the key and launching the instance.
//
// A key pair is considered only when it carries both ownership tags,
// crabbox=true and created-by=crabbox (the IAM policy allows DeleteKeyPair
// only on crabbox=true; one tag alone, or another tool's created-by, is
// foreign), and its EC2 CreateTime
// is older than the orphan grace (WithOrphanGrace, default 10 minutes, on
// the driver's clock, WithClock): a lease imports its key before it
// launches its instance. Key pairs without a CreateTime are left alone.
// Its instance is looked up, terminated ones included, by the key pair's
// name (the instance's KeyName) and by the token in its
// crabbox-client-token tag; the lookup runs after the key pairs were
// listed, so an instance launched for an old enough key is seen. Any
// instance in another state (pending, running, stopping, stopped) keeps the
// key. A key pair is deleted by its id, so one imported again under the
// same name after the listing is not touched.
//
// It stops at the first failing call and returns the count so far with the
// error (mapped to a provider code); a key pair already gone is not an
// error and not counted, including one a concurrent release deleted after
// the listing, whose deletion the generated policy refuses (see
// refusedAsGone).
func (d *Driver) sweepKeys(ctx context.Context) (int, error) {
	out, err := d.ec2.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{Filters: append(ownedFilters(),
		types.Filter{Name: aws.String("key-name"), Values: []string{"crabbox-*"}})})
	if err != nil {
		return 0, mapErr(err)
	}
	cutoff := d.o.now().Add(-d.o.orphanGrace)
	var cands []types.KeyPairInfo
	for _, k := range out.KeyPairs {
		tags := tagMap(k.Tags)
		if !ownedTags(tags) || !strings.HasPrefix(aws.ToString(k.KeyName), "crabbox-") {
			continue // not ours, whatever the filter let through
		}
		if k.CreateTime == nil || k.CreateTime.After(cutoff) {
			continue // unknown age, or maybe a lease between key and instance
		}
		cands = append(cands, k)
	}
	if len(cands) == 0 {
		return 0, nil
	}
	sort.Slice(cands, func(i, j int) bool { return aws.ToString(cands[i].KeyName) < aws.ToString(cands[j].KeyName) })
	names := make([]string, 0, len(cands))
	var tokens []string
	for _, k := range cands {
		names = append(names, aws.ToString(k.KeyName))
		if tok := tagMap(k.Tags)[TagClientToken]; tok != "" {
			tokens = append(tokens, tok)
		}
	}
	inUse := map[string]bool{}
	for _, f := range []struct {
		name   string
		values []string
	}{{"key-name", names}, {"tag:" + TagClientToken, tokens}} {
		if err := d.keysInUse(ctx, f.name, f.values, inUse); err != nil {
			return 0, err
		}
	}
	n := 0
	for _, k := range cands {
		if inUse[aws.ToString(k.KeyName)] {
			continue
		}
		in := &ec2.DeleteKeyPairInput{KeyPairId: k.KeyPairId}
		if k.KeyPairId == nil {
			in = &ec2.DeleteKeyPairInput{KeyName: k.KeyName}
		}
		if _, err := d.ec2.DeleteKeyPair(ctx, in); err != nil {
			if apiCode(err) == "InvalidKeyPair.NotFound" || d.refusedAsGone(ctx, k, err) {
				continue
			}
			return n, mapErr(err)
		}
		n++
	}
	return n, nil
}

// refusedAsGone reports whether err, a refused DeleteKeyPair of k, was
// refused because k is gone (a release deleted it after the listing):
// under the generated policy, deleting a missing key pair is refused, since
// it has no crabbox=true tag.
func (d *Driver) refusedAsGone(ctx context.Context, k types.KeyPairInfo, err error) bool {
	if !errors.Is(mapErr(err), provider.ErrPermission) {
		return false
	}
	in := &ec2.DescribeKeyPairsInput{KeyPairIds: []string{aws.ToString(k.KeyPairId)}}
	if k.KeyPairId == nil {
		in = &ec2.DescribeKeyPairsInput{KeyNames: []string{aws.ToString(k.KeyName)}}
	}
	out, derr := d.ec2.DescribeKeyPairs(ctx, in)
	if apiCode(derr) == "InvalidKeyPair.NotFound" {
		return true
	}
	return derr == nil && len(out.KeyPairs) == 0
}

// keysInUse adds to inUse the key pair names of the instances, in any state
// but terminated or shutting-down, matching filter name with any of values:
// the instance's KeyName and the key name of its crabbox-client-token.
func (d *Driver) keysInUse(ctx context.Context, name string, values []string, inUse map[string]bool) error {
	for len(values) > 0 {
		chunk := values[:min(len(values), filterChunk)]
		values = values[len(chunk):]
		p := ec2.NewDescribeInstancesPaginator(d.ec2, &ec2.DescribeInstancesInput{Filters: []types.Filter{
			{Name: aws.String(name), Values: chunk},
		}})
		for p.HasMorePages() {
			out, err := p.NextPage(ctx)
			if err != nil {
				return mapErr(err)
			}
			for _, r := range out.Reservations {
				for i := range r.Instances {
					in := &r.Instances[i]
					if in.State != nil && (in.State.Name == types.InstanceStateNameTerminated ||
						in.State.Name == types.InstanceStateNameShuttingDown) {
						continue
					}
					if kn := aws.ToString(in.KeyName); kn != "" {
						inUse[kn] = true
					}
					if tok := tagMap(in.Tags)[TagClientToken]; tok != "" {
						inUse[keyName(tok)] = true
					}
				}
			}
		}
	}
	return nil
}

// sweepSnapshots deletes the snapshots the account owns that carry both
// ownership tags, crabbox=true and created-by=crabbox (CreateImage and
// CopyImage tag them at creation; one tag alone is foreign), and
// that no image of the account (disabled ones included) uses any more:
// left by an image deregistered outside DeleteImage (by hand, by a
// lifecycle policy, by an earlier driver version that kept no record) or by
// an interrupted DeleteImage nobody retried. It finds them by their tags
// and the images' block device mappings, never by their descriptions (whose
// text AWS does not document).
//
// A snapshot is considered only when it is completed and its StartTime is
// older than the orphan grace (WithOrphanGrace, on the driver's clock): a
// pending image may not list the snapshot it is being made from yet. The
// images are read after the snapshots were listed, so an image registered
// from an old enough snapshot meanwhile keeps it. Deletions are retried as
// DeleteImage's are (InvalidSnapshot.InUse right after a deregistration,
// throttling; WithCleanupBackoff); a snapshot EC2 still reports in use after
// that is skipped, not counted, and any other failure stops the sweep with
// the count so far.
func (d *Driver) sweepSnapshots(ctx context.Context) (int, error) {
	cutoff := d.o.now().Add(-d.o.orphanGrace)
	var cands []string
	p := ec2.NewDescribeSnapshotsPaginator(d.ec2, &ec2.DescribeSnapshotsInput{
		OwnerIds: []string{"self"},
		Filters:  ownedFilters(),
	})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return 0, mapErr(err)
		}
		for _, s := range out.Snapshots {
			if !ownedTags(tagMap(s.Tags)) || s.State != types.SnapshotStateCompleted {
				continue
			}
			if s.StartTime == nil || s.StartTime.After(cutoff) {
				continue // unknown age, or maybe an image still being made
			}
			cands = append(cands, aws.ToString(s.SnapshotId))
		}
	}
	if len(cands) == 0 {
		return 0, nil
	}
	used, err := d.snapshotsUsedByOthers(ctx, "", nil)
	if err != nil {
		return 0, err
	}
	sort.Strings(cands)
	n := 0
	for _, id := range cands {
		if used[id] {
			continue
		}
		if err := d.deleteSnapshots(ctx, []string{id}); err != nil {
			if errors.Is(err, provider.ErrConflict) {
				continue // still in use after the retries
			}
			return n, err
		}
		n++
	}
	return n, nil
}
