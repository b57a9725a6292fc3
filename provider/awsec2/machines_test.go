// Tests of machines.go: instances, key pairs, the security group.

package awsec2_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/crabbox/crabbox-go/internal/testenv/moto"
	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/awsec2"
)

func TestBaseImageIsNewestCanonicalUbuntu(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	for _, arch := range []string{"amd64", "arm64"} {
		id, err := e.d.BaseImage(ctx, arch)
		if err != nil {
			t.Fatalf("BaseImage(%s): %v", arch, err)
		}
		out, err := e.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{id}})
		if err != nil || len(out.Images) != 1 {
			t.Fatalf("DescribeImages(%s): %v", id, err)
		}
		im := out.Images[0]
		if aws.ToString(im.OwnerId) != awsec2.CanonicalOwner || !strings.Contains(aws.ToString(im.Name), "ubuntu-noble-24.04-"+arch) ||
			!strings.HasSuffix(aws.ToString(im.Name), "20250610") {
			t.Errorf("BaseImage(%s) = %s (%s, owner %s): want the newest Canonical noble %s image", arch, id, aws.ToString(im.Name), aws.ToString(im.OwnerId), arch)
		}
	}
	if _, err := e.d.BaseImage(ctx, "riscv"); !errors.Is(err, provider.ErrInvalidArgument) {
		t.Errorf("BaseImage(riscv) err = %v, want ErrInvalidArgument", err)
	}
	pinned := newEnv(t, awsec2.WithBaseImage("amd64", "ami-0123456789abcdef0"))
	if id, err := pinned.d.BaseImage(ctx, "amd64"); err != nil || id != "ami-0123456789abcdef0" {
		t.Errorf("pinned BaseImage = %q, %v", id, err)
	}
}

func TestMachineTypes(t *testing.T) {
	d, err := awsec2.NewFromClients(&ec2.Client{}, fakeSSM{}, awsec2.WithMachineTypes("standard", "arm64", "m8g.xlarge", "c8g.xlarge"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := d.MachineTypes("standard", "arm64")
	if err != nil || strings.Join(got, ",") != "m8g.xlarge,c8g.xlarge" {
		t.Errorf("MachineTypes(standard, arm64) = %v, %v", got, err)
	}
	for _, c := range []string{"tiny", "small", "standard", "fast", "large", "beast"} {
		for _, a := range []string{"amd64", "arm64"} {
			if ts, err := d.MachineTypes(c, a); err != nil || len(ts) == 0 {
				t.Errorf("MachineTypes(%s, %s) = %v, %v", c, a, ts, err)
			}
		}
	}
	if _, err := d.MachineTypes("huge", "amd64"); !errors.Is(err, provider.ErrInvalidArgument) {
		t.Errorf("unknown class err = %v", err)
	}
}

func createReq(t *testing.T, e *env, token string) provider.CreateMachineRequest {
	t.Helper()
	img, err := e.d.BaseImage(t.Context(), "amd64")
	if err != nil {
		t.Fatal(err)
	}
	return provider.CreateMachineRequest{
		Token: token, Name: "blue-crab", Image: img, Type: "t3.medium",
		UserData:            []byte("#cloud-config\n# " + token + "\n"),
		Labels:              map[string]string{"crabbox-lease": token, "crabbox-class": "small"},
		AuthorizedKey:       authorizedKey(t),
		TerminateOnShutdown: true,
	}
}

func TestMachineLifecycle(t *testing.T) {
	e := newEnv(t, awsec2.WithRootVolumeGiB(40))
	ctx := t.Context()
	req := createReq(t, e, "cbx_0123456789ab")
	m, err := e.d.CreateMachine(ctx, req)
	if err != nil {
		t.Fatalf("CreateMachine: %v", err)
	}
	if !strings.HasPrefix(m.ID, "i-") || m.Labels["crabbox-lease"] != req.Token || m.Labels[awsec2.TagManaged] != "true" || m.Name != "blue-crab" {
		t.Errorf("CreateMachine = %+v", m)
	}
	got, err := e.d.GetMachine(ctx, m.ID)
	if err != nil {
		t.Fatalf("GetMachine: %v", err)
	}
	if got.State != provider.MachineRunning && got.State != provider.MachinePending {
		t.Errorf("state = %s", got.State)
	}
	// SSHAddr is the public address moto assigned (never dialled here).
	out, err := e.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{m.ID}})
	if err != nil {
		t.Fatal(err)
	}
	in := out.Reservations[0].Instances[0]
	if want := aws.ToString(in.PublicIpAddress) + ":22"; got.SSHAddr != want {
		t.Errorf("SSHAddr = %q, want %q", got.SSHAddr, want)
	}
	// What RunInstances was asked for.
	if aws.ToString(in.ClientToken) != req.Token {
		t.Errorf("ClientToken = %q, want the lease id", aws.ToString(in.ClientToken))
	}
	if aws.ToString(in.KeyName) != "crabbox-"+req.Token {
		t.Errorf("KeyName = %q", aws.ToString(in.KeyName))
	}
	if in.MetadataOptions == nil || in.MetadataOptions.HttpTokens != types.HttpTokensStateRequired {
		t.Errorf("IMDSv2 not required: %+v", in.MetadataOptions)
	}
	if len(in.SecurityGroups) != 1 || aws.ToString(in.SecurityGroups[0].GroupName) != awsec2.DefaultSecurityGroupName {
		t.Errorf("security groups = %+v", in.SecurityGroups)
	}
	if rules := e.sshRules(); len(rules) != 1 || rules[0] != "tcp 22-22 "+sshCIDR {
		t.Errorf("SSH rules = %v, want only tcp 22 from %s", rules, sshCIDR)
	}
	ud, err := e.ec2.DescribeInstanceAttribute(ctx, &ec2.DescribeInstanceAttributeInput{InstanceId: aws.String(m.ID), Attribute: types.InstanceAttributeNameUserData})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := base64.StdEncoding.DecodeString(aws.ToString(ud.UserData.Value)); string(b) != string(req.UserData) {
		t.Errorf("user-data = %q, want %q", b, req.UserData)
	}
	sb, err := e.ec2.DescribeInstanceAttribute(ctx, &ec2.DescribeInstanceAttributeInput{InstanceId: aws.String(m.ID), Attribute: types.InstanceAttributeNameInstanceInitiatedShutdownBehavior})
	if err != nil {
		t.Fatal(err)
	}
	if v := aws.ToString(sb.InstanceInitiatedShutdownBehavior.Value); v != "terminate" {
		t.Errorf("shutdown behaviour = %q, want terminate", v)
	}
	vols, err := e.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: []types.Filter{{Name: aws.String("attachment.instance-id"), Values: []string{m.ID}}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(vols.Volumes) == 0 {
		t.Fatal("no root volume")
	}
	v := vols.Volumes[0]
	if !aws.ToBool(v.Encrypted) || v.VolumeType != types.VolumeTypeGp3 || aws.ToInt32(v.Size) != 40 {
		t.Errorf("root volume encrypted=%v type=%s size=%d, want encrypted gp3 40", aws.ToBool(v.Encrypted), v.VolumeType, aws.ToInt32(v.Size))
	}
	if tm := tags(v.Tags); tm["crabbox-lease"] != req.Token {
		t.Errorf("volume tags = %v", tm)
	}
	keys, err := e.ec2.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{KeyNames: []string{"crabbox-" + req.Token}})
	if err != nil || len(keys.KeyPairs) != 1 {
		t.Fatalf("key pair: %v", err)
	}

	// List and relabel.
	ms, err := e.d.ListMachines(ctx, map[string]string{"crabbox-lease": req.Token})
	if err != nil || len(ms) != 1 || ms[0].ID != m.ID {
		t.Fatalf("ListMachines = %v, %v", ms, err)
	}
	if ms, _ := e.d.ListMachines(ctx, map[string]string{"crabbox-lease": "cbx_other"}); len(ms) != 0 {
		t.Errorf("ListMachines(other) = %v", ms)
	}
	if err := e.d.UpdateMachineLabels(ctx, m.ID, map[string]string{"crabbox-state": "ready", "crabbox-class": ""}); err != nil {
		t.Fatal(err)
	}
	got, _ = e.d.GetMachine(ctx, m.ID)
	if got.Labels["crabbox-state"] != "ready" || got.Labels["crabbox-class"] != "" {
		t.Errorf("labels after update = %v", got.Labels)
	}
	if err := e.d.UpdateMachineLabels(ctx, "i-0000000000000000f", map[string]string{"a": "b"}); !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("UpdateMachineLabels(missing) = %v, want ErrNotFound", err)
	}

	// Release.
	if err := e.d.DeleteMachine(ctx, m.ID); err != nil {
		t.Fatalf("DeleteMachine: %v", err)
	}
	if _, err := e.d.GetMachine(ctx, m.ID); !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("GetMachine after delete = %v, want ErrNotFound", err)
	}
	if err := e.d.DeleteMachine(ctx, m.ID); err != nil {
		t.Errorf("second DeleteMachine = %v, want nil", err)
	}
	if err := e.d.DeleteMachine(ctx, "i-0000000000000000f"); err != nil {
		t.Errorf("DeleteMachine(unknown) = %v, want nil", err)
	}
	if ms, _ := e.d.ListMachines(ctx, map[string]string{"crabbox-lease": req.Token}); len(ms) != 0 {
		t.Errorf("ListMachines after delete = %v", ms)
	}
	e.expectClean()
}

func tags(ts []types.Tag) map[string]string {
	m := map[string]string{}
	for _, t := range ts {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m
}

func countInstances(t *testing.T, e *env, token string) int {
	t.Helper()
	out, err := e.ec2.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{Filters: []types.Filter{
		{Name: aws.String("tag:crabbox-lease"), Values: []string{token}},
		{Name: aws.String("instance-state-name"), Values: []string{"pending", "running"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range out.Reservations {
		n += len(r.Instances)
	}
	return n
}

func TestCreateMachineIsIdempotentPerToken(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	req := createReq(t, e, "cbx_aaaaaaaaaaaa")
	m1, err := e.d.CreateMachine(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := e.d.CreateMachine(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if m1.ID != m2.ID || countInstances(t, e, req.Token) != 1 {
		t.Errorf("retried create made %s and %s (%d instances)", m1.ID, m2.ID, countInstances(t, e, req.Token))
	}
	if err := e.d.DeleteMachine(ctx, m1.ID); err != nil {
		t.Fatal(err)
	}
	e.expectClean()
}

func TestCreateMachineLostResponseReturnsTheInstance(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	req := createReq(t, e, "cbx_bbbbbbbbbbbb")
	// RunInstances reaches moto, but the client sees throttling.
	e.faults.Add(moto.Fault{Action: "RunInstances", Times: 1, After: true})
	m, err := e.d.CreateMachine(ctx, req)
	if !errors.Is(err, provider.ErrThrottled) || !provider.Retryable(err) {
		t.Fatalf("CreateMachine err = %v, want retryable ErrThrottled", err)
	}
	if m == nil || !strings.HasPrefix(m.ID, "i-") {
		t.Fatalf("CreateMachine returned %v with the error: want the instance the call made", m)
	}
	// The root retries the same token: same instance, no duplicate.
	m2, err := e.d.CreateMachine(ctx, req)
	if err != nil || m2.ID != m.ID {
		t.Fatalf("retry = %v, %v; want %s", m2, err, m.ID)
	}
	if n := countInstances(t, e, req.Token); n != 1 {
		t.Errorf("%d instances for the token, want 1", n)
	}
	if e.faults.Injected("RunInstances") != 1 {
		t.Error("fault was not injected")
	}
	if err := e.d.DeleteMachine(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	e.expectClean()
}

func TestCreateMachineCapacityAndBadImageLeaveNothing(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	req := createReq(t, e, "cbx_cccccccccccc")
	req.Type = noCapacity
	if m, err := e.d.CreateMachine(ctx, req); !errors.Is(err, provider.ErrCapacity) || m != nil {
		t.Errorf("no-capacity create = %v, %v; want nil, ErrCapacity", m, err)
	}
	req.Type = "t3.medium"
	req.Image = "ami-00000000deadbeef0"
	if m, err := e.d.CreateMachine(ctx, req); !errors.Is(err, provider.ErrNotFound) || m != nil {
		t.Errorf("bad-image create = %v, %v; want nil, ErrNotFound", m, err)
	}
	for _, bad := range []provider.CreateMachineRequest{{}, {Token: req.Token}, {Token: strings.Repeat("x", 65), Image: "ami-1", Type: "t3.small"}} {
		if _, err := e.d.CreateMachine(ctx, bad); !errors.Is(err, provider.ErrInvalidArgument) {
			t.Errorf("CreateMachine(%+v) = %v, want ErrInvalidArgument", bad, err)
		}
	}
	e.expectClean()
}

func TestSpotFallsBackToOnDemand(t *testing.T) {
	e := newEnv(t, awsec2.WithSpot(true, true))
	ctx := t.Context()
	req := createReq(t, e, "cbx_dddddddddddd")
	e.faults.Add(moto.Fault{Action: "RunInstances", Times: 1, Code: "InsufficientInstanceCapacity"})
	m, err := e.d.CreateMachine(ctx, req)
	if err != nil {
		t.Fatalf("CreateMachine: %v", err)
	}
	if e.faults.Calls("RunInstances") != 2 {
		t.Errorf("RunInstances calls = %d, want spot then on-demand", e.faults.Calls("RunInstances"))
	}
	out, _ := e.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{m.ID}})
	if lc := out.Reservations[0].Instances[0].InstanceLifecycle; lc == types.InstanceLifecycleTypeSpot {
		t.Errorf("instance lifecycle = %s, want on-demand after fallback", lc)
	}
	if err := e.d.DeleteMachine(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	e.expectClean()
}

func TestCreateMachineNeedsSSHCIDROrGroup(t *testing.T) {
	moto.Require(t, motoErr)
	e := newEnv(t)
	d, err := newRecordedDriver(e.cfg, awsec2.WithEndpoint(motoSrv.Endpoint))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.CreateMachine(t.Context(), createReq(t, e, "cbx_eeeeeeeeeeee")); !errors.Is(err, provider.ErrInvalidArgument) {
		t.Errorf("CreateMachine without CIDR = %v, want ErrInvalidArgument", err)
	}
	if _, err := awsec2.New(e.cfg, awsec2.WithSSHCIDR("everyone")); !errors.Is(err, provider.ErrInvalidArgument) {
		t.Errorf("bad CIDR accepted: %v", err)
	}
	e.expectClean()
}

// Cancelling CreateMachine at each of its API calls (the call reaches moto,
// then the context ends) leaves no instance and no key pair once the caller
// deleted what was returned, and never more than the one SSH rule.
func TestCreateMachineCancelledAtEveryStep(t *testing.T) {
	steps := []string{"DescribeImages", "DescribeVpcs", "DescribeSecurityGroups", "CreateSecurityGroup",
		"AuthorizeSecurityGroupIngress", "ImportKeyPair", "RunInstances"}
	for _, step := range steps {
		t.Run(step, func(t *testing.T) {
			e := newEnv(t)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			req := createReq(t, e, "cbx_ffffffffffff")
			hit := false
			e.build(&hookTransport{base: e.faults, after: func(action string) error {
				if action == step && !hit {
					hit = true
					cancel()
					return context.Canceled
				}
				return nil
			}})
			m, err := e.d.CreateMachine(ctx, req)
			if !hit {
				t.Fatalf("step %s never ran", step)
			}
			if err == nil {
				t.Fatalf("CreateMachine succeeded after cancellation at %s", step)
			}
			if !errors.Is(err, context.Canceled) {
				t.Errorf("err = %v, want context.Canceled", err)
			}
			if m != nil { // what a caller does with a half-made machine
				if err := e.d.DeleteMachine(context.Background(), m.ID); err != nil {
					t.Fatal(err)
				}
			}
			e.expectClean()
			if rules := e.sshRules(); len(rules) > 1 {
				t.Errorf("SSH rules = %v", rules)
			}
		})
	}
}

type fakeSSM struct{ awsec2.SSMAPI }

// An instance that terminated itself (the box's TTL shutdown) behind the
// SDK's back is listed as terminated, and DeleteMachine on it still deletes
// the lease's key pair; afterwards it is no longer listed.
func TestSelfTerminatedMachineReleasesItsKeyPair(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	req := createReq(t, e, "cbx_999999999999")
	m, err := e.d.CreateMachine(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{m.ID}}); err != nil {
		t.Fatal(err)
	}
	var listed *provider.Machine
	for i := 0; i < 20 && listed == nil; i++ { // bounded by polls: shutting-down is not listed
		ms, err := e.d.ListMachines(ctx, map[string]string{"crabbox-lease": req.Token})
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range ms {
			if x.ID == m.ID && x.State == provider.MachineTerminated {
				listed = x
			}
		}
	}
	if listed == nil {
		t.Fatalf("ListMachines does not report the self-terminated instance %s as terminated", m.ID)
	}
	if listed.Labels["crabbox-lease"] != req.Token || listed.SSHAddr != "" {
		t.Errorf("terminated machine = %+v", listed)
	}
	if _, err := e.d.GetMachine(ctx, m.ID); !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("GetMachine(terminated) = %v, want ErrNotFound", err)
	}
	if keys, err := e.ec2.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{}); err != nil || len(keys.KeyPairs) != 1 {
		t.Fatalf("key pairs before DeleteMachine = %v, %v; want the lease's", keys, err)
	}
	if err := e.d.DeleteMachine(ctx, m.ID); err != nil {
		t.Fatalf("DeleteMachine(terminated) = %v", err)
	}
	if keys, err := e.ec2.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{}); err != nil || len(keys.KeyPairs) != 0 {
		t.Errorf("key pairs after DeleteMachine of a self-terminated instance = %+v, %v; want none", keys.KeyPairs, err)
	}
	if ms, err := e.d.ListMachines(ctx, map[string]string{"crabbox-lease": req.Token}); err != nil || len(ms) != 0 {
		t.Errorf("ListMachines after DeleteMachine = %v, %v; want it gone", ms, err)
	}
	if err := e.d.DeleteMachine(ctx, m.ID); err != nil {
		t.Errorf("second DeleteMachine = %v", err)
	}
	e.expectClean()
}

// An instance without a KeyName (as some describe paths report it) still
// has its key pair found from the client-token tag.
func TestDeleteMachineFindsKeyPairFromTag(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	req := createReq(t, e, "cbx_9999999999aa")
	m, err := e.d.CreateMachine(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	out, err := e.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{m.ID}})
	if err != nil {
		t.Fatal(err)
	}
	if got := tags(out.Reservations[0].Instances[0].Tags)[awsec2.TagClientToken]; got != req.Token {
		t.Errorf("instance tag %s = %q, want the request token", awsec2.TagClientToken, got)
	}
	// The driver sees no KeyName.
	e.build(&stripKeyName{base: e.faults})
	if err := e.d.DeleteMachine(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	e.expectClean()
}

// stripKeyName removes keyName from DescribeInstances responses.
type stripKeyName struct{ base http.RoundTripper }

var keyNameRe = regexp.MustCompile(`<keyName>[^<]*</keyName>`)

func (s *stripKeyName) RoundTrip(req *http.Request) (*http.Response, error) {
	action := actionOf(req)
	resp, err := s.base.RoundTrip(req)
	if err != nil || action != "DescribeInstances" {
		return resp, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	b = keyNameRe.ReplaceAll(b, nil)
	resp.Body = io.NopCloser(bytes.NewReader(b))
	resp.ContentLength = int64(len(b))
	resp.Header.Del("Content-Length")
	return resp, nil
}

// The on-demand retry after a spot capacity error uses its own ClientToken
// (EC2 refuses a token reused with other parameters), the instance carries
// the request token as a tag, and a CreateMachine retried after the
// on-demand launch's response was lost finds that instance instead of
// launching a second one.
func TestSpotFallbackUsesItsOwnClientToken(t *testing.T) {
	e := newEnv(t, awsec2.WithSpot(true, true))
	ctx := t.Context()
	req := createReq(t, e, "cbx_dddddddddd01")
	e.faults.Add(moto.Fault{Action: "RunInstances", Times: 1, Code: "InsufficientInstanceCapacity"})            // spot: no capacity
	e.faults.Add(moto.Fault{Action: "RunInstances", Times: 1, After: true, Code: "InternalError", Status: 500}) // on demand: lost response
	m, err := e.d.CreateMachine(ctx, req)
	if !errors.Is(err, provider.ErrUnavailable) || m == nil {
		t.Fatalf("CreateMachine = %v, %v; want the on-demand instance with ErrUnavailable", m, err)
	}
	out, err := e.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{m.ID}})
	if err != nil {
		t.Fatal(err)
	}
	in := out.Reservations[0].Instances[0]
	if got := aws.ToString(in.ClientToken); got != req.Token+"-od" {
		t.Errorf("on-demand ClientToken = %q, want %q (distinct from the spot request's)", got, req.Token+"-od")
	}
	if in.InstanceLifecycle == types.InstanceLifecycleTypeSpot {
		t.Error("fallback instance is spot")
	}
	if got := tags(in.Tags)[awsec2.TagClientToken]; got != req.Token {
		t.Errorf("instance tag %s = %q, want %q", awsec2.TagClientToken, got, req.Token)
	}
	// The root retries with the same token: no second instance, spot or not.
	again, err := e.d.CreateMachine(ctx, req)
	if err != nil || again.ID != m.ID {
		t.Fatalf("retry = %v, %v; want %s", again, err, m.ID)
	}
	if n := countInstances(t, e, req.Token); n != 1 {
		t.Errorf("%d instances for the lease, want 1", n)
	}
	if err := e.d.DeleteMachine(ctx, m.ID); err != nil {
		t.Fatal(err)
	}

	// A 64-character token still gives a distinct on-demand token within
	// EC2's 64 characters.
	long := createReq(t, e, "cbx_"+strings.Repeat("e", 57)+"-t2")
	e.faults.Add(moto.Fault{Action: "RunInstances", Times: 1, Code: "InsufficientInstanceCapacity"})
	m2, err := e.d.CreateMachine(ctx, long)
	if err != nil {
		t.Fatal(err)
	}
	out, err = e.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{m2.ID}})
	if err != nil {
		t.Fatal(err)
	}
	if got := aws.ToString(out.Reservations[0].Instances[0].ClientToken); got == long.Token || len(got) > 64 || got == "" {
		t.Errorf("on-demand ClientToken for a 64-character token = %q", got)
	}
	if err := e.d.DeleteMachine(ctx, m2.ID); err != nil {
		t.Fatal(err)
	}
	e.expectClean()
}

// EC2 refuses a ClientToken reused with other parameters; the driver maps
// that to ErrConflict (the root gives each machine type its own token).
func TestClientTokenReusedWithOtherParametersConflicts(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	req := createReq(t, e, "cbx_dddddddddd02")
	m, err := e.d.CreateMachine(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	other := req
	other.Type = "t3.large"
	if got, err := e.d.CreateMachine(ctx, other); !errors.Is(err, provider.ErrConflict) || got != nil {
		t.Errorf("same token, other type = %v, %v; want nil, ErrConflict (the instance is not this request's to delete)", got, err)
	}
	// The first request's instance and key pair are untouched.
	if got, err := e.d.GetMachine(ctx, m.ID); err != nil || got.State == provider.MachineTerminated {
		t.Errorf("first instance after the conflict = %v, %v", got, err)
	}
	if keys, err := e.ec2.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{}); err != nil || len(keys.KeyPairs) != 1 {
		t.Errorf("key pairs after the conflict = %v, %v; want the first request's kept", keys, err)
	}
	if err := e.d.DeleteMachine(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	e.expectClean()
}
