// Labels and names: the managed labels put on everything the driver
// creates, and sanitizing of names and label values.

package refdriver

import (
	"maps"

	"github.com/crabbox/crabbox-go/provider"
)

// managedLabels returns labels with every value sanitized, plus
// provider.LabelManaged and provider.LabelCreatedBy, which mark what crabbox
// created (listings and sweeps only touch what carries them).
func managedLabels(labels map[string]string) map[string]string {
	out := make(map[string]string, len(labels)+2)
	for k, v := range labels {
		out[k] = provider.SanitizeLabelValue(v)
	}
	out[provider.LabelManaged] = "true"
	out[provider.LabelCreatedBy] = provider.CreatedByValue
	return out
}

// mergeLabels merges update into labels (sanitized); an empty value removes
// the label.
func mergeLabels(labels, update map[string]string) map[string]string {
	out := maps.Clone(labels)
	if out == nil {
		out = map[string]string{}
	}
	for k, v := range update {
		if v == "" {
			delete(out, k)
			continue
		}
		out[k] = provider.SanitizeLabelValue(v)
	}
	return out
}

// hasLabels reports whether have holds every label of want.
func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if g, ok := have[k]; !ok || g != v {
			return false
		}
	}
	return true
}

// sanitizeName maps a free-form name (lease slug, image name) to one the
// backend accepts, with fallback when nothing representable remains.
func sanitizeName(name, fallback string) string {
	if s := provider.SanitizeLabelValue(name); s != "" {
		return s
	}
	return fallback
}
