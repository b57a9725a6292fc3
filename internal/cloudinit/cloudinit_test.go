package cloudinit

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/crabbox/crabbox-go/provider"
)

type testKeys struct {
	clientPub string
	hostPEM   []byte
	hostPub   string
}

func newKeys(t testing.TB) testKeys {
	t.Helper()
	cpub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := ssh.NewPublicKey(cpub)
	if err != nil {
		t.Fatal(err)
	}
	hpub, hpriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := ssh.MarshalPrivateKey(hpriv, "host")
	if err != nil {
		t.Fatal(err)
	}
	hp, err := ssh.NewPublicKey(hpub)
	if err != nil {
		t.Fatal(err)
	}
	return testKeys{
		clientPub: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(cp))) + " lease@crabbox",
		hostPEM:   pem.EncodeToMemory(blk),
		hostPub:   strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hp))),
	}
}

func baseConfig(t testing.TB) Config {
	k := newKeys(t)
	return Config{
		LeaseID:        "cbx_0123456789ab",
		AuthorizedKeys: []string{k.clientPub},
		HostKeyPEM:     k.hostPEM,
		HostKeyPublic:  k.hostPub,
	}
}

func TestRenderContent(t *testing.T) {
	cfg := baseConfig(t)
	cfg.ShutdownAfter = 90*time.Minute + time.Second
	out, err := Render(cfg)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(out)
	for _, want := range []string{
		"#cloud-config\n",
		"  - name: \"crabbox\"\n",
		"    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n",
		"    shell: /bin/bash\n",
		"      - \"" + cfg.AuthorizedKeys[0] + "\"\n",
		"ssh_pwauth: false\n",
		"ssh_deletekeys: true\n",
		"ssh_genkeytypes: [ed25519]\n",
		"  ed25519_private: |\n    -----BEGIN OPENSSH PRIVATE KEY-----\n",
		"  ed25519_public: \"" + cfg.HostKeyPublic + "\"\n",
		"  - path: " + SSHDConfigFile + "\n",
		"      Port 22\n      Port 2222\n",
		"      PasswordAuthentication no\n",
		"      KbdInteractiveAuthentication no\n",
		"      PermitRootLogin no\n",
		"      HostKey /etc/ssh/ssh_host_ed25519_key\n",
		"  - path: " + ReadyCommand + "\n",
		`root="${CRABBOX_FS_ROOT:-}"`,
		"  - \"git\"\n  - \"rsync\"\n  - \"curl\"\n  - \"jq\"\n  - \"ca-certificates\"\n",
		`  - ["mkdir", "-p", "/work/crabbox", "/var/lib/crabbox"]`,
		`  - ["chown", "crabbox:crabbox", "/work/crabbox"]`,
		// 90 minutes and a second round up to 91.
		`  - ["shutdown", "-P", "+91", "crabbox lease TTL reached"]`,
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("rendered user-data lacks %q\n%s", want, doc)
		}
	}
	if !strings.HasSuffix(doc, `  - ["sh", "-c", "printf '%s\\n' 'cbx_0123456789ab' >/var/lib/crabbox/bootstrap-done.tmp && mv -f /var/lib/crabbox/bootstrap-done.tmp /var/lib/crabbox/bootstrap-done"]`+"\n") {
		t.Errorf("bootstrap marker is not the last command:\n%s", doc)
	}
	for _, bad := range []string{"PasswordAuthentication yes", "Xvfb", "chromium", "ssh_pwauth: true"} {
		if strings.Contains(doc, bad) {
			t.Errorf("rendered user-data contains %q", bad)
		}
	}
}

func TestRenderNoShutdownWithoutTTL(t *testing.T) {
	out, err := Render(baseConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), `"shutdown"`) {
		t.Fatalf("user-data schedules a shutdown without a TTL:\n%s", out)
	}
}

func TestRenderShutdownRounding(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{time.Second, "+1"},
		{time.Minute, "+1"},
		{time.Minute + time.Nanosecond, "+2"},
		{2 * time.Hour, "+120"},
	} {
		cfg := baseConfig(t)
		cfg.ShutdownAfter = tc.d
		out, err := Render(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if want := `["shutdown", "-P", "` + tc.want + `"`; !strings.Contains(string(out), want) {
			t.Errorf("%v: want %s in\n%s", tc.d, want, out)
		}
	}
}

func TestRenderDesktopBrowser(t *testing.T) {
	cfg := baseConfig(t)
	cfg.Desktop, cfg.Browser = true, true
	out, err := Render(cfg)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(out)
	for _, want := range []string{
		"ExecStart=/usr/bin/Xvfb :99 -screen 0 1280x800x24 -nolisten tcp\n",
		"-localhost -rfbport 5900",
		"  - path: " + DesktopBootstrapFile + "\n",
		`bg xvfb Xvfb "$D" -screen 0 "$GEOMETRY" -nolisten tcp`,
		`x11vnc -display "$D" -localhost`,
		"BROWSERS='google-chrome chromium chromium-browser'",
		"skipping package installs",
		"  - path: " + BrowserEnvFile + "\n",
		"BROWSER=/usr/bin/chromium\n",
		"xdotool getdisplaygeometry",
		`"$BROWSER" --version`,
		`enable --now crabbox-xvfb.service`,
		`  - ["` + DesktopBootstrapFile + `"]` + "\n",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("rendered desktop user-data lacks %q", want)
		}
	}
	if strings.Index(doc, `["`+DesktopBootstrapFile+`"]`) > strings.Index(doc, "bootstrap-done\"]") {
		t.Error("desktop services start after the bootstrap marker")
	}
	// The package list has the base tools only: the bootstrap installs the
	// desktop packages when the image lacks them.
	for _, p := range []string{"xvfb", "x11vnc", "xdotool", "scrot", "ffmpeg", "chromium-browser", "openbox"} {
		if strings.Contains(doc, "  - \""+p+"\"\n") {
			t.Errorf("package list installs %s unconditionally", p)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	k := newKeys(t)
	k2 := newKeys(t)
	cases := map[string]Config{
		"minimal": {AuthorizedKeys: []string{k.clientPub}, HostKeyPEM: k.hostPEM},
		"full": {
			LeaseID:        "cbx_aaaaaaaaaaaa",
			User:           "tester",
			AuthorizedKeys: []string{k.clientPub, k2.clientPub + " second key with \"quotes\" and \\ and é"},
			HostKeyPEM:     k.hostPEM,
			HostKeyPublic:  k.hostPub + " host-comment",
			WorkRoot:       "/srv/work-root",
			SSHPorts:       []int{2200},
			ShutdownAfter:  37*time.Minute + 5*time.Second,
			Desktop:        true,
			Browser:        true,
			Packages:       []string{"htop", "git", "htop", "nodejs=22.1.0-1"},
			Files: []File{
				{Path: "/etc/crabbox/empty", Content: nil},
				{Path: "/usr/local/bin/tool", Content: []byte("#!/bin/sh\necho 'hi'\n"), Mode: 0o755},
				{Path: "/etc/binary", Content: []byte{0, 1, 2, 0xff, '\n', '"'}, Mode: 0o600 | os.ModeSetgid},
			},
		},
	}
	for name, cfg := range cases {
		t.Run(name, func(t *testing.T) {
			want, err := Normalize(cfg)
			if err != nil {
				t.Fatal(err)
			}
			out, err := Render(cfg)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Parse(out)
			if err != nil {
				t.Fatalf("Parse: %v\n%s", err, out)
			}
			if !reflect.DeepEqual(*got, want) {
				t.Fatalf("round trip differs\n got %#v\nwant %#v\n%s", *got, want, out)
			}
			// Rendering the parsed config gives the same document.
			again, err := Render(*got)
			if err != nil {
				t.Fatal(err)
			}
			if string(again) != string(out) {
				t.Fatalf("re-rendered document differs:\n%s\n---\n%s", out, again)
			}
		})
	}
}

func TestNormalizeDefaults(t *testing.T) {
	cfg := baseConfig(t)
	cfg.HostKeyPublic = ""
	cfg.Packages = []string{"jq", "htop", "htop"}
	n, err := Normalize(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if n.User != DefaultUser || n.WorkRoot != DefaultWorkRoot || !reflect.DeepEqual(n.SSHPorts, []int{22, 2222}) {
		t.Fatalf("defaults not applied: %+v", n)
	}
	if !reflect.DeepEqual(n.Packages, []string{"htop"}) {
		t.Fatalf("packages = %v, want [htop]", n.Packages)
	}
	if !strings.HasPrefix(n.HostKeyPublic, "ssh-ed25519 ") {
		t.Fatalf("host public key not derived: %q", n.HostKeyPublic)
	}
}

func TestValidation(t *testing.T) {
	other := newKeys(t)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaBlk, err := ssh.MarshalPrivateKey(rsaKey, "")
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(*Config){
		"no authorized key":     func(c *Config) { c.AuthorizedKeys = nil },
		"garbage key":           func(c *Config) { c.AuthorizedKeys = []string{"not a key"} },
		"two keys on one line":  func(c *Config) { c.AuthorizedKeys = []string{c.AuthorizedKeys[0] + "\n" + c.AuthorizedKeys[0]} },
		"no host key":           func(c *Config) { c.HostKeyPEM = nil },
		"garbage host key":      func(c *Config) { c.HostKeyPEM = []byte("-----BEGIN NOTHING-----\n") },
		"rsa host key":          func(c *Config) { c.HostKeyPEM = pem.EncodeToMemory(rsaBlk); c.HostKeyPublic = "" },
		"mismatched public key": func(c *Config) { c.HostKeyPublic = other.hostPub },
		"root user":             func(c *Config) { c.User = "root" },
		"bad user":              func(c *Config) { c.User = "a b" },
		"relative work root":    func(c *Config) { c.WorkRoot = "work" },
		"unclean work root":     func(c *Config) { c.WorkRoot = "/work/../etc" },
		"quote in work root":    func(c *Config) { c.WorkRoot = "/work/'x" },
		"slash work root":       func(c *Config) { c.WorkRoot = "/" },
		"port zero":             func(c *Config) { c.SSHPorts = []int{0} },
		"port too big":          func(c *Config) { c.SSHPorts = []int{65536} },
		"port twice":            func(c *Config) { c.SSHPorts = []int{22, 22} },
		"negative ttl":          func(c *Config) { c.ShutdownAfter = -time.Second },
		"bad package":           func(c *Config) { c.Packages = []string{"git; rm -rf /"} },
		"bad lease id":          func(c *Config) { c.LeaseID = "cbx 1" },
		"relative file":         func(c *Config) { c.Files = []File{{Path: "etc/x"}} },
		"owned file":            func(c *Config) { c.Files = []File{{Path: ReadyCommand}} },
		"file twice":            func(c *Config) { c.Files = []File{{Path: "/a"}, {Path: "/a"}} },
		"file mode":             func(c *Config) { c.Files = []File{{Path: "/a", Mode: os.ModeDir | 0o755}} },
		"too large":             func(c *Config) { c.Files = []File{{Path: "/big", Content: make([]byte, 12<<10)}} },
	}
	for name, mut := range cases {
		t.Run(name, func(t *testing.T) {
			cfg := baseConfig(t)
			mut(&cfg)
			out, err := Render(cfg)
			if err == nil {
				t.Fatalf("Render accepted an invalid config:\n%s", out)
			}
			if !errors.Is(err, provider.ErrInvalidArgument) {
				t.Fatalf("error %v does not wrap ErrInvalidArgument", err)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	good, err := Render(baseConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{
		"empty":          "",
		"no header":      strings.TrimPrefix(string(good), "#cloud-config\n"),
		"shell script":   "#!/bin/sh\necho hi\n",
		"only header":    "#cloud-config\n",
		"not a mapping":  "#cloud-config\n- a\n- b\n",
		"tab indent":     "#cloud-config\nusers:\n\t- name: x\n",
		"unterminated":   "#cloud-config\nusers: \"abc\n",
		"flow mapping":   "#cloud-config\nusers: {a: b}\n",
		"no lease env":   strings.Replace(string(good), LeaseEnvFile, "/etc/other", 1),
		"two users":      strings.Replace(string(good), "users:\n", "users:\n  - name: \"other\"\n", 1),
		"bad host key":   strings.Replace(string(good), "-----BEGIN OPENSSH PRIVATE KEY-----", "-----BEGIN GARBAGE-----", 1),
		"bad b64":        "#cloud-config\nwrite_files:\n  - path: /x\n    encoding: b64\n    content: \"***\"\n",
		"duplicate keys": "#cloud-config\nusers: []\nusers: []\n",
		"anchor":         "#cloud-config\nusers: &a []\n",
	}
	for name, doc := range cases {
		t.Run(name, func(t *testing.T) {
			c, err := Parse([]byte(doc))
			if err == nil {
				t.Fatalf("Parse accepted %q: %+v", doc, c)
			}
			if !errors.Is(err, provider.ErrInvalidArgument) {
				t.Fatalf("error %v does not wrap ErrInvalidArgument", err)
			}
		})
	}
}

func TestYAMLSubset(t *testing.T) {
	doc := "#cloud-config\n" +
		"a: plain value # comment\n" +
		"b: 'single ''quoted'''\n" +
		"c: \"esc \\t \\x41 \\u00e9 \\\" \\\\\"\n" +
		"d: [x, \"y z\", 'w']\n" +
		"e:\n- 1\n- 2\n" +
		"f: |-\n  no newline\n\n  kept blank above\n" +
		"g:\n  - k: |\n      block\n    k2: v\n  -\n    nested: true\n"
	n, err := parseYAML(doc)
	if err != nil {
		t.Fatal(err)
	}
	check := func(got, want string) {
		t.Helper()
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	check(n.get("a").scalar, "plain value")
	check(n.get("b").scalar, "single 'quoted'")
	check(n.get("c").scalar, "esc \t A é \" \\")
	if d, _ := scalars(n.get("d")); !reflect.DeepEqual(d, []string{"x", "y z", "w"}) {
		t.Errorf("flow seq = %v", d)
	}
	if e, _ := scalars(n.get("e")); !reflect.DeepEqual(e, []string{"1", "2"}) {
		t.Errorf("seq = %v", e)
	}
	check(n.get("f").scalar, "no newline\n\nkept blank above")
	g := n.get("g")
	if g == nil || len(g.seq) != 2 {
		t.Fatalf("g = %+v", g)
	}
	check(g.seq[0].get("k").scalar, "block\n")
	check(g.seq[0].get("k2").scalar, "v")
	check(g.seq[1].get("nested").scalar, "true")
}

func FuzzParse(f *testing.F) {
	good, err := Render(baseConfig(f))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte("#cloud-config\nusers:\n  - name: x\n"))
	f.Add([]byte("#cloud-config\na: |\n  b\n c\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			if !errors.Is(err, provider.ErrInvalidArgument) {
				t.Fatalf("error %v does not wrap ErrInvalidArgument", err)
			}
			return
		}
		// Whatever parses renders again and parses to the same config.
		out, err := Render(*c)
		if err != nil {
			t.Fatalf("parsed config does not render: %v", err)
		}
		c2, err := Parse(out)
		if err != nil || !reflect.DeepEqual(c, c2) {
			t.Fatalf("re-parse differs: %v", err)
		}
	})
}
