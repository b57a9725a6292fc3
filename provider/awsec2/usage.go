// Image usage for cleanup: ImageUsage (provider.UsageFinder) and ImagesUsage
// (provider.BatchUsageFinder) through DescribeImageReferences, and the scan
// of instances, launch templates and SSM image parameters where that call
// is refused.

package awsec2

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/crabbox/crabbox-go/provider"
)

var _ provider.BatchUsageFinder = (*Driver)(nil)

// imageReferenceBatch is how many image ids one DescribeImageReferences
// takes (the EC2 API model: DescribeImageReferencesImageIdStringList, max
// 10).
const imageReferenceBatch = 10

// filterValueBatch is how many values the instance scan puts in one
// image-id filter (EC2 accepts up to 200 filter values per call).
const filterValueBatch = 200

// liveInstanceStates are the instance states in which an instance uses its
// image: a terminated one (which EC2 describes for about an hour) does not.
var liveInstanceStates = []string{"pending", "running", "shutting-down", "stopping", "stopped"}

// launchTemplateDepth is how many of a launch template's most recent
// versions count as using an image: DescribeImageReferences' documented
// default version-depth (EC2 User Guide, "How AMI reference checks work").
const launchTemplateDepth = 10

// ImageUsage implements provider.UsageFinder with DescribeImageReferences:
// every resource type AWS checks (instances, launch templates, SSM
// parameters, Image Builder recipes), with instances limited to those not
// terminated (AWS's default includes terminated ones). Where that API is
// missing or not permitted, it scans the same itself, as AWS documents
// the check: instances not terminated, the 10 most recent versions of every
// launch template and its $Default version, and SSM parameters of data
// type aws:ec2:image (not Image Builder recipes: see docs/providers.md,
// Fidelity). When the scan cannot read one of them either, it returns that
// error: the caller must then treat the image's use as unknown, never as
// unused.
func (d *Driver) ImageUsage(ctx context.Context, id string) ([]string, error) {
	use, err := d.imageReferences(ctx, []string{id})
	if err != nil {
		if errors.Is(err, provider.ErrUnsupported) || errors.Is(err, provider.ErrPermission) {
			return d.scanImageUsage(ctx, id)
		}
		return nil, err
	}
	return use[id], nil
}

// ImagesUsage implements provider.BatchUsageFinder: ImageUsage's answer for
// every id, from DescribeImageReferences calls of up to 10 ids each
// (paginated). When one of those calls says an image of its batch does not
// exist, one DescribeImages finds which: those are reported ErrNotFound and
// the rest asked again. Where DescribeImageReferences is missing or not
// permitted, ONE pass of ImageUsage's scan answers for every image not yet
// answered.
func (d *Driver) ImagesUsage(ctx context.Context, ids []string) (map[string]provider.ImageUse, error) {
	out := make(map[string]provider.ImageUse, len(ids))
	ids = slices.Compact(slices.Sorted(slices.Values(ids)))
	for rest := ids; len(rest) > 0; {
		batch := rest[:min(imageReferenceBatch, len(rest))]
		rest = rest[len(batch):]
		use, err := d.imageReferences(ctx, batch)
		if errors.Is(err, provider.ErrNotFound) {
			batch, err = d.dropMissing(ctx, batch, err, out)
			if err == nil && len(batch) > 0 {
				use, err = d.imageReferences(ctx, batch)
			}
			if errors.Is(err, provider.ErrNotFound) {
				// Another image went meanwhile: each id's own
				// not-found is for the caller to confirm.
				for _, id := range batch {
					out[id] = provider.ImageUse{Err: err}
				}
				continue
			}
		}
		if errors.Is(err, provider.ErrUnsupported) || errors.Is(err, provider.ErrPermission) {
			pending := slices.Concat(batch, rest)
			scanned, serr := d.scanImagesUsage(ctx, pending)
			if serr != nil {
				return nil, serr
			}
			for _, id := range pending {
				out[id] = provider.ImageUse{Refs: scanned[id]}
			}
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		for _, id := range batch {
			out[id] = provider.ImageUse{Refs: use[id]}
		}
	}
	return out, nil
}

// dropMissing records in out, as ErrNotFound, the images of batch that one
// DescribeImages (an image-id filter, which unlike ImageIds does not fail
// on unknown ids) no longer finds, and returns the others. notFound is the
// error that made it look.
func (d *Driver) dropMissing(ctx context.Context, batch []string, notFound error, out map[string]provider.ImageUse) ([]string, error) {
	known := map[string]bool{}
	p := ec2.NewDescribeImagesPaginator(d.ec2, &ec2.DescribeImagesInput{
		IncludeDisabled: aws.Bool(true),
		Filters:         []types.Filter{{Name: aws.String("image-id"), Values: batch}},
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, mapErr(err)
		}
		for _, im := range page.Images {
			if im.State != types.ImageStateDeregistered {
				known[aws.ToString(im.ImageId)] = true
			}
		}
	}
	var live []string
	for _, id := range batch {
		if known[id] {
			live = append(live, id)
		} else {
			out[id] = provider.ImageUse{Err: provider.Errorf(provider.ErrNotFound, "awsec2: image %s not found", id)}
		}
	}
	if len(live) == len(batch) {
		return batch, notFound // every image is there: the not-found is not about them
	}
	return live, nil
}

// imageReferences asks DescribeImageReferences (paginated) about up to 10
// images: every resource type AWS checks, instances limited to those not
// terminated. The answer has the sorted references of each image that has
// any; a reference that does not say its image counts for every image
// asked. Errors are mapped.
func (d *Driver) imageReferences(ctx context.Context, ids []string) (map[string][]string, error) {
	use := map[string][]string{}
	p := ec2.NewDescribeImageReferencesPaginator(d.ec2, &ec2.DescribeImageReferencesInput{
		ImageIds: ids, IncludeAllResourceTypes: aws.Bool(true),
		ResourceTypes: []types.ResourceTypeRequest{{
			ResourceType: types.ImageReferenceResourceTypeEc2Instance,
			ResourceTypeOptions: []types.ResourceTypeOption{{
				OptionName: types.ImageReferenceOptionNameStateName, OptionValues: liveInstanceStates,
			}},
		}},
	})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return nil, mapErr(err)
		}
		for _, r := range out.ImageReferences {
			ref := string(r.ResourceType) + " " + aws.ToString(r.Arn)
			if im := aws.ToString(r.ImageId); im != "" && slices.Contains(ids, im) {
				use[im] = append(use[im], ref)
				continue
			}
			for _, im := range ids {
				use[im] = append(use[im], ref)
			}
		}
	}
	for _, refs := range use {
		sort.Strings(refs)
	}
	return use, nil
}

func (d *Driver) scanImageUsage(ctx context.Context, id string) ([]string, error) {
	use, err := d.scanImagesUsage(ctx, []string{id})
	if err != nil {
		return nil, err
	}
	return use[id], nil
}

// scanImagesUsage is the scan of scanImageUsage for many images in one
// pass: the instances booted from any of them (image-id filters of up to
// 200 values), every launch template once, and the SSM image parameters
// once. The answer has the sorted references of each image that has any.
func (d *Driver) scanImagesUsage(ctx context.Context, ids []string) (map[string][]string, error) {
	use := map[string][]string{}
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	for rest := ids; len(rest) > 0; {
		batch := rest[:min(filterValueBatch, len(rest))]
		rest = rest[len(batch):]
		ip := ec2.NewDescribeInstancesPaginator(d.ec2, &ec2.DescribeInstancesInput{Filters: []types.Filter{
			{Name: aws.String("image-id"), Values: batch},
			{Name: aws.String("instance-state-name"), Values: liveInstanceStates},
		}})
		for ip.HasMorePages() {
			out, err := ip.NextPage(ctx)
			if err != nil {
				return nil, mapErr(err)
			}
			for _, r := range out.Reservations {
				for _, in := range r.Instances {
					if im := aws.ToString(in.ImageId); want[im] {
						use[im] = append(use[im], "ec2:Instance "+aws.ToString(in.InstanceId))
					}
				}
			}
		}
	}
	lp := ec2.NewDescribeLaunchTemplatesPaginator(d.ec2, &ec2.DescribeLaunchTemplatesInput{})
	for lp.HasMorePages() {
		out, err := lp.NextPage(ctx)
		if err != nil {
			return nil, mapErr(err)
		}
		for _, lt := range out.LaunchTemplates {
			used, err := d.templateUses(ctx, lt, want)
			if err != nil {
				return nil, err
			}
			for _, im := range used {
				use[im] = append(use[im], "ec2:LaunchTemplate "+aws.ToString(lt.LaunchTemplateId))
			}
		}
	}
	prefs, err := d.scanParametersUsage(ctx, want)
	if err != nil {
		return nil, err
	}
	for im, refs := range prefs {
		use[im] = append(use[im], refs...)
	}
	for _, refs := range use {
		sort.Strings(refs)
	}
	return use, nil
}

// templateUses returns the images of want that one of the launch
// template's 10 most recent versions, or its $Default version, names.
func (d *Driver) templateUses(ctx context.Context, lt types.LaunchTemplate, want map[string]bool) ([]string, error) {
	versions := []string{"$Default"}
	latest := aws.ToInt64(lt.LatestVersionNumber)
	for v := latest; v > 0 && v > latest-launchTemplateDepth; v-- {
		versions = append(versions, strconv.FormatInt(v, 10))
	}
	if latest <= 0 {
		versions = append(versions, "$Latest")
	}
	vout, err := d.ec2.DescribeLaunchTemplateVersions(ctx, &ec2.DescribeLaunchTemplateVersionsInput{
		LaunchTemplateId: lt.LaunchTemplateId, Versions: versions,
	})
	if err != nil {
		return nil, mapErr(err)
	}
	var used []string
	seen := map[string]bool{}
	for _, v := range vout.LaunchTemplateVersions {
		if v.LaunchTemplateData == nil {
			continue
		}
		if im := aws.ToString(v.LaunchTemplateData.ImageId); want[im] && !seen[im] {
			seen[im] = true
			used = append(used, im)
		}
	}
	return used, nil
}

// ssmParameterReader is what scanning SSM parameters for an image needs
// beyond SSMAPI; *ssm.Client has it.
type ssmParameterReader interface {
	DescribeParameters(ctx context.Context, in *ssm.DescribeParametersInput, optFns ...func(*ssm.Options)) (*ssm.DescribeParametersOutput, error)
	GetParameters(ctx context.Context, in *ssm.GetParametersInput, optFns ...func(*ssm.Options)) (*ssm.GetParametersOutput, error)
}

// scanParameterUsage returns "ssm:Parameter NAME" for every SSM parameter
// of data type aws:ec2:image whose value is id.
func (d *Driver) scanParameterUsage(ctx context.Context, id string) ([]string, error) {
	use, err := d.scanParametersUsage(ctx, map[string]bool{id: true})
	if err != nil {
		return nil, err
	}
	return use[id], nil
}

// scanParametersUsage returns, for each image of want, "ssm:Parameter NAME"
// for every SSM parameter of data type aws:ec2:image whose value is that
// image, from one pass over the parameters. The data type is read from
// each parameter's metadata (not a DescribeParameters filter, which not
// every endpoint implements).
func (d *Driver) scanParametersUsage(ctx context.Context, want map[string]bool) (map[string][]string, error) {
	pr, ok := d.ssm.(ssmParameterReader)
	if !ok {
		return nil, provider.Errorf(provider.ErrUnsupported, "awsec2: the SSM client cannot list parameters, so image parameters referencing %s cannot be found", strings.Join(slices.Sorted(maps.Keys(want)), ", "))
	}
	var names []string
	p := ssm.NewDescribeParametersPaginator(pr, &ssm.DescribeParametersInput{})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return nil, mapErr(err)
		}
		for _, m := range out.Parameters {
			if aws.ToString(m.DataType) == "aws:ec2:image" {
				names = append(names, aws.ToString(m.Name))
			}
		}
	}
	use := map[string][]string{}
	for len(names) > 0 {
		batch := names[:min(10, len(names))]
		names = names[len(batch):]
		out, err := pr.GetParameters(ctx, &ssm.GetParametersInput{Names: batch})
		if err != nil {
			return nil, mapErr(err)
		}
		for _, prm := range out.Parameters {
			if v := aws.ToString(prm.Value); want[v] {
				use[v] = append(use[v], "ssm:Parameter "+aws.ToString(prm.Name))
			}
		}
	}
	return use, nil
}
