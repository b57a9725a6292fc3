package crabbox_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/crabboxtest"
	"github.com/crabbox/crabbox-go/internal/testenv/forge"
)

// smokeWith warms a lease on imageID and smokes it with checks; the report
// is returned whatever the outcome.
func smokeWith(t *testing.T, c *crabbox.Client, imageID string, checks []crabbox.SmokeCheck) *crabbox.SmokeReport {
	t.Helper()
	ctx := testCtx(t)
	opts := []crabbox.LeaseOption{crabbox.WithClass("small")}
	if imageID != "" {
		opts = append(opts, crabbox.WithImage(imageID))
	}
	l, err := c.Warmup(ctx, opts...)
	require.NoError(t, err)
	defer l.Release(ctx)
	rep, _ := crabbox.Smoke(ctx, l, checks)
	require.NotNil(t, rep)
	return rep
}

func candidateChecks() []crabbox.SmokeCheck {
	return crabbox.CandidateSmoke(crabbox.CheckSetOptions{Tools: []string{"sh"}})
}

// TestPromoteRefusesForgedReports tries every forgery of the issue (and a
// few more edits): none may move the channel or label the image.
func TestPromoteRefusesForgedReports(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	img := bake(t, ctx, c, "forged")
	other := bake(t, ctx, c, "other")
	pass := proveImage(t, ctx, c, img.ID)
	fail := smokeWith(t, c, img.ID, append(candidateChecks(), crabbox.CommandExists("definitely-not-installed-xyz")))
	require.False(t, fail.OK())
	otherPass := proveImage(t, ctx, c, other.ID)

	for _, fc := range forge.Candidates(img.ID, pass, fail, otherPass) {
		t.Run(fc.Name, func(t *testing.T) {
			pr, err := c.Promote(ctx, img.ID, crabbox.WithProof(fc.Report))
			require.ErrorIs(t, err, crabbox.ErrNoProof)
			assert.Nil(t, pr)
			_, err = c.Promoted(ctx, crabbox.DefaultChannel)
			assert.ErrorIs(t, err, crabbox.ErrNotFound, "the channel must not move")
			got, err := c.GetImage(ctx, img.ID)
			require.NoError(t, err)
			assert.Empty(t, got.Labels[crabbox.LabelSmokeLease], "the image must not be labelled with a proof")
		})
	}
	// The genuine report still promotes.
	_, err := c.Promote(ctx, img.ID, crabbox.WithProof(pass))
	require.NoError(t, err)
}

// TestReportFromAnotherProcessPromotes hands the report over as JSON to a
// second client with its own state dir, as a CI job that smokes and
// another that promotes would.
func TestReportFromAnotherProcessPromotes(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	img := bake(t, ctx, c, "handover")
	rep := proveImage(t, ctx, c, img.ID)
	var buf bytes.Buffer
	require.NoError(t, rep.WriteJSON(&buf))

	promoter := localClient(t, cloud, crabbox.WithOperator("release-bot"))
	var got crabbox.SmokeReport
	require.NoError(t, json.Unmarshal(buf.Bytes(), &got))
	assert.Equal(t, rep.Digest(), got.Digest(), "the JSON round trip keeps the digest")
	pr, err := promoter.Promote(ctx, img.ID, crabbox.WithProof(&got))
	require.NoError(t, err)
	assert.Equal(t, img.ID, pr.Image.ID)
	assert.Equal(t, "proof-"+rep.Digest(), pr.Proof)

	ev, err := promoter.Evidence(ctx, img.ID)
	require.NoError(t, err)
	require.Len(t, ev.Promotions, 1)
	assert.Equal(t, "proof-"+rep.Digest(), ev.Promotions[0].Proof, "the history entry names the proof")
	assert.Equal(t, crabbox.DefaultChannel, ev.Promotions[0].Channel)
	var found bool
	for _, p := range ev.Proofs {
		if p.LeaseID == rep.LeaseID {
			found = true
			assert.True(t, p.Passed)
			assert.Equal(t, rep.Digest(), p.Digest)
			assert.Equal(t, crabbox.ImageExplicit, p.ImageSource)
			assert.Equal(t, rep.CheckSetFingerprint(), p.CheckSet)
		}
	}
	assert.True(t, found, "Evidence lists the smoke record: %+v", ev.Proofs)
	hist, err := promoter.ChannelHistory(ctx, crabbox.DefaultChannel)
	require.NoError(t, err)
	assert.Equal(t, "proof-"+rep.Digest(), hist[len(hist)-1].Proof)
}

// TestPromoteNamesMissingRequiredChecks: a passing report Smoke recorded,
// but with one trivial check, is refused naming what the policy requires;
// the policy can be loosened explicitly, and tightened.
func TestPromoteNamesMissingRequiredChecks(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	img := bake(t, ctx, c, "trivial")
	trivial := smokeWith(t, c, img.ID, []crabbox.SmokeCheck{crabbox.CommandSucceeds("true", "true")})
	require.True(t, trivial.OK())

	_, err := c.Promote(ctx, img.ID, crabbox.WithProof(trivial))
	require.ErrorIs(t, err, crabbox.ErrNoProof)
	var mc *crabbox.MissingChecksError
	require.True(t, errors.As(err, &mc), "%v", err)
	for _, want := range []string{"no credentials or tokens", "test -d /work/crabbox", "echo image-smoke-ok"} {
		assert.Contains(t, mc.Missing, want)
		assert.Contains(t, err.Error(), want)
	}

	// A check titled like a required one but running something else does
	// not count: the policy matches what checks run.
	impostor := smokeWith(t, c, img.ID, []crabbox.SmokeCheck{
		crabbox.CommandSucceeds("no credentials or tokens", "true"),
		crabbox.CommandSucceeds("test -d /work/crabbox", "true"),
	})
	_, err = c.Promote(ctx, img.ID, crabbox.WithProof(impostor))
	require.True(t, errors.As(err, &mc), "%v", err)
	assert.Contains(t, mc.Missing, "no credentials or tokens")

	// Tightened: the runbook's tools on top of the default.
	full := proveImage(t, ctx, c, img.ID)
	_, err = c.Promote(ctx, img.ID, crabbox.WithProof(full),
		crabbox.WithProofPolicy(crabbox.RequireChecks(append(candidateChecks(), crabbox.CommandExists("node"))...)))
	require.True(t, errors.As(err, &mc), "%v", err)
	assert.Equal(t, []string{"command -v node"}, mc.Missing)

	// Loosened explicitly: any passing recorded report.
	_, err = c.Promote(ctx, img.ID, crabbox.WithProof(trivial), crabbox.WithProofPolicy(crabbox.RequireChecks()))
	require.NoError(t, err)
}

// TestMarkKnownGoodNeedsAPromotedLeaseRecord: a candidate's report, as it
// is or with its ImageSource edited, cannot mark an image known-good; a
// normal lease's report does.
func TestMarkKnownGoodNeedsAPromotedLeaseRecord(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	img := bake(t, ctx, c, "knowngood")
	cand := proveImage(t, ctx, c, img.ID)
	for _, fc := range forge.KnownGood(cand) {
		t.Run(fc.Name, func(t *testing.T) {
			_, err := c.MarkKnownGood(ctx, img.ID, fc.Report)
			require.ErrorIs(t, err, crabbox.ErrNoProof)
			got, err := c.GetImage(ctx, img.ID)
			require.NoError(t, err)
			assert.Equal(t, crabbox.StatusCandidate, got.Status)
		})
	}
	_, err := c.Promote(ctx, img.ID, crabbox.WithProof(cand))
	require.NoError(t, err)
	normal := proveNormal(t, ctx, c, img.ID)
	// Known-good on another channel than the one the lease booted from
	// is refused.
	_, err = c.MarkKnownGood(ctx, img.ID, normal, crabbox.WithPromoteChannel("beta"))
	require.ErrorIs(t, err, crabbox.ErrNoProof)
	got, err := c.MarkKnownGood(ctx, img.ID, normal)
	require.NoError(t, err)
	assert.Equal(t, crabbox.StatusKnownGood, got.Status)
}

// TestSmokeRecordsTheMachinesImage: the report's lease, image and source
// come from the machine, not from Lease fields a caller may overwrite.
func TestSmokeRecordsTheMachinesImage(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	img := bake(t, ctx, c, "truth")
	other := bake(t, ctx, c, "decoy")
	l, err := c.Warmup(ctx, crabbox.WithImage(img.ID), crabbox.WithClass("small"))
	require.NoError(t, err)
	defer l.Release(ctx)
	l.ImageID, l.ImageSource, l.MachineID = other.ID, crabbox.ImagePromoted, "m-elsewhere"
	rep, err := crabbox.Smoke(ctx, l, candidateChecks())
	require.NoError(t, err)
	assert.Equal(t, img.ID, rep.ImageID)
	assert.Equal(t, crabbox.ImageExplicit, rep.ImageSource)
	_, err = c.Promote(ctx, other.ID, crabbox.WithProof(rep))
	require.ErrorIs(t, err, crabbox.ErrNoProof)
	ev, err := c.Evidence(ctx, other.ID)
	require.NoError(t, err)
	assert.Empty(t, ev.Proofs, "nothing is recorded on the decoy image")
	_, err = c.Promote(ctx, img.ID, crabbox.WithProof(rep))
	require.NoError(t, err)
}

// TestForceIsRecorded: a forced promotion says so, with the reason, on the
// image and in the channel history.
func TestForceIsRecorded(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	img := bake(t, ctx, c, "forced")
	pr, err := c.Promote(ctx, img.ID, crabbox.Force("break glass: INC-42"))
	require.NoError(t, err)
	assert.Equal(t, "break glass: INC-42", pr.Forced)
	ev, err := c.Evidence(ctx, img.ID)
	require.NoError(t, err)
	assert.Contains(t, ev.Forced, "INC-42")
	require.Len(t, ev.Promotions, 1)
	assert.True(t, strings.HasPrefix(ev.Promotions[0].Proof, "forced-break-glass"), ev.Promotions[0].Proof)
	assert.Contains(t, ev.Promotions[0].Proof, "INC-42")
	assert.Equal(t, ev.Promotions[0].Proof, pr.Proof)
}

// TestResmokeSupersedesTheRecord: a lease's latest smoke is its record, so
// an earlier report of the same lease no longer proves anything.
func TestResmokeSupersedesTheRecord(t *testing.T) {
	cloud := crabboxtest.Start(t)
	c := localClient(t, cloud)
	ctx := testCtx(t)
	img := bake(t, ctx, c, "resmoke")
	l, err := c.Warmup(ctx, crabbox.WithImage(img.ID), crabbox.WithClass("small"))
	require.NoError(t, err)
	defer l.Release(ctx)
	first, err := crabbox.Smoke(ctx, l, candidateChecks())
	require.NoError(t, err)
	_, err = crabbox.Smoke(ctx, l, []crabbox.SmokeCheck{crabbox.CommandExists("definitely-not-installed-xyz")})
	require.ErrorIs(t, err, crabbox.ErrSmokeFailed)
	_, err = c.Promote(ctx, img.ID, crabbox.WithProof(first))
	require.ErrorIs(t, err, crabbox.ErrNoProof)
	assert.Contains(t, err.Error(), "smoked the image again")
}
