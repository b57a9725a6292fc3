// Tests of iam.go: IAMTransport authorizes per resource with tags, tag-on-create, missing resources, AWS's refusal shapes.

package moto_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/crabbox/crabbox-go/internal/testenv/moto"
)

func iamClients(t *testing.T, srv *moto.Server, policy string) (*ec2.Client, *ssm.Client, *moto.IAMTransport) {
	t.Helper()
	tr, err := moto.NewIAMTransport(srv.Endpoint, []byte(policy), nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := aws.Config{
		Region:      "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider("a", "b", ""),
		HTTPClient:  &http.Client{Transport: tr},
		Retryer:     func() aws.Retryer { return aws.NopRetryer{} },
	}
	return ec2.NewFromConfig(cfg, func(o *ec2.Options) { o.BaseEndpoint = aws.String(srv.Endpoint) }),
		ssm.NewFromConfig(cfg, func(o *ssm.Options) { o.BaseEndpoint = aws.String(srv.Endpoint) }), tr
}

func wantRefused(t *testing.T, what string, err error, code string, status int) {
	t.Helper()
	var ae smithy.APIError
	var re *smithyhttp.ResponseError
	if !errors.As(err, &ae) || ae.ErrorCode() != code || !errors.As(err, &re) || re.HTTPStatusCode() != status {
		t.Fatalf("%s = %v, want %s (HTTP %d)", what, err, code, status)
	}
}

const ownedOnly = `{"Effect":"Allow","Action":["ec2:DeleteKeyPair","ec2:TerminateInstances"],"Resource":"*",
	"Condition":{"StringEquals":{"aws:ResourceTag/crabbox":"true"}}}`

func TestIAMTransport(t *testing.T) {
	srv := moto.Start(t)
	ctx := t.Context()
	raw := ec2.NewFromConfig(aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("a", "b", ""),
		Retryer: func() aws.Retryer { return aws.NopRetryer{} }}, func(o *ec2.Options) { o.BaseEndpoint = aws.String(srv.Endpoint) })
	imgs, err := raw.DescribeImages(ctx, &ec2.DescribeImagesInput{})
	if err != nil || len(imgs.Images) == 0 {
		t.Fatalf("moto images: %v", err)
	}
	ami := aws.ToString(imgs.Images[0].ImageId)
	run := func(tags ...types.Tag) *ec2.RunInstancesInput {
		in := &ec2.RunInstancesInput{ImageId: aws.String(ami), InstanceType: types.InstanceTypeT3Micro,
			MinCount: aws.Int32(1), MaxCount: aws.Int32(1)}
		if len(tags) > 0 {
			in.TagSpecifications = []types.TagSpecification{{ResourceType: types.ResourceTypeInstance, Tags: tags}}
		}
		return in
	}
	managed := types.Tag{Key: aws.String("crabbox"), Value: aws.String("true")}

	t.Run("RunInstances authorizes every resource type it touches", func(t *testing.T) {
		c, _, tr := iamClients(t, srv, `{"Version":"2012-10-17","Statement":[
			{"Effect":"Allow","Action":"ec2:RunInstances","Resource":"arn:aws:ec2:*:*:instance/*"}]}`)
		_, err := c.RunInstances(ctx, run())
		wantRefused(t, "RunInstances granted on instances only", err, "UnauthorizedOperation", 403)
		r := tr.Refusals()
		if len(r) != 1 || strings.Contains(r[0].Resource, ":instance/") || r[0].Action != "ec2:RunInstances" {
			t.Errorf("refusals = %v, want one on a resource other than the instance", r)
		}
	})

	t.Run("tag on create needs ec2:CreateTags with ec2:CreateAction", func(t *testing.T) {
		c, _, tr := iamClients(t, srv, `{"Version":"2012-10-17","Statement":[
			{"Effect":"Allow","Action":"ec2:RunInstances","Resource":"*"}, `+ownedOnly+`]}`)
		_, err := c.RunInstances(ctx, run(managed))
		wantRefused(t, "tagged RunInstances without CreateTags", err, "UnauthorizedOperation", 403)
		if r := tr.Refusals(); len(r) != 1 || r[0].Action != "ec2:CreateTags" ||
			strings.Join(r[0].Context["ec2:CreateAction"], ",") != "RunInstances" || strings.Join(r[0].Context["aws:TagKeys"], ",") != "crabbox" {
			t.Errorf("refusals = %v, want ec2:CreateTags as part of RunInstances", r)
		}
		out, err := c.RunInstances(ctx, run())
		if err != nil {
			t.Fatalf("untagged RunInstances: %v", err)
		}
		// Untagged: the principal may not terminate it (not crabbox's).
		_, err = c.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{aws.ToString(out.Instances[0].InstanceId)}})
		wantRefused(t, "TerminateInstances of an untagged instance", err, "UnauthorizedOperation", 403)
		if _, err := raw.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{aws.ToString(out.Instances[0].InstanceId)}}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("tag on create allowed, then owned resources", func(t *testing.T) {
		c, _, tr := iamClients(t, srv, `{"Version":"2012-10-17","Statement":[
			{"Effect":"Allow","Action":["ec2:RunInstances","ec2:ImportKeyPair"],"Resource":"*"},
			{"Effect":"Allow","Action":"ec2:CreateTags","Resource":"*","Condition":{"StringEquals":{"ec2:CreateAction":["RunInstances","ImportKeyPair"]}}},
			`+ownedOnly+`]}`)
		out, err := c.RunInstances(ctx, run(managed))
		if err != nil {
			t.Fatalf("tagged RunInstances: %v", err)
		}
		if _, err := c.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{aws.ToString(out.Instances[0].InstanceId)}}); err != nil {
			t.Errorf("TerminateInstances of an owned instance: %v", err)
		}
		_, err = c.ImportKeyPair(ctx, &ec2.ImportKeyPairInput{KeyName: aws.String("owned"),
			PublicKeyMaterial: []byte("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGd0ZXN0a2V5dGVzdGtleXRlc3RrZXl0ZXN0a2V5dGVz test"),
			TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeKeyPair, Tags: []types.Tag{managed}}}})
		if err != nil {
			t.Fatalf("ImportKeyPair: %v", err)
		}
		if _, err := c.DeleteKeyPair(ctx, &ec2.DeleteKeyPairInput{KeyName: aws.String("owned")}); err != nil {
			t.Errorf("DeleteKeyPair of an owned key: %v", err)
		}
		// Gone: evaluated without tags, refused (EC2 itself would answer
		// success for a missing key).
		_, err = c.DeleteKeyPair(ctx, &ec2.DeleteKeyPairInput{KeyName: aws.String("owned")})
		wantRefused(t, "DeleteKeyPair of a gone key", err, "UnauthorizedOperation", 403)
		if err != nil && !strings.Contains(err.Error(), "Encoded authorization failure message: ") {
			t.Errorf("no encoded message: %v", err)
		}
		if r := tr.Refusals(); len(r) != 1 || r[0].Resource != "arn:aws:ec2:us-east-1:"+moto.Account+":key-pair/owned" || len(r[0].Context) != 0 {
			t.Errorf("refusals = %v, want the gone key without tags", r)
		}
		if tr.Authorized("ec2:DeleteKeyPair") != 1 || tr.Authorized("ec2:RunInstances") != 1 {
			t.Errorf("authorized DeleteKeyPair %d, RunInstances %d; want 1, 1", tr.Authorized("ec2:DeleteKeyPair"), tr.Authorized("ec2:RunInstances"))
		}
	})

	t.Run("unmodelled actions and SSM", func(t *testing.T) {
		c, s, tr := iamClients(t, srv, `{"Version":"2012-10-17","Statement":[
			{"Effect":"Allow","Action":["ec2:*","ssm:*"],"Resource":"arn:aws:ssm:*:*:parameter/mine/*"}]}`)
		_, err := c.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), Size: aws.Int32(1)})
		wantRefused(t, "CreateVolume (not modelled)", err, "UnauthorizedOperation", 403)
		_, err = s.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String("/other/x")})
		wantRefused(t, "GetParameter outside the resource", err, "AccessDeniedException", 400)
		_, err = s.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String("/mine/x:3")})
		var nf interface{ ErrorCode() string }
		if !errors.As(err, &nf) || nf.ErrorCode() != "ParameterNotFound" {
			t.Errorf("GetParameter of an allowed missing parameter = %v, want moto's ParameterNotFound", err)
		}
		r := tr.Refusals()
		if len(r) != 2 || r[0].Decision != "not modelled" || r[1].Resource != "arn:aws:ssm:us-east-1:"+moto.Account+":parameter/other/x" {
			t.Errorf("refusals = %v", r)
		}
	})
}
