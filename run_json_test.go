package crabbox_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	crabbox "github.com/crabbox/crabbox-go"
)

// A run result's duration is float seconds in JSON, like every other
// duration; what earlier versions wrote (nanoseconds) still reads.
func TestRunResultJSONDurationSeconds(t *testing.T) {
	r := crabbox.RunResult{Command: "true", ExitCode: 0, Duration: 1500 * time.Millisecond}
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"duration_seconds":1.5`) || strings.Contains(string(data), "duration_ns") {
		t.Fatalf("JSON = %s, want duration_seconds 1.5 and no duration_ns", data)
	}
	var back crabbox.RunResult
	if err := json.Unmarshal(data, &back); err != nil || back != r {
		t.Fatalf("round trip = %+v, %v; want %+v", back, err, r)
	}
	var old crabbox.RunResult
	if err := json.Unmarshal([]byte(`{"command":"true","exit_code":2,"duration_ns":2500000000}`), &old); err != nil {
		t.Fatal(err)
	}
	if old.Duration != 2500*time.Millisecond || old.ExitCode != 2 {
		t.Fatalf("old record = %+v, want 2.5 s and exit code 2", old)
	}
	// A pointer marshals the same way.
	pdata, _ := json.Marshal(&r)
	if string(pdata) != string(data) {
		t.Fatalf("pointer JSON %s != value JSON %s", pdata, data)
	}
}
