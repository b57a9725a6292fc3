// The driver vocabulary: the words the root package and every driver share
// (lease classes, architectures, managed-label keys, the label-value
// sanitizer and the HTTP-status classifier), defined once here. The root
// package re-exports what users need (crabbox.ClassStandard is
// provider.ClassStandard, crabbox.LabelManaged is provider.LabelManaged).

package provider

import (
	"fmt"
	"slices"
	"strings"
)

// Lease classes. Each driver maps a class and an architecture to an ordered
// fallback list of machine types (Driver.MachineTypes).
const (
	ClassTiny     = "tiny"
	ClassSmall    = "small"
	ClassStandard = "standard"
	ClassFast     = "fast"
	ClassLarge    = "large"
	ClassBeast    = "beast"
)

var classes = []string{ClassTiny, ClassSmall, ClassStandard, ClassFast, ClassLarge, ClassBeast}

// Classes lists the lease classes, smallest first (a fresh copy).
func Classes() []string { return slices.Clone(classes) }

// ValidClass reports whether class is one of Classes.
func ValidClass(class string) bool { return slices.Contains(classes, class) }

// CheckMachineTypes validates a driver's WithMachineTypes(class, arch,
// types...) option the same way in every driver: a known class and
// architecture and at least one type, none blank. The error says what is
// wrong; drivers wrap it with ErrInvalidArgument.
func CheckMachineTypes(class, arch string, types []string) error {
	switch {
	case !ValidClass(class):
		return fmt.Errorf("machine types for unknown class %q (want one of %s)", class, strings.Join(classes, ", "))
	case !ValidArch(arch):
		return fmt.Errorf("machine types for unknown architecture %q (want %s)", arch, strings.Join(arches, " or "))
	case len(types) == 0:
		return fmt.Errorf("no machine types for %s/%s", class, arch)
	}
	for _, t := range types {
		if strings.TrimSpace(t) == "" {
			return fmt.Errorf("blank machine type for %s/%s", class, arch)
		}
	}
	return nil
}

// Architectures a lease or image can have.
const (
	ArchAMD64 = "amd64"
	ArchARM64 = "arm64"
)

// DefaultArch is the architecture of a lease that names none.
const DefaultArch = ArchAMD64

var arches = []string{ArchAMD64, ArchARM64}

// Arches lists the architectures (a fresh copy).
func Arches() []string { return slices.Clone(arches) }

// ValidArch reports whether arch is one of Arches.
func ValidArch(arch string) bool { return slices.Contains(arches, arch) }

// Label keys the SDK puts on machines and images, and that drivers read back
// (for ownership, tokens, listing). Keys and values fit the strictest backend
// (Hetzner): values are sanitized to [A-Za-z0-9_.-], at most 63 characters,
// starting and ending alphanumeric (SanitizeLabelValue).
const (
	LabelManaged     = "crabbox"          // "true" on everything crabbox created
	LabelCreatedBy   = "created-by"       // CreatedByValue
	LabelLease       = "crabbox-lease"    // lease id
	LabelSlug        = "crabbox-slug"     // lease slug
	LabelClass       = "crabbox-class"    // lease class
	LabelOperator    = "crabbox-operator" // operator name
	LabelCreated     = "crabbox-created"  // compact UTC time (20060102T150405Z)
	LabelTTL         = "crabbox-ttl"      // seconds
	LabelIdle        = "crabbox-idle-timeout"
	LabelExpires     = "crabbox-expires"   // compact UTC time
	LabelTouched     = "crabbox-touched"   // compact UTC time
	LabelDesktop     = "crabbox-desktop"   // "true"/"false"
	LabelBrowser     = "crabbox-browser"   // "true"/"false"
	LabelImage       = "crabbox-image"     // image id the lease booted
	LabelImageSource = "crabbox-image-src" // explicit|promoted|base
	LabelChannel     = "crabbox-channel"   // channel the lease resolved
	LabelState       = "crabbox-state"     // lease state: creating|ready|failed
	LabelReadyBy     = "crabbox-ready-by"  // compact UTC time a creating lease's Warmup gives up by (Reap releases it a grace later)

	LabelSourceLease = "crabbox-source-lease" // on images: lease the image was made from
	LabelImageName   = "crabbox-image-name"   // on images: the image name
	LabelOwner       = "crabbox-owner"        // name part
	LabelProduct     = "crabbox-product"      // name part
	LabelPurpose     = "crabbox-purpose"      // name part
	LabelStatus      = "crabbox-status"       // candidate|known-good|failed
	LabelStatusAt    = "crabbox-status-at"    // compact UTC time of the last status change
	LabelSmokeLease  = "crabbox-smoke-lease"  // lease whose smoke proved the image
)

// CreatedByValue is the value of LabelCreatedBy on what crabbox created.
const CreatedByValue = "crabbox"

// MaxLabelValueLen is the longest label value every backend accepts.
const MaxLabelValueLen = 63

// SanitizeLabelValue maps v to a label value every backend accepts:
// characters outside [-_.a-zA-Z0-9] become "-", the result is cut to
// MaxLabelValueLen characters and trimmed to begin and end alphanumeric. It
// returns "" when nothing representable remains. A value that is already
// valid comes back unchanged.
func SanitizeLabelValue(v string) string {
	var b strings.Builder
	for _, r := range v {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	s := b.String()
	if len(s) > MaxLabelValueLen {
		s = s[:MaxLabelValueLen]
	}
	return strings.Trim(s, "-_.")
}

// ClassifyHTTPStatus maps an HTTP status of a failed API response to its
// portable code, for drivers whose backend gives no finer error code: 404
// ErrNotFound, 409 and 423 ErrConflict, 429 ErrThrottled, 401 and 403
// ErrPermission, other 4xx ErrInvalidArgument, 5xx (and anything else)
// ErrUnavailable.
func ClassifyHTTPStatus(status int) error {
	switch {
	case status == 404:
		return ErrNotFound
	case status == 409 || status == 423:
		return ErrConflict
	case status == 429:
		return ErrThrottled
	case status == 401 || status == 403:
		return ErrPermission
	case status >= 500:
		return ErrUnavailable
	case status >= 400:
		return ErrInvalidArgument
	}
	return ErrUnavailable
}
