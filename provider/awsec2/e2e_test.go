// End-to-end tests through the crabbox client on moto: the runbook, cancellation, throttling.

package awsec2_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/internal/testenv/awsbox"
	"github.com/crabbox/crabbox-go/internal/testenv/moto"
	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/awsec2"
)

func newClient(t *testing.T, e *env) (*crabbox.Client, *awsbox.Emulator) {
	t.Helper()
	emu := awsbox.New(t, e.ec2)
	c, err := crabbox.New(e.d,
		crabbox.WithDialer(emu.Dial),
		crabbox.WithStateDir(t.TempDir()),
		crabbox.WithOperator("tester"),
		crabbox.WithPollBackoff(crabbox.ConstantBackoff(10*time.Millisecond)),
		crabbox.WithImagePollBackoff(crabbox.ConstantBackoff(10*time.Millisecond)),
	)
	if err != nil {
		t.Fatal(err)
	}
	return c, emu
}

func imageName(t *testing.T, purpose string, at time.Time) string {
	t.Helper()
	n, err := crabbox.NewImageName("openclaw", "crabbox", purpose, at)
	if err != nil {
		t.Fatal(err)
	}
	return n.String()
}

// The runbook on moto with real sshd boxes: warm a source, bake, create a
// candidate, smoke it on its own lease, promote with the proof, boot the
// promoted image by default, roll back, plan the cleanup, and leave nothing
// behind.
func TestEndToEndRunbookOnMoto(t *testing.T) {
	e := newEnv(t)
	c, emu := newClient(t, e)
	ctx := t.Context()

	src, err := c.Warmup(ctx, crabbox.WithClass("small"), crabbox.WithTTL(time.Hour))
	if err != nil {
		t.Fatalf("Warmup: %v", err)
	}
	defer src.Release(context.Background())
	if emu.Root(src.MachineID) == "" {
		t.Fatal("the lease never reached its emulated box")
	}
	if strings.HasPrefix(src.SSHAddr, "127.") {
		t.Errorf("lease address %s: want the address moto handed out (routed by the dialer)", src.SSHAddr)
	}
	bake := `R="${CRABBOX_FS_ROOT:-}"
mkdir -p "$R/usr/local/bin"
printf '#!/bin/sh\necho baked\n' > "$R/usr/local/bin/crabbox-hello"
chmod 755 "$R/usr/local/bin/crabbox-hello"
crabbox-hello`
	if res, err := src.Run(ctx, bake, crabbox.Strict()); err != nil || strings.TrimSpace(res.StdoutTail) != "baked" {
		t.Fatalf("bake: %+v, %v", res, err)
	}

	now := time.Now().UTC()
	img, err := c.CreateImage(ctx, src.ID, imageName(t, "linux", now), crabbox.WithWait(time.Minute))
	if err != nil {
		t.Fatalf("CreateImage: %v", err)
	}
	if img.ID == "" || !strings.HasPrefix(img.ID, "ami-") {
		t.Fatalf("image = %+v", img)
	}
	if err := src.Release(ctx); err != nil {
		t.Fatal(err)
	}

	cand, err := c.Warmup(ctx, crabbox.WithImage(img.ID), crabbox.WithTTL(30*time.Minute))
	if err != nil {
		t.Fatalf("candidate Warmup: %v", err)
	}
	rep, err := crabbox.Smoke(ctx, cand, append(crabbox.CandidateSmoke(crabbox.CheckSetOptions{Tools: []string{"git"}}),
		crabbox.CommandExists("crabbox-hello", "git"),
		crabbox.CommandSucceeds("baked tool runs", "crabbox-hello", crabbox.OutputContains("baked")),
	))
	if err != nil {
		t.Fatalf("candidate smoke: %v (%+v)", err, rep)
	}
	if err := cand.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Promote(ctx, img.ID); !errors.Is(err, crabbox.ErrNoProof) {
		t.Errorf("Promote without proof = %v, want ErrNoProof", err)
	}
	if _, err := c.Promote(ctx, img.ID, crabbox.WithProof(rep)); err != nil {
		t.Fatalf("Promote: %v", err)
	}
	if got, err := e.d.GetImage(ctx, img.ID); err != nil || !got.Protected {
		t.Errorf("promoted image protected = %v, %v; want deregistration protection", got != nil && got.Protected, err)
	}
	p, err := e.ssm.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(awsec2.DefaultSSMPrefix + crabbox.DefaultChannel)})
	if err != nil || aws.ToString(p.Parameter.Value) != img.ID {
		t.Fatalf("SSM channel = %v, %v; want %s", p, err, img.ID)
	}

	// A normal lease boots the promoted image.
	norm, err := c.Warmup(ctx, crabbox.WithTTL(30*time.Minute))
	if err != nil {
		t.Fatalf("normal Warmup: %v", err)
	}
	if norm.ImageID != img.ID {
		t.Errorf("normal lease booted %s (%s), want promoted %s", norm.ImageID, norm.ImageSource, img.ID)
	}
	repN, err := crabbox.Smoke(ctx, norm, append(crabbox.PromotedSmoke(crabbox.CheckSetOptions{Tools: []string{}}),
		crabbox.CommandSucceeds("promoted image has the baked tool", "crabbox-hello", crabbox.OutputContains("baked")),
	))
	if err != nil {
		t.Fatalf("promoted smoke: %v", err)
	}
	// The promoted image proved itself on a normal lease: known-good.
	if _, err := c.MarkKnownGood(ctx, img.ID, repN); err != nil {
		t.Fatalf("MarkKnownGood: %v", err)
	}
	// ... and the SSM parameter version is labelled known-good too.
	if kg, err := e.d.KnownGoodVersion(ctx, crabbox.DefaultChannel); err != nil || kg.ImageID != img.ID {
		t.Errorf("SSM known-good version = %+v, %v; want %s", kg, err, img.ID)
	}

	// A second image from the normal lease, promoted, then rolled back.
	img2, err := c.CreateImage(ctx, norm.ID, imageName(t, "linux2", now), crabbox.WithWait(time.Minute))
	if err != nil {
		t.Fatalf("second CreateImage: %v", err)
	}
	if err := norm.Release(ctx); err != nil {
		t.Fatal(err)
	}
	c2, err := c.Warmup(ctx, crabbox.WithImage(img2.ID), crabbox.WithTTL(30*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	rep2, err := crabbox.Smoke(ctx, c2, crabbox.CandidateSmoke(crabbox.CheckSetOptions{Tools: []string{"crabbox-hello"}}))
	if err != nil {
		t.Fatal(err)
	}
	_ = c2.Release(ctx)
	if _, err := c.Promote(ctx, img2.ID, crabbox.WithProof(rep2)); err != nil {
		t.Fatalf("second Promote: %v", err)
	}
	rb, err := c.Rollback(ctx, crabbox.DefaultChannel, "e2e: QA lane failed")
	if err != nil {
		t.Fatalf("Rollback: %v", err)
	}
	cur, err := e.d.CurrentChannel(ctx, crabbox.DefaultChannel)
	if err != nil || cur.ImageID != img.ID {
		t.Errorf("after rollback channel = %+v, %v (rollback %+v); want %s", cur, err, rb, img.ID)
	}
	hist, _ := e.d.ChannelHistory(ctx, crabbox.DefaultChannel)
	if len(hist) != 3 {
		t.Errorf("channel history = %+v, want promote, promote, rollback", hist)
	}

	plan, err := c.PlanCleanup(ctx, crabbox.CleanupPolicy{})
	if err != nil {
		t.Fatalf("PlanCleanup: %v", err)
	}
	for _, it := range plan.Items {
		if it.Image != nil && it.Image.ID == img.ID && it.Action == "delete" {
			t.Errorf("cleanup plan deletes the promoted image: %+v", it)
		}
	}

	// Leave moto clean: lift protection and delete both images.
	for _, id := range []string{img.ID, img2.ID} {
		if err := e.d.ProtectImage(ctx, id, false); err != nil {
			t.Fatal(err)
		}
		if err := e.d.DeleteImage(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	_ = e.d.DeleteChannel(ctx, crabbox.DefaultChannel)
	e.expectClean()
}

// Cancelling Warmup at each EC2 call (the call reaches moto, then the
// context ends) leaves no instance, key pair or extra SSH rule in moto.
func TestWarmupCancelledAtEveryStepLeavesNothing(t *testing.T) {
	steps := []string{"DescribeImages", "DescribeSecurityGroups", "AuthorizeSecurityGroupIngress", "ImportKeyPair",
		"RunInstances", "DescribeInstances", "CreateTags"}
	for _, step := range steps {
		t.Run(step, func(t *testing.T) {
			e := newEnv(t)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			hit := false
			e.build(&hookTransport{base: e.faults, after: func(action string) error {
				if action == step && !hit {
					hit = true
					cancel()
					return context.Canceled
				}
				return nil
			}})
			c, _ := newClient(t, e)
			l, err := c.Warmup(ctx, crabbox.WithTTL(time.Hour))
			if !hit {
				if err == nil {
					_ = l.Release(context.Background())
				}
				// A step list that no longer matches what Warmup does
				// tests nothing: fail where the suite must be complete.
				if os.Getenv("CI") == "true" {
					t.Fatalf("Warmup made no %s call (CI=true: update the step list)", step)
				}
				t.Skipf("Warmup made no %s call", step)
			}
			if err == nil {
				_ = l.Release(context.Background())
				t.Fatalf("Warmup succeeded after cancellation at %s", step)
			}
			if !errors.Is(err, context.Canceled) {
				t.Errorf("err = %v, want context.Canceled", err)
			}
			e.expectClean()
			if rules := e.sshRules(); len(rules) > 1 {
				t.Errorf("SSH rules = %v", rules)
			}
		})
	}
}

// A candidate whose image fails is reported with the reason and refused for
// promotion.
func TestFailedImageIsNotPromoted(t *testing.T) {
	e := newEnv(t)
	c, _ := newClient(t, e)
	ctx := t.Context()
	src, err := c.Warmup(ctx, crabbox.WithTTL(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Release(context.Background())
	tagFailed(t, e, src.MachineID, "EBS snapshot failed")
	img, err := c.CreateImage(ctx, src.ID, imageName(t, "broken", time.Now()), crabbox.WithWait(time.Minute))
	if !errors.Is(err, crabbox.ErrImageFailed) || !strings.Contains(err.Error(), "EBS snapshot failed") {
		t.Fatalf("CreateImage of a failing image = %v, %v; want ErrImageFailed with the reason", img, err)
	}
	imgs, _ := e.d.ListImages(ctx, nil)
	for _, im := range imgs {
		if _, err := c.Promote(ctx, im.ID, crabbox.Force("test")); err == nil {
			t.Errorf("failed image %s was promoted", im.ID)
		}
		_ = e.d.DeleteImage(ctx, im.ID)
	}
	if err := src.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.CurrentChannel(ctx, crabbox.DefaultChannel); !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("channel set after a failed image: %v", err)
	}
	e.expectClean()
}

// Throttling injected in front of moto, on calls that did reach it (lost
// responses), is retried by the SDK's client without duplicating the
// instance, the key pair or the image.
func TestThrottlingIsRetriedWithoutDuplicates(t *testing.T) {
	e := newEnv(t)
	c, _ := newClient(t, e)
	ctx := t.Context()
	for _, a := range []string{"ImportKeyPair", "RunInstances", "DescribeInstances", "CreateTags", "CreateImage", "DescribeImages"} {
		e.faults.Add(moto.Fault{Action: a, Times: 1, After: true})
	}
	l, err := c.Warmup(ctx, crabbox.WithTTL(time.Hour))
	if err != nil {
		t.Fatalf("Warmup under throttling: %v", err)
	}
	img, err := c.CreateImage(ctx, l.ID, imageName(t, "throttled", time.Now()), crabbox.WithWait(time.Minute))
	if err != nil {
		t.Fatalf("CreateImage under throttling: %v", err)
	}
	for _, a := range []string{"ImportKeyPair", "RunInstances", "CreateImage"} {
		if e.faults.Injected(a) != 1 {
			t.Errorf("%s: %d faults injected, want 1", a, e.faults.Injected(a))
		}
	}
	if n := countInstances(t, e, l.ID); n != 1 {
		t.Errorf("%d instances for the lease, want 1", n)
	}
	imgs, err := e.d.ListImages(ctx, nil)
	if err != nil || len(imgs) != 1 || imgs[0].ID != img.ID {
		t.Errorf("images = %v, %v; want only %s", imgs, err, img.ID)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.d.DeleteImage(ctx, img.ID); err != nil {
		t.Fatal(err)
	}
	e.expectClean()
}

// Cancelling Client.CreateImage at its image calls (the call reaches moto,
// then the context ends) leaves nothing that was not returned: an image that
// exists comes back with the error, calling CreateImage again for the same
// lease and name adopts it, and deleting it leaves no snapshot. (The driver
// tags images and snapshots at creation; TestCreateImageCancelledAtEveryStep
// checks no CreateTags call is part of it.)
func TestClientCreateImageCancelledLeavesNothingUnreturned(t *testing.T) {
	steps := []struct {
		action string
		n      int
	}{
		{"DescribeImages", 1}, // the driver's token lookup
		{"CreateImage", 1},
		{"DescribeImages", 2}, // the driver's read-back
		{"DescribeImages", 3}, // the client's wait
	}
	for _, st := range steps {
		t.Run(st.action+"#"+string(rune('0'+st.n)), func(t *testing.T) {
			e := newEnv(t)
			c, _ := newClient(t, e)
			l, err := c.Warmup(t.Context(), crabbox.WithTTL(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			defer l.Release(context.Background())
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			fired := cancelAt(e, st.action, st.n, cancel)
			c2, _ := newClient(t, e) // a client on the driver that cancels
			name := imageName(t, "cancel", time.Now())
			img, err := c2.CreateImage(ctx, l.ID, name, crabbox.WithWait(time.Minute))
			if !*fired {
				t.Fatalf("Client.CreateImage made no call %s #%d", st.action, st.n)
			}
			if err == nil {
				t.Fatalf("CreateImage succeeded after cancellation: %+v", img)
			}
			if !errors.Is(err, context.Canceled) {
				t.Errorf("err = %v, want context.Canceled", err)
			}
			images, _ := ownedImages(t, e)
			switch {
			case len(images) > 1:
				t.Fatalf("images in moto = %v: a cancelled create made more than one", images)
			case len(images) == 1 && (img == nil || img.ID != images[0]):
				t.Fatalf("image %s exists but CreateImage returned %+v with %v: it would leak", images[0], img, err)
			case len(images) == 0 && img != nil && img.ID != "":
				t.Errorf("CreateImage returned %+v, which does not exist", img)
			}
			again, err := c.CreateImage(t.Context(), l.ID, name, crabbox.WithWait(time.Minute))
			if err != nil {
				t.Fatalf("CreateImage again: %v", err)
			}
			if img != nil && img.ID != "" && again.ID != img.ID {
				t.Errorf("CreateImage again made %s, want %s adopted", again.ID, img.ID)
			}
			if err := e.d.DeleteImage(t.Context(), again.ID); err != nil {
				t.Fatal(err)
			}
			if err := l.Release(t.Context()); err != nil {
				t.Fatal(err)
			}
			e.expectClean()
		})
	}
}
