package awsec2_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"flag"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/smithy-go/middleware"
	"golang.org/x/crypto/ssh"

	"github.com/crabbox/crabbox-go/internal/testenv/moto"
	"github.com/crabbox/crabbox-go/provider/awsec2"
)

// noCapacity is an instance type the moto launcher refuses with
// InsufficientInstanceCapacity.
const noCapacity = "c5.24xlarge"

const sshCIDR = "198.51.100.0/24"

var (
	motoSrv *moto.Server
	motoErr error

	// calledOps records every EC2 and SSM operation a driver under test made
	// (not the tests' own inspection calls), for the IAM policy test.
	calledMu  sync.Mutex
	calledOps = map[string]bool{}
)

func TestMain(m *testing.M) {
	flag.Parse() // a bad flag exits here, before moto starts
	motoSrv, motoErr = moto.Launch(moto.Options{NoCapacityTypes: []string{noCapacity}})
	code := m.Run()
	if motoSrv != nil {
		motoSrv.Close()
	}
	if code == 0 && motoErr == nil && !testing.Short() {
		code = checkPolicyCoversCalls()
	}
	os.Exit(code)
}

// checkPolicyCoversCalls fails the run when the driver called an operation
// its generated IAM policy does not grant.
func checkPolicyCoversCalls() int {
	d, err := awsec2.NewFromClients(&ec2.Client{}, &ssm.Client{}, awsec2.WithInstanceProfile("x"))
	if err != nil {
		fmt.Println("policy check:", err)
		return 1
	}
	granted := map[string]bool{}
	for _, a := range d.PolicyActions() {
		granted[a] = true
	}
	calledMu.Lock()
	defer calledMu.Unlock()
	var missing []string
	for op := range calledOps {
		if !granted[op] {
			missing = append(missing, op)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		fmt.Printf("FAIL: the driver called operations its IAM policy does not grant: %v\n", missing)
		return 1
	}
	if f := flag.Lookup("test.run"); f != nil && f.Value.String() == "" && len(calledOps) < 10 {
		fmt.Printf("FAIL: policy check recorded only %d operations; the recorder is broken\n", len(calledOps))
		return 1
	}
	return 0
}

func recordOps(stack *middleware.Stack) error {
	return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("crabbox-record-op",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			svc := strings.ToLower(awsmiddleware.GetServiceID(ctx))
			calledMu.Lock()
			calledOps[svc+":"+awsmiddleware.GetOperationName(ctx)] = true
			calledMu.Unlock()
			return next.HandleInitialize(ctx, in)
		}), middleware.After)
}

// env is one test's view of moto: a driver under test, raw clients for
// inspection, and the fault transport in front of moto.
type env struct {
	t      *testing.T
	d      *awsec2.Driver
	ec2    *ec2.Client // raw, for inspection: not recorded
	ssm    *ssm.Client
	faults *moto.FaultTransport
	cfg    aws.Config
}

func baseConfig(rt http.RoundTripper) aws.Config {
	return aws.Config{
		Region:      "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider("AKIDTEST", "secret", ""),
		HTTPClient:  &http.Client{Transport: rt},
		// One attempt: moto's 500s and injected faults must reach the
		// driver and the root package, not the SDK's retryer.
		Retryer: func() aws.Retryer { return aws.NopRetryer{} },
	}
}

// newEnv resets moto and builds a driver. It checks at the end of the test
// that nothing crabbox-owned is left in moto.
func newEnv(t *testing.T, opts ...awsec2.Option) *env {
	t.Helper()
	moto.Require(t, motoErr)
	if err := motoSrv.Reset(); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, faults: &moto.FaultTransport{}}
	return e.build(e.faults, opts...)
}

func (e *env) build(rt http.RoundTripper, opts ...awsec2.Option) *env {
	t := e.t
	t.Helper()
	cfg := baseConfig(rt)
	cfg.APIOptions = append(cfg.APIOptions, recordOps)
	e.cfg = cfg
	all := append([]awsec2.Option{
		awsec2.WithEndpoint(motoSrv.Endpoint),
		awsec2.WithSSHCIDR(sshCIDR),
		awsec2.WithCleanupBackoff(time.Millisecond, 5*time.Millisecond, 6),
	}, opts...)
	d, err := awsec2.New(cfg, all...)
	if err != nil {
		t.Fatal(err)
	}
	e.d = d
	raw := baseConfig(http.DefaultTransport)
	e.ec2 = ec2.NewFromConfig(raw, func(o *ec2.Options) { o.BaseEndpoint = aws.String(motoSrv.Endpoint) })
	e.ssm = ssm.NewFromConfig(raw, func(o *ssm.Options) { o.BaseEndpoint = aws.String(motoSrv.Endpoint) })
	return e
}

func (e *env) ec2In(region string) *ec2.Client {
	return ec2.NewFromConfig(baseConfig(http.DefaultTransport), func(o *ec2.Options) {
		o.BaseEndpoint = aws.String(motoSrv.Endpoint)
		o.Region = region
	})
}

func authorizedKey(t *testing.T) []byte {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return ssh.MarshalAuthorizedKey(sp)
}

// leftovers lists crabbox-owned resources still in moto: live instances,
// key pairs, images and snapshots (in region).
func (e *env) leftovers(region string) []string {
	t := e.t
	t.Helper()
	ctx := context.Background()
	c := e.ec2In(region)
	var res []string
	owned := []types.Filter{{Name: aws.String("tag:" + awsec2.TagManaged), Values: []string{"true"}}}
	io, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: append(owned, types.Filter{
		Name: aws.String("instance-state-name"), Values: []string{"pending", "running", "stopping", "stopped"}})})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range io.Reservations {
		for _, in := range r.Instances {
			res = append(res, "instance "+aws.ToString(in.InstanceId))
		}
	}
	ko, err := c.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range ko.KeyPairs {
		res = append(res, "key "+aws.ToString(k.KeyName))
	}
	imo, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range imo.Images {
		res = append(res, "image "+aws.ToString(im.ImageId))
	}
	so, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}, Filters: owned})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range so.Snapshots {
		res = append(res, "snapshot "+aws.ToString(s.SnapshotId))
	}
	return res
}

func (e *env) expectClean(regions ...string) {
	e.t.Helper()
	if len(regions) == 0 {
		regions = []string{"us-east-1"}
	}
	for _, r := range regions {
		if l := e.leftovers(r); len(l) > 0 {
			e.t.Errorf("leftovers in moto (%s): %v", r, l)
		}
	}
}

// sshRules returns the ingress rules of the driver's security group.
func (e *env) sshRules() []string {
	e.t.Helper()
	out, err := e.ec2.DescribeSecurityGroups(context.Background(), &ec2.DescribeSecurityGroupsInput{
		Filters: []types.Filter{{Name: aws.String("group-name"), Values: []string{awsec2.DefaultSecurityGroupName}}}})
	if err != nil {
		e.t.Fatal(err)
	}
	var rules []string
	for _, g := range out.SecurityGroups {
		for _, p := range g.IpPermissions {
			for _, r := range p.IpRanges {
				rules = append(rules, fmt.Sprintf("%s %d-%d %s", aws.ToString(p.IpProtocol), aws.ToInt32(p.FromPort), aws.ToInt32(p.ToPort), aws.ToString(r.CidrIp)))
			}
		}
	}
	return rules
}

// hookTransport calls before(action) and after(action) around each call.
type hookTransport struct {
	base   http.RoundTripper
	before func(action string)
	after  func(action string) error
}

func (h *hookTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	action := actionOf(req)
	if h.before != nil {
		h.before(action)
	}
	resp, err := h.base.RoundTrip(req)
	if err == nil && h.after != nil {
		if herr := h.after(action); herr != nil {
			resp.Body.Close()
			return nil, herr
		}
	}
	return resp, err
}

func actionOf(req *http.Request) string {
	a, _ := moto.ActionOf(req)
	return a
}
