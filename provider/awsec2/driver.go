// Driver, the EC2API and SSMAPI client interfaces, New, NewFromClients and their options, Info.

package awsec2

import (
	"context"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/crabbox/crabbox-go/provider"
)

// EC2API lists the EC2 operations the driver calls. *ec2.Client satisfies it.
type EC2API interface {
	RunInstances(ctx context.Context, in *ec2.RunInstancesInput, optFns ...func(*ec2.Options)) (*ec2.RunInstancesOutput, error)
	DescribeInstances(ctx context.Context, in *ec2.DescribeInstancesInput, optFns ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
	TerminateInstances(ctx context.Context, in *ec2.TerminateInstancesInput, optFns ...func(*ec2.Options)) (*ec2.TerminateInstancesOutput, error)
	CreateTags(ctx context.Context, in *ec2.CreateTagsInput, optFns ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error)
	DeleteTags(ctx context.Context, in *ec2.DeleteTagsInput, optFns ...func(*ec2.Options)) (*ec2.DeleteTagsOutput, error)

	ImportKeyPair(ctx context.Context, in *ec2.ImportKeyPairInput, optFns ...func(*ec2.Options)) (*ec2.ImportKeyPairOutput, error)
	DeleteKeyPair(ctx context.Context, in *ec2.DeleteKeyPairInput, optFns ...func(*ec2.Options)) (*ec2.DeleteKeyPairOutput, error)
	DescribeKeyPairs(ctx context.Context, in *ec2.DescribeKeyPairsInput, optFns ...func(*ec2.Options)) (*ec2.DescribeKeyPairsOutput, error)

	DescribeVpcs(ctx context.Context, in *ec2.DescribeVpcsInput, optFns ...func(*ec2.Options)) (*ec2.DescribeVpcsOutput, error)
	DescribeSubnets(ctx context.Context, in *ec2.DescribeSubnetsInput, optFns ...func(*ec2.Options)) (*ec2.DescribeSubnetsOutput, error)
	DescribeSecurityGroups(ctx context.Context, in *ec2.DescribeSecurityGroupsInput, optFns ...func(*ec2.Options)) (*ec2.DescribeSecurityGroupsOutput, error)
	CreateSecurityGroup(ctx context.Context, in *ec2.CreateSecurityGroupInput, optFns ...func(*ec2.Options)) (*ec2.CreateSecurityGroupOutput, error)
	AuthorizeSecurityGroupIngress(ctx context.Context, in *ec2.AuthorizeSecurityGroupIngressInput, optFns ...func(*ec2.Options)) (*ec2.AuthorizeSecurityGroupIngressOutput, error)

	DescribeImages(ctx context.Context, in *ec2.DescribeImagesInput, optFns ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error)
	CreateImage(ctx context.Context, in *ec2.CreateImageInput, optFns ...func(*ec2.Options)) (*ec2.CreateImageOutput, error)
	CopyImage(ctx context.Context, in *ec2.CopyImageInput, optFns ...func(*ec2.Options)) (*ec2.CopyImageOutput, error)
	DeregisterImage(ctx context.Context, in *ec2.DeregisterImageInput, optFns ...func(*ec2.Options)) (*ec2.DeregisterImageOutput, error)
	DescribeSnapshots(ctx context.Context, in *ec2.DescribeSnapshotsInput, optFns ...func(*ec2.Options)) (*ec2.DescribeSnapshotsOutput, error)
	DeleteSnapshot(ctx context.Context, in *ec2.DeleteSnapshotInput, optFns ...func(*ec2.Options)) (*ec2.DeleteSnapshotOutput, error)
	EnableImageDeprecation(ctx context.Context, in *ec2.EnableImageDeprecationInput, optFns ...func(*ec2.Options)) (*ec2.EnableImageDeprecationOutput, error)
	EnableImageDeregistrationProtection(ctx context.Context, in *ec2.EnableImageDeregistrationProtectionInput, optFns ...func(*ec2.Options)) (*ec2.EnableImageDeregistrationProtectionOutput, error)
	DisableImageDeregistrationProtection(ctx context.Context, in *ec2.DisableImageDeregistrationProtectionInput, optFns ...func(*ec2.Options)) (*ec2.DisableImageDeregistrationProtectionOutput, error)
	DescribeImageReferences(ctx context.Context, in *ec2.DescribeImageReferencesInput, optFns ...func(*ec2.Options)) (*ec2.DescribeImageReferencesOutput, error)
	DescribeLaunchTemplates(ctx context.Context, in *ec2.DescribeLaunchTemplatesInput, optFns ...func(*ec2.Options)) (*ec2.DescribeLaunchTemplatesOutput, error)
	DescribeLaunchTemplateVersions(ctx context.Context, in *ec2.DescribeLaunchTemplateVersionsInput, optFns ...func(*ec2.Options)) (*ec2.DescribeLaunchTemplateVersionsOutput, error)
}

// SSMAPI lists the SSM operations the driver calls. *ssm.Client satisfies it.
type SSMAPI interface {
	GetParameter(ctx context.Context, in *ssm.GetParameterInput, optFns ...func(*ssm.Options)) (*ssm.GetParameterOutput, error)
	PutParameter(ctx context.Context, in *ssm.PutParameterInput, optFns ...func(*ssm.Options)) (*ssm.PutParameterOutput, error)
	GetParameterHistory(ctx context.Context, in *ssm.GetParameterHistoryInput, optFns ...func(*ssm.Options)) (*ssm.GetParameterHistoryOutput, error)
	LabelParameterVersion(ctx context.Context, in *ssm.LabelParameterVersionInput, optFns ...func(*ssm.Options)) (*ssm.LabelParameterVersionOutput, error)
	DeleteParameter(ctx context.Context, in *ssm.DeleteParameterInput, optFns ...func(*ssm.Options)) (*ssm.DeleteParameterOutput, error)
}

// Compile-time checks.
var (
	_ EC2API = (*ec2.Client)(nil)
	_ SSMAPI = (*ssm.Client)(nil)

	_ provider.Driver       = (*Driver)(nil)
	_ provider.Images       = (*Driver)(nil)
	_ provider.Channels     = (*Driver)(nil)
	_ provider.Deprecator   = (*Driver)(nil)
	_ provider.Protector    = (*Driver)(nil)
	_ provider.RegionCopier = (*Driver)(nil)
	_ provider.UsageFinder  = (*Driver)(nil)

	_ provider.ChannelVersionMarker = (*Driver)(nil)
	_ provider.OrphanSweeper        = (*Driver)(nil)
)

// Defaults of the options.
const (
	// CanonicalOwner is the AWS account that publishes Ubuntu images.
	CanonicalOwner = "099720109477"
	// DefaultSSMPrefix is where channel parameters live.
	DefaultSSMPrefix = "/crabbox/images/"
	// DefaultSecurityGroupName is the group the driver creates when none is
	// configured.
	DefaultSecurityGroupName = "crabbox-ssh"
)

// Driver is the EC2 driver. It is safe for concurrent use.
type Driver struct {
	ec2 EC2API
	ssm SSMAPI
	o   options

	sgMu      sync.Mutex
	sgID      string    // resolved security group, cached after the first lease
	sgCreated time.Time // when the driver created sgID, zero if it found it

	releasing keyedLock // DeleteMachine calls of one instance take turns
}

// RetriesRequests reports whether the driver's EC2 client retries each API
// request itself: it is an *ec2.Client whose retryer makes more than one
// attempt, as the SDK's default standard retryer does (3 attempts, with
// exponential backoff and jitter, for throttling and transient errors). The
// crabbox client then does not retry the driver's calls, so attempts never
// multiply: configure retries on the aws.Config (Retryer, RetryMaxAttempts).
// With retries off there (aws.NopRetryer) or another EC2API, it reports
// false and the crabbox client retries whole calls (WithRetryAttempts)
// instead.
func (d *Driver) RetriesRequests() bool {
	c, ok := d.ec2.(*ec2.Client)
	if !ok {
		return false
	}
	r := c.Options().Retryer
	return r != nil && r.MaxAttempts() > 1
}

type options struct {
	region        string
	subnetID      string
	sgID          string
	sgName        string
	sshCIDR       string
	privateIP     bool
	instanceProf  string // name or ARN
	instanceRole  string // ARN of the profile's role, for the IAM policy
	types         map[string][]string
	spot          bool
	spotFallback  bool
	rootGiB       int32
	ssmPrefix     string
	baseImages    map[string]string
	baseNameFmt   string
	baseOwner     string
	endpoint      string
	regionClients func(region string) (EC2API, error)
	protectCool   bool
	cleanupMin    time.Duration
	cleanupMax    time.Duration
	cleanupTries  int
	orphanGrace   time.Duration
	adoptWait     time.Duration
	adoptPoll     time.Duration
	channelWait   time.Duration
	now           func() time.Time
	sleep         func(ctx context.Context, d time.Duration) error
}

// Option configures a Driver.
type Option func(*options) error

// WithRegion sets the region recorded in Info and used for clients New
// creates. Default: the aws.Config's region.
func WithRegion(region string) Option {
	return func(o *options) error { o.region = region; return nil }
}

// WithSubnet launches instances in a subnet (and creates the security group
// in its VPC). Default: the default VPC.
func WithSubnet(subnetID string) Option {
	return func(o *options) error { o.subnetID = subnetID; return nil }
}

// WithSecurityGroup uses an existing security group as is; the driver then
// neither creates a group nor adds rules.
func WithSecurityGroup(id string) Option {
	return func(o *options) error { o.sgID = id; return nil }
}

// WithSecurityGroupName names the group the driver creates (or finds) when
// WithSecurityGroup is not given. Default "crabbox-ssh".
func WithSecurityGroupName(name string) Option {
	return func(o *options) error {
		if name == "" {
			return provider.Errorf(provider.ErrInvalidArgument, "awsec2: empty security group name")
		}
		o.sgName = name
		return nil
	}
}

var cidrRe = regexp.MustCompile(`^[0-9a-fA-F:.]+/[0-9]{1,3}$`)

// WithSSHCIDR is the only source range allowed to reach port 22 in the group
// the driver manages. Required unless WithSecurityGroup is given: the driver
// never looks up the caller's public address.
func WithSSHCIDR(cidr string) Option {
	return func(o *options) error {
		if !cidrRe.MatchString(cidr) {
			return provider.Errorf(provider.ErrInvalidArgument, "awsec2: bad SSH CIDR %q", cidr)
		}
		o.sshCIDR = cidr
		return nil
	}
}

// WithPrivateIP makes Machine.SSHAddr the private address (for callers
// inside the VPC or behind a bastion dialer). Default: the public address.
func WithPrivateIP(private bool) Option {
	return func(o *options) error { o.privateIP = private; return nil }
}

// WithInstanceProfile attaches an IAM instance profile (name or ARN) to
// every instance.
func WithInstanceProfile(nameOrARN string) Option {
	return func(o *options) error { o.instanceProf = nameOrARN; return nil }
}

// WithInstanceProfileRole names the ARN of the role inside the instance
// profile (WithInstanceProfile), so that Policy grants iam:PassRole on that
// role only. It changes nothing else.
func WithInstanceProfileRole(roleARN string) Option {
	return func(o *options) error {
		if !strings.HasPrefix(roleARN, "arn:") || !strings.Contains(roleARN, ":role/") {
			return provider.Errorf(provider.ErrInvalidArgument, "awsec2: %q is not an IAM role ARN", roleARN)
		}
		o.instanceRole = roleARN
		return nil
	}
}

// WithMachineTypes sets the ordered fallback list of instance types for a
// class ("tiny", "small", "standard", "fast", "large", "beast") and
// architecture ("amd64", "arm64").
func WithMachineTypes(class, arch string, types ...string) Option {
	return func(o *options) error {
		if err := provider.CheckMachineTypes(class, arch, types); err != nil {
			return provider.Errorf(provider.ErrInvalidArgument, "awsec2: %v", err)
		}
		o.types[class+"/"+arch] = append([]string(nil), types...)
		return nil
	}
}

// WithSpot requests spot instances; with fallback, a spot capacity error
// retries the same type on demand before reporting ErrCapacity. The
// on-demand retry's EC2 ClientToken is the request token + "-od" (a digest
// where that passes 64 characters), so EC2 does not refuse the reused
// token with IdempotentParameterMismatch; lookups by token cover both.
func WithSpot(spot, fallbackOnDemand bool) Option {
	return func(o *options) error { o.spot, o.spotFallback = spot, fallbackOnDemand; return nil }
}

// WithRootVolumeGiB sets the root volume size. The root volume is always
// encrypted gp3 and deleted with the instance. Default: the image's size.
func WithRootVolumeGiB(gib int) Option {
	return func(o *options) error {
		if gib < 0 || gib > 16384 {
			return provider.Errorf(provider.ErrInvalidArgument, "awsec2: root volume %d GiB out of range", gib)
		}
		o.rootGiB = int32(gib)
		return nil
	}
}

// ssmPrefixRe is a parameter path of at least one segment: the root "/"
// would make every top-level parameter of the account a channel, and give
// the generated policy write and delete on all of them.
var ssmPrefixRe = regexp.MustCompile(`^/([A-Za-z0-9_.\-]+/)+$`)

// WithSSMPrefix sets the parameter path channels live under. It must start
// and end with "/" and have at least one segment ("/" alone is refused).
// Default "/crabbox/images/".
func WithSSMPrefix(prefix string) Option {
	return func(o *options) error {
		if !ssmPrefixRe.MatchString(prefix) {
			return provider.Errorf(provider.ErrInvalidArgument, "awsec2: SSM prefix %q must look like /a/b/", prefix)
		}
		o.ssmPrefix = prefix
		return nil
	}
}

// WithBaseImage pins the base image for an architecture instead of looking
// up the newest Canonical Ubuntu 24.04 image.
func WithBaseImage(arch, imageID string) Option {
	return func(o *options) error {
		if !provider.ValidArch(arch) {
			return provider.Errorf(provider.ErrInvalidArgument, "awsec2: unknown architecture %q", arch)
		}
		o.baseImages[arch] = imageID
		return nil
	}
}

// WithBaseImageLookup changes the base image lookup: the owner account and a
// name pattern where %s stands for the architecture ("amd64"/"arm64").
// Default: Canonical, "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-%s-server-*".
func WithBaseImageLookup(owner, namePattern string) Option {
	return func(o *options) error { o.baseOwner, o.baseNameFmt = owner, namePattern; return nil }
}

// WithEndpoint overrides the EC2 and SSM endpoint URL (emulators such as
// moto). Only used by New.
func WithEndpoint(url string) Option {
	return func(o *options) error { o.endpoint = url; return nil }
}

// WithRegionClients gives the driver EC2 clients for other regions
// (CopyImage). New provides one by default; NewFromClients needs it for
// copies.
func WithRegionClients(fn func(region string) (EC2API, error)) Option {
	return func(o *options) error { o.regionClients = fn; return nil }
}

// WithProtectionCooldown makes ProtectImage enable deregistration protection
// with AWS's 24-hour cooldown after it is disabled.
func WithProtectionCooldown(cooldown bool) Option {
	return func(o *options) error { o.protectCool = cooldown; return nil }
}

// WithCleanupBackoff sets the backoff of DeleteImage's snapshot deletion
// retries (InvalidSnapshot.InUse after deregistration, throttling): delays
// double from min to max, at most attempts tries per snapshot.
// Default 2 s to 30 s, 10 attempts.
func WithCleanupBackoff(min, max time.Duration, attempts int) Option {
	return func(o *options) error {
		if min <= 0 || max < min || attempts < 1 {
			return provider.Errorf(provider.ErrInvalidArgument, "awsec2: bad cleanup backoff")
		}
		o.cleanupMin, o.cleanupMax, o.cleanupTries = min, max, attempts
		return nil
	}
}

// DefaultOrphanGrace is how old a key pair must be before SweepOrphans
// deletes it for want of an instance.
const DefaultOrphanGrace = 10 * time.Minute

// WithOrphanGrace sets how old (by its EC2 CreateTime, on the driver's
// clock) a crabbox key pair without an instance must be before SweepOrphans
// deletes it: a lease imports its key before it launches its instance, so a
// younger key may belong to a lease being created. Default 10 minutes.
func WithOrphanGrace(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return provider.Errorf(provider.ErrInvalidArgument, "awsec2: orphan grace %v must be positive", d)
		}
		o.orphanGrace = d
		return nil
	}
}

// WithClock sets the driver's time source (default time.Now): the age
// SweepOrphans gives a key pair, the time recorded on channel entries and
// the earliest deprecation time DeprecateImage accepts.
func WithClock(now func() time.Time) Option {
	return func(o *options) error {
		if now == nil {
			return provider.Errorf(provider.ErrInvalidArgument, "awsec2: nil clock")
		}
		o.now = now
		return nil
	}
}

// DefaultAdoptWait is how long, after a create call failed ambiguously (a
// cancelled or timed-out call, a lost response), the driver keeps looking
// for what the call may have created before it concludes nothing was.
const DefaultAdoptWait = 10 * time.Second

// WithAdoptWait sets how long the driver looks for what an ambiguously
// failed create made, before it undoes what the create depended on: the
// instance of a RunInstances (by its client token) before the lease's key
// pair is deleted, the key pair of an ImportKeyPair before it is deleted,
// the image of a CreateImage (by its token tag) before none is reported.
// EC2 applies a RunInstances the client gave up on seconds later, and
// DescribeInstances and DescribeImages are eventually consistent, so the
// wait must cover both. The lookups run detached from the caller's context,
// polling every second (every wait/10 when that is shorter). Default
// DefaultAdoptWait (10 s).
func WithAdoptWait(wait time.Duration) Option {
	return func(o *options) error {
		if wait <= 0 {
			return provider.Errorf(provider.ErrInvalidArgument, "awsec2: adopt wait %v must be positive", wait)
		}
		o.adoptWait = wait
		o.adoptPoll = min(time.Second, wait/10)
		return nil
	}
}

// DefaultChannelWriteWait is how long SetChannel waits for the version it
// wrote to become readable (see WithChannelWriteWait).
const DefaultChannelWriteWait = 30 * time.Second

// WithChannelWriteWait sets how long SetChannel, after PutParameter
// answered, waits for the version to be readable. SSM validates parameters
// of data type aws:ec2:image asynchronously: a successful PutParameter does
// not mean the version was written, and it never is when the image fails
// validation. AWS documents no duration for the validation. Default
// DefaultChannelWriteWait (30 s).
func WithChannelWriteWait(wait time.Duration) Option {
	return func(o *options) error {
		if wait <= 0 {
			return provider.Errorf(provider.ErrInvalidArgument, "awsec2: channel write wait %v must be positive", wait)
		}
		o.channelWait = wait
		return nil
	}
}

func defaultOptions() options {
	return options{
		sgName:       DefaultSecurityGroupName,
		types:        map[string][]string{},
		ssmPrefix:    DefaultSSMPrefix,
		baseImages:   map[string]string{},
		baseOwner:    CanonicalOwner,
		baseNameFmt:  "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-%s-server-*",
		cleanupMin:   2 * time.Second,
		cleanupMax:   30 * time.Second,
		cleanupTries: 10,
		orphanGrace:  DefaultOrphanGrace,
		adoptWait:    DefaultAdoptWait,
		adoptPoll:    time.Second,
		channelWait:  DefaultChannelWriteWait,
		now:          time.Now,
		sleep:        sleepCtx,
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// New builds a driver with EC2 and SSM clients made from cfg. Configure
// credentials, region and the SDK retryer on cfg. The EC2 clients' retryer
// never retries capacity and quota errors (InsufficientInstanceCapacity is
// an HTTP 500, which the SDK would otherwise retry): the crabbox client
// falls back to the next type instead.
func New(cfg aws.Config, opts ...Option) (*Driver, error) {
	o := defaultOptions()
	o.region = cfg.Region
	for _, fn := range opts {
		if fn == nil {
			continue
		}
		if err := fn(&o); err != nil {
			return nil, err
		}
	}
	if o.region == "" {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "awsec2: no region (set it on aws.Config or WithRegion)")
	}
	region, endpoint := o.region, o.endpoint
	if cfg.Credentials != nil && !aws.IsCredentialsProvider(cfg.Credentials, (*aws.AnonymousCredentials)(nil)) {
		cfg.Credentials = markedCredentials{cfg.Credentials}
	}
	ec2c := ec2.NewFromConfig(cfg, func(eo *ec2.Options) {
		eo.Region = region
		if endpoint != "" {
			eo.BaseEndpoint = aws.String(endpoint)
		}
	}, finalCapacity)
	ssmc := ssm.NewFromConfig(cfg, func(so *ssm.Options) {
		so.Region = region
		if endpoint != "" {
			so.BaseEndpoint = aws.String(endpoint)
		}
	})
	if o.regionClients == nil {
		o.regionClients = func(r string) (EC2API, error) {
			return ec2.NewFromConfig(cfg, func(eo *ec2.Options) {
				eo.Region = r
				if endpoint != "" {
					eo.BaseEndpoint = aws.String(endpoint)
				}
			}, finalCapacity), nil
		}
	}
	return &Driver{ec2: ec2c, ssm: ssmc, o: o}, nil
}

// NewFromClients builds a driver around existing clients. WithRegion should
// be given so Info and CopyImage know the source region. An *ec2.Client
// given here keeps its retryer as it is: the SDK's standard retryer retries
// InsufficientInstanceCapacity (an HTTP 500) before the crabbox client can
// fall back to the next type; New's clients do not (see New).
func NewFromClients(ec2API EC2API, ssmAPI SSMAPI, opts ...Option) (*Driver, error) {
	if ec2API == nil || ssmAPI == nil {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "awsec2: nil client")
	}
	o := defaultOptions()
	for _, fn := range opts {
		if fn == nil {
			continue
		}
		if err := fn(&o); err != nil {
			return nil, err
		}
	}
	return &Driver{ec2: ec2API, ssm: ssmAPI, o: o}, nil
}

// Info implements provider.Driver.
func (d *Driver) Info() provider.Info {
	return provider.Info{Name: "aws", Region: d.o.region, ShutdownTerminates: true}
}

// adopt looks for what a create that failed ambiguously may have made:
// find runs at once and then every adoptPoll until it reports ok or
// adoptWait has passed, each run on a context detached from ctx's
// cancellation and bounded by cleanupTimeout. It returns the last result.
func adopt[T any](ctx context.Context, d *Driver, find func(context.Context) (T, bool)) (T, bool) {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.o.adoptWait)
	defer cancel()
	for {
		fctx, fcancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		v, ok := find(fctx)
		fcancel()
		if ok || d.o.sleep(wctx, d.o.adoptPoll) != nil {
			return v, ok
		}
	}
}

// cleanupTimeout bounds the calls the driver makes, after its caller's
// context ended, to undo what a failed create left behind.
const cleanupTimeout = 30 * time.Second
