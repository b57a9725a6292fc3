// Tests of AWS's documented lags against a moto launcher that emulates them: SSM's asynchronous aws:ec2:image validation, security groups not yet visible after creation.

package awsec2_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/crabbox/crabbox-go/internal/testenv/moto"
	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/awsec2"
)

// lag is the emulated window: long enough that the driver's next call
// lands inside it on a loaded machine.
const lag = 300 * time.Millisecond

// lagEnv is an env on its own moto server with opts, and a driver on it
// (the shared server keeps moto's synchronous behaviour).
func lagEnv(t *testing.T, srv *moto.Server, opts ...awsec2.Option) *env {
	t.Helper()
	if err := srv.Reset(); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, faults: &moto.FaultTransport{}}
	e.cfg = baseConfig(e.faults)
	all := append([]awsec2.Option{
		awsec2.WithEndpoint(srv.Endpoint),
		awsec2.WithSSHCIDR(sshCIDR),
		awsec2.WithCleanupBackoff(time.Millisecond, 5*time.Millisecond, 6),
	}, opts...)
	d, err := newRecordedDriver(e.cfg, all...)
	if err != nil {
		t.Fatal(err)
	}
	e.d = d
	raw := baseConfig(http.DefaultTransport)
	e.ec2 = ec2.NewFromConfig(raw, func(o *ec2.Options) { o.BaseEndpoint = aws.String(srv.Endpoint) })
	e.ssm = ssm.NewFromConfig(raw, func(o *ssm.Options) { o.BaseEndpoint = aws.String(srv.Endpoint) })
	return e
}

func putImageParam(t *testing.T, e *env, name, value string, overwrite bool) int64 {
	t.Helper()
	out, err := e.ssm.PutParameter(context.Background(), &ssm.PutParameterInput{
		Name: aws.String(name), Value: aws.String(value), Type: ssmtypes.ParameterTypeString,
		DataType: aws.String("aws:ec2:image"), Overwrite: aws.Bool(overwrite), Description: aws.String("crabbox promotion by rival"),
	})
	if err != nil {
		t.Fatal(err)
	}
	return out.Version
}

// SSM validates aws:ec2:image values asynchronously: a PutParameter's 200
// does not mean the version was written. SetChannel returns only once its
// version is readable, refuses a version SSM never writes (an image that is
// not available), tolerates a version the caller names that is not readable
// yet, and compensates a lost race even while its own write is not yet
// visible.
func TestChannelWritesWaitForSSMValidation(t *testing.T) {
	srv := moto.Start(t, moto.Options{SSMImageValidation: lag, SSMValidateImageExists: true})
	const a, b, rival = "ami-0ca0ca0120250115", "ami-0ca0ca0220250610", "ami-0ca0ca0420250610" // the launcher's Canonical images
	name := awsec2.DefaultSSMPrefix + "default"

	t.Run("readable when SetChannel returns", func(t *testing.T) {
		e := lagEnv(t, srv)
		ctx := t.Context()
		for i, img := range []string{a, b} {
			want, ifVersion := int64(i+1), int64(i)
			if i == 0 {
				ifVersion = -1 // never set
			}
			got, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: img, Operator: "us", IfVersion: ifVersion})
			if err != nil || got.Version != want {
				t.Fatalf("SetChannel(%s) = %+v, %v", img, got, err)
			}
			cur, err := e.d.CurrentChannel(ctx, "default")
			if err != nil || cur.ImageID != img || cur.Version != want || cur.Operator != "us" {
				t.Fatalf("CurrentChannel right after SetChannel = %+v, %v; want %s at version %d", cur, err, img, want)
			}
		}
		if err := e.d.MarkKnownGood(ctx, "default", 2); err != nil {
			t.Errorf("MarkKnownGood(the version SetChannel returned) = %v", err)
		}
	})

	t.Run("an image SSM refuses is not a promotion", func(t *testing.T) {
		e := lagEnv(t, srv, awsec2.WithChannelWriteWait(4*lag))
		ctx := t.Context()
		if _, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: a, IfVersion: -1}); err != nil {
			t.Fatal(err)
		}
		got, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: "ami-00000000deadbeef0", IfVersion: 1})
		if err == nil || got != nil {
			t.Fatalf("SetChannel(an image that does not exist) = %+v, %v; want an error: SSM never writes that version", got, err)
		}
		if errors.Is(err, provider.ErrConflict) {
			t.Errorf("refused image reported as a conflict: %v", err)
		}
		time.Sleep(2 * lag)
		if cur, err := e.d.CurrentChannel(ctx, "default"); err != nil || cur.ImageID != a || cur.Version != 1 {
			t.Errorf("channel = %+v, %v; want still %s at version 1", cur, err, a)
		}
	})

	t.Run("a version not yet readable is not a conflict", func(t *testing.T) {
		e := lagEnv(t, srv)
		ctx := t.Context()
		// Another writer's put returned version 1; SSM has not written it yet.
		v := putImageParam(t, e, name, a, false)
		got, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: b, Operator: "us", IfVersion: v})
		if err != nil || got.Version != v+1 {
			t.Fatalf("SetChannel(IfVersion %d, not yet readable) = %+v, %v; want version %d", v, got, err, v+1)
		}
	})

	t.Run("lost race compensated under the lag", func(t *testing.T) {
		e := lagEnv(t, srv)
		ctx := t.Context()
		if _, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: a, IfVersion: -1}); err != nil {
			t.Fatal(err)
		}
		raced := false
		base := e.cfg.HTTPClient
		e.cfg.HTTPClient = &http.Client{Transport: &hookTransport{base: e.faults, before: func(action string) {
			if action == "PutParameter" && !raced {
				raced = true
				putImageParam(t, e, name, rival, true) // lands between our read and our write
			}
		}}}
		d, err := newRecordedDriver(e.cfg, awsec2.WithEndpoint(srv.Endpoint))
		e.cfg.HTTPClient = base
		if err != nil {
			t.Fatal(err)
		}
		_, err = d.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: b, Operator: "us", IfVersion: 1})
		var ce *awsec2.CompensationError
		if !raced || !errors.Is(err, provider.ErrConflict) || errors.As(err, &ce) {
			t.Fatalf("SetChannel losing a race = %v (raced %v); want a plain ErrConflict", err, raced)
		}
		time.Sleep(2 * lag) // let every pending write land
		cur, err := e.d.CurrentChannel(ctx, "default")
		if err != nil || cur.ImageID != rival {
			t.Errorf("channel after the lost race = %+v, %v; want the rival's %s restored", cur, err, rival)
		}
	})
}

// A security group EC2 just created may not be usable yet
// (InvalidGroup.NotFound): the driver retries using the group it created,
// within the propagation window only.
func TestNewSecurityGroupPropagation(t *testing.T) {
	srv := moto.Start(t, moto.Options{SecurityGroupPropagation: lag})

	t.Run("authorize and launch in a new group", func(t *testing.T) {
		e := lagEnv(t, srv)
		ctx := t.Context()
		m, err := e.d.CreateMachine(ctx, createReq(t, e, "cbx_56565656aaaa"))
		if err != nil {
			t.Fatalf("CreateMachine in a group created just now: %v", err)
		}
		if err := e.d.DeleteMachine(ctx, m.ID); err != nil {
			t.Fatal(err)
		}
		if rules := e.sshRulesOn(); len(rules) != 1 {
			t.Errorf("ssh rules = %v, want one", rules)
		}
	})

	t.Run("launch refused while the group propagates", func(t *testing.T) {
		e := lagEnv(t, srv)
		ctx := t.Context()
		// Authorize saw the group, RunInstances does not yet (each API is
		// eventually consistent on its own).
		e.faults.Add(moto.Fault{Action: "RunInstances", Times: 1, Code: "InvalidGroup.NotFound"})
		m, err := e.d.CreateMachine(ctx, createReq(t, e, "cbx_56565656bbbb"))
		if err != nil {
			t.Fatalf("CreateMachine while the new group propagates to RunInstances: %v", err)
		}
		if n := e.faults.Calls("RunInstances"); n != 2 {
			t.Errorf("RunInstances calls = %d, want 2 (one refused, one retried)", n)
		}
		if err := e.d.DeleteMachine(ctx, m.ID); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("an old group that is gone is not retried", func(t *testing.T) {
		e := lagEnv(t, srv, awsec2.WithSecurityGroup("sg-0123456789abcdef0"))
		ctx := t.Context()
		m, err := e.d.CreateMachine(ctx, createReq(t, e, "cbx_56565656cccc"))
		if !errors.Is(err, provider.ErrNotFound) || m != nil {
			t.Fatalf("CreateMachine in a configured group that does not exist = %v, %v; want nil, ErrNotFound", m, err)
		}
		if n := e.faults.Calls("RunInstances"); n != 1 {
			t.Errorf("RunInstances calls = %d, want 1: only a group the driver just created is waited for", n)
		}
	})
}

// sshRulesOn is sshRules on the env's own server.
func (e *env) sshRulesOn() []string {
	e.t.Helper()
	out, err := e.ec2.DescribeSecurityGroups(context.Background(), &ec2.DescribeSecurityGroupsInput{})
	if err != nil {
		e.t.Fatal(err)
	}
	var rules []string
	for _, g := range out.SecurityGroups {
		if aws.ToString(g.GroupName) != awsec2.DefaultSecurityGroupName {
			continue
		}
		for _, p := range g.IpPermissions {
			for _, r := range p.IpRanges {
				rules = append(rules, aws.ToString(r.CidrIp))
			}
		}
	}
	return rules
}

// A validation slower than the channel write wait: SetChannel returns the
// version SSM gave with the error (the write still lands), so Promote
// reports the promotion with that error, does its bookkeeping, and never
// calls its own late write a concurrent promotion.
func TestSlowSSMValidationIsNotAConflict(t *testing.T) {
	// The validation outlasts the wait by far, so a loaded machine's slow
	// calls cannot let the wait see the version.
	srv := moto.Start(t, moto.Options{SSMImageValidation: 5 * time.Second, SSMValidateImageExists: true})
	e := lagEnv(t, srv, awsec2.WithChannelWriteWait(300*time.Millisecond))
	ctx := t.Context()
	const a = "ami-0ca0ca0120250115" // a launcher Canonical image: available
	got, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: a, IfVersion: -1})
	if err == nil || got == nil || got.ImageID != a || got.Version != 1 {
		t.Fatalf("SetChannel past the write wait = %+v, %v; want the entry (version 1) with an error", got, err)
	}
	if errors.Is(err, provider.ErrConflict) {
		t.Fatalf("SetChannel past the write wait: %v: not a conflict", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		cur, err := e.d.CurrentChannel(ctx, "default")
		if err == nil && cur.ImageID == a && cur.Version == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the accepted write never landed: %+v, %v", cur, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
