package moto_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/smithy-go"

	"github.com/crabbox/crabbox-go/internal/testenv/moto"
)

func TestFaultTransportAndReset(t *testing.T) {
	srv := moto.Start(t)
	ft := &moto.FaultTransport{}
	cfg := aws.Config{
		Region:      "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider("a", "b", ""),
		HTTPClient:  &http.Client{Transport: ft},
		Retryer:     func() aws.Retryer { return aws.NopRetryer{} },
	}
	c := ec2.NewFromConfig(cfg, func(o *ec2.Options) { o.BaseEndpoint = aws.String(srv.Endpoint) })
	s := ssm.NewFromConfig(cfg, func(o *ssm.Options) { o.BaseEndpoint = aws.String(srv.Endpoint) })
	ctx := t.Context()

	ft.Add(moto.Fault{Action: "CreateKeyPair", Times: 1, After: true})
	_, err := c.CreateKeyPair(ctx, &ec2.CreateKeyPairInput{KeyName: aws.String("k1")})
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != "RequestLimitExceeded" {
		t.Fatalf("injected EC2 fault = %v", err)
	}
	// After: the call reached moto although the client saw an error.
	out, err := c.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{})
	if err != nil || len(out.KeyPairs) != 1 {
		t.Fatalf("key pairs after a lost response = %v, %v; want the one created", out, err)
	}
	ft.Add(moto.Fault{Action: "GetParameter", Times: 1})
	_, err = s.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String("/x")})
	if !errors.As(err, &ae) || ae.ErrorCode() != "ThrottlingException" {
		t.Fatalf("injected SSM fault = %v", err)
	}
	if ft.Injected("CreateKeyPair") != 1 || ft.Injected("GetParameter") != 1 || ft.Calls("DescribeKeyPairs") != 1 {
		t.Errorf("counters: %d %d %d", ft.Injected("CreateKeyPair"), ft.Injected("GetParameter"), ft.Calls("DescribeKeyPairs"))
	}
	if err := srv.Reset(); err != nil {
		t.Fatal(err)
	}
	out, err = c.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{})
	if err != nil || len(out.KeyPairs) != 0 {
		t.Errorf("after Reset: %v, %v", out, err)
	}
}

// The launcher deletes a key pair by KeyPairId, and an instance tagged
// TagVanishOnTerminate is no longer described once terminated; CreateTime
// is reported on DescribeKeyPairs, as on AWS.
func TestKeyPairIDAndVanishingInstances(t *testing.T) {
	srv := moto.Start(t)
	cfg := aws.Config{
		Region:      "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider("a", "b", ""),
		Retryer:     func() aws.Retryer { return aws.NopRetryer{} },
	}
	c := ec2.NewFromConfig(cfg, func(o *ec2.Options) { o.BaseEndpoint = aws.String(srv.Endpoint) })
	ctx := t.Context()
	for _, n := range []string{"k1", "k2"} {
		if _, err := c.CreateKeyPair(ctx, &ec2.CreateKeyPairInput{KeyName: aws.String(n)}); err != nil {
			t.Fatal(err)
		}
	}
	out, err := c.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{KeyNames: []string{"k1"}})
	if err != nil || len(out.KeyPairs) != 1 || out.KeyPairs[0].CreateTime == nil || out.KeyPairs[0].KeyPairId == nil {
		t.Fatalf("DescribeKeyPairs(k1) = %+v, %v; want its id and CreateTime", out, err)
	}
	if _, err := c.DeleteKeyPair(ctx, &ec2.DeleteKeyPairInput{KeyPairId: out.KeyPairs[0].KeyPairId}); err != nil {
		t.Fatal(err)
	}
	out, err = c.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{})
	if err != nil || len(out.KeyPairs) != 1 || aws.ToString(out.KeyPairs[0].KeyName) != "k2" {
		t.Fatalf("key pairs after DeleteKeyPair(KeyPairId of k1) = %+v, %v; want k2 only", out, err)
	}

	imgs, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"099720109477"}})
	if err != nil || len(imgs.Images) == 0 {
		t.Fatalf("no Canonical image: %v", err)
	}
	var ids []string
	for _, vanish := range []bool{false, true} {
		in := &ec2.RunInstancesInput{ImageId: imgs.Images[0].ImageId, MinCount: aws.Int32(1), MaxCount: aws.Int32(1), InstanceType: "t3.small"}
		if vanish {
			in.TagSpecifications = []types.TagSpecification{{ResourceType: types.ResourceTypeInstance,
				Tags: []types.Tag{{Key: aws.String(moto.TagVanishOnTerminate), Value: aws.String("true")}}}}
		}
		r, err := c.RunInstances(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, aws.ToString(r.Instances[0].InstanceId))
	}
	if _, err := c.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: ids}); err != nil {
		t.Fatal(err)
	}
	di, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	for _, r := range di.Reservations {
		for _, in := range r.Instances {
			seen = append(seen, aws.ToString(in.InstanceId)+" "+string(in.State.Name))
		}
	}
	if len(seen) != 1 || seen[0] != ids[0]+" terminated" {
		t.Errorf("instances after termination = %v, want only %s terminated (%s vanished)", seen, ids[0], ids[1])
	}
}

// A Late rule applies the call after the caller gave up: the caller sees its
// context's error, moto has the key pair once WaitLate returns.
func TestFaultTransportLate(t *testing.T) {
	srv := moto.Start(t)
	ft := &moto.FaultTransport{}
	cfg := aws.Config{
		Region:      "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider("a", "b", ""),
		HTTPClient:  &http.Client{Transport: ft},
		Retryer:     func() aws.Retryer { return aws.NopRetryer{} },
	}
	c := ec2.NewFromConfig(cfg, func(o *ec2.Options) { o.BaseEndpoint = aws.String(srv.Endpoint) })
	ctx, cancel := context.WithCancel(t.Context())
	ft.Add(moto.Fault{Action: "CreateKeyPair", Times: 1, Late: 100 * time.Millisecond, OnHold: cancel})
	if _, err := c.CreateKeyPair(ctx, &ec2.CreateKeyPairInput{KeyName: aws.String("late")}); !errors.Is(err, context.Canceled) {
		t.Fatalf("held call = %v, want context.Canceled", err)
	}
	ft.WaitLate()
	out, err := c.DescribeKeyPairs(t.Context(), &ec2.DescribeKeyPairsInput{})
	if err != nil || len(out.KeyPairs) != 1 {
		t.Fatalf("key pairs after a late call = %v, %v; want the one created", out, err)
	}
	if f := ft.LateFailures(); len(f) != 0 {
		t.Errorf("LateFailures = %v", f)
	}
}
