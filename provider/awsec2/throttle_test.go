// Throttling with the SDK's retryer on: one layer retries (the SDK, per
// request), never both, so throttled flows complete and persistent
// throttling ends in the SDK's attempts, not attempts times the client's.

package awsec2_test

import (
	"errors"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/internal/testenv/awsbox"
	"github.com/crabbox/crabbox-go/internal/testenv/moto"
	"github.com/crabbox/crabbox-go/provider/awsec2"
)

// sdkAttempts is the SDK retryer's attempts per request in these tests.
const sdkAttempts = 3

// retryingEnv is a moto env whose driver has the SDK's standard retryer on
// (sdkAttempts, millisecond backoff, no retry quota), and a client on it.
func retryingEnv(t *testing.T) (*env, *crabbox.Client) {
	t.Helper()
	e := newEnv(t)
	cfg := baseConfig(e.faults)
	cfg.Retryer = func() aws.Retryer {
		return retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts = sdkAttempts
			o.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return time.Millisecond, nil })
			o.RateLimiter = ratelimit.None
		})
	}
	d, err := newRecordedDriver(cfg, awsec2.WithEndpoint(motoSrv.Endpoint), awsec2.WithSSHCIDR(sshCIDR),
		awsec2.WithCleanupBackoff(time.Millisecond, 5*time.Millisecond, 6), awsec2.WithAdoptWait(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if !d.RetriesRequests() {
		t.Fatal("RetriesRequests = false with the SDK's standard retryer on")
	}
	e.d = d
	emu := awsbox.New(t, e.ec2)
	c, err := crabbox.New(d, crabbox.WithDialer(emu.Dial), crabbox.WithStateDir(t.TempDir()), crabbox.WithOperator("tester"),
		crabbox.WithPollBackoff(crabbox.ConstantBackoff(10*time.Millisecond)),
		crabbox.WithImagePollBackoff(crabbox.ConstantBackoff(10*time.Millisecond)))
	if err != nil {
		t.Fatal(err)
	}
	return e, c
}

// With one EC2 request in three throttled, every flow completes: warm a
// lease, run on it, image it, release it, delete the image.
func TestThrottlingOneInThreeCompletes(t *testing.T) {
	e, c := retryingEnv(t)
	ctx := t.Context()
	e.faults.Add(moto.Fault{Action: "*", Every: 3, Times: 1 << 30})
	for i := range 2 {
		l, err := c.Warmup(ctx, crabbox.WithTTL(time.Hour))
		if err != nil {
			t.Fatalf("Warmup %d: %v", i, err)
		}
		if _, err := l.Run(ctx, "true"); err != nil {
			t.Fatalf("Run %d: %v", i, err)
		}
		img, err := c.CreateImage(ctx, l.ID, imageName(t, "throttled", time.Now().Add(time.Duration(i)*time.Minute)), crabbox.WithWait(time.Minute))
		if err != nil {
			t.Fatalf("CreateImage %d: %v", i, err)
		}
		if err := l.Release(ctx); err != nil {
			t.Fatalf("Release %d: %v", i, err)
		}
		if err := e.d.DeleteImage(ctx, img.ID); err != nil {
			t.Fatalf("DeleteImage %d: %v", i, err)
		}
	}
	if e.faults.Injected("RunInstances")+e.faults.Injected("DescribeInstances") == 0 {
		t.Error("nothing was throttled")
	}
	e.faults.Clear()
	e.expectClean()
}

// Persistent throttling of RunInstances ends after the SDK's attempts for
// the one request: the client does not run the create again on top (5 x 3
// requests before).
func TestPersistentThrottlingEndsInBoundedAttempts(t *testing.T) {
	e, c := retryingEnv(t)
	e.faults.Add(moto.Fault{Action: "RunInstances", Times: 1 << 30})
	_, err := c.Warmup(t.Context(), crabbox.WithTTL(time.Hour))
	if !errors.Is(err, crabbox.ErrThrottled) {
		t.Fatalf("Warmup = %v, want ErrThrottled", err)
	}
	if n := e.faults.Calls("RunInstances"); n != sdkAttempts {
		t.Errorf("%d RunInstances requests reached the emulator, want %d (one request, the SDK's attempts)", n, sdkAttempts)
	}
	e.faults.Clear()
	e.expectClean()
}
