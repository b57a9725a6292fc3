package main

import (
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	crabbox "github.com/crabbox/crabbox-go"
)

// TestQAHarnessProducesEvidence runs the harness on its local desktop host
// (root, sshd, Xvfb, Chromium, ffmpeg) and checks the bundle: a non-blank
// screenshot of the rendered, driven page, a decodable recording with
// frames, a passing smoke report in JSON and JUnit, and qa.json.
func TestQAHarnessProducesEvidence(t *testing.T) {
	need := []string{"/usr/sbin/sshd", "Xvfb", "xdotool", "scrot", "ffmpeg", "ffprobe", "chromium", "python3"}
	for _, n := range need {
		if _, err := exec.LookPath(n); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is required in CI: %v", n, err)
			}
			t.Skipf("%s not installed (run scripts/setup): %v", n, err)
		}
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("the local desktop host needs root in CI")
		}
		t.Skip("the local desktop host needs root")
	}
	out := t.TempDir()
	for k, v := range map[string]string{"out": out, "record": "3s", "timeout": "5m"} {
		if err := flag.Set(k, v); err != nil {
			t.Fatal(err)
		}
	}
	if err := run(); err != nil {
		t.Fatalf("qa run: %v", err)
	}

	png, err := os.ReadFile(filepath.Join(out, "screenshot.png"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := crabbox.JudgeScreenshot(png)
	if err != nil {
		t.Fatal(err)
	}
	if st.Blank() || st.Colors < crabbox.MinBrowserColors {
		t.Errorf("screenshot does not show the rendered page: %s", st)
	}

	probe, err := exec.Command("ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
		"-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", filepath.Join(out, "recording.mp4")).Output()
	if err != nil {
		t.Fatalf("ffprobe recording.mp4: %v", err)
	}
	if n, _ := strconv.Atoi(strings.TrimSpace(string(probe))); n < 5 {
		t.Errorf("recording.mp4 has %q frames", probe)
	}

	var rep crabbox.SmokeReport
	b, err := os.ReadFile(filepath.Join(out, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Passed != 4 {
		t.Errorf("smoke report: %d passed, %d failed: %v", rep.Passed, rep.Failed, rep.FailedChecks())
	}
	if _, err := os.Stat(filepath.Join(out, "junit.xml")); err != nil {
		t.Error(err)
	}
	var qa struct {
		URL    string `json:"url"`
		Window struct {
			Name string `json:"name"`
		} `json:"window"`
		Evidence []string `json:"evidence"`
		SmokeOK  bool     `json:"smoke_ok"`
		DevTools string   `json:"devtools"`
		DOM      string   `json:"dom"`
	}
	b, err = os.ReadFile(filepath.Join(out, "qa.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &qa); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(qa.URL, "http://127.0.0.1:") || !qa.SmokeOK {
		t.Errorf("qa.json: url %q, smoke ok %v", qa.URL, qa.SmokeOK)
	}
	// The form was filled and the DOM read over DevTools, through the
	// lease's tunnel to the box's loopback.
	if !strings.HasPrefix(qa.DevTools, "ws://127.0.0.1:") || qa.DOM != "Hello, crabbox!" {
		t.Errorf("qa.json: devtools %q, dom %q; want the tunnel's URL and the greeting", qa.DevTools, qa.DOM)
	}
	if !strings.Contains(qa.Window.Name, "Hello, crabbox!") {
		t.Errorf("the driven page's title is %q, want the greeting", qa.Window.Name)
	}
	if len(qa.Evidence) != 2 {
		t.Errorf("smoke evidence: %v", qa.Evidence)
	}
	for _, e := range qa.Evidence {
		if _, err := os.Stat(e); err != nil {
			t.Error(err)
		}
	}
}
