// Tests of smoke_checks.go on a real local shell: expectations, commands,
// paths, the hygiene checks, the screenshot check, the check sets.

package crabbox

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
)

func TestJudgeExpectations(t *testing.T) {
	cases := []struct {
		name   string
		expect []Expectation
		code   int
		out    string
		ok     bool
	}{
		{"default exit 0", nil, 0, "", true},
		{"default rejects exit 1", nil, 1, "", false},
		{"explicit exit code", []Expectation{ExitCode(3)}, 3, "", true},
		{"explicit exit code mismatch", []Expectation{ExitCode(3)}, 0, "", false},
		{"contains", []Expectation{OutputContains("ok")}, 0, "all ok\n", true},
		{"contains missing", []Expectation{OutputContains("ok")}, 0, "nope", false},
		{"contains but exit 2", []Expectation{OutputContains("ok")}, 2, "ok", false},
		{"not contains", []Expectation{OutputNotContains("ERROR")}, 0, "fine", true},
		{"not contains hit", []Expectation{OutputNotContains("ERROR")}, 0, "an ERROR", false},
		{"regexp", []Expectation{OutputMatches(`^Linux \S+ (x86_64|aarch64)$`)}, 0, "Linux 6.1.0 x86_64", true},
		{"regexp miss", []Expectation{OutputMatches(`^v22\.`)}, 0, "v20.1.0", false},
		{"compiled regexp", []Expectation{OutputMatchesRegexp(regexp.MustCompile(`\d+`))}, 0, "42", true},
		{"all must hold", []Expectation{ExitCode(1), OutputContains("a"), OutputContains("b")}, 1, "a", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := judge(tc.expect, tc.code, tc.out)
			if (err == nil) != tc.ok {
				t.Fatalf("judge = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestCommandSucceedsOnRealShell(t *testing.T) {
	tg := newShellTarget(t)
	cases := []struct {
		check SmokeCheck
		pass  bool
	}{
		{CommandSucceeds("echo", "echo image-smoke-ok", OutputContains("image-smoke-ok")), true},
		{CommandSucceeds("echo wrong", "echo something-else", OutputContains("image-smoke-ok")), false},
		{CommandSucceeds("exit 3 expected", "exit 3", ExitCode(3)), true},
		{CommandSucceeds("exit 3 default", "echo x; exit 3"), false},
		{CommandSucceeds("regexp", "uname -srm", OutputMatches(`^\S+ \S+ \S+\n$`)), true},
		{CommandSucceeds("stderr not matched", "echo hidden >&2", OutputContains("hidden")), false},
		{CommandSucceeds("not contains", "echo fine", OutputNotContains("ERROR")), true},
	}
	for _, tc := range cases {
		r := one(t, tg, tc.check)
		if r.Passed != tc.pass {
			t.Errorf("%s: passed=%v want %v (error %q, output %q)", tc.check.Title, r.Passed, tc.pass, r.Error, r.Output)
		}
		if r.Kind != KindCommand || r.Attempts != 1 {
			t.Errorf("%s: kind %q attempts %d", tc.check.Title, r.Kind, r.Attempts)
		}
	}
	r := one(t, tg, CommandSucceeds("code", "echo out; echo err >&2; exit 4", ExitCode(4)))
	if !r.Passed || r.ExitCode != 4 || r.Output != "out\nerr\n" {
		t.Fatalf("result %+v", r)
	}
}

func TestInvalidRegexpFailsWithoutRunning(t *testing.T) {
	tg := newShellTarget(t)
	marker := filepath.Join(tg.root, "ran")
	c := CommandSucceeds("bad regexp", "touch "+ShellQuote(marker), OutputMatches(`([unclosed`)).WithRetry(3, 0)
	rep, _, err := smokeOn(t, tg, []SmokeCheck{c})
	if !errors.Is(err, ErrSmokeFailed) {
		t.Fatalf("err = %v, want ErrSmokeFailed", err)
	}
	r := rep.Results[0]
	if r.Passed || r.Attempts != 1 || !strings.Contains(r.Error, "invalid regular expression") {
		t.Fatalf("result %+v", r)
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Fatalf("command ran despite invalid expectation")
	}
	// The error itself matches ErrInvalidArgument.
	a := c.run(context.Background(), tg)
	if !errors.Is(a.err, ErrInvalidArgument) {
		t.Fatalf("attempt error %v does not match ErrInvalidArgument", a.err)
	}
	for _, c := range []SmokeCheck{
		CommandSucceeds("nil re", "true", OutputMatchesRegexp(nil)),
		CommandSucceeds("zero", "true", Expectation{}),
		CommandSucceeds("empty", " "),
		CommandExists(),
		CommandExists("sh", ""),
		DirExists(""),
		{Title: "zero check"},
	} {
		r := one(t, tg, c)
		if r.Passed || !strings.Contains(r.Error, ErrInvalidArgument.Error()) {
			t.Errorf("%q: %+v", c.Title, r)
		}
	}
}

func TestCommandExists(t *testing.T) {
	tg := newShellTarget(t)
	r := one(t, tg, CommandExists("sh"))
	if !r.Passed || !strings.Contains(r.Output, "/sh") {
		t.Fatalf("sh: %+v", r)
	}
	r = one(t, tg, CommandExists("crabbox-no-such-tool"))
	if r.Passed || !strings.Contains(r.Output, "not found on PATH: crabbox-no-such-tool") {
		t.Fatalf("missing: %+v", r)
	}
	r = one(t, tg, CommandExists("crabbox-no-such-a", "sh", "crabbox-no-such-b"))
	if !r.Passed || !strings.Contains(r.Output, "/sh") || r.Kind != KindCommandExists {
		t.Fatalf("alternatives: %+v", r)
	}
	if r.Title != "command -v crabbox-no-such-a || command -v sh || command -v crabbox-no-such-b" {
		t.Fatalf("title %q", r.Title)
	}
	// Shell metacharacters in names are data, not code.
	marker := filepath.Join(tg.root, "pwned")
	r = one(t, tg, CommandExists("x; touch "+marker, "$(touch "+marker+")"))
	if r.Passed {
		t.Fatalf("weird names passed")
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Fatalf("command name was executed")
	}
}

func TestPathChecksUseFSRoot(t *testing.T) {
	tg := newShellTarget(t)
	if r := one(t, tg, WorkRootExists()); !r.Passed {
		t.Fatalf("work root: %+v", r)
	}
	if err := os.RemoveAll(filepath.Join(tg.root, "work")); err != nil {
		t.Fatal(err)
	}
	if r := one(t, tg, WorkRootExists()); r.Passed || !strings.Contains(r.Error, "/work/crabbox") {
		t.Fatalf("missing work root passed: %+v", r)
	}
	tg.plant(t, "etc/crabbox/ready", "1")
	if r := one(t, tg, FileExists("/etc/crabbox/ready")); !r.Passed {
		t.Fatalf("file: %+v", r)
	}
	if r := one(t, tg, DirExists("/etc/crabbox/ready")); r.Passed {
		t.Fatalf("file passed as dir")
	}
	if r := one(t, tg, FileExists("/etc/crabbox")); r.Passed {
		t.Fatalf("dir passed as file")
	}
	tg.plant(t, "home/crabbox/with space/it's", "1")
	if r := one(t, tg, FileExists("~/with space/it's")); !r.Passed {
		t.Fatalf("home file: %+v", r)
	}
	// The host's own /etc is not what the check sees.
	if r := one(t, tg, FileExists("/etc/passwd")); r.Passed {
		t.Fatalf("path escaped the fs root")
	}
}

func TestHygieneCleanBoxPasses(t *testing.T) {
	tg := newShellTarget(t)
	// Things that are allowed.
	tg.plant(t, "home/crabbox/.ssh/authorized_keys", "ssh-ed25519 AAAA test")
	tg.plant(t, "home/crabbox/.ssh/id_ed25519.pub", "ssh-ed25519 AAAA test")
	tg.plant(t, "home/crabbox/.npmrc", "registry=https://registry.npmjs.org/\n")
	tg.plant(t, "home/crabbox/.env", "GITHUB_TOKEN=\nAPI_KEY=${FROM_VAULT}\nNAME=x\n")
	tg.plant(t, "home/crabbox/.bashrc", "export PATH=$PATH:/x\n")
	tg.plant(t, "home/crabbox/.nvm/versions/node/v22/lib/node_modules/pnpm/package.json", "{}")
	tg.plant(t, "home/crabbox/.cache/thing/.git/HEAD", "ref")
	tg.plant(t, "home/crabbox/.local/share/icons/x.png", "png")
	tg.plant(t, "home/crabbox/.aws/config", "[default]\nregion=eu-west-1\n")
	tg.mkdir(t, "home/crabbox/.mozilla")
	tg.mkdir(t, "var/cache/crabbox/pnpm")
	rep, _, err := smokeOn(t, tg, Hygiene())
	if err != nil {
		for _, r := range rep.Results {
			t.Logf("%s: %v %s %s", r.Title, r.Passed, r.Error, r.Output)
		}
		t.Fatalf("clean box: %v", err)
	}
	for _, r := range rep.Results {
		if r.Kind != KindHygiene || strings.TrimSpace(r.Output) != "clean" {
			t.Errorf("%s: kind %q output %q", r.Title, r.Kind, r.Output)
		}
	}
}

func TestHygieneCatchesPlantedState(t *testing.T) {
	cases := []struct {
		check   func() SmokeCheck
		plant   string // relative to the fs root; a trailing / makes a directory with a file inside
		content string
	}{
		{NoCredentials, "home/crabbox/.aws/credentials", "[default]\naws_access_key_id=AKIAFAKE\n"},
		{NoCredentials, "root/.aws/credentials", "[default]\n"},
		{NoCredentials, "home/other/.config/gcloud/application_default_credentials.json", "{}"},
		{NoCredentials, "home/crabbox/.ssh/id_ed25519", "-----BEGIN OPENSSH PRIVATE KEY-----"},
		{NoCredentials, "root/.ssh/id_rsa", "-----BEGIN RSA PRIVATE KEY-----"},
		{NoCredentials, "home/crabbox/.netrc", "machine github.com login x password y"},
		{NoCredentials, "home/crabbox/.git-credentials", "https://x:y@github.com"},
		{NoCredentials, "home/crabbox/.npmrc", "//registry.npmjs.org/:_authToken=npm_FAKE\n"},
		{NoCredentials, "home/crabbox/project/.env", "SLACK_BOT_TOKEN=xoxb-fake\n"},
		{NoCredentials, "home/crabbox/.env.local", "export OPENAI_API_KEY='sk-fake'\n"},
		{NoCredentials, "work/crabbox/app/prod.env", "DB_PASSWORD=\"hunter2\"\n"},
		{NoCredentials, "home/crabbox/.bashrc", "export GITHUB_TOKEN=ghp_fake\n"},
		{NoCredentials, "home/crabbox/.config/gh/hosts.yml", "github.com:\n  oauth_token: gho_fake\n"},
		{NoCredentials, "home/crabbox/.docker/config.json", `{"auths":{"ghcr.io":{"auth":"eDp5"}}}`},
		{NoCredentials, "home/crabbox/.config/hcloud/cli.toml", "token = \"fake\"\n"},
		{NoBrowserProfiles, "home/crabbox/.config/chromium/Default/Preferences", "{}"},
		{NoBrowserProfiles, "home/crabbox/.config/google-chrome/Local State", "{}"},
		{NoBrowserProfiles, "root/.mozilla/firefox/profiles.ini", "x"},
		{NoBrowserProfiles, "home/crabbox/profiles/p1/Default/Network/Cookies", "sqlite"},
		{NoBrowserProfiles, "home/crabbox/.config/Slack/storage/x", "x"},
		{NoBrowserProfiles, "home/crabbox/.config/discord/Local Storage/x", "x"},
		{NoBrowserProfiles, "home/crabbox/.config/WhatsApp/session", "x"},
		{NoRepositoryCheckouts, "home/crabbox/src/app/.git/HEAD", "ref: refs/heads/main"},
		{NoRepositoryCheckouts, "home/crabbox/app/node_modules/left-pad/index.js", "x"},
		{NoRepositoryCheckouts, "home/crabbox/app/dist/bundle.js", "x"},
		{NoRepositoryCheckouts, "work/crabbox/node_modules/x/index.js", "x"},
		{NoRepositoryCheckouts, "work/crabbox/repo/.git/HEAD", "x"},
		{NoRepositoryCheckouts, "root/checkout/.git/HEAD", "x"},
		{NoOperatorNotes, "home/crabbox/NOTES", "remember to"},
		{NoOperatorNotes, "home/crabbox/todo-list", "x"},
		{NoOperatorNotes, "home/crabbox/debug.md", "x"},
		{NoOperatorNotes, "root/scratch.txt", "x"},
		{NoOperatorNotes, "home/crabbox/Pictures/shot.png", "x"},
		{NoOperatorNotes, "work/crabbox/recording.webm", "x"},
		{NoOperatorNotes, "home/crabbox/videos/run.mp4", "x"},
	}
	for _, tc := range cases {
		c := tc.check()
		t.Run(c.Title+"/"+tc.plant, func(t *testing.T) {
			tg := newShellTarget(t)
			if r := one(t, tg, c); !r.Passed {
				t.Fatalf("clean box failed: %+v", r)
			}
			p := tg.plant(t, tc.plant, tc.content)
			r := one(t, tg, c)
			if r.Passed {
				t.Fatalf("planted %s not caught: %q", tc.plant, r.Output)
			}
			// The output names what was found (a file or its directory).
			dir := filepath.Dir(p)
			if !strings.Contains(r.Output, p) && !strings.Contains(r.Output, dir) && !strings.Contains(r.Output, filepath.Dir(dir)) {
				t.Fatalf("output does not name %s: %q", p, r.Output)
			}
			// And only this check fails: the others stay clean, except
			// where one plant is two kinds of state.
			for _, other := range Hygiene() {
				if other.Title == c.Title {
					continue
				}
				if r := one(t, tg, other); !r.Passed && !overlaps(tc.plant) {
					t.Errorf("%s also failed: %q", other.Title, r.Output)
				}
			}
		})
	}
}

// overlaps lists plants that legitimately trip two checks.
func overlaps(plant string) bool {
	return strings.HasSuffix(plant, ".md") || strings.Contains(plant, "NOTES") ||
		strings.Contains(plant, "/Cookies") // under a profile dir, not a checkout or note
}

// TestHygieneUnderBash runs the hygiene scripts with bash, the login shell
// OpenSSH uses on most boxes (the local cloud and the other tests use sh).
func TestHygieneUnderBash(t *testing.T) {
	needTool(t, "bash")
	tg := newShellTarget(t)
	tg.shell = "bash"
	rep, _, err := smokeOn(t, tg, Hygiene())
	if err != nil {
		t.Fatalf("clean box under bash: %v", err)
	}
	tg.plant(t, "home/crabbox/.aws/credentials", "x")
	tg.plant(t, "home/crabbox/.env", "export API_TOKEN=abc\n")
	tg.plant(t, "work/crabbox/dist/x.js", "x")
	tg.plant(t, "root/.mozilla/firefox/p/cookies.sqlite", "x")
	tg.plant(t, "home/crabbox/TODO", "x")
	rep, _, err = smokeOn(t, tg, Hygiene())
	if !errors.Is(err, ErrSmokeFailed) || rep.Failed != 4 {
		t.Fatalf("planted under bash: %v", err)
	}
	for _, want := range []string{".aws/credentials", "/.env", "work/crabbox/dist", "cookies.sqlite", "/TODO"} {
		all := ""
		for _, r := range rep.Results {
			all += r.Output
		}
		if !strings.Contains(all, want) {
			t.Errorf("bash run did not report %s", want)
		}
	}
}

func TestHygieneDoesNotReadHostRoot(t *testing.T) {
	// With CRABBOX_FS_ROOT set, /root and /home/* are those below it. Plant
	// in the fs root's /root only: the host's /root is not scanned.
	tg := newShellTarget(t)
	for _, c := range Hygiene() {
		if r := one(t, tg, c); !r.Passed {
			t.Fatalf("%s on a clean fs root: %q (the host's own dirs leaked in?)", c.Title, r.Output)
		}
	}
}

func TestScreenshotCheckKeepsEvidence(t *testing.T) {
	tg := newShellTarget(t)
	busy := pngOf(t, gradientWithText(320, 200))
	blank := pngOf(t, solid(320, 200))
	evidence := filepath.Join(t.TempDir(), "evidence")

	tg.shot = func() ([]byte, error) { return busy, nil }
	rep, _, err := smokeOn(t, tg, []SmokeCheck{ScreenshotNotBlank().WithRetry(0, 0)}, WithEvidenceDir(evidence))
	if err != nil {
		t.Fatalf("busy screen: %v", err)
	}
	r := rep.Results[0]
	if !r.Passed || r.Kind != KindScreenshot || len(r.Evidence) != 1 || !bytes.Equal(r.PNG, busy) {
		t.Fatalf("result %+v", r)
	}
	got, err := os.ReadFile(r.Evidence[0])
	if err != nil || !bytes.Equal(got, busy) {
		t.Fatalf("evidence file: %v", err)
	}
	if !strings.HasPrefix(filepath.Base(r.Evidence[0]), "cbx_0123456789ab-01-screenshot") {
		t.Fatalf("evidence name %s", r.Evidence[0])
	}

	var shots atomic.Int64
	tg.shot = func() ([]byte, error) { shots.Add(1); return blank, nil }
	rep, _, err = smokeOn(t, tg, []SmokeCheck{ScreenshotNotBlank().WithRetry(1, 0)}, WithEvidenceDir(evidence))
	r = rep.Results[0]
	if !errors.Is(err, ErrSmokeFailed) || r.Passed || !strings.Contains(r.Error, "blank") || r.Attempts != 2 || shots.Load() != 2 {
		t.Fatalf("blank screen: %v %+v", err, r)
	}
	if len(r.Evidence) != 1 {
		t.Fatalf("blank screenshot not kept as evidence: %+v", r)
	}

	tg.shot = func() ([]byte, error) { return []byte("not a png"), nil }
	r = one(t, tg, ScreenshotNotBlank().WithRetry(0, 0))
	if r.Passed || !strings.Contains(r.Error, "not a PNG") {
		t.Fatalf("garbage: %+v", r)
	}
	tg.shot = nil
	r = one(t, tg, ScreenshotNotBlank().WithRetry(0, 0))
	if r.Passed || !strings.Contains(r.Error, "no display") {
		t.Fatalf("no display: %+v", r)
	}
}

func TestCheckSets(t *testing.T) {
	titles := func(cs []SmokeCheck) string {
		var out []string
		for _, c := range cs {
			out = append(out, c.Title)
		}
		return strings.Join(out, "\n")
	}
	src := titles(SourceVerification(CheckSetOptions{Browser: true}))
	for _, want := range []string{"command -v ssh", "command -v git", "command -v rsync", "command -v jq", "command -v node",
		"command -v pnpm", "command -v ffmpeg", "command -v scrot", "command -v x11vnc",
		"command -v google-chrome || command -v chromium || command -v chromium-browser",
		"test -d /work/crabbox", "pnpm cache dir /var/cache/crabbox/pnpm (mkdir, chmod 1777)"} {
		if !strings.Contains(src+"\n", want+"\n") {
			t.Errorf("source verification lacks %q:\n%s", want, src)
		}
	}
	if n := len(SourceVerification(CheckSetOptions{Tools: []string{}})); n != 2 {
		t.Errorf("empty tools: %d checks, want work root + pnpm dir", n)
	}
	if n := len(SourceVerification(CheckSetOptions{Tools: []string{"sh"}, Hygiene: true})); n != 7 {
		t.Errorf("with hygiene: %d", n)
	}
	cand := CandidateSmoke(CheckSetOptions{Desktop: true, Browser: true})
	ct := titles(cand)
	for _, want := range []string{"echo image-smoke-ok", "uname -srm", "command -v node", "command -v pnpm",
		"command -v ffmpeg", "command -v scrot", "test -d /work/crabbox", "no credentials or tokens",
		"no browser profiles, cookies or chat sessions", "no repository checkouts, node_modules or dist",
		"no operator notes, screenshots or videos", "browser renders the desktop proof page", "screen recording of 3s has frames"} {
		if !strings.Contains(ct+"\n", want+"\n") {
			t.Errorf("candidate smoke lacks %q:\n%s", want, ct)
		}
	}
	if c := titles(CandidateSmoke(CheckSetOptions{})); strings.Contains(c, "browser draws") || strings.Contains(c, "recording") {
		t.Errorf("desktop proof without desktop:\n%s", c)
	}
	if c := titles(CandidateSmoke(CheckSetOptions{Desktop: true})); !strings.Contains(c, "recording") || strings.Contains(c, "browser draws") {
		t.Errorf("desktop without browser: want the recording proof only:\n%s", c)
	}
	pt := titles(PromotedSmoke(CheckSetOptions{}))
	if pt != "echo promoted-image-smoke-ok\ncommand -v ffmpeg\ncommand -v node" {
		t.Errorf("promoted smoke:\n%s", pt)
	}
}

func TestSourceVerificationRunsOnShell(t *testing.T) {
	tg := newShellTarget(t)
	rep, _, err := smokeOn(t, tg, SourceVerification(CheckSetOptions{Tools: []string{"sh", "cat"}, Hygiene: true}))
	if err != nil {
		for _, r := range rep.Results {
			t.Logf("%s: %v %s %q", r.Title, r.Passed, r.Error, r.Output)
		}
		t.Fatal(err)
	}
	for _, d := range []string{"var/cache/crabbox", "var/cache/crabbox/pnpm"} {
		st, err := os.Stat(filepath.Join(tg.root, d))
		if err != nil || st.Mode()&os.ModeSticky == 0 || st.Mode().Perm() != 0o777 {
			t.Fatalf("%s: %v %v", d, st.Mode(), err)
		}
	}
	rep, _, err = smokeOn(t, tg, CandidateSmoke(CheckSetOptions{Tools: []string{"sh"}}))
	if err != nil || !rep.OK() {
		t.Fatalf("candidate smoke: %v", err)
	}
}
