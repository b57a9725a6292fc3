// Tests of channels.go: SSM parameter channels.

package awsec2_test

import (
	"context"
	"errors"
	"maps"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/internal/testenv/moto"
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

// stageRival makes another operator promote rival between SetChannel's read
// and its write; compensating runs when the driver, its own write done,
// starts checking the history to compensate.
func stageRival(t *testing.T, e *env, rival string, compensating func()) *bool {
	t.Helper()
	raced, done := false, false
	e.build(&hookTransport{base: e.faults, before: func(action string) {
		switch {
		case action == "PutParameter" && !raced:
			raced = true
			if _, err := e.ssm.PutParameter(context.Background(), &ssm.PutParameterInput{
				Name: aws.String(awsec2.DefaultSSMPrefix + "default"), Value: aws.String(rival),
				Type: ssmtypes.ParameterTypeString, DataType: aws.String("aws:ec2:image"), Overwrite: aws.Bool(true),
				Description: aws.String("crabbox promotion by rival"),
			}); err != nil {
				t.Error(err)
			}
		case action == "GetParameterHistory" && raced && !done:
			done = true
			compensating()
		}
	}})
	return &raced
}

// The caller's context ending after the losing write, while the driver
// compensates, must not leave the losing value in the channel: the
// compensation runs detached from the caller's cancellation.
func TestConflictCompensationSurvivesCancellation(t *testing.T) {
	e := newEnv(t)
	const a, b, rival = "ami-0aaaaaaaaaaaaaaaa", "ami-0bbbbbbbbbbbbbbbb", "ami-0cccccccccccccccc"
	if _, err := e.d.SetChannel(t.Context(), provider.SetChannelRequest{Channel: "default", ImageID: a, IfVersion: -1}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	raced := stageRival(t, e, rival, cancel)
	_, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: b, Operator: "us", IfVersion: 1})
	if !*raced {
		t.Fatal("race not staged")
	}
	if !errors.Is(err, provider.ErrConflict) {
		t.Fatalf("SetChannel = %v, want ErrConflict", err)
	}
	var ce *awsec2.CompensationError
	if errors.As(err, &ce) {
		t.Errorf("compensation failed: %v", ce)
	}
	cur, cerr := e.d.CurrentChannel(t.Context(), "default")
	if cerr != nil || cur.ImageID != rival {
		t.Errorf("channel after a cancelled conflicting SetChannel = %+v, %v; want the rival's %s restored", cur, cerr, rival)
	}
	_ = e.d.DeleteChannel(t.Context(), "default")
}

// A compensation that fails is reported, joined with the conflict, and the
// joined error is not retryable (a retry cannot repair the channel).
func TestConflictCompensationFailureIsReported(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	const a, b, rival = "ami-0aaaaaaaaaaaaaaaa", "ami-0bbbbbbbbbbbbbbbb", "ami-0cccccccccccccccc"
	if _, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: a, IfVersion: -1}); err != nil {
		t.Fatal(err)
	}
	raced := stageRival(t, e, rival, func() {
		// The compensating write fails, also when retried.
		e.faults.Add(moto.Fault{Action: "PutParameter", Times: 3, Code: "InternalServerError", Status: 500})
	})
	_, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: b, Operator: "us", IfVersion: 1})
	if !*raced || e.faults.Injected("PutParameter") != 3 {
		t.Fatalf("race or failing compensation not staged (injected %d)", e.faults.Injected("PutParameter"))
	}
	if !errors.Is(err, provider.ErrConflict) {
		t.Fatalf("SetChannel = %v, want ErrConflict", err)
	}
	var ce *awsec2.CompensationError
	if !errors.As(err, &ce) || ce.Losing != b || ce.Channel != "default" || ce.Err == nil {
		t.Fatalf("SetChannel = %v; want a *CompensationError for %s joined", err, b)
	}
	if provider.Retryable(err) {
		t.Errorf("failed compensation is retryable: %v", err)
	}
	if cur, _ := e.d.CurrentChannel(ctx, "default"); cur == nil || cur.ImageID != b || cur.Version != ce.Version {
		t.Errorf("channel = %+v; the error should name the losing version that stayed current (%d)", cur, ce.Version)
	}
	_ = e.d.DeleteChannel(ctx, "default")
}

// A compensating write that fails once is retried and lands.
func TestConflictCompensationRetriesATransientFailure(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	const a, b, rival = "ami-0aaaaaaaaaaaaaaaa", "ami-0bbbbbbbbbbbbbbbb", "ami-0cccccccccccccccc"
	if _, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: a, IfVersion: -1}); err != nil {
		t.Fatal(err)
	}
	raced := stageRival(t, e, rival, func() {
		e.faults.Add(moto.Fault{Action: "PutParameter", Times: 1, Code: "InternalServerError", Status: 500})
	})
	_, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: b, Operator: "us", IfVersion: 1})
	var ce *awsec2.CompensationError
	if !*raced || !errors.Is(err, provider.ErrConflict) || errors.As(err, &ce) {
		t.Fatalf("SetChannel = %v; want a plain conflict (the compensation retried and landed)", err)
	}
	if cur, _ := e.d.CurrentChannel(ctx, "default"); cur == nil || cur.ImageID != rival {
		t.Errorf("channel = %+v; want the rival %s restored", cur, rival)
	}
	_ = e.d.DeleteChannel(ctx, "default")
}

// holdPutParameters holds the first n PutParameter calls until all n have
// arrived: n concurrent SetChannels have then all passed their version
// check before any of them writes. Later calls (compensating writes) pass.
func holdPutParameters(n int) func(action string) {
	var mu sync.Mutex
	arrived := 0
	all := make(chan struct{})
	return func(action string) {
		if action != "PutParameter" {
			return
		}
		mu.Lock()
		arrived++
		first := arrived <= n
		if arrived == n {
			close(all)
		}
		mu.Unlock()
		if first {
			select {
			case <-all:
			case <-time.After(10 * time.Second):
			}
		}
	}
}

// channelImages makes an available AMI per name for channel tests, and
// deletes them and the default channel when the test ends.
func channelImages(t *testing.T, e *env, names ...string) []string {
	t.Helper()
	m := newMachine(t, e, "cbx_222222222222")
	var ids []string
	for i, name := range names {
		img, err := e.d.CreateImage(t.Context(), imageReq(m, "openclaw-crabbox-"+name+"-20260101-000"+strconv.Itoa(i), "tok-race-"+name))
		if err != nil {
			t.Fatal(err)
		}
		waitImage(t, e, img.ID)
		ids = append(ids, img.ID)
	}
	t.Cleanup(func() {
		_ = e.d.DeleteChannel(context.Background(), crabbox.DefaultChannel)
		for _, id := range ids {
			_ = e.d.ProtectImage(context.Background(), id, false)
			_ = e.d.DeleteImage(context.Background(), id)
		}
	})
	return ids
}

// Two Promotes through the crabbox client race on SSM: both pass the
// version check, both write, the later write loses and is compensated. The
// losing call has no side effects beyond the protection it turned on before
// writing: ErrConflict naming the winner, a nil Promotion, no labels on its
// image, no promoted event.
func TestLosingConcurrentPromotionHasNoSideEffects(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	ids := channelImages(t, e, "seed", "alpha", "beta")
	if _, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: crabbox.DefaultChannel, ImageID: ids[0], IfVersion: -1}); err != nil {
		t.Fatal(err)
	}
	e.build(&hookTransport{base: e.faults, before: holdPutParameters(2)})
	var mu sync.Mutex
	var events []crabbox.Event
	c, err := crabbox.New(e.d, crabbox.WithStateDir(t.TempDir()), crabbox.WithOperator("tester"),
		crabbox.WithEvents(func(ev crabbox.Event) { mu.Lock(); events = append(events, ev); mu.Unlock() }))
	if err != nil {
		t.Fatal(err)
	}
	racers := ids[1:]
	before := make([]*provider.Image, 2)
	for i, id := range racers {
		if before[i], err = e.d.GetImage(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	prs := make([]*crabbox.Promotion, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range racers {
		wg.Go(func() { prs[i], errs[i] = c.Promote(ctx, racers[i], crabbox.Force("race")) })
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		if err == nil {
			if winner >= 0 {
				t.Fatal("both promotions won")
			}
			winner = i
		}
	}
	if winner < 0 {
		t.Fatalf("no promotion won: %v", errs)
	}
	loser, lerr := 1-winner, errs[1-winner]
	if !errors.Is(lerr, crabbox.ErrConflict) || !strings.Contains(lerr.Error(), racers[winner]) ||
		strings.Contains(lerr.Error(), "now points at "+racers[loser]) {
		t.Errorf("losing Promote = %v; want ErrConflict naming the winner %s", lerr, racers[winner])
	}
	if prs[loser] != nil {
		t.Errorf("losing Promote returned %+v; want nil", prs[loser])
	}
	after, err := e.d.GetImage(ctx, racers[loser])
	if err != nil {
		t.Fatal(err)
	}
	// The loser keeps the protection it turned on before its write
	// (lifting it would race a cleanup against a promotion elsewhere).
	if !after.Protected {
		t.Errorf("losing image %s lost the deregistration protection its call turned on", racers[loser])
	}
	if !maps.Equal(after.Labels, before[loser].Labels) {
		t.Errorf("losing image's labels changed: %v, were %v", after.Labels, before[loser].Labels)
	}
	mu.Lock()
	for _, ev := range events {
		if ev.Kind == crabbox.EventPromoted && ev.State == racers[loser] {
			t.Errorf("promoted event for the losing image: %+v", ev)
		}
	}
	mu.Unlock()
	if cur, err := e.d.CurrentChannel(ctx, crabbox.DefaultChannel); err != nil || cur.ImageID != racers[winner] {
		t.Errorf("channel = %+v, %v; want the winner %s", cur, err, racers[winner])
	}
}

// A losing Promote whose compensation fails leaves the channel serving its
// image: the call still returns ErrConflict and no Promotion, but the image
// keeps its deregistration protection, so cleanup cannot delete an image
// the channel serves.
func TestLosingPromotionLeftCurrentStaysProtected(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	ids := channelImages(t, e, "seed", "beta", "rival")
	if _, err := e.d.SetChannel(ctx, provider.SetChannelRequest{Channel: crabbox.DefaultChannel, ImageID: ids[0], IfVersion: -1}); err != nil {
		t.Fatal(err)
	}
	raced := stageRival(t, e, ids[2], func() {
		e.faults.Add(moto.Fault{Action: "PutParameter", Times: 3, Code: "InternalServerError", Status: 500})
	})
	c, err := crabbox.New(e.d, crabbox.WithStateDir(t.TempDir()), crabbox.WithOperator("tester"))
	if err != nil {
		t.Fatal(err)
	}
	pr, err := c.Promote(ctx, ids[1], crabbox.Force("race"))
	if !*raced {
		t.Fatal("race not staged")
	}
	var ce *awsec2.CompensationError
	if !errors.Is(err, crabbox.ErrConflict) || !errors.As(err, &ce) || pr != nil {
		t.Fatalf("Promote = %+v, %v; want nil and ErrConflict with a *CompensationError", pr, err)
	}
	if cur, _ := e.d.CurrentChannel(ctx, crabbox.DefaultChannel); cur == nil || cur.ImageID != ids[1] {
		t.Fatalf("channel = %+v; the failed compensation should leave %s current", cur, ids[1])
	}
	if img, err := e.d.GetImage(ctx, ids[1]); err != nil || !img.Protected {
		t.Errorf("image the channel serves = %+v, %v; want it protected", img, err)
	}
}
