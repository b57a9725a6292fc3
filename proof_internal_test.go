package crabbox

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/crabbox/crabbox-go/provider"
)

func proofSample() *SmokeReport {
	loc := time.FixedZone("X", 5*3600+1800)
	return &SmokeReport{LeaseID: "cbx_0123456789ab", LeaseSlug: "brave-crab", ImageID: "ami-1", ImageSource: ImageExplicit,
		Provider: "aws", Started: time.Date(2026, 12, 1, 10, 0, 0, 123456789, loc), Duration: 1234567891 * time.Nanosecond,
		Results: []CheckResult{
			{Title: "a", Kind: KindCommand, Fingerprint: "00112233aabbccdd", Passed: true, Duration: 987654321, Attempts: 1,
				Output: "ok \xff\xfe broken utf-8 \xe2\x82", Evidence: []string{"/tmp/x.png"}},
			{Title: "b", Kind: KindHygiene, Passed: true, Attempts: 2, ExitCode: 0, PNG: []byte{1, 2, 3}},
		}, Passed: 2}
}

// TestDigestSurvivesJSON: the digest of a report read back from its JSON
// equals the original's, also with invalid UTF-8 in outputs, odd
// durations and a time zone; any edit changes it.
func TestDigestSurvivesJSON(t *testing.T) {
	r := proofSample()
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back SmokeReport
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if r.Digest() != back.Digest() || len(r.Digest()) != 20 {
		t.Fatalf("digest %s after a JSON round trip is %s", r.Digest(), back.Digest())
	}
	back.Results[1].PNG = nil // not in JSON, not in the digest
	if r.Digest() != back.Digest() {
		t.Fatal("the PNG changed the digest")
	}
	edits := map[string]func(*SmokeReport){
		"lease":       func(r *SmokeReport) { r.LeaseID = "cbx_0123456789ac" },
		"image":       func(r *SmokeReport) { r.ImageID = "ami-2" },
		"source":      func(r *SmokeReport) { r.ImageSource = ImagePromoted },
		"started":     func(r *SmokeReport) { r.Started = r.Started.Add(time.Second) },
		"duration":    func(r *SmokeReport) { r.Duration += time.Millisecond },
		"passed":      func(r *SmokeReport) { r.Results[0].Passed = false },
		"fingerprint": func(r *SmokeReport) { r.Results[0].Fingerprint = "00112233aabbccde" },
		"output":      func(r *SmokeReport) { r.Results[0].Output += "." },
		"evidence":    func(r *SmokeReport) { r.Results[0].Evidence = nil },
		"attempts":    func(r *SmokeReport) { r.Results[1].Attempts = 1 },
		"totals":      func(r *SmokeReport) { r.Failed = 1 },
		"order":       func(r *SmokeReport) { r.Results[0], r.Results[1] = r.Results[1], r.Results[0] },
	}
	for name, edit := range edits {
		e := proofSample()
		edit(e)
		if e.Digest() == r.Digest() {
			t.Errorf("editing %s kept the digest", name)
		}
	}
}

// TestProofRecordLabel: a record fits one label value on every backend and
// reads back as written.
func TestProofRecordLabel(t *testing.T) {
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	for _, rec := range []ProofRecord{
		{LeaseID: "cbx_0123456789ab", Passed: true, Digest: "0123456789abcdef0123", CheckSet: "89abcdef", ImageSource: ImageExplicit, At: at},
		{LeaseID: "cbx_0123456789ab", Digest: "0123456789abcdef0123", CheckSet: "89abcdef", ImageSource: ImagePromoted,
			ChannelHash: channelHash("a-very-long-channel-name-of-forty-chars-x"), At: at},
	} {
		v := rec.value()
		if len(v) > provider.MaxLabelValueLen || sanitizeLabelValue(v) != v {
			t.Fatalf("record %q is not a label value", v)
		}
		got, ok := parseProofRecord(rec.LeaseID, v)
		if !ok || got != rec {
			t.Fatalf("parse(%q) = %+v, %v; want %+v", v, got, ok, rec)
		}
	}
	for _, bad := range []string{"", "v1.p", "v2.p.0123456789abcdef0123.89abcdef.e.0.20261201T100000Z",
		"v1.p.0123456789ABCDEF0123.89abcdef.e.0.20261201T100000Z", "v1.x.0123456789abcdef0123.89abcdef.e.0.20261201T100000Z",
		"v1.p.0123456789abcdef0123.89abcdef.e.0.yesterday"} {
		if _, ok := parseProofRecord("cbx_0123456789ab", bad); ok {
			t.Errorf("parsed malformed record %q", bad)
		}
	}
}

// TestProofLabelsKeepTheNewest: beyond maxProofRecords, the oldest records
// of other leases are removed; the lease's own record is replaced.
func TestProofLabelsKeepTheNewest(t *testing.T) {
	labels := map[string]string{"crabbox": "true"}
	base := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i < maxProofRecords+2; i++ {
		id := fmt.Sprintf("cbx_%012d", i)
		rec := ProofRecord{LeaseID: id, Passed: true, Digest: "0123456789abcdef0123", CheckSet: "89abcdef",
			ImageSource: ImageExplicit, At: base.Add(time.Duration(i) * time.Minute)}
		for k, v := range proofLabels(labels, rec) {
			if v == "" {
				delete(labels, k)
			} else {
				labels[k] = v
			}
		}
	}
	recs := proofRecords(labels)
	if len(recs) != maxProofRecords || recs[0].LeaseID != fmt.Sprintf("cbx_%012d", maxProofRecords+1) ||
		recs[len(recs)-1].LeaseID != "cbx_000000000002" {
		t.Fatalf("kept %+v", recs)
	}
	if labels["crabbox"] != "true" {
		t.Fatal("an unrelated label was touched")
	}
}

// TestFingerprintsCannotBeSpelled: a check built by one constructor never
// has another's fingerprint, whatever its arguments and Kind field (the
// forgeries an independent review found: a command named like a desktop
// check's parameter with its Kind changed, and a NUL spelling an
// expectation).
func TestFingerprintsCannotBeSpelled(t *testing.T) {
	required := map[string]SmokeCheck{
		"proof page": BrowserRendersProofPage(), "recording": RecordingNotEmpty(3 * time.Second),
		"screenshot": ScreenshotNotBlank(), "browser window": BrowserWindowVisible("http://127.0.0.1/"),
		"readiness": CommandSucceeds("echo image-smoke-ok", "echo image-smoke-ok", OutputContains("image-smoke-ok")),
	}
	forged := []SmokeCheck{
		CommandSucceeds("browser renders the desktop proof page", "proof page v1"),
		CommandSucceeds("", "v1"), CommandSucceeds("", "3s"), CommandSucceeds("", "screenshot not blank"),
		CommandSucceeds("", "http://127.0.0.1/"),
		CommandSucceeds("", "echo image-smoke-ok\x00output contains \"image-smoke-ok\""),
		CommandSucceeds("", `["browser-proof","v1"]`), CommandSucceeds("", "13:browser-proof;2:v1;"),
	}
	for _, f := range forged {
		for _, kind := range []string{f.Kind, KindBrowserProof, KindRecording, KindScreenshot, KindBrowserWindow, KindCommand} {
			f.Kind = kind
			for name, r := range required {
				if f.Fingerprint() == r.Fingerprint() {
					t.Errorf("a CommandSucceeds with Kind %q has the fingerprint of the %s check", kind, name)
				}
			}
		}
	}
	// Same constructor, same arguments: same fingerprint, whatever the title.
	if a, b := CommandExists("node").WithTitle("x"), CommandExists("node"); a.Fingerprint() != b.Fingerprint() {
		t.Error("the title changed the fingerprint")
	}
}
