// Recording a smoke's outcome on the image the lease's machine booted.

package crabbox

import (
	"context"
	"fmt"

	"github.com/crabbox/crabbox-go/provider"
)

// smokeSubject is what the cloud says about a smoked lease, read while its
// checks run: the machine's own labels and image, never the caller's
// Lease fields.
type smokeSubject struct {
	m   *provider.Machine
	err error
}

// readSmokeSubject starts reading the lease's machine; the result arrives
// on the returned channel. Nothing is read (nil channel) when the provider
// has no images, so there is nothing to record a proof on.
func (l *Lease) readSmokeSubject(ctx context.Context) <-chan smokeSubject {
	if l.c.caps.images == nil || l.machine == "" {
		return nil
	}
	ch := make(chan smokeSubject, 1)
	go func() {
		m, err := retry(ctx, l.c, "lease", func(ctx context.Context) (*provider.Machine, error) {
			return l.c.drv.GetMachine(ctx, l.machine)
		})
		ch <- smokeSubject{m: m, err: err}
	}()
	return ch
}

// recordProof writes rep's outcome as a ProofRecord on the image the
// lease's machine booted (see the proof labels in proof.go), after setting
// the report's lease, image and image source from the machine. A lease on
// a base image, or an image crabbox does not own, gets no record.
func (l *Lease) recordProof(ctx context.Context, sub smokeSubject, rep *SmokeReport) error {
	if sub.err != nil {
		return fmt.Errorf("reading the lease's machine to record the smoke: %w", sub.err)
	}
	m := sub.m
	lb := m.Labels
	leaseID := lb[LabelLease]
	if !validRecordLeaseID(leaseID) {
		return fmt.Errorf("%w: machine %s carries lease id %q", ErrInvalidArgument, m.ID, leaseID)
	}
	imageID := m.Image
	if imageID == "" {
		imageID = lb[LabelImage]
	}
	src := ImageSource(lb[LabelImageSource])
	rep.LeaseID, rep.ImageID, rep.ImageSource = leaseID, imageID, src
	if src == ImageBase || imageID == "" {
		return nil
	}
	im := l.c.caps.images
	img, err := l.c.getImage(ctx, im, imageID)
	if err != nil {
		return fmt.Errorf("reading image %s to record the smoke: %w", imageID, err)
	}
	if !ownedLabels(img.Labels) {
		return nil
	}
	rec := ProofRecord{LeaseID: leaseID, Passed: rep.OK() && rep.consistent() == nil, Digest: rep.Digest(),
		CheckSet: rep.CheckSetFingerprint(), ImageSource: src, At: l.c.o.now()}
	if src == ImagePromoted {
		rec.ChannelHash = channelHash(lb[LabelChannel])
	}
	lbl := proofLabels(img.Labels, rec)
	if err := retryErr(ctx, l.c, "image", func(ctx context.Context) error { return im.UpdateImageLabels(ctx, imageID, lbl) }); err != nil {
		return fmt.Errorf("recording the smoke on image %s: %w", imageID, err)
	}
	return nil
}
