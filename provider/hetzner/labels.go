// Label keys the driver writes, key checks, value sanitizing, the label prefix, selectors.

package hetzner

import (
	"maps"
	"regexp"
	"sort"
	"strings"

	"github.com/crabbox/crabbox-go/provider"
)

// Label keys the driver adds on top of the SDK's labels.
const (
	// LabelToken holds the idempotency token of the request that created a
	// server, SSH key or snapshot.
	LabelToken = "crabbox-token"
	// LabelKind tells the driver's own records apart: "lease-key" on lease
	// SSH keys, "channel-entry" on channel records.
	LabelKind = "crabbox-kind"

	labelManaged   = provider.LabelManaged
	labelCreatedBy = provider.LabelCreatedBy

	labelChannel   = "crabbox-chan"
	labelChVersion = "crabbox-chan-version"
	labelChImage   = "crabbox-chan-image"
	labelChBy      = "crabbox-chan-by"
	labelChAt      = "crabbox-chan-at"
	labelChProof   = "crabbox-chan-proof"

	kindLeaseKey     = "lease-key"
	kindChannelEntry = "channel-entry"
)

var labelKeyRe = regexp.MustCompile(`^([a-z0-9A-Z]((?:[\-_.]|[a-z0-9A-Z]){0,253}[a-z0-9A-Z])?/)?[a-z0-9A-Z]((?:[\-_.]|[a-z0-9A-Z]){0,61}[a-z0-9A-Z])?$`)

// SanitizeLabelValue maps v to a valid Hetzner label value: characters
// outside [-_.a-zA-Z0-9] become "-", the result is cut to 63 characters and
// trimmed to begin and end alphanumeric. It returns "" when nothing
// representable remains.
//
// Deprecated: use provider.SanitizeLabelValue, which gives the same results.
func SanitizeLabelValue(v string) string { return provider.SanitizeLabelValue(v) }

// ValidLabelKey reports whether k is a label key Hetzner accepts and does
// not reserve.
func ValidLabelKey(k string) bool {
	return labelKeyRe.MatchString(k) && !strings.HasPrefix(k, "hetzner.cloud/")
}

// rk maps an SDK label key to the key stored on Hetzner (with the label
// prefix, if one is configured).
func (d *Driver) rk(k string) string {
	if d.o.labelPrefix == "" {
		return k
	}
	return d.o.labelPrefix + "/" + k
}

// fromLabels converts Hetzner labels to SDK labels: with a label prefix,
// only prefixed labels are returned, without the prefix.
func (d *Driver) fromLabels(raw map[string]string) map[string]string {
	out := make(map[string]string, len(raw))
	if d.o.labelPrefix == "" {
		for k, v := range raw {
			out[k] = v
		}
		return out
	}
	p := d.o.labelPrefix + "/"
	for k, v := range raw {
		if strings.HasPrefix(k, p) {
			out[k[len(p):]] = v
		}
	}
	return out
}

// toLabels converts SDK labels to Hetzner labels: keys are checked (with
// the prefix), values sanitized. Empty values stay empty (Hetzner accepts
// them; the update helpers treat them as "remove").
func (d *Driver) toLabels(in map[string]string) (map[string]string, error) {
	out := make(map[string]string, len(in))
	for k, v := range in {
		if strings.Contains(k, "/") && d.o.labelPrefix != "" {
			return nil, provider.Errorf(provider.ErrInvalidArgument,
				"hetzner: label key %q has its own prefix, but the driver adds the prefix %q", k, d.o.labelPrefix)
		}
		rk := d.rk(k)
		if !ValidLabelKey(rk) {
			return nil, provider.Errorf(provider.ErrInvalidArgument,
				"hetzner: label key %q cannot be represented (an optional DNS prefix and \"/\" plus at most 63 characters of [-_.a-zA-Z0-9], alphanumeric at both ends)", k)
		}
		s := provider.SanitizeLabelValue(v)
		if s == "" && v != "" {
			return nil, provider.Errorf(provider.ErrInvalidArgument,
				"hetzner: label %s=%q has no representable characters ([-_.a-zA-Z0-9], alphanumeric at both ends)", k, v)
		}
		out[rk] = s
	}
	return out, nil
}

// mergeLabels applies update to cur: an empty value removes the key.
func mergeLabels(cur, update map[string]string) map[string]string {
	out := maps.Clone(cur)
	if out == nil {
		out = map[string]string{}
	}
	for k, v := range update {
		if v == "" {
			delete(out, k)
		} else {
			out[k] = v
		}
	}
	return out
}

// selector builds a label selector requiring every label (k=v, or k=""
// for empty values which Hetzner matches as "k=").
func (d *Driver) selector(labels map[string]string) (string, error) {
	l, err := d.toLabels(labels)
	if err != nil {
		return "", err
	}
	parts := make([]string, 0, len(l))
	for k, v := range l {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ","), nil
}

// ownedLabels converts the request's labels to Hetzner labels and adds the
// ownership labels and the idempotency token (sanitized), which it also
// returns ("" when the request has none).
func (d *Driver) ownedLabels(in map[string]string, reqToken string) (map[string]string, string, error) {
	labels, err := d.toLabels(in)
	if err != nil {
		return nil, "", err
	}
	labels[d.rk(labelManaged)] = "true"
	labels[d.rk(labelCreatedBy)] = provider.CreatedByValue
	if reqToken == "" {
		return labels, "", nil
	}
	token := provider.SanitizeLabelValue(reqToken)
	if token == "" {
		return nil, "", provider.Errorf(provider.ErrInvalidArgument, "hetzner: token %q has no representable characters", reqToken)
	}
	labels[d.rk(LabelToken)] = token
	return labels, token, nil
}
