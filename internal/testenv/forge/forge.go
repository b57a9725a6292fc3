// Package forge makes the forged and edited smoke reports the proof tests
// of every provider try to promote with: each must be refused.
package forge

import (
	"encoding/json"
	"strings"

	crabbox "github.com/crabbox/crabbox-go"
)

// Case is one forged report and what it pretends.
type Case struct {
	Name   string
	Report *crabbox.SmokeReport
}

// clone deep-copies a report through its JSON form, as another process
// would read it.
func clone(r *crabbox.SmokeReport) *crabbox.SmokeReport {
	data, err := json.Marshal(r)
	if err != nil {
		panic(err) // a report always marshals
	}
	var out crabbox.SmokeReport
	if err := json.Unmarshal(data, &out); err != nil {
		panic(err)
	}
	return &out
}

// Candidates returns forgeries meant to promote imageID: pass is a passing
// Smoke report of a lease that booted imageID explicitly, fail a failing
// one of imageID, other a passing one of another image.
func Candidates(imageID string, pass, fail, other *crabbox.SmokeReport) []Case {
	flipped := clone(fail)
	for i := range flipped.Results {
		flipped.Results[i].Passed, flipped.Results[i].Error = true, ""
	}
	flipped.Passed, flipped.Failed = len(flipped.Results), 0

	moved := clone(other)
	moved.ImageID = imageID

	literal := &crabbox.SmokeReport{ImageID: imageID, Results: []crabbox.CheckResult{{Passed: true}}, Passed: 1}

	unknown := clone(pass)
	unknown.LeaseID = "cbx_000000000000"
	if unknown.LeaseID == pass.LeaseID {
		unknown.LeaseID = "cbx_000000000001"
	}
	var fromJSON crabbox.SmokeReport
	data, _ := json.Marshal(unknown)
	if err := json.Unmarshal(data, &fromJSON); err != nil {
		panic(err)
	}

	totals := clone(fail)
	totals.Passed, totals.Failed = len(totals.Results), 0

	output := clone(pass)
	output.Results[0].Output = strings.TrimSpace(output.Results[0].Output) + " (edited)"

	slug := clone(pass)
	slug.LeaseSlug += "-x"

	return []Case{
		{"failed report flipped to passed", flipped},
		{"another image's passing report with ImageID edited", moved},
		{"hand-built literal report", literal},
		{"JSON naming a lease that never existed", &fromJSON},
		{"totals contradicting the results", totals},
		{"passing report with an edited output", output},
		{"passing report with an edited slug", slug},
	}
}

// KnownGood returns forgeries meant to mark imageID known-good: candidate
// is a passing report of a lease that booted imageID explicitly (not from
// the channel), which claims to have booted it from the channel.
func KnownGood(candidate *crabbox.SmokeReport) []Case {
	src := clone(candidate)
	src.ImageSource = crabbox.ImagePromoted
	return []Case{
		{"candidate report as it is", clone(candidate)},
		{"candidate report with ImageSource edited to promoted", src},
	}
}
