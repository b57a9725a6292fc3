// Tests of errors.go: AWS errors mapped to portable codes.

package awsec2_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
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
		"InstanceLimitExceeded":        provider.ErrQuota,
		"VcpuLimitExceeded":            provider.ErrQuota,
		"Unsupported":                  provider.ErrCapacity,
		"MaxSpotInstanceCountExceeded": provider.ErrQuota,
		"VolumeLimitExceeded":          provider.ErrQuota,
		"MaxIOPSLimitExceeded":         provider.ErrQuota,
		"ResourceLimitExceeded":        provider.ErrQuota,
		"SnapshotLimitExceeded":        provider.ErrQuota,
		"AddressLimitExceeded":         provider.ErrQuota,
		"SecurityGroupLimitExceeded":   provider.ErrQuota,
		"PendingVerification":          provider.ErrPermission,
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

// TestMissingCredentialsArePermanent: a driver whose credential chain
// finds nothing fails at once with ErrPermission, which nothing retries.
func TestMissingCredentialsArePermanent(t *testing.T) {
	cfg := aws.Config{
		Region: "us-east-1",
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{}, errors.New("no EC2 IMDS role found")
		}),
	}
	d, err := awsec2.New(cfg, awsec2.WithEndpoint("http://127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.GetMachine(t.Context(), "i-0123456789abcdef0")
	if !errors.Is(err, provider.ErrPermission) || provider.Retryable(err) {
		t.Fatalf("GetMachine without credentials: %v; want ErrPermission, not retryable", err)
	}
	if !strings.Contains(err.Error(), "no EC2 IMDS role found") {
		t.Errorf("the error does not say why: %v", err)
	}
}
