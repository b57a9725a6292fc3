// Ownership: a resource is crabbox's only when it carries both crabbox
// labels, crabbox=true and created-by=crabbox.

package crabbox

import "github.com/crabbox/crabbox-go/provider"

// ownedLabels reports whether labels mark a resource crabbox created: both
// LabelManaged=true and LabelCreatedBy=crabbox. One of the two alone (a
// resource another tool tagged, or copied tags) is foreign.
func ownedLabels(labels map[string]string) bool {
	return labels[LabelManaged] == "true" && labels[LabelCreatedBy] == provider.CreatedByValue
}
