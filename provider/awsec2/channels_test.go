package awsec2_test

import (
	"context"
	"errors"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/awsec2"
)

func TestChannelsInSSM(t *testing.T) {
	e := newEnv(t, awsec2.WithSSMPrefix("/team/images/"))
	ctx := t.Context()
	const a, b = "ami-0aaaaaaaaaaaaaaaa", "ami-0bbbbbbbbbbbbbbbb"
	if _, err := e.d.CurrentChannel(ctx, "default"); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("CurrentChannel(never set) = %v, want ErrNotFound", err)
	}
	e1, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: a, Operator: "alice", IfVersion: -1})
	if err != nil || e1.Version != 1 {
		t.Fatalf("first SetChannel = %+v, %v", e1, err)
	}
	if _, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: b, IfVersion: -1}); !errors.Is(err, provider.ErrConflict) {
		t.Errorf("SetChannel(IfVersion -1) on a set channel = %v, want ErrConflict", err)
	}
	e2, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: b, Operator: "bob", IfVersion: 1})
	if err != nil || e2.Version != 2 {
		t.Fatalf("SetChannel(IfVersion 1) = %+v, %v", e2, err)
	}
	if _, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: a, IfVersion: 1}); !errors.Is(err, provider.ErrConflict) {
		t.Errorf("stale SetChannel = %v, want ErrConflict", err)
	}
	cur, err := e.d.CurrentChannel(ctx, "default")
	if err != nil || cur.ImageID != b || cur.Version != 2 || cur.Operator != "bob" {
		t.Errorf("CurrentChannel = %+v, %v", cur, err)
	}
	// The parameter is usable by EC2 launches: resolve:ssm:/team/images/default.
	p, err := e.ssm.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String("/team/images/default")})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(p.Parameter.DataType) != "aws:ec2:image" || p.Parameter.Type != ssmtypes.ParameterTypeString {
		t.Errorf("parameter data type %q type %s", aws.ToString(p.Parameter.DataType), p.Parameter.Type)
	}
	h, err := e.d.ChannelHistory(ctx, "default")
	if err != nil || len(h) != 2 || h[0].ImageID != a || h[0].Operator != "alice" || h[1].ImageID != b {
		t.Errorf("history = %+v, %v", h, err)
	}
	// Rollback is another version; the known-good label marks versions.
	if err := e.d.MarkKnownGood(ctx, "default", 1); err != nil {
		t.Fatal(err)
	}
	kg, err := e.d.KnownGoodVersion(ctx, "default")
	if err != nil || kg.ImageID != a || kg.Version != 1 {
		t.Errorf("KnownGoodVersion = %+v, %v", kg, err)
	}
	e3, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: kg.ImageID, Operator: "carol", IfVersion: 2})
	if err != nil || e3.Version != 3 {
		t.Fatalf("rollback = %+v, %v", e3, err)
	}
	if _, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "bad/name", ImageID: a}); !errors.Is(err, provider.ErrInvalidArgument) {
		t.Errorf("bad channel name = %v", err)
	}
	if _, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: "not-an-ami"}); !errors.Is(err, provider.ErrInvalidArgument) {
		t.Errorf("bad image id = %v", err)
	}
	if err := e.d.DeleteChannel(ctx, "default"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.CurrentChannel(ctx, "default"); !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("after DeleteChannel: %v", err)
	}
}

// A promotion that lands between the driver's read and its write is
// detected and reported as a conflict, and the concurrent value is restored
// rather than silently overwritten.
func TestConcurrentPromotionIsDetected(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	const a, b, rival = "ami-0aaaaaaaaaaaaaaaa", "ami-0bbbbbbbbbbbbbbbb", "ami-0cccccccccccccccc"
	if _, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: a, IfVersion: -1}); err != nil {
		t.Fatal(err)
	}
	raced := false
	e.build(&hookTransport{base: e.faults, before: func(action string) {
		if action == "PutParameter" && !raced {
			raced = true
			// Another operator promotes between our read and our write.
			if _, err := e.ssm.PutParameter(context.Background(), &ssm.PutParameterInput{
				Name: aws.String(awsec2.DefaultSSMPrefix + "default"), Value: aws.String(rival),
				Type: ssmtypes.ParameterTypeString, DataType: aws.String("aws:ec2:image"), Overwrite: aws.Bool(true),
				Description: aws.String("crabbox promotion by rival"),
			}); err != nil {
				t.Error(err)
			}
		}
	}})
	_, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: b, Operator: "us", IfVersion: 1})
	if !raced {
		t.Fatal("race not staged")
	}
	if !errors.Is(err, provider.ErrConflict) {
		t.Fatalf("SetChannel during a concurrent promotion = %v, want ErrConflict", err)
	}
	cur, err := e.d.CurrentChannel(ctx, "default")
	if err != nil || cur.ImageID != rival {
		t.Errorf("channel after the conflict = %+v, %v; want the rival's %s kept", cur, err, rival)
	}
	_ = e.d.DeleteChannel(ctx, "default")
}
