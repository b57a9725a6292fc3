// Names: lease ids and slugs, image names (OWNER-PRODUCT-PURPOSE-YYYYMMDD-HHMM)
// and the label time format.

package crabbox

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"regexp"
	"strconv"
	"time"

	"github.com/crabbox/crabbox-go/provider"
)

// Label keys the SDK puts on machines and images (the driver vocabulary of
// package provider, re-exported). Keys and values fit the strictest backend
// (Hetzner): values are sanitized to [A-Za-z0-9_.-], at most 63 characters,
// starting and ending alphanumeric.
const (
	LabelManaged     = provider.LabelManaged
	LabelCreatedBy   = provider.LabelCreatedBy
	LabelLease       = provider.LabelLease
	LabelSlug        = provider.LabelSlug
	LabelClass       = provider.LabelClass
	LabelOperator    = provider.LabelOperator
	LabelCreated     = provider.LabelCreated
	LabelTTL         = provider.LabelTTL
	LabelIdle        = provider.LabelIdle
	LabelExpires     = provider.LabelExpires
	LabelTouched     = provider.LabelTouched
	LabelDesktop     = provider.LabelDesktop
	LabelBrowser     = provider.LabelBrowser
	LabelImage       = provider.LabelImage
	LabelImageSource = provider.LabelImageSource
	LabelChannel     = provider.LabelChannel
	LabelState       = provider.LabelState
	LabelSourceLease = provider.LabelSourceLease
	LabelImageName   = provider.LabelImageName
	LabelOwner       = provider.LabelOwner
	LabelProduct     = provider.LabelProduct
	LabelPurpose     = provider.LabelPurpose
	LabelStatus      = provider.LabelStatus
	LabelStatusAt    = provider.LabelStatusAt
	LabelSmokeLease  = provider.LabelSmokeLease
)

// Image statuses recorded in LabelStatus.
const (
	StatusCandidate = "candidate"
	StatusKnownGood = "known-good"
	StatusFailed    = "failed"
)

const labelTimeLayout = "20060102T150405Z"

func formatLabelTime(t time.Time) string { return t.UTC().Format(labelTimeLayout) }

func parseLabelTime(s string) (time.Time, bool) {
	t, err := time.Parse(labelTimeLayout, s)
	return t, err == nil
}

// sanitizeLabelValue maps s to [A-Za-z0-9_.-], at most 63 characters,
// starting and ending alphanumeric; "" if nothing remains.
func sanitizeLabelValue(s string) string { return provider.SanitizeLabelValue(s) }

// Lease ids are "cbx_" followed by 12 lowercase hex digits.
var leaseIDRe = regexp.MustCompile(`^cbx_[0-9a-f]{12}$`)

// NewLeaseID returns a fresh lease id from crypto/rand.
func NewLeaseID() (string, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("crabbox: lease id: %w", err)
	}
	return "cbx_" + hex.EncodeToString(b[:]), nil
}

// ValidLeaseID reports whether s is a canonical lease id.
func ValidLeaseID(s string) bool { return leaseIDRe.MatchString(s) }

// ParseLeaseID validates a lease id and returns it.
func ParseLeaseID(s string) (string, error) {
	if !ValidLeaseID(s) {
		return "", fmt.Errorf("%w: lease id %q is not cbx_ followed by 12 lowercase hex digits", ErrInvalidArgument, s)
	}
	return s, nil
}

var slugAdjectives = []string{
	"amber", "brave", "briny", "calm", "clever", "coral", "crisp", "dapper",
	"eager", "fuzzy", "gentle", "glossy", "happy", "jolly", "keen", "lively",
	"lucky", "mellow", "misty", "nimble", "plucky", "quick", "rapid", "rosy",
	"salty", "sandy", "shiny", "snappy", "spry", "sunny", "swift", "tidal",
	"witty", "zesty", "bold", "bright", "cozy", "dusky", "frosty", "golden",
}

var slugCrustaceans = []string{
	"crab", "lobster", "shrimp", "prawn", "krill", "barnacle", "crayfish",
	"copepod", "isopod", "amphipod", "langoustine", "hermit", "fiddler",
	"mantis", "scampi", "yabby", "woodlouse", "seaslater", "spider-crab",
	"king-crab", "snow-crab", "coconut-crab", "ghost-crab", "pea-crab",
}

var slugRe = regexp.MustCompile(`^[a-z]+(-[a-z]+)+(-[0-9]+)?$`)

// LeaseSlug returns the friendly adjective-crustacean name derived from a
// lease id (FNV-1a of the id). It is stable: the same id always gives the
// same slug. Warmup adds a numeric suffix when a live lease already has it,
// and, when a concurrent Warmup took the same slug meanwhile, the lease that
// sees the clash after its machine exists moves to a slug still free.
func LeaseSlug(id string) string {
	h := fnv.New64a()
	h.Write([]byte(id))
	v := h.Sum64()
	adj := slugAdjectives[v%uint64(len(slugAdjectives))]
	noun := slugCrustaceans[(v/uint64(len(slugAdjectives)))%uint64(len(slugCrustaceans))]
	return adj + "-" + noun
}

// uniqueSlug returns base, or base-2, base-3, ... not in taken.
func uniqueSlug(base string, taken map[string]bool) string {
	if !taken[base] {
		return base
	}
	for i := 2; ; i++ {
		s := base + "-" + strconv.Itoa(i)
		if !taken[s] {
			return s
		}
	}
}

// ImageName is the runbook's image naming convention:
// OWNER-PRODUCT-PURPOSE-YYYYMMDD-HHMM, e.g.
// openclaw-crabbox-linux-desktop-browser-20260506-0235. Owner and product are
// single lowercase words; purpose may have several dash-separated words.
type ImageName struct {
	Owner   string
	Product string
	Purpose string
	Time    time.Time // UTC, minute precision
}

// MaxImageNameLen is the longest name the SDK accepts on any provider
// (Hetzner label values and descriptions: 63; AWS AMI names: 128).
const MaxImageNameLen = 63

var (
	nameWordRe    = regexp.MustCompile(`^[a-z0-9]+$`)
	namePurposeRe = regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`)
	imageNameRe   = regexp.MustCompile(`^([a-z0-9]+)-([a-z0-9]+)-([a-z0-9]+(?:-[a-z0-9]+)*)-([0-9]{8})-([0-9]{4})$`)
)

// NewImageName builds a name for the given parts at time t (UTC, truncated to
// the minute) and validates it.
func NewImageName(owner, product, purpose string, t time.Time) (ImageName, error) {
	n := ImageName{Owner: owner, Product: product, Purpose: purpose, Time: t.UTC().Truncate(time.Minute)}
	if err := n.Validate(); err != nil {
		return ImageName{}, err
	}
	return n, nil
}

// Validate checks the parts and the total length.
func (n ImageName) Validate() error {
	switch {
	case !nameWordRe.MatchString(n.Owner):
		return fmt.Errorf("%w: image name owner %q must be one lowercase word [a-z0-9]+", ErrInvalidArgument, n.Owner)
	case !nameWordRe.MatchString(n.Product):
		return fmt.Errorf("%w: image name product %q must be one lowercase word [a-z0-9]+", ErrInvalidArgument, n.Product)
	case !namePurposeRe.MatchString(n.Purpose):
		return fmt.Errorf("%w: image name purpose %q must be lowercase words joined by dashes", ErrInvalidArgument, n.Purpose)
	case n.Time.IsZero() || n.Time.Year() < 2000 || n.Time.Year() > 9999:
		return fmt.Errorf("%w: image name time %v out of range", ErrInvalidArgument, n.Time)
	}
	if l := len(n.String()); l > MaxImageNameLen {
		return fmt.Errorf("%w: image name %q is %d characters, the limit is %d", ErrInvalidArgument, n.String(), l, MaxImageNameLen)
	}
	return nil
}

// String formats the name.
func (n ImageName) String() string {
	return n.Owner + "-" + n.Product + "-" + n.Purpose + "-" + n.Time.UTC().Format("20060102-1504")
}

// ParseImageName parses and validates a name in the runbook's convention.
func ParseImageName(s string) (ImageName, error) {
	if len(s) > MaxImageNameLen {
		return ImageName{}, fmt.Errorf("%w: image name is %d characters, the limit is %d", ErrInvalidArgument, len(s), MaxImageNameLen)
	}
	m := imageNameRe.FindStringSubmatch(s)
	if m == nil {
		return ImageName{}, fmt.Errorf("%w: image name %q is not OWNER-PRODUCT-PURPOSE-YYYYMMDD-HHMM", ErrInvalidArgument, s)
	}
	t, err := time.Parse("20060102-1504", m[4]+"-"+m[5])
	if err != nil {
		return ImageName{}, fmt.Errorf("%w: image name %q has an invalid time: %v", ErrInvalidArgument, s, err)
	}
	n := ImageName{Owner: m[1], Product: m[2], Purpose: m[3], Time: t}
	if err := n.Validate(); err != nil {
		return ImageName{}, err
	}
	return n, nil
}
