package awsec2_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/smithy-go"

	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/awsec2"
)

// The portable codes the driver reports for AWS errors, through a call
// that surfaces them unchanged (a fake EC2 client).
func TestErrorCodes(t *testing.T) {
	cases := map[string]error{
		"InvalidInstanceID.NotFound":   provider.ErrNotFound,
		"InvalidAMIID.NotFound":        provider.ErrNotFound,
		"InvalidSnapshot.NotFound":     provider.ErrNotFound,
		"InsufficientInstanceCapacity": provider.ErrCapacity,
		"InstanceLimitExceeded":        provider.ErrCapacity,
		"VcpuLimitExceeded":            provider.ErrCapacity,
		"Unsupported":                  provider.ErrCapacity,
		"MaxSpotInstanceCountExceeded": provider.ErrCapacity,
		"RequestLimitExceeded":         provider.ErrThrottled,
		"Throttling":                   provider.ErrThrottled,
		"InternalError":                provider.ErrUnavailable,
		"Unavailable":                  provider.ErrUnavailable,
		"UnauthorizedOperation":        provider.ErrPermission,
		"AccessDenied":                 provider.ErrPermission,
		"InvalidParameterValue":        provider.ErrInvalidArgument,
		"InvalidParameterCombination":  provider.ErrInvalidArgument,
		"MalformedQueryString":         provider.ErrInvalidArgument,
		"InvalidAMIID.Malformed":       provider.ErrInvalidArgument,
		"IdempotentParameterMismatch":  provider.ErrConflict,
		"SomethingNewAndServerSide":    provider.ErrUnavailable,
	}
	for code, want := range cases {
		fault := smithy.FaultClient
		if code == "SomethingNewAndServerSide" {
			fault = smithy.FaultServer
		}
		raw := &smithy.GenericAPIError{Code: code, Message: "m", Fault: fault}
		d, err := awsec2.NewFromClients(failingEC2{err: raw}, fakeSSM{})
		if err != nil {
			t.Fatal(err)
		}
		_, got := d.GetMachine(t.Context(), "i-0123456789abcdef0")
		if !errors.Is(got, want) {
			t.Errorf("%s -> %v, want %v", code, got, want)
		}
		var ae smithy.APIError
		if !errors.As(got, &ae) || ae.ErrorCode() != code {
			t.Errorf("%s: raw error not reachable with errors.As: %v", code, got)
		}
		if n := strings.Count(fmt.Sprint(got), want.Error()+":"); n != 1 {
			t.Errorf("%s: wrapped %d times: %v", code, n, got)
		}
	}
}

type failingEC2 struct {
	awsec2.EC2API
	err error
}

func (f failingEC2) DescribeInstances(_ context.Context, _ *ec2.DescribeInstancesInput, _ ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	return nil, f.err
}

func TestPolicyDocument(t *testing.T) {
	d, err := awsec2.NewFromClients(failingEC2{}, fakeSSM{}, awsec2.WithSSMPrefix("/team/images/"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := d.PolicyJSON()
	if err != nil {
		t.Fatal(err)
	}
	var doc awsec2.PolicyDocument
	if err := json.Unmarshal(b, &doc); err != nil || doc.Version != "2012-10-17" {
		t.Fatalf("policy JSON %s: %v", b, err)
	}
	for _, s := range doc.Statement {
		for _, a := range s.Action {
			switch {
			case strings.HasPrefix(a, "ssm:"):
				if len(s.Resource) != 1 || s.Resource[0] != "arn:aws:ssm:*:*:parameter/team/images/*" {
					t.Errorf("%s on %v: want only the channel parameters", a, s.Resource)
				}
			case a == "ec2:DeregisterImage", a == "ec2:DeleteSnapshot", a == "ec2:TerminateInstances", a == "ec2:DeleteKeyPair":
				if s.Condition["StringEquals"]["aws:ResourceTag/"+awsec2.TagManaged] != "true" {
					t.Errorf("%s not limited to crabbox-owned resources: %+v", a, s)
				}
			}
		}
	}
	if strings.Contains(string(b), "iam:PassRole") {
		t.Error("iam:PassRole granted without an instance profile")
	}
}
