package crabbox

// Tests of smoke_report.go: the JSON round trip, OK, JUnit XML.

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"reflect"
	"strings"
	"testing"
	"time"
)

func sampleReport() *SmokeReport {
	return &SmokeReport{
		LeaseID: "cbx_0123456789ab", LeaseSlug: "brisk-crab", ImageID: "ami-0abc", ImageSource: ImageExplicit,
		Provider: "aws", Started: time.Date(2026, 11, 28, 17, 0, 0, 123456789, time.UTC), Duration: 2345 * time.Millisecond,
		Results: []CheckResult{
			{Title: "command -v node", Kind: KindCommandExists, Passed: true, Duration: 41 * time.Millisecond, Attempts: 1,
				ExitCode: 0, Output: "/usr/bin/node\n"},
			{Title: "no credentials or tokens", Kind: KindHygiene, Passed: false, Duration: 1500 * time.Millisecond, Attempts: 2,
				ExitCode: 1, Output: "aws credentials: /home/crabbox/.aws/credentials\n\x1b[31mbell\x07 <&>\n",
				Error: `found state that must not be baked "into" an image <see output>`},
			{Title: "screenshot of display :99 is not blank", Kind: KindScreenshot, Passed: true, Duration: time.Second,
				Attempts: 1, ExitCode: -1, Output: "1280x800, 300 colours", Evidence: []string{"/tmp/ev/cbx-01-screenshot.png"}},
		},
		Passed: 2, Failed: 1,
	}
}

func TestReportJSONRoundTrip(t *testing.T) {
	r := sampleReport()
	var b bytes.Buffer
	if err := r.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(b.Bytes(), &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"lease_id", "lease_slug", "image_id", "image_source", "provider", "started",
		"duration_seconds", "results", "passed", "failed", "ok"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("JSON lacks %q: %s", k, b.String())
		}
	}
	if raw["duration_seconds"].(float64) != 2.345 || raw["ok"].(bool) {
		t.Errorf("duration/ok: %v %v", raw["duration_seconds"], raw["ok"])
	}
	res := raw["results"].([]any)[0].(map[string]any)
	for _, k := range []string{"title", "kind", "passed", "duration_seconds", "attempts", "exit_code", "output"} {
		if _, ok := res[k]; !ok {
			t.Errorf("result JSON lacks %q", k)
		}
	}
	if _, ok := res["PNG"]; ok {
		t.Errorf("PNG bytes leaked into JSON")
	}
	var back SmokeReport
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&back, r) {
		t.Fatalf("round trip differs:\n got %+v\nwant %+v", back, *r)
	}
	// An empty report still has a results array.
	var e bytes.Buffer
	if err := (&SmokeReport{}).WriteJSON(&e); err != nil || !strings.Contains(e.String(), `"results": []`) {
		t.Fatalf("empty report: %v %s", err, e.String())
	}
}

func TestReportOK(t *testing.T) {
	r := sampleReport()
	if r.OK() {
		t.Fatal("report with a failure is OK")
	}
	if got := r.FailedChecks(); len(got) != 1 || got[0] != "no credentials or tokens" {
		t.Fatalf("failed checks %v", got)
	}
	r.Results[1].Passed = true
	if !r.OK() {
		t.Fatal("all passed but not OK")
	}
	if (&SmokeReport{}).OK() || (*SmokeReport)(nil).OK() {
		t.Fatal("empty or nil report is OK")
	}
}

type junitDoc struct {
	XMLName  xml.Name `xml:"testsuites"`
	Tests    int      `xml:"tests,attr"`
	Failures int      `xml:"failures,attr"`
	Suites   []struct {
		Name       string  `xml:"name,attr"`
		Tests      int     `xml:"tests,attr"`
		Failures   int     `xml:"failures,attr"`
		Errors     int     `xml:"errors,attr"`
		Time       float64 `xml:"time,attr"`
		Timestamp  string  `xml:"timestamp,attr"`
		Properties []struct {
			Name  string `xml:"name,attr"`
			Value string `xml:"value,attr"`
		} `xml:"properties>property"`
		Cases []struct {
			Name      string  `xml:"name,attr"`
			Classname string  `xml:"classname,attr"`
			Time      float64 `xml:"time,attr"`
			Failure   *struct {
				Message string `xml:"message,attr"`
				Type    string `xml:"type,attr"`
				Text    string `xml:",chardata"`
			} `xml:"failure"`
			SystemOut string `xml:"system-out"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

func TestReportJUnit(t *testing.T) {
	r := sampleReport()
	var b bytes.Buffer
	if err := r.WriteJUnit(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if !strings.HasPrefix(out, "<?xml") {
		t.Fatalf("no XML header")
	}
	var doc junitDoc
	dec := xml.NewDecoder(strings.NewReader(out))
	dec.Strict = true
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("JUnit does not parse: %v\n%s", err, out)
	}
	if doc.Tests != 3 || doc.Failures != 1 || len(doc.Suites) != 1 {
		t.Fatalf("totals %+v", doc)
	}
	s := doc.Suites[0]
	if s.Tests != 3 || s.Failures != 1 || s.Errors != 0 || s.Time != 2.345 || len(s.Cases) != 3 ||
		!strings.Contains(s.Name, "cbx_0123456789ab") || s.Timestamp != "2026-11-28T17:00:00" {
		t.Fatalf("suite %+v", s)
	}
	props := map[string]string{}
	for _, p := range s.Properties {
		props[p.Name] = p.Value
	}
	if props["image_id"] != "ami-0abc" || props["image_source"] != "explicit" || props["provider"] != "aws" {
		t.Fatalf("properties %v", props)
	}
	c0, c1, c2 := s.Cases[0], s.Cases[1], s.Cases[2]
	if c0.Name != "command -v node" || c0.Classname != "crabbox.smoke.command-exists" || c0.Failure != nil || c0.Time != 0.041 {
		t.Fatalf("case 0 %+v", c0)
	}
	if c1.Failure == nil || c1.Failure.Message != r.Results[1].Error || c1.Failure.Type != KindHygiene ||
		!strings.Contains(c1.Failure.Text, "/home/crabbox/.aws/credentials") || !strings.Contains(c1.Failure.Text, "<&>") {
		t.Fatalf("case 1 %+v", c1)
	}
	if c2.Failure != nil || !strings.Contains(c2.SystemOut, "[[ATTACHMENT|/tmp/ev/cbx-01-screenshot.png]]") {
		t.Fatalf("case 2 %+v", c2)
	}
	// Counting the failure elements themselves agrees with the totals.
	if n := strings.Count(out, "<failure "); n != 1 {
		t.Fatalf("%d failure elements", n)
	}
}
