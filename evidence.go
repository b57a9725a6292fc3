// Evidence: the proof and promotion records of an image, for auditors.

package crabbox

import (
	"context"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Evidence is what the provider holds about why an image was, or may be,
// promoted: the smoke records Smoke wrote on it, each promotion (from the
// channels' histories, with the proof it was based on) and the last forced
// promotion.
type Evidence struct {
	ImageID string `json:"image_id"`
	// Proofs are the smoke records on the image, newest first.
	Proofs []ProofRecord `json:"proofs"`
	// Promotions are the channel history entries that pointed at the
	// image, oldest first per channel.
	Promotions []PromotionRecord `json:"promotions"`
	// Forced is the time and reason of the last promotion without proof
	// ("" if none).
	Forced string `json:"forced,omitempty"`
}

// PromotionRecord is one channel version that pointed at the image.
type PromotionRecord struct {
	Channel  string    `json:"channel"`
	Version  int64     `json:"version"`
	At       time.Time `json:"at"`
	Operator string    `json:"operator,omitempty"`
	// Proof is "proof-<digest>" (the Digest of the report it was promoted
	// on, matching one of Proofs while that record is kept) or
	// "forced-<reason>".
	Proof string `json:"proof,omitempty"`
}

// Evidence returns the proof and promotion records of an image.
func (c *Client) Evidence(ctx context.Context, imageID string) (*Evidence, error) {
	ev, err := c.evidence(ctx, imageID)
	return ev, c.opErr("evidence", imageID, err)
}

func (c *Client) evidence(ctx context.Context, imageID string) (*Evidence, error) {
	im, err := c.images()
	if err != nil {
		return nil, err
	}
	p, err := c.getImage(ctx, im, imageID)
	if err != nil {
		return nil, err
	}
	ev := &Evidence{ImageID: imageID, Proofs: proofRecords(p.Labels), Promotions: []PromotionRecord{},
		Forced: p.Labels[labelForced]}
	if ev.Proofs == nil {
		ev.Proofs = []ProofRecord{}
	}
	var channels []string
	for k := range p.Labels {
		if ch, ok := strings.CutPrefix(k, labelPromotedPrefix); ok && validChannel(ch) == nil {
			channels = append(channels, ch)
		}
	}
	sort.Strings(channels)
	chs := c.caps.channels
	for _, ch := range channels {
		found := false
		if chs != nil {
			hist, err := c.channelHistory(ctx, chs, ch)
			if err != nil {
				return nil, err
			}
			for _, e := range hist {
				if e.ImageID == imageID {
					found = true
					ev.Promotions = append(ev.Promotions, PromotionRecord{Channel: ch, Version: e.Version, At: e.At,
						Operator: e.Operator, Proof: e.Proof})
				}
			}
		}
		if !found {
			// The history no longer has it (trimmed, or the channel was
			// deleted): the image's own label still says so.
			if r, ok := parsePromotedLabel(ch, p.Labels[labelPromotedPrefix+ch]); ok {
				ev.Promotions = append(ev.Promotions, r)
			}
		}
	}
	return ev, nil
}

// parsePromotedLabel reads "<version>.<time>.<proof>" (see setChannel).
func parsePromotedLabel(ch, v string) (PromotionRecord, bool) {
	f := strings.SplitN(v, ".", 3)
	if len(f) < 2 {
		return PromotionRecord{}, false
	}
	n, err := strconv.ParseInt(f[0], 10, 64)
	t, ok := parseLabelTime(f[1])
	if err != nil || !ok {
		return PromotionRecord{}, false
	}
	r := PromotionRecord{Channel: ch, Version: n, At: t}
	if len(f) == 3 {
		r.Proof = f[2]
	}
	return r, true
}
