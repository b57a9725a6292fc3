// The smoke report: SmokeReport and CheckResult, their JSON form, and JUnit XML.

package crabbox

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"strings"
	"time"
)

// SmokeReport is the outcome of Smoke: one result per check, in the order
// the checks were given, and totals. It is the proof Promote asks for: it
// passes (OK) and its ImageID names the image the smoked lease booted.
//
// In JSON, field names are snake_case and durations are float seconds
// ("duration_seconds"); times are RFC 3339. WriteJUnit writes JUnit XML.
type SmokeReport struct {
	LeaseID     string        `json:"lease_id"`
	LeaseSlug   string        `json:"lease_slug,omitempty"`
	ImageID     string        `json:"image_id"`
	ImageSource ImageSource   `json:"image_source,omitempty"`
	Provider    string        `json:"provider"`
	Started     time.Time     `json:"started"`
	Duration    time.Duration `json:"-"`
	Results     []CheckResult `json:"results"`
	Passed      int           `json:"passed"`
	Failed      int           `json:"failed"`
}

// CheckResult is the outcome of one check.
type CheckResult struct {
	Title string `json:"title"`
	Kind  string `json:"kind"`
	// Fingerprint identifies what the check ran (SmokeCheck.Fingerprint):
	// the proof policy matches required checks by it.
	Fingerprint string        `json:"fingerprint,omitempty"`
	Passed      bool          `json:"passed"`
	Duration    time.Duration `json:"-"`
	// Attempts is how many times the check ran (1 + retries used).
	Attempts int `json:"attempts"`
	// ExitCode of the last attempt's command; -1 when no command finished
	// (screenshot checks, transport errors, timeouts).
	ExitCode int `json:"exit_code"`
	// Output is the last attempt's stdout followed by its stderr, at most
	// the last 4 KiB.
	Output string `json:"output,omitempty"`
	// Error says why the check failed; empty when it passed.
	Error string `json:"error,omitempty"`
	// Evidence lists files kept as proof (screenshots written to the
	// directory given with WithEvidenceDir).
	Evidence []string `json:"evidence,omitempty"`
	// PNG is the last screenshot a screenshot check took (not in JSON).
	PNG []byte `json:"-"`
}

type reportJSON SmokeReport

type reportWire struct {
	*reportJSON
	DurationSeconds float64 `json:"duration_seconds"`
	OK              bool    `json:"ok"`
}

type resultJSON CheckResult

type resultWire struct {
	*resultJSON
	DurationSeconds float64 `json:"duration_seconds"`
}

func seconds(d time.Duration) float64 { return float64(d) / 1e9 }

func fromSeconds(s float64) time.Duration {
	if math.IsNaN(s) || math.IsInf(s, 0) || s < 0 {
		return 0
	}
	if s > float64(math.MaxInt64)/1e9 {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(math.Round(s * 1e9))
}

// MarshalJSON writes the report with durations as float seconds and an
// "ok" field equal to OK().
func (r SmokeReport) MarshalJSON() ([]byte, error) {
	rr := reportJSON(r)
	if rr.Results == nil {
		rr.Results = []CheckResult{}
	}
	return json.Marshal(reportWire{reportJSON: &rr, DurationSeconds: seconds(r.Duration), OK: r.OK()})
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (r *SmokeReport) UnmarshalJSON(data []byte) error {
	w := reportWire{reportJSON: (*reportJSON)(r)}
	if err := json.Unmarshal(data, &w); err != nil {
		return err
	}
	r.Duration = fromSeconds(w.DurationSeconds)
	return nil
}

// MarshalJSON writes the result with its duration as float seconds.
func (c CheckResult) MarshalJSON() ([]byte, error) {
	cc := resultJSON(c)
	return json.Marshal(resultWire{resultJSON: &cc, DurationSeconds: seconds(c.Duration)})
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (c *CheckResult) UnmarshalJSON(data []byte) error {
	w := resultWire{resultJSON: (*resultJSON)(c)}
	if err := json.Unmarshal(data, &w); err != nil {
		return err
	}
	c.Duration = fromSeconds(w.DurationSeconds)
	return nil
}

// OK reports whether the report has at least one check and every check
// passed.
func (r *SmokeReport) OK() bool {
	if r == nil || len(r.Results) == 0 {
		return false
	}
	for _, c := range r.Results {
		if !c.Passed {
			return false
		}
	}
	return true
}

// FailedChecks returns the titles of the checks that failed.
func (r *SmokeReport) FailedChecks() []string {
	if r == nil {
		return nil
	}
	var out []string
	for _, c := range r.Results {
		if !c.Passed {
			out = append(out, c.Title)
		}
	}
	return out
}

// WriteJSON writes the report as indented JSON.
func (r *SmokeReport) WriteJSON(w io.Writer) error {
	if r == nil {
		return fmt.Errorf("%w: nil report", ErrInvalidArgument)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// JUnit XML shapes (the common Jenkins/GitLab/Surefire schema).
type junitSuites struct {
	XMLName  xml.Name     `xml:"testsuites"`
	Name     string       `xml:"name,attr"`
	Tests    int          `xml:"tests,attr"`
	Failures int          `xml:"failures,attr"`
	Errors   int          `xml:"errors,attr"`
	Time     string       `xml:"time,attr"`
	Suites   []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name       string          `xml:"name,attr"`
	Tests      int             `xml:"tests,attr"`
	Failures   int             `xml:"failures,attr"`
	Errors     int             `xml:"errors,attr"`
	Skipped    int             `xml:"skipped,attr"`
	Time       string          `xml:"time,attr"`
	Timestamp  string          `xml:"timestamp,attr,omitempty"`
	Hostname   string          `xml:"hostname,attr,omitempty"`
	Properties []junitProperty `xml:"properties>property,omitempty"`
	Cases      []junitCase     `xml:"testcase"`
}

type junitProperty struct {
	Name  string `xml:"name,attr"`
	Value string `xml:"value,attr"`
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	Classname string        `xml:"classname,attr"`
	Time      string        `xml:"time,attr"`
	Failure   *junitFailure `xml:"failure,omitempty"`
	SystemOut string        `xml:"system-out,omitempty"`
}

type junitFailure struct {
	Message string `xml:"message,attr"`
	Type    string `xml:"type,attr"`
	Text    string `xml:",chardata"`
}

func junitTime(d time.Duration) string { return fmt.Sprintf("%.3f", d.Seconds()) }

// WriteJUnit writes the report as JUnit XML: a <testsuites> root holding
// one <testsuite> named after the lease, with a <testcase> per check
// (classname "crabbox.smoke.KIND"); a failed check has a <failure> whose
// message is the check's error and whose text is its output. Evidence files
// are listed in <system-out> as [[ATTACHMENT|path]] lines.
func (r *SmokeReport) WriteJUnit(w io.Writer) error {
	if r == nil {
		return fmt.Errorf("%w: nil report", ErrInvalidArgument)
	}
	name := "crabbox smoke"
	if r.LeaseID != "" {
		name += " " + r.LeaseID
		if r.LeaseSlug != "" {
			name += " (" + r.LeaseSlug + ")"
		}
	}
	suite := junitSuite{Name: name, Tests: len(r.Results), Failures: r.failedCount(), Time: junitTime(r.Duration),
		Hostname: r.LeaseID}
	if !r.Started.IsZero() {
		suite.Timestamp = r.Started.UTC().Format("2006-01-02T15:04:05")
	}
	for _, p := range []junitProperty{
		{"lease_id", r.LeaseID}, {"lease_slug", r.LeaseSlug}, {"image_id", r.ImageID},
		{"image_source", string(r.ImageSource)}, {"provider", r.Provider},
	} {
		if p.Value != "" {
			suite.Properties = append(suite.Properties, p)
		}
	}
	for _, c := range r.Results {
		kind := c.Kind
		if kind == "" {
			kind = "check"
		}
		tc := junitCase{Name: c.Title, Classname: "crabbox.smoke." + kind, Time: junitTime(c.Duration)}
		var out strings.Builder
		out.WriteString(c.Output)
		for _, e := range c.Evidence {
			if out.Len() > 0 && !strings.HasSuffix(out.String(), "\n") {
				out.WriteByte('\n')
			}
			out.WriteString("[[ATTACHMENT|" + e + "]]\n")
		}
		if !c.Passed {
			msg := c.Error
			if msg == "" {
				msg = "failed"
			}
			tc.Failure = &junitFailure{Message: msg, Type: kind, Text: c.Output}
		}
		tc.SystemOut = out.String()
		suite.Cases = append(suite.Cases, tc)
	}
	doc := junitSuites{Name: "crabbox smoke", Tests: suite.Tests, Failures: suite.Failures, Time: suite.Time,
		Suites: []junitSuite{suite}}
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return err
	}
	if err := enc.Close(); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}

func (r *SmokeReport) failedCount() int {
	n := 0
	for _, c := range r.Results {
		if !c.Passed {
			n++
		}
	}
	return n
}
