// Proof: the records Smoke writes on the image a lease booted, the report
// digest and check fingerprints they hold, and how Promote and
// MarkKnownGood check a caller's report against them.

package crabbox

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

// Label keys of proof records on images. A record is the SDK's own
// statement, written by Smoke, of how a lease's smoke of the image ended;
// WithImageLabels refuses every "crabbox" key, so a caller of the SDK
// cannot write one (a principal allowed to tag images in the cloud can:
// see the threat model in docs/design.md).
const (
	// labelProofPrefix + lease id: the outcome of that lease's latest
	// smoke of the image.
	labelProofPrefix = "crabbox-proof-"
	// labelForced: time and reason of the last promotion without proof.
	labelForced = "crabbox-forced"
	// labelPromotedPrefix + channel: the version, the proof digest (or
	// "forced") and the time of the image's promotion to that channel.
	labelPromotedPrefix = "crabbox-promoted-"
	// maxProofRecords bounds the records kept on one image (AWS allows 50
	// tags per resource); Smoke drops the oldest beyond it.
	maxProofRecords = 8
	// proofRecordVersion starts every record value.
	proofRecordVersion = "v1"
)

// Fingerprint identifies what a check runs: the kind its constructor gave
// it and its script, expectations or parameters, never its title, its
// (exported, so changeable) Kind field, its timeout or retries. Checks
// built by the same constructor with the same arguments have the same
// fingerprint, and a check built by one constructor never has the
// fingerprint of another's. It is "" for an invalid or zero SmokeCheck.
func (c SmokeCheck) Fingerprint() string {
	if c.spec == "" || c.run == nil {
		return ""
	}
	sum := sha256.Sum256([]byte("crabbox-check\x00" + c.spec))
	return hex.EncodeToString(sum[:8])
}

// checkSpec encodes a constructor's kind and parameters injectively (each
// part prefixed by its length), so no choice of one constructor's
// arguments spells another's spec.
func checkSpec(kind string, params ...string) string {
	var b strings.Builder
	for _, p := range append([]string{kind}, params...) {
		fmt.Fprintf(&b, "%d:%s;", len(p), p)
	}
	return b.String()
}

// canonReport is the form of a report its digest is taken over: every
// field its JSON form carries, normalized the way a JSON round trip
// normalizes it (durations through float seconds, times in UTC, strings as
// valid UTF-8), so a report written with WriteJSON and read back elsewhere
// has the same digest and any edit changes it.
type canonReport struct {
	Version     string        `json:"v"`
	LeaseID     string        `json:"lease"`
	LeaseSlug   string        `json:"slug"`
	ImageID     string        `json:"image"`
	ImageSource string        `json:"source"`
	Provider    string        `json:"provider"`
	Started     string        `json:"started"`
	DurationNS  int64         `json:"duration"`
	Passed      int           `json:"passed"`
	Failed      int           `json:"failed"`
	Results     []canonResult `json:"results"`
}

type canonResult struct {
	Title       string   `json:"title"`
	Kind        string   `json:"kind"`
	Fingerprint string   `json:"fp"`
	Passed      bool     `json:"passed"`
	DurationNS  int64    `json:"duration"`
	Attempts    int      `json:"attempts"`
	ExitCode    int      `json:"exit"`
	Output      string   `json:"output"`
	Error       string   `json:"error"`
	Evidence    []string `json:"evidence"`
}

// jsonString is s as encoding/json decodes it after encoding it: every
// byte of an invalid UTF-8 sequence becomes U+FFFD.
func jsonString(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

func jsonDuration(d time.Duration) int64 { return int64(fromSeconds(seconds(d))) }

// Digest is the hex digest of the report's canonical form (every field its
// JSON form carries). Smoke records it on the image; Promote and
// MarkKnownGood accept a report only when its digest matches a passing
// record, so any edit to a report, including one made through its JSON,
// makes it fail as proof.
func (r *SmokeReport) Digest() string {
	if r == nil {
		return ""
	}
	cr := canonReport{Version: proofRecordVersion, LeaseID: jsonString(r.LeaseID), LeaseSlug: jsonString(r.LeaseSlug),
		ImageID: jsonString(r.ImageID), ImageSource: jsonString(string(r.ImageSource)), Provider: jsonString(r.Provider),
		Started: r.Started.UTC().Format(time.RFC3339Nano), DurationNS: jsonDuration(r.Duration),
		Passed: r.Passed, Failed: r.Failed, Results: make([]canonResult, len(r.Results))}
	for i, c := range r.Results {
		ev := make([]string, len(c.Evidence))
		for j, e := range c.Evidence {
			ev[j] = jsonString(e)
		}
		cr.Results[i] = canonResult{Title: jsonString(c.Title), Kind: jsonString(c.Kind), Fingerprint: jsonString(c.Fingerprint),
			Passed: c.Passed, DurationNS: jsonDuration(c.Duration), Attempts: c.Attempts, ExitCode: c.ExitCode,
			Output: jsonString(c.Output), Error: jsonString(c.Error), Evidence: ev}
	}
	data, err := json.Marshal(cr)
	if err != nil {
		return "" // cannot happen: only strings, numbers and bools
	}
	sum := sha256.Sum256(append([]byte("crabbox-report\x00"), data...))
	return hex.EncodeToString(sum[:10])
}

// CheckSetFingerprint identifies the set of checks the report ran,
// whatever their order.
func (r *SmokeReport) CheckSetFingerprint() string {
	if r == nil {
		return ""
	}
	fps := make([]string, len(r.Results))
	for i, c := range r.Results {
		fps[i] = c.Fingerprint
	}
	sort.Strings(fps)
	sum := sha256.Sum256([]byte("crabbox-check-set\x00" + strings.Join(fps, ",")))
	return hex.EncodeToString(sum[:4])
}

// ProofRecord is what Smoke recorded on an image about one lease's smoke of
// it: the lease, whether every check passed, the report's Digest and
// CheckSetFingerprint, how the lease chose the image (from the machine's
// own labels, not from the report) and when.
type ProofRecord struct {
	LeaseID     string      `json:"lease_id"`
	Passed      bool        `json:"passed"`
	Digest      string      `json:"digest"`
	CheckSet    string      `json:"check_set"`
	ImageSource ImageSource `json:"image_source"`
	// ChannelHash is channelHash of the channel a promoted lease booted
	// the image from ("" for other sources).
	ChannelHash string    `json:"channel_hash,omitempty"`
	At          time.Time `json:"at"`
}

var sourceCodes = map[ImageSource]string{ImageExplicit: "e", ImagePromoted: "p", ImageBase: "b"}

// channelHash is the short form of a channel name kept in proof records.
func channelHash(ch string) string {
	if ch == "" {
		return "0"
	}
	sum := sha256.Sum256([]byte("crabbox-channel\x00" + ch))
	return hex.EncodeToString(sum[:4])
}

// value encodes the record as one label value (at most 63 characters of
// [A-Za-z0-9.]): v1.<p|f>.<digest>.<check set>.<source>.<channel>.<time>.
func (p ProofRecord) value() string {
	verdict := "f"
	if p.Passed {
		verdict = "p"
	}
	src := sourceCodes[p.ImageSource]
	if src == "" {
		src = "x"
	}
	ch := p.ChannelHash
	if ch == "" {
		ch = "0"
	}
	return strings.Join([]string{proofRecordVersion, verdict, p.Digest, p.CheckSet, src, ch, formatLabelTime(p.At)}, ".")
}

// parseProofRecord reads a record label; ok is false for anything that is
// not a well-formed record.
func parseProofRecord(leaseID, v string) (ProofRecord, bool) {
	f := strings.Split(v, ".")
	if len(f) != 7 || f[0] != proofRecordVersion || (f[1] != "p" && f[1] != "f") || !isHex(f[2], 20) || !isHex(f[3], 8) {
		return ProofRecord{}, false
	}
	rec := ProofRecord{LeaseID: leaseID, Passed: f[1] == "p", Digest: f[2], CheckSet: f[3]}
	for s, code := range sourceCodes {
		if code == f[4] {
			rec.ImageSource = s
		}
	}
	if f[5] != "0" {
		if !isHex(f[5], 8) {
			return ProofRecord{}, false
		}
		rec.ChannelHash = f[5]
	}
	t, ok := parseLabelTime(f[6])
	if !ok {
		return ProofRecord{}, false
	}
	rec.At = t
	return rec, true
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// validRecordLeaseID reports whether id can name a proof record label:
// only what NewLeaseID makes, never a path or a key of another label.
func validRecordLeaseID(id string) bool { return ValidLeaseID(id) }

// proofRecords returns the well-formed proof records among an image's
// labels, newest first.
func proofRecords(labels map[string]string) []ProofRecord {
	var out []ProofRecord
	for k, v := range labels {
		id, ok := strings.CutPrefix(k, labelProofPrefix)
		if !ok || !validRecordLeaseID(id) {
			continue
		}
		if rec, ok := parseProofRecord(id, v); ok {
			out = append(out, rec)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].At.Equal(out[j].At) {
			return out[i].At.After(out[j].At)
		}
		return out[i].LeaseID < out[j].LeaseID
	})
	return out
}

// proofLabels are the label changes that record rec on an image carrying
// labels: rec's own label, and the removal of the oldest records beyond
// maxProofRecords.
func proofLabels(labels map[string]string, rec ProofRecord) map[string]string {
	out := map[string]string{labelProofPrefix + rec.LeaseID: rec.value()}
	var others []ProofRecord
	for _, r := range proofRecords(labels) {
		if r.LeaseID != rec.LeaseID {
			others = append(others, r)
		}
	}
	for i := maxProofRecords - 1; i < len(others); i++ {
		out[labelProofPrefix+others[i].LeaseID] = ""
	}
	return out
}

// consistent reports why a report's own fields contradict each other, or
// nil.
func (r *SmokeReport) consistent() error {
	passed, failed := 0, 0
	for _, c := range r.Results {
		if c.Passed {
			passed++
		} else {
			failed++
		}
	}
	if passed != r.Passed || failed != r.Failed {
		return fmt.Errorf("%w: the report's totals (%d passed, %d failed) contradict its %d results (%d passed, %d failed)",
			ErrNoProof, r.Passed, r.Failed, len(r.Results), passed, failed)
	}
	return nil
}
