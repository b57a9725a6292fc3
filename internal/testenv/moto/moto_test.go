package moto_test

import (
	"errors"
	"net/http"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
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
