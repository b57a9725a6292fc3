package cloudinit

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"

	yaml "go.yaml.in/yaml/v3"
)

// fullConfig exercises every part of the document.
func fullConfig(t testing.TB) Config {
	cfg := baseConfig(t)
	cfg.AuthorizedKeys = append(cfg.AuthorizedKeys, newKeys(t).clientPub+` "quoted" \ back#slash: colon`)
	cfg.ShutdownAfter = 2 * time.Hour
	cfg.Desktop, cfg.Browser = true, true
	cfg.Packages = []string{"htop"}
	cfg.Files = []File{{Path: "/etc/x.conf", Content: []byte("a: b\n# c\n"), Mode: 0o640}}
	return cfg
}

// checkCloudConfig checks the structure cloud-init reads from a decoded
// document (generic maps and lists, as both YAML libraries produce).
func checkCloudConfig(t *testing.T, doc map[string]any, cfg Config) {
	t.Helper()
	n, err := Normalize(cfg)
	if err != nil {
		t.Fatal(err)
	}
	get := func(m any, k string) any {
		t.Helper()
		mm, ok := m.(map[string]any)
		if !ok {
			t.Fatalf("%v is not a mapping", m)
		}
		return mm[k]
	}
	users := doc["users"].([]any)
	if len(users) != 1 {
		t.Fatalf("users = %v", users)
	}
	u := users[0]
	if get(u, "name") != n.User || get(u, "sudo") != "ALL=(ALL) NOPASSWD:ALL" || get(u, "shell") != "/bin/bash" || get(u, "lock_passwd") != true {
		t.Errorf("user entry = %v", u)
	}
	var keys []string
	for _, k := range get(u, "ssh_authorized_keys").([]any) {
		keys = append(keys, k.(string))
	}
	if !reflect.DeepEqual(keys, n.AuthorizedKeys) {
		t.Errorf("authorized keys = %q, want %q", keys, n.AuthorizedKeys)
	}
	for k, want := range map[string]any{"ssh_pwauth": false, "ssh_deletekeys": true, "disable_root": true, "package_update": true} {
		if doc[k] != want {
			t.Errorf("%s = %#v, want %#v", k, doc[k], want)
		}
	}
	// Only the lease's key type: cloud-init generates none when ssh_keys
	// is given, and none over an existing key (the schema refuses []).
	if g, ok := doc["ssh_genkeytypes"].([]any); !ok || len(g) != 1 || g[0] != "ed25519" {
		t.Errorf("ssh_genkeytypes = %#v, want [ed25519]", doc["ssh_genkeytypes"])
	}
	sk := doc["ssh_keys"]
	if get(sk, "ed25519_private") != string(n.HostKeyPEM) || get(sk, "ed25519_public") != n.HostKeyPublic {
		t.Errorf("ssh_keys = %v", sk)
	}
	files := map[string]map[string]any{}
	for _, f := range doc["write_files"].([]any) {
		fm := f.(map[string]any)
		files[fm["path"].(string)] = fm
	}
	want, err := BootFiles(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(want) {
		t.Errorf("write_files has %d entries, want %d", len(files), len(want))
	}
	for _, f := range want {
		fm, ok := files[f.Path]
		if !ok {
			t.Errorf("write_files lacks %s", f.Path)
			continue
		}
		content, _ := fm["content"].(string)
		if fm["encoding"] == "b64" {
			b, err := base64.StdEncoding.DecodeString(content)
			if err != nil {
				t.Errorf("%s: %v", f.Path, err)
			}
			content = string(b)
		}
		if content != string(f.Content) {
			t.Errorf("%s content = %q, want %q", f.Path, content, f.Content)
		}
		if fm["permissions"] != modeString(f.Mode) {
			t.Errorf("%s permissions = %#v, want the string %q", f.Path, fm["permissions"], modeString(f.Mode))
		}
	}
	var pk []string
	for _, p := range doc["packages"].([]any) {
		pk = append(pk, p.(string))
	}
	if wantPk := append(DefaultPackages(false, false), n.Packages...); !reflect.DeepEqual(pk, wantPk) {
		t.Errorf("packages = %v, want %v", pk, wantPk)
	}
	rc := doc["runcmd"].([]any)
	var cmds []string
	for _, c := range rc {
		var args []string
		for _, a := range c.([]any) {
			args = append(args, a.(string))
		}
		cmds = append(cmds, strings.Join(args, " "))
	}
	if cmds[len(cmds)-1] != "sh -c "+markerCommand(n.LeaseID) {
		t.Errorf("last command = %q", cmds[len(cmds)-1])
	}
	if n.ShutdownAfter > 0 {
		found := false
		for _, c := range cmds {
			found = found || strings.HasPrefix(c, "shutdown -P +")
		}
		if !found {
			t.Errorf("no shutdown command in %q", cmds)
		}
	}
}

// TestRenderIsYAML decodes the rendered document with a real YAML library.
func TestRenderIsYAML(t *testing.T) {
	for name, cfg := range map[string]Config{"base": baseConfig(t), "full": fullConfig(t)} {
		t.Run(name, func(t *testing.T) {
			out, err := Render(cfg)
			if err != nil {
				t.Fatal(err)
			}
			var doc map[string]any
			if err := yaml.Unmarshal(out, &doc); err != nil {
				t.Fatalf("rendered user-data is not YAML: %v\n%s", err, out)
			}
			checkCloudConfig(t, doc, cfg)
		})
	}
}

// TestRenderPyYAML decodes the document with PyYAML's safe_load, which is
// what cloud-init itself uses (YAML 1.1 rules).
func TestRenderPyYAML(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err == nil {
		err = exec.Command(py, "-c", "import yaml").Run()
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("python3 with PyYAML is missing: %v", err)
		}
		t.Skipf("python3 with PyYAML is missing: %v", err)
	}
	cfg := fullConfig(t)
	out, err := Render(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(py, "-c", "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)")
	cmd.Stdin = bytes.NewReader(out)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	js, err := cmd.Output()
	if err != nil {
		t.Fatalf("PyYAML: %v: %s", err, stderr.String())
	}
	var doc map[string]any
	if err := json.Unmarshal(js, &doc); err != nil {
		t.Fatal(err)
	}
	checkCloudConfig(t, doc, cfg)
}

func TestBootFiles(t *testing.T) {
	cfg := fullConfig(t)
	files, err := BootFiles(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, f := range files {
		paths = append(paths, f.Path)
	}
	want := []string{SSHDConfigFile, ReadyCommand, LeaseEnvFile, BrowserEnvFile,
		xvfbUnit, wmUnit, x11vncUnt, DesktopBootstrapFile, "/etc/x.conf"}
	if !reflect.DeepEqual(paths, want) {
		t.Fatalf("paths = %v, want %v", paths, want)
	}
	if files[1].Mode != 0o755 {
		t.Errorf("ready command mode %v", files[1].Mode)
	}
	if _, err := BootFiles(Config{}); err == nil {
		t.Error("BootFiles accepted an empty config")
	}
}

// TestShellSyntax checks the readiness script and the runcmd shell snippets
// with sh -n.
func TestShellSyntax(t *testing.T) {
	cfg := fullConfig(t)
	files, err := BootFiles(cfg)
	if err != nil {
		t.Fatal(err)
	}
	check := func(what string, args ...string) {
		t.Helper()
		if out, err := exec.Command("/bin/sh", append([]string{"-n"}, args...)...).CombinedOutput(); err != nil {
			t.Errorf("%s: sh -n: %v: %s", what, err, out)
		}
	}
	for _, f := range files {
		if f.Path == ReadyCommand || f.Path == LeaseEnvFile || f.Path == BrowserEnvFile || f.Path == DesktopBootstrapFile {
			p := t.TempDir() + "/script"
			if err := os.WriteFile(p, f.Content, 0o600); err != nil {
				t.Fatal(err)
			}
			check(f.Path, p)
		}
	}
	out, err := Render(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(out, &doc); err != nil {
		t.Fatal(err)
	}
	for _, c := range doc["runcmd"].([]any) {
		args := c.([]any)
		if args[0] == "sh" && args[1] == "-c" {
			check("runcmd", "-c", args[2].(string))
		}
	}
}
