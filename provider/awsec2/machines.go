// Leases as EC2 instances: MachineTypes, CreateMachine, GetMachine, ListMachines, DeleteMachine, key pairs, the security group.

package awsec2

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/crabbox/crabbox-go/provider"
)

var nameSanRe = regexp.MustCompile(`[^A-Za-z0-9._\-]+`)

func keyName(token string) string { return "crabbox-" + nameSanRe.ReplaceAllString(token, "-") }

// CreateMachine implements provider.Machines: import the lease's key,
// ensure the SSH security group, then RunInstances with ClientToken =
// req.Token (a distinct derived token for the on-demand retry of a spot
// request, see runInstances) and the token in the TagClientToken tag. If
// RunInstances failed ambiguously but the instance exists, it is returned
// with the error so the caller deletes it; otherwise the key is removed
// again. A token EC2 already saw with other parameters
// (IdempotentParameterMismatch) is ErrConflict, and nothing is touched; a
// token whose instance was terminated (IdempotentInstanceTerminated) is
// ErrConflict too, and the key pair is removed. A security group the driver
// created moments ago may not be visible to EC2 yet: its InvalidGroup.NotFound
// is retried for a while (see groupPropagationWait).
func (d *Driver) CreateMachine(ctx context.Context, req provider.CreateMachineRequest) (*provider.Machine, error) {
	if err := checkCreateMachine(req); err != nil {
		return nil, err
	}
	img, err := d.describeImage(ctx, req.Image)
	if err != nil {
		return nil, err
	}
	sg, err := d.securityGroup(ctx)
	if err != nil {
		return nil, err
	}
	tags := withManaged(req.Labels, map[string]string{TagClientToken: req.Token})
	if name := provider.SanitizeLabelValue(req.Name); name != "" {
		tags[TagName] = name
	}
	kn, err := d.importLeaseKey(ctx, req, tags)
	if err != nil {
		return nil, err
	}
	in := d.runInput(req, img, sg, kn, tags)
	var out *ec2.RunInstancesOutput
	err = d.whileGroupPropagates(ctx, d.groupCreated(sg), func() (err error) {
		out, err = d.runInstances(ctx, in)
		return err
	})
	if err != nil {
		return d.launchFailed(ctx, req.Token, sg, kn, err)
	}
	if len(out.Instances) == 0 {
		return nil, provider.Errorf(provider.ErrUnavailable, "awsec2: RunInstances returned no instance")
	}
	return d.machine(&out.Instances[0]), nil
}

// checkCreateMachine refuses a request EC2 would: a token outside 1..64
// characters, no image or type, user-data over 16 KiB.
func checkCreateMachine(req provider.CreateMachineRequest) error {
	if req.Token == "" || len(req.Token) > 64 {
		return provider.Errorf(provider.ErrInvalidArgument, "awsec2: token must be 1..64 characters")
	}
	if req.Image == "" || req.Type == "" {
		return provider.Errorf(provider.ErrInvalidArgument, "awsec2: image and type are required")
	}
	if len(req.UserData) > 16*1024 {
		return provider.Errorf(provider.ErrInvalidArgument, "awsec2: user-data is %d bytes, EC2 allows 16 KiB", len(req.UserData))
	}
	return nil
}

// importLeaseKey imports req.AuthorizedKey as the key pair keyName(req.Token)
// and returns its name, "" when the request has no key.
func (d *Driver) importLeaseKey(ctx context.Context, req provider.CreateMachineRequest, tags map[string]string) (string, error) {
	if len(req.AuthorizedKey) == 0 {
		return "", nil
	}
	kn := keyName(req.Token)
	_, err := d.ec2.ImportKeyPair(ctx, &ec2.ImportKeyPairInput{
		KeyName:           aws.String(kn),
		PublicKeyMaterial: req.AuthorizedKey,
		TagSpecifications: []types.TagSpecification{tagSpec(types.ResourceTypeKeyPair, tags)},
	})
	if err != nil && apiCode(err) != "InvalidKeyPair.Duplicate" { // duplicate: ours, from an earlier attempt with this token
		if ambiguous(err) {
			// The import may land after the error (EC2 applies a call
			// the client gave up on): wait for it, then take it back.
			d.dropImportedKey(ctx, kn)
		}
		return "", mapErr(err)
	}
	return kn, nil
}

// dropImportedKey deletes the key pair kn of an import that failed
// ambiguously, once it exists or the adopt wait has passed.
func (d *Driver) dropImportedKey(ctx context.Context, kn string) {
	adopt(ctx, d, func(ctx context.Context) (struct{}, bool) {
		out, err := d.ec2.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{KeyNames: []string{kn}})
		return struct{}{}, err == nil && len(out.KeyPairs) > 0
	})
	d.deleteKey(ctx, kn)
}

// runInput is the RunInstances request of req from image img, joining the
// security group sg ("" for none) with the key pair kn ("" for none): IMDSv2
// only, an encrypted gp3 root volume deleted with the instance, instance
// and volume tagged with tags.
func (d *Driver) runInput(req provider.CreateMachineRequest, img *types.Image, sg, kn string, tags map[string]string) *ec2.RunInstancesInput {
	in := &ec2.RunInstancesInput{
		ImageId:      aws.String(req.Image),
		InstanceType: types.InstanceType(req.Type),
		MinCount:     aws.Int32(1),
		MaxCount:     aws.Int32(1),
		ClientToken:  aws.String(req.Token),
		MetadataOptions: &types.InstanceMetadataOptionsRequest{
			HttpTokens:   types.HttpTokensStateRequired,
			HttpEndpoint: types.InstanceMetadataEndpointStateEnabled,
		},
		TagSpecifications: []types.TagSpecification{
			tagSpec(types.ResourceTypeInstance, tags),
			tagSpec(types.ResourceTypeVolume, tags),
		},
		BlockDeviceMappings: []types.BlockDeviceMapping{{
			DeviceName: aws.String(rootDevice(img)),
			Ebs: &types.EbsBlockDevice{
				VolumeType:          types.VolumeTypeGp3,
				Encrypted:           aws.Bool(true),
				DeleteOnTermination: aws.Bool(true),
			},
		}},
	}
	if size := d.rootVolumeGiB(img); size > 0 {
		in.BlockDeviceMappings[0].Ebs.VolumeSize = aws.Int32(size)
	}
	if len(req.UserData) > 0 {
		in.UserData = aws.String(base64.StdEncoding.EncodeToString(req.UserData))
	}
	if kn != "" {
		in.KeyName = aws.String(kn)
	}
	if sg != "" {
		in.SecurityGroupIds = []string{sg}
	}
	if d.o.subnetID != "" {
		in.SubnetId = aws.String(d.o.subnetID)
	}
	if req.TerminateOnShutdown {
		in.InstanceInitiatedShutdownBehavior = types.ShutdownBehaviorTerminate
	}
	in.IamInstanceProfile = instanceProfile(d.o.instanceProf)
	return in
}

// rootVolumeGiB is the size of the root volume: the configured one, else
// the image's root snapshot size, 0 (EC2's default) if neither is known.
func (d *Driver) rootVolumeGiB(img *types.Image) int32 {
	if size := d.o.rootGiB; size > 0 {
		return size
	}
	return rootSize(img)
}

// instanceProfile names the instance profile p by ARN or by name; nil when
// p is "".
func instanceProfile(p string) *types.IamInstanceProfileSpecification {
	switch {
	case p == "":
		return nil
	case strings.HasPrefix(p, "arn:"):
		return &types.IamInstanceProfileSpecification{Arn: aws.String(p)}
	default:
		return &types.IamInstanceProfileSpecification{Name: aws.String(p)}
	}
}

// launchFailed handles the error err of the RunInstances of the request
// with token, which joined the security group sg with the key pair kn
// ("" for none): it returns the instance the call launched anyway, if any,
// with the error, and otherwise deletes the key pair.
func (d *Driver) launchFailed(ctx context.Context, token, sg, kn string, err error) (*provider.Machine, error) {
	if sg != "" && d.o.sgID == "" && apiCode(err) == "InvalidGroup.NotFound" {
		// The managed group was deleted behind our back: find or create
		// it again on the next lease.
		d.sgMu.Lock()
		if d.sgID == sg {
			d.sgID = ""
		}
		d.sgMu.Unlock()
	}
	if apiCode(err) == "IdempotentParameterMismatch" {
		// The token belongs to another request's launch: its instance and
		// key pair are not ours to return or delete.
		return nil, mapErr(err)
	}
	// The call may have launched an instance before failing (timeout,
	// cancellation, a lost response): look for it by its token, and, when
	// it may still land or not be described yet (EC2 applies a call the
	// client gave up on, and DescribeInstances is eventually consistent),
	// keep looking for the adopt wait. Only then is the key pair, which
	// the instance would need, deleted.
	find := func(ctx context.Context) (*provider.Machine, bool) {
		m := d.findByToken(ctx, token)
		return m, m != nil
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	m, found := find(cctx)
	if !found && ambiguous(err) {
		m, found = adopt(ctx, d, find)
	}
	if found {
		return m, mapErr(err)
	}
	if kn != "" {
		d.deleteKey(cctx, kn)
	}
	return nil, mapErr(err)
}

// runInstances launches in: as a spot instance when configured, falling
// back to on demand. The on-demand retry uses its own ClientToken
// (onDemandToken): EC2 answers a token reused with other parameters with
// IdempotentParameterMismatch. A spot fallback request first looks for an
// instance an earlier attempt launched on demand with that token, so a
// retried CreateMachine whose on-demand launch succeeded does not launch a
// second (spot) instance.
func (d *Driver) runInstances(ctx context.Context, in *ec2.RunInstancesInput) (*ec2.RunInstancesOutput, error) {
	if !d.o.spot {
		return d.ec2.RunInstances(ctx, in)
	}
	token := aws.ToString(in.ClientToken)
	od := *in
	od.ClientToken = aws.String(onDemandToken(token))
	if d.o.spotFallback {
		found, err := d.instancesByToken(ctx, []string{aws.ToString(od.ClientToken)})
		if err != nil {
			return nil, err
		}
		if len(found) > 0 {
			return &ec2.RunInstancesOutput{Instances: []types.Instance{*found[0]}}, nil
		}
	}
	spot := *in
	spot.InstanceMarketOptions = &types.InstanceMarketOptionsRequest{
		MarketType: types.MarketTypeSpot,
		SpotOptions: &types.SpotMarketOptions{
			SpotInstanceType:             types.SpotInstanceTypeOneTime,
			InstanceInterruptionBehavior: types.InstanceInterruptionBehaviorTerminate,
		},
	}
	out, err := d.ec2.RunInstances(ctx, &spot)
	// On-demand does not count against spot capacity nor the spot
	// instance-count quota, so both send a spot request to on-demand.
	if c := classify(err); err != nil && d.o.spotFallback && (errors.Is(c, provider.ErrCapacity) || errors.Is(c, provider.ErrQuota)) && ctx.Err() == nil {
		return d.ec2.RunInstances(ctx, &od)
	}
	return out, err
}

// onDemandToken is the ClientToken of the on-demand retry after a spot
// capacity error: token + "-od", or, where that would pass EC2's 64
// characters, a digest of the token.
func onDemandToken(token string) string {
	if t := token + "-od"; len(t) <= 64 {
		return t
	}
	sum := sha256.Sum256([]byte(token))
	return "od-" + hex.EncodeToString(sum[:24])
}

func rootDevice(img *types.Image) string {
	if img != nil && img.RootDeviceName != nil {
		return *img.RootDeviceName
	}
	return "/dev/sda1"
}

// rootSize is the size of the image's root snapshot, 0 if unknown.
func rootSize(img *types.Image) int32 {
	for _, b := range img.BlockDeviceMappings {
		if aws.ToString(b.DeviceName) == rootDevice(img) && b.Ebs != nil {
			return aws.ToInt32(b.Ebs.VolumeSize)
		}
	}
	return 0
}

func (d *Driver) deleteKey(ctx context.Context, name string) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	_, _ = d.ec2.DeleteKeyPair(cctx, &ec2.DeleteKeyPairInput{KeyName: aws.String(name)})
}

// findByToken returns the live instance launched for a CreateMachineRequest
// token: with the token itself or, after a spot fallback, with its
// on-demand token.
func (d *Driver) findByToken(ctx context.Context, token string) *provider.Machine {
	found, err := d.instancesByToken(ctx, []string{token, onDemandToken(token)})
	if err != nil || len(found) == 0 {
		return nil
	}
	return d.machine(found[0])
}

// instancesByToken returns the instances not terminated whose ClientToken
// is one of tokens.
func (d *Driver) instancesByToken(ctx context.Context, tokens []string) ([]*types.Instance, error) {
	out, err := d.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{
		Filters: []types.Filter{{Name: aws.String("client-token"), Values: tokens}},
	})
	if err != nil {
		return nil, mapErr(err)
	}
	var res []*types.Instance
	for _, r := range out.Reservations {
		for i := range r.Instances {
			in := &r.Instances[i]
			if slices.Contains(tokens, aws.ToString(in.ClientToken)) && !terminated(in) {
				res = append(res, in)
			}
		}
	}
	return res, nil
}

// securityGroup returns the group instances join: the configured one, or the
// driver-managed group allowing SSH from the configured CIDR only.
func (d *Driver) securityGroup(ctx context.Context) (string, error) {
	if d.o.sgID != "" {
		return d.o.sgID, nil
	}
	d.sgMu.Lock()
	defer d.sgMu.Unlock()
	if d.sgID != "" {
		return d.sgID, nil
	}
	if d.o.sshCIDR == "" {
		return "", provider.Errorf(provider.ErrInvalidArgument,
			"awsec2: set WithSSHCIDR (the source range allowed to SSH) or WithSecurityGroup")
	}
	vpc, err := d.vpcID(ctx)
	if err != nil {
		return "", err
	}
	var sg *types.SecurityGroup
	var created time.Time // when this call created the group
	for attempt := 0; sg == nil; attempt++ {
		out, err := d.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []types.Filter{
			{Name: aws.String("group-name"), Values: []string{d.o.sgName}},
			{Name: aws.String("vpc-id"), Values: []string{vpc}},
		}})
		if err != nil {
			return "", mapErr(err)
		}
		if len(out.SecurityGroups) > 0 {
			sg = &out.SecurityGroups[0]
			break
		}
		cr, err := d.ec2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{
			GroupName:   aws.String(d.o.sgName),
			Description: aws.String("crabbox: SSH from " + d.o.sshCIDR),
			VpcId:       aws.String(vpc),
			TagSpecifications: []types.TagSpecification{
				tagSpec(types.ResourceTypeSecurityGroup, map[string]string{TagManaged: "true", TagName: d.o.sgName}),
			},
		})
		if err != nil {
			if apiCode(err) == "InvalidGroup.Duplicate" && attempt == 0 {
				continue // created concurrently by another process: describe it
			}
			return "", mapErr(err)
		}
		sg = &types.SecurityGroup{GroupId: cr.GroupId}
		created = time.Now()
	}
	has := false
	for _, p := range sg.IpPermissions {
		if aws.ToString(p.IpProtocol) == "tcp" && aws.ToInt32(p.FromPort) == 22 && aws.ToInt32(p.ToPort) == 22 {
			for _, r := range p.IpRanges {
				if aws.ToString(r.CidrIp) == d.o.sshCIDR {
					has = true
				}
			}
			for _, r := range p.Ipv6Ranges {
				if aws.ToString(r.CidrIpv6) == d.o.sshCIDR {
					has = true
				}
			}
		}
	}
	if !has {
		perm := types.IpPermission{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(22), ToPort: aws.Int32(22)}
		if strings.Contains(d.o.sshCIDR, ":") {
			perm.Ipv6Ranges = []types.Ipv6Range{{CidrIpv6: aws.String(d.o.sshCIDR), Description: aws.String("crabbox ssh")}}
		} else {
			perm.IpRanges = []types.IpRange{{CidrIp: aws.String(d.o.sshCIDR), Description: aws.String("crabbox ssh")}}
		}
		err := d.whileGroupPropagates(ctx, created, func() error {
			_, err := d.ec2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{
				GroupId: sg.GroupId, IpPermissions: []types.IpPermission{perm},
			})
			return err
		})
		if err != nil && apiCode(err) != "InvalidPermission.Duplicate" {
			return "", mapErr(err)
		}
	}
	d.sgID = aws.ToString(sg.GroupId)
	d.sgCreated = created
	return d.sgID, nil
}

// groupPropagationWait bounds how long after creating its security group
// the driver retries the calls EC2 refuses with InvalidGroup.NotFound: EC2's
// API is eventually consistent, and a group just created may not be visible
// yet to AuthorizeSecurityGroupIngress or RunInstances. AWS documents no
// bound; a minute is a guess, and the retries stop as soon as a call
// succeeds.
const groupPropagationWait = time.Minute

// groupCreated is when this driver created the security group sg, zero if
// it did not (a configured or found group, or one since forgotten).
func (d *Driver) groupCreated(sg string) time.Time {
	d.sgMu.Lock()
	defer d.sgMu.Unlock()
	if sg == "" || sg != d.sgID {
		return time.Time{}
	}
	return d.sgCreated
}

// whileGroupPropagates runs call, and runs it again with backoff while it
// fails with InvalidGroup.NotFound and the group was created (at created,
// not zero) less than groupPropagationWait ago. A group the driver did not
// just create is not waited for: its InvalidGroup.NotFound is final.
func (d *Driver) whileGroupPropagates(ctx context.Context, created time.Time, call func() error) error {
	delay := 50 * time.Millisecond
	for {
		err := call()
		if err == nil || created.IsZero() || apiCode(err) != "InvalidGroup.NotFound" ||
			time.Since(created)+delay > groupPropagationWait {
			return err
		}
		if d.o.sleep(ctx, delay) != nil {
			return err
		}
		delay = min(2*delay, 2*time.Second)
	}
}

func (d *Driver) vpcID(ctx context.Context) (string, error) {
	if d.o.subnetID != "" {
		out, err := d.ec2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: []string{d.o.subnetID}})
		if err != nil {
			return "", mapErr(err)
		}
		if len(out.Subnets) == 0 {
			return "", provider.Errorf(provider.ErrNotFound, "awsec2: subnet %s", d.o.subnetID)
		}
		return aws.ToString(out.Subnets[0].VpcId), nil
	}
	out, err := d.ec2.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{Filters: []types.Filter{
		{Name: aws.String("is-default"), Values: []string{"true"}},
	}})
	if err != nil {
		return "", mapErr(err)
	}
	if len(out.Vpcs) == 0 {
		return "", provider.Errorf(provider.ErrInvalidArgument, "awsec2: no default VPC in %s; set WithSubnet", d.o.region)
	}
	return aws.ToString(out.Vpcs[0].VpcId), nil
}

func (d *Driver) machine(in *types.Instance) *provider.Machine {
	tags := tagMap(in.Tags)
	m := &provider.Machine{
		ID:     aws.ToString(in.InstanceId),
		Name:   tags[TagName],
		Type:   string(in.InstanceType),
		Image:  aws.ToString(in.ImageId),
		State:  provider.MachineUnknown,
		Labels: tags,
	}
	delete(m.Labels, TagName)
	if in.LaunchTime != nil {
		m.Created = *in.LaunchTime
	}
	if in.State != nil {
		switch in.State.Name {
		case types.InstanceStateNamePending:
			m.State = provider.MachinePending
		case types.InstanceStateNameRunning:
			m.State = provider.MachineRunning
		case types.InstanceStateNameStopping, types.InstanceStateNameShuttingDown:
			m.State = provider.MachineStopping
		case types.InstanceStateNameStopped:
			m.State = provider.MachineStopped
		case types.InstanceStateNameTerminated:
			m.State = provider.MachineTerminated
		}
	}
	ip := aws.ToString(in.PublicIpAddress)
	if d.o.privateIP {
		ip = aws.ToString(in.PrivateIpAddress)
	}
	if ip != "" && (m.State == provider.MachineRunning || m.State == provider.MachinePending) {
		if strings.Contains(ip, ":") {
			m.SSHAddr = "[" + ip + "]:22"
		} else {
			m.SSHAddr = ip + ":22"
		}
	}
	return m
}

func (d *Driver) instance(ctx context.Context, id string) (*types.Instance, error) {
	if !strings.HasPrefix(id, "i-") {
		return nil, provider.Errorf(provider.ErrNotFound, "awsec2: instance %q", id)
	}
	out, err := d.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		return nil, mapErr(err)
	}
	for _, r := range out.Reservations {
		for i := range r.Instances {
			if aws.ToString(r.Instances[i].InstanceId) == id {
				return &r.Instances[i], nil
			}
		}
	}
	return nil, provider.Errorf(provider.ErrNotFound, "awsec2: instance %s", id)
}

// GetMachine implements provider.Machines.
func (d *Driver) GetMachine(ctx context.Context, id string) (*provider.Machine, error) {
	in, err := d.instance(ctx, id)
	if err != nil {
		return nil, err
	}
	if in.State != nil && in.State.Name == types.InstanceStateNameTerminated {
		return nil, provider.Errorf(provider.ErrNotFound, "awsec2: instance %s is terminated", id)
	}
	return d.machine(in), nil
}

// ListMachines implements provider.Machines: instances carrying all labels
// as tags that are pending, running, stopping or stopped, and also those
// that terminated without DeleteMachine (the box's own TTL shutdown, a spot
// interruption), reported with State MachineTerminated so that the caller
// releases what the driver made for them (their key pair). EC2 describes
// terminated instances for about an hour; one that DeleteMachine deleted
// carries TagDeleted and is not listed. Shutting-down instances are not
// listed (they are listed again once terminated).
func (d *Driver) ListMachines(ctx context.Context, labels map[string]string) ([]*provider.Machine, error) {
	filters := []types.Filter{{Name: aws.String("instance-state-name"),
		Values: []string{"pending", "running", "stopping", "stopped", "terminated"}}}
	filters = append(filters, tagFilters(labels)...)
	var res []*provider.Machine
	p := ec2.NewDescribeInstancesPaginator(d.ec2, &ec2.DescribeInstancesInput{Filters: filters})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return nil, mapErr(err)
		}
		for _, r := range out.Reservations {
			for i := range r.Instances {
				in := &r.Instances[i]
				if terminated(in) && tagMap(in.Tags)[TagDeleted] == "true" {
					continue // deleted by DeleteMachine: nothing left to release
				}
				res = append(res, d.machine(in))
			}
		}
	}
	sort.Slice(res, func(i, j int) bool { return res[i].ID < res[j].ID })
	return res, nil
}

func terminated(in *types.Instance) bool {
	return in.State != nil && in.State.Name == types.InstanceStateNameTerminated
}

// DeleteMachine implements provider.Machines: terminate the instance,
// delete the lease's key pair, then mark the instance with TagDeleted.
// Gone already is success.
//
// A second or concurrent DeleteMachine, in this process or another, calls
// nothing on what is already gone: under the generated IAM policy a call on
// a resource that no longer exists is refused (it has no crabbox=true tag),
// and the lease doc promises a second release returns nil.
//   - A live instance: TerminateInstances picks the one release that deletes
//     the key pair, the call that saw the instance live (PreviousState
//     pending, running, stopping or stopped). A release whose terminate
//     found it shutting down or terminated returns: another release
//     terminated it and owns the key pair.
//   - A terminated instance carrying TagDeleted was released completely
//     (the mark comes last): nothing is called.
//   - A terminated (or shutting-down) instance without the mark terminated
//     itself (TTL shutdown, spot interruption), was terminated behind the
//     SDK's back, or its release was interrupted after terminating: its key
//     pair (named by the instance's KeyName, or from its TagClientToken tag)
//     is deleted only while it exists (see deleteOwnedKey), then the
//     instance is marked. Releases through one Driver take turns per
//     instance, so in one process only the first tries the key pair and the
//     rest find the mark. Across processes nothing picks one release: two
//     at once (two reapers in two processes), or one that looked after
//     another's terminate and before its key deletion, may both try the
//     key pair; the one refused because the key is gone sees it gone and
//     returns nil.
//
// A DeleteMachine interrupted at any point leaves a listed instance (live,
// or terminated without the mark: Client.Reap releases it again) or
// nothing. EC2 describes a terminated instance for about an hour; once it
// no longer does, DeleteMachine(id) cannot know its key pair and returns
// nil, and such a key pair (named "crabbox-<token>", tagged crabbox=true
// and with the lease's labels) is left for SweepOrphans.
func (d *Driver) DeleteMachine(ctx context.Context, id string) error {
	// Releases of one instance through this driver take turns: after the
	// first, the rest find the crabbox-deleted mark and call nothing else,
	// even for an instance that terminated by itself, where no
	// TerminateInstances answer tells which release owns the key pair.
	unlock, err := d.releasing.lock(ctx, id)
	if err != nil {
		return err
	}
	defer unlock()
	in, err := d.instance(ctx, id)
	if errors.Is(err, provider.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	tags := tagMap(in.Tags)
	if terminated(in) && tags[TagDeleted] == "true" {
		return nil
	}
	if live(in.State) {
		out, err := d.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}})
		if apiCode(err) == "InvalidInstanceID.NotFound" {
			return nil
		}
		if err != nil {
			return mapErr(err)
		}
		if len(out.TerminatingInstances) == 0 || !live(out.TerminatingInstances[0].PreviousState) {
			return nil // another release terminated it first: the key pair is its
		}
	}
	kn := aws.ToString(in.KeyName)
	if kn == "" && tags[TagClientToken] != "" {
		kn = keyName(tags[TagClientToken])
	}
	if strings.HasPrefix(kn, "crabbox-") {
		if err := d.deleteOwnedKey(ctx, kn); err != nil {
			return err
		}
	}
	if in.State != nil && in.State.Name == types.InstanceStateNameShuttingDown {
		// Shutting down by itself: make sure it terminates.
		_, err := d.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}})
		if err != nil && apiCode(err) != "InvalidInstanceID.NotFound" {
			return mapErr(err)
		}
	}
	if tags[TagDeleted] != "true" {
		// Best effort: without the mark, a terminated instance stays
		// listed as terminated, and its next DeleteMachine finds its key
		// pair gone and marks it.
		_, _ = d.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id},
			Tags: []types.Tag{{Key: aws.String(TagDeleted), Value: aws.String("true")}}})
	}
	return nil
}

// live reports whether an instance in state s still runs or can run again
// (pending, running, stopping, stopped): not shutting down or terminated.
func live(s *types.InstanceState) bool {
	return s != nil && s.Name != types.InstanceStateNameShuttingDown && s.Name != types.InstanceStateNameTerminated
}

// deleteOwnedKey deletes the key pair named kn when it exists and carries
// crabbox=true, and calls nothing on a key that is gone (a second or
// concurrent release): under the generated policy, DeleteKeyPair of a
// missing key is refused, since it has no crabbox=true tag. A deletion
// refused because a concurrent release deleted the key meanwhile is done.
func (d *Driver) deleteOwnedKey(ctx context.Context, kn string) error {
	exists, err := d.ownedKeyExists(ctx, kn)
	if err != nil || !exists {
		return err
	}
	_, err = d.ec2.DeleteKeyPair(ctx, &ec2.DeleteKeyPairInput{KeyName: aws.String(kn)})
	if err == nil || apiCode(err) == "InvalidKeyPair.NotFound" {
		return nil
	}
	if errors.Is(mapErr(err), provider.ErrPermission) {
		if exists, derr := d.ownedKeyExists(ctx, kn); derr == nil && !exists {
			return nil
		}
	}
	return mapErr(err)
}

// ownedKeyExists reports whether the key pair kn exists and is tagged
// crabbox=true.
func (d *Driver) ownedKeyExists(ctx context.Context, kn string) (bool, error) {
	out, err := d.ec2.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{KeyNames: []string{kn}})
	if apiCode(err) == "InvalidKeyPair.NotFound" {
		return false, nil
	}
	if err != nil {
		return false, mapErr(err)
	}
	for _, k := range out.KeyPairs {
		if aws.ToString(k.KeyName) == kn && tagMap(k.Tags)[TagManaged] == "true" {
			return true, nil
		}
	}
	return false, nil
}

// UpdateMachineLabels implements provider.Machines.
func (d *Driver) UpdateMachineLabels(ctx context.Context, id string, labels map[string]string) error {
	if _, err := d.GetMachine(ctx, id); err != nil {
		return err
	}
	return d.updateTags(ctx, []string{id}, labels)
}

var defaultTypes = map[string][]string{
	provider.ClassTiny + "/" + provider.ArchAMD64:     {"t3.small", "t3a.small"},
	provider.ClassSmall + "/" + provider.ArchAMD64:    {"t3.medium", "t3a.medium"},
	provider.ClassStandard + "/" + provider.ArchAMD64: {"c7i.xlarge", "c6i.xlarge", "m7i.xlarge", "c5.xlarge"},
	provider.ClassFast + "/" + provider.ArchAMD64:     {"c7i.2xlarge", "c6i.2xlarge", "m7i.2xlarge", "c5.2xlarge"},
	provider.ClassLarge + "/" + provider.ArchAMD64:    {"c7i.4xlarge", "c6i.4xlarge", "m7i.4xlarge", "c5.4xlarge"},
	provider.ClassBeast + "/" + provider.ArchAMD64:    {"c7i.8xlarge", "c6i.8xlarge", "m7i.8xlarge", "c5.9xlarge"},
	provider.ClassTiny + "/" + provider.ArchARM64:     {"t4g.small"},
	provider.ClassSmall + "/" + provider.ArchARM64:    {"t4g.medium"},
	provider.ClassStandard + "/" + provider.ArchARM64: {"c7g.xlarge", "c6g.xlarge", "m7g.xlarge"},
	provider.ClassFast + "/" + provider.ArchARM64:     {"c7g.2xlarge", "c6g.2xlarge", "m7g.2xlarge"},
	provider.ClassLarge + "/" + provider.ArchARM64:    {"c7g.4xlarge", "c6g.4xlarge", "m7g.4xlarge"},
	provider.ClassBeast + "/" + provider.ArchARM64:    {"c7g.8xlarge", "c6g.8xlarge", "m7g.8xlarge"},
}

// MachineTypes implements provider.Driver.
func (d *Driver) MachineTypes(class, arch string) ([]string, error) {
	if !provider.ValidArch(arch) {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "awsec2: unknown architecture %q", arch)
	}
	key := class + "/" + arch
	if t, ok := d.o.types[key]; ok {
		return append([]string(nil), t...), nil
	}
	if t, ok := defaultTypes[key]; ok {
		return append([]string(nil), t...), nil
	}
	return nil, provider.Errorf(provider.ErrInvalidArgument, "awsec2: unknown lease class %q", class)
}
