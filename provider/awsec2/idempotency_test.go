// Tests of AWS's documented error statuses and idempotency against the raised moto launcher: capacity errors as 500s, RunInstances and CopyImage client tokens, AMI name rules.

package awsec2_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/internal/testenv/moto"
	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/awsec2"
)

// InsufficientInstanceCapacity is a server error (HTTP 500), which the AWS
// SDK's standard retryer retries; the driver's EC2 client must not: the
// SDK's fallback to the next type is the only answer to it, and three
// attempts per type only delay that.
func TestCapacityErrorIsNotRetriedBySDKRetryer(t *testing.T) {
	e := newEnv(t)
	faults := e.faults
	cfg := baseConfig(faults)
	cfg.Retryer = nil // the SDK's default: the standard retryer, 3 attempts
	d, err := newRecordedDriver(cfg, awsec2.WithEndpoint(motoSrv.Endpoint), awsec2.WithSSHCIDR(sshCIDR))
	if err != nil {
		t.Fatal(err)
	}
	if !d.RetriesRequests() {
		t.Fatal("driver on the default retryer does not report that it retries requests")
	}
	e.d = d
	req := createReq(t, e, "cbx_5005005005ab")
	req.Type = noCapacity
	start := time.Now()
	m, err := d.CreateMachine(t.Context(), req)
	if !errors.Is(err, provider.ErrCapacity) || m != nil {
		t.Fatalf("CreateMachine(no capacity) = %v, %v; want nil, ErrCapacity", m, err)
	}
	var re *smithyhttp.ResponseError
	if !errors.As(err, &re) || re.HTTPStatusCode() != 500 {
		t.Errorf("capacity error status = %v, want the documented 500", err)
	}
	if n := faults.Calls("RunInstances"); n != 1 {
		t.Errorf("RunInstances calls = %d after %v, want 1: the SDK retryer retried a capacity error", n, time.Since(start))
	}
	// Throttling is still the SDK retryer's to retry.
	faults.Add(moto.Fault{Action: "DescribeInstances", Times: 1})
	if _, err := d.ListMachines(t.Context(), map[string]string{"crabbox-lease": "none"}); err != nil {
		t.Errorf("ListMachines after one throttle = %v, want the SDK retryer to retry it", err)
	}
	e.expectClean()
}

// RunInstances compares every parameter of a retried token, and a token
// whose instance was terminated is refused with IdempotentInstanceTerminated,
// which the driver reports as a conflict (a retry with that token can never
// launch), leaving no key pair behind.
func TestRunInstancesIdempotency(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	req := createReq(t, e, "cbx_1d1d1d1d1d1d")
	req.Labels["z-last"], req.Labels["a-first"], req.Labels["m-middle"] = "1", "2", "3"
	m, err := e.d.CreateMachine(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	again, err := e.d.CreateMachine(ctx, req)
	if err != nil || again.ID != m.ID {
		t.Fatalf("identical retry = %v, %v; want %s (every parameter equal)", again, err, m.ID)
	}
	changed := req
	changed.UserData = []byte("#cloud-config\n# something else\n")
	if m2, err := e.d.CreateMachine(ctx, changed); !errors.Is(err, provider.ErrConflict) || m2 != nil {
		t.Errorf("retry with other user-data = %v, %v; want nil, ErrConflict (IdempotentParameterMismatch)", m2, err)
	}
	if err := e.d.DeleteMachine(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	m3, err := e.d.CreateMachine(ctx, req)
	if !errors.Is(err, provider.ErrConflict) || m3 != nil || provider.Retryable(err) {
		t.Fatalf("retry after the token's instance was terminated = %v, %v; want nil, a final ErrConflict", m3, err)
	}
	if !strings.Contains(err.Error(), "IdempotentInstanceTerminated") {
		t.Errorf("error = %v, want the raw IdempotentInstanceTerminated reachable", err)
	}
	e.expectClean()
}

// A CopyImage whose response was lost is retried by the caller with the
// same (derived) client token, and EC2 returns the first copy instead of
// making a second one.
func TestCopyImageRetryAfterLostResponse(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	m := newMachine(t, e, "cbx_c0c0c0c0c0c0")
	img, err := e.d.CreateImage(ctx, imageReq(m, "openclaw-crabbox-copytok-20260101-0000", "tok-ct"))
	if err != nil {
		t.Fatal(err)
	}
	waitImage(t, e, img.ID)
	// EC2 copies, then every reply the SDK's attempts get is lost (a 500):
	// the copy exists, the call fails.
	e.faults.Add(moto.Fault{Action: "CopyImage", Times: 3, After: true, Code: "InternalError"})
	first, err := e.d.CopyImage(ctx, img.ID, "eu-west-1", "")
	if !provider.Retryable(err) {
		t.Fatalf("CopyImage with a lost response = %v, want a retryable error", err)
	}
	if first == nil || first.ID == "" {
		t.Fatalf("CopyImage with a lost response returned %+v, %v: the copy it made must come back with the error", first, err)
	}
	e.faults.Clear()
	cp, err := e.d.CopyImage(ctx, img.ID, "eu-west-1", "")
	if err != nil {
		t.Fatalf("retried CopyImage: %v", err)
	}
	if cp.ID != first.ID {
		t.Errorf("retried CopyImage = %s, the lost reply's copy %s: want the same copy", cp.ID, first.ID)
	}
	eu := e.ec2In("eu-west-1")
	out, err := eu.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"},
		Filters: []types.Filter{{Name: aws.String("name"), Values: []string{img.Name}}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Images) != 1 || aws.ToString(out.Images[0].ImageId) != cp.ID {
		t.Errorf("copies in eu-west-1 = %d (retry returned %s), want exactly the one", len(out.Images), cp.ID)
	}
	eud, err := newRecordedDriver(e.cfg, awsec2.WithEndpoint(motoSrv.Endpoint), awsec2.WithRegion("eu-west-1"),
		awsec2.WithCleanupBackoff(time.Millisecond, 5*time.Millisecond, 6))
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range out.Images {
		for i := 0; i < 5; i++ {
			_, _ = eud.GetImage(ctx, aws.ToString(im.ImageId)) // let it leave pending
		}
		if err := eud.DeleteImage(ctx, aws.ToString(im.ImageId)); err != nil {
			t.Error(err)
		}
	}
	if err := e.d.DeleteImage(ctx, img.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.d.DeleteMachine(context.Background(), m.ID); err != nil {
		t.Fatal(err)
	}
	e.expectClean("us-east-1", "eu-west-1")
}

// AMI names follow CreateImage's character rules: a malformed one is a
// final invalid-argument error that creates nothing, and the names the SDK
// generates are accepted.
func TestAMINameRules(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	m := newMachine(t, e, "cbx_a1a1a1a1a1a1")
	for _, bad := range []string{"crabbox:linux", "crabbox+1", "crabbox linux *", "crabbox#x"} {
		img, err := e.d.CreateImage(ctx, imageReq(m, bad, ""))
		if !errors.Is(err, provider.ErrInvalidArgument) || provider.Retryable(err) || img != nil {
			t.Errorf("CreateImage(%q) = %v, %v; want nil, a final ErrInvalidArgument", bad, img, err)
		}
	}
	// The driver knows the rules: a bad name never reaches EC2.
	if n := e.faults.Calls("CreateImage"); n != 0 {
		t.Errorf("%d CreateImage calls for malformed names, want 0: the driver must refuse them first", n)
	}
	n, err := crabbox.NewImageName("openclaw", "crabbox", "smoke-test", time.Date(2026, 12, 31, 23, 59, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	img, err := e.d.CreateImage(ctx, imageReq(m, n.String(), "tok-name"))
	if err != nil {
		t.Fatalf("CreateImage(%q), a name the SDK generates: %v", n.String(), err)
	}
	waitImage(t, e, img.ID)
	if err := e.d.DeleteImage(ctx, img.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.d.DeleteMachine(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	e.expectClean()
}
