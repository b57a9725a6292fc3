// Test setup: the moto server, the recorded calls the IAM policy must cover, the test environment.

package awsec2_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"flag"
	"fmt"
	"net/http"
	"os"
	"reflect"
	"slices"
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

	// recorders holds, per driver under test, every EC2 and SSM operation
	// the driver made (not the tests' own inspection calls), for the IAM
	// policy check.
	recMu     sync.Mutex
	recorders []*recorder
)

// recorder records the operations one driver made.
type recorder struct {
	d      *awsec2.Driver
	ops    map[string]bool // "ec2:RunInstances"
	tagged map[string]bool // operations called with TagSpecifications
}

func (r *recorder) middleware(stack *middleware.Stack) error {
	return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("crabbox-record-op",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			svc := strings.ToLower(awsmiddleware.GetServiceID(ctx))
			op := awsmiddleware.GetOperationName(ctx)
			recMu.Lock()
			r.ops[svc+":"+op] = true
			if hasTagSpecifications(in.Parameters) {
				r.tagged[op] = true
			}
			recMu.Unlock()
			return next.HandleInitialize(ctx, in)
		}), middleware.After)
}

func hasTagSpecifications(params any) bool {
	v := reflect.ValueOf(params)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return false
	}
	f := v.Elem().FieldByName("TagSpecifications")
	return f.IsValid() && f.Kind() == reflect.Slice && f.Len() > 0
}

// newRecordedDriver builds a driver on cfg whose calls are checked against
// its own policy at the end of the run.
func newRecordedDriver(cfg aws.Config, opts ...awsec2.Option) (*awsec2.Driver, error) {
	r := &recorder{ops: map[string]bool{}, tagged: map[string]bool{}}
	cfg.APIOptions = append(append([]func(*middleware.Stack) error(nil), cfg.APIOptions...), r.middleware)
	d, err := awsec2.New(cfg, opts...)
	if err != nil {
		return nil, err
	}
	r.d = d
	recMu.Lock()
	recorders = append(recorders, r)
	recMu.Unlock()
	return d, nil
}

func TestMain(m *testing.M) {
	flag.Parse() // a bad flag exits here, before moto starts
	motoSrv, motoErr = moto.Launch(moto.Options{NoCapacityTypes: []string{noCapacity}})
	code := m.Run()
	if motoSrv != nil {
		motoSrv.Close()
	}
	if code == 0 && motoErr == nil {
		code = checkPolicyCoversCalls()
	}
	os.Exit(code)
}

// checkPolicyCoversCalls fails the run when a driver called an operation
// its own IAM policy (from its own options) does not grant, or tagged at
// creation in a call the policy's ec2:CreateAction condition does not list.
func checkPolicyCoversCalls() int {
	recMu.Lock()
	defer recMu.Unlock()
	fail, total := false, map[string]bool{}
	for _, r := range recorders {
		for op := range r.ops {
			total[op] = true
		}
		missing, untaggable := policyGaps(r.d, r.ops, r.tagged)
		if len(missing) > 0 {
			fmt.Printf("FAIL: a driver called operations its IAM policy does not grant: %v\n", missing)
			fail = true
		}
		if len(untaggable) > 0 {
			fmt.Printf("FAIL: a driver tagged at creation in calls its policy's ec2:CreateAction condition omits: %v\n", untaggable)
			fail = true
		}
	}
	if fail {
		return 1
	}
	if f := flag.Lookup("test.run"); f != nil && f.Value.String() == "" && len(total) < 10 {
		fmt.Printf("FAIL: policy check recorded only %d operations; the recorder is broken\n", len(total))
		return 1
	}
	return 0
}

// policyGaps returns the operations d's policy does not grant and the
// operations tagged at creation that its CreateTags condition omits.
func policyGaps(d *awsec2.Driver, ops, tagged map[string]bool) (missing, untaggable []string) {
	granted := map[string]bool{}
	for _, a := range d.PolicyActions() {
		granted[a] = true
	}
	onCreate := map[string]bool{}
	for _, st := range d.Policy().Statement {
		if slices.Contains(st.Action, "ec2:CreateTags") {
			for _, a := range st.Condition["StringEquals"]["ec2:CreateAction"] {
				onCreate[a] = true
			}
		}
	}
	for op := range ops {
		if !granted[op] {
			missing = append(missing, op)
		}
	}
	for op := range tagged {
		if !onCreate[op] {
			untaggable = append(untaggable, op)
		}
	}
	sort.Strings(missing)
	sort.Strings(untaggable)
	return missing, untaggable
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
	e.cfg = cfg
	all := append([]awsec2.Option{
		awsec2.WithEndpoint(motoSrv.Endpoint),
		awsec2.WithSSHCIDR(sshCIDR),
		awsec2.WithCleanupBackoff(time.Millisecond, 5*time.Millisecond, 6),
	}, opts...)
	d, err := newRecordedDriver(cfg, all...)
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
