// The proof policy (which checks a proof must include) and the check of a
// report against the records Smoke wrote on the image.

package crabbox

import (
	"fmt"
	"strings"
)

// ProofPurpose says what a proof is asked to show.
type ProofPurpose string

const (
	// ProofCandidate: Promote. The report must come from a lease that
	// booted the image explicitly (WithImage).
	ProofCandidate ProofPurpose = "candidate"
	// ProofKnownGood: MarkKnownGood. The report must come from a normal
	// lease that booted the image from the channel being marked.
	ProofKnownGood ProofPurpose = "known-good"
)

// ProofPolicy returns the checks a proof of img for purpose must include,
// passed. Required checks are matched by SmokeCheck.Fingerprint (what they
// run), so a check merely titled like a required one does not count.
type ProofPolicy func(img *Image, purpose ProofPurpose) []SmokeCheck

// DefaultProofPolicy is the runbook's rule. A candidate proof includes
// every check of CandidateSmoke that applies to any image of its kind: SSH
// readiness (echo image-smoke-ok), uname, the work root and the four
// do-not-bake hygiene checks, and for an image made from a desktop lease
// the desktop proof (with a browser: the browser check and
// BrowserRendersProofPage, and the recording). A known-good proof includes
// PromotedSmoke's readiness check and the same desktop proof. Tool checks
// are image-specific: require them with RequireChecks.
func DefaultProofPolicy(img *Image, purpose ProofPurpose) []SmokeCheck {
	o := CheckSetOptions{Tools: []string{}}
	if img != nil {
		o.Desktop, o.Browser = img.Desktop, img.Browser
	}
	if purpose == ProofKnownGood {
		return PromotedSmoke(o)
	}
	return CandidateSmoke(o)
}

// RequireChecks is a policy requiring exactly checks, whatever the image:
// pass the default's checks and more to tighten it, or fewer to loosen it
// explicitly. RequireChecks() accepts any passing report Smoke recorded on
// the image.
func RequireChecks(checks ...SmokeCheck) ProofPolicy {
	cs := append([]SmokeCheck(nil), checks...)
	return func(*Image, ProofPurpose) []SmokeCheck { return cs }
}

// WithProofPolicy replaces DefaultProofPolicy for this Promote or
// MarkKnownGood.
func WithProofPolicy(p ProofPolicy) PromoteOption {
	return func(o *promoteOptions) error {
		if p == nil {
			return fmt.Errorf("%w: nil proof policy", ErrInvalidArgument)
		}
		o.policy = p
		return nil
	}
}

// MissingChecksError is returned (matching ErrNoProof) when a report lacks
// checks the proof policy requires, or has them failed.
type MissingChecksError struct {
	ImageID string
	Purpose ProofPurpose
	Missing []string // titles of the required checks not passed
}

func (e *MissingChecksError) Error() string {
	return fmt.Sprintf("%v: a %s proof of %s must include, passed: %s", ErrNoProof, e.Purpose, e.ImageID,
		strings.Join(e.Missing, "; "))
}

// Is makes errors.Is(err, ErrNoProof) true.
func (e *MissingChecksError) Is(target error) bool { return target == ErrNoProof }

// verifyProof accepts r as proof of img for purpose (on channel, for
// known-good) only when r is consistent, passed, names img, and its digest
// matches a passing record Smoke wrote on img for r's lease, with the
// image source purpose asks for, and r includes every check policy
// requires. It returns the record.
func verifyProof(img *Image, r *SmokeReport, purpose ProofPurpose, channel string, policy ProofPolicy) (*ProofRecord, error) {
	if r == nil {
		return nil, fmt.Errorf("%w: give WithProof(report) from a lease booted from %s, or Force(reason)", ErrNoProof, img.ID)
	}
	if r.ImageID != img.ID {
		return nil, fmt.Errorf("%w: the report is from a lease booted from %q, not %s", ErrNoProof, r.ImageID, img.ID)
	}
	if err := r.consistent(); err != nil {
		return nil, err
	}
	if !r.OK() {
		return nil, fmt.Errorf("%w: the report of lease %s did not pass (%d failed): %w", ErrNoProof, r.LeaseID, r.Failed, ErrSmokeFailed)
	}
	if !validRecordLeaseID(r.LeaseID) {
		return nil, fmt.Errorf("%w: the report names lease %q, not a lease id", ErrNoProof, r.LeaseID)
	}
	v, ok := img.Labels[labelProofPrefix+r.LeaseID]
	if !ok {
		return nil, fmt.Errorf("%w: image %s holds no smoke record of lease %s: the report was not produced by Smoke on a lease that booted it",
			ErrNoProof, img.ID, r.LeaseID)
	}
	rec, ok := parseProofRecord(r.LeaseID, v)
	switch {
	case !ok:
		return nil, fmt.Errorf("%w: the smoke record of lease %s on image %s is malformed", ErrNoProof, r.LeaseID, img.ID)
	case rec.Digest != r.Digest():
		return nil, fmt.Errorf("%w: the report differs from what lease %s's smoke recorded on image %s (digest %s, recorded %s): it was edited, or the lease smoked the image again since",
			ErrNoProof, r.LeaseID, img.ID, r.Digest(), rec.Digest)
	case !rec.Passed:
		return nil, fmt.Errorf("%w: lease %s's recorded smoke of image %s failed: %w", ErrNoProof, r.LeaseID, img.ID, ErrSmokeFailed)
	case rec.CheckSet != r.CheckSetFingerprint():
		return nil, fmt.Errorf("%w: the report's check set differs from the recorded one", ErrNoProof)
	}
	switch purpose {
	case ProofKnownGood:
		if rec.ImageSource != ImagePromoted || rec.ChannelHash != channelHash(channel) {
			return nil, fmt.Errorf("%w: known-good needs a pass on a normal lease that booted %s from channel %s; lease %s booted it as %q",
				ErrNoProof, img.ID, channel, r.LeaseID, rec.ImageSource)
		}
	default:
		if rec.ImageSource != ImageExplicit {
			return nil, fmt.Errorf("%w: a candidate proof needs a lease that booted %s explicitly (WithImage); lease %s booted it as %q",
				ErrNoProof, img.ID, r.LeaseID, rec.ImageSource)
		}
	}
	if policy == nil {
		policy = DefaultProofPolicy
	}
	passed := map[string]bool{}
	for _, c := range r.Results {
		if c.Passed && c.Fingerprint != "" {
			passed[c.Fingerprint] = true
		}
	}
	var missing []string
	for _, c := range policy(img, purpose) {
		if fp := c.Fingerprint(); fp == "" || !passed[fp] {
			missing = append(missing, c.Title)
		}
	}
	if len(missing) > 0 {
		return nil, &MissingChecksError{ImageID: img.ID, Purpose: purpose, Missing: missing}
	}
	return &rec, nil
}

// proofName is how a promotion names what it was based on, in the
// channel's history and on the image: "proof-<digest>", or "forced-<reason>"
// (a rollback's is "forced-rollback-<reason>"), as a label value.
func (o promoteOptions) proofName() string {
	switch {
	case o.record != nil:
		return "proof-" + o.record.Digest
	case o.forceReason != "":
		return sanitizeLabelValue("forced-" + o.forceReason)
	}
	return ""
}
