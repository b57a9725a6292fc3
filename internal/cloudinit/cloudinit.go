// Package cloudinit renders the cloud-init user-data that crabbox's Warmup
// hands to a new machine, and parses it back.
//
// Render writes a "#cloud-config" YAML document by hand (no YAML library):
// strings that could need escaping are double-quoted, keys, PEM blocks and
// scripts are literal block scalars, extra files are base64. On a real
// Ubuntu 24.04 box the document makes cloud-init create the lease user with
// its authorized keys and passwordless sudo, install the lease's ed25519
// host key as the only host key, configure sshd without passwords on the
// lease's ports, install the packages, create the work root, schedule the
// box's own poweroff (TTL), start the desktop services when asked, and
// finally write the lease id into BootstrapMarker. ReadyCommand, installed
// by the document, exits 0 once all of that is done for this lease: a
// marker left in a baked image by the lease that built it does not count.
//
// Debian 12's own cloud-init (22.4) validates every kind of document
// (`cloud-init schema`) and boots it for real in internal/testenv/cloudbox;
// docs/design.md lists what the document relies on.
//
// Parse reads back exactly what Render writes (emulated clouds use it to
// boot their machines); it understands only the YAML subset Render produces
// and rejects anything else with an error wrapping
// provider.ErrInvalidArgument. Parse(Render(c)) returns Normalize(c).
package cloudinit

import (
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/ssh"

	"github.com/crabbox/crabbox-go/provider"
)

// Defaults and well-known paths on a crabbox box.
const (
	// DefaultUser is the login user created on every box.
	DefaultUser = "crabbox"
	// DefaultWorkRoot is the directory commands run in.
	DefaultWorkRoot = "/work/crabbox"
	// ReadyCommand is the readiness script installed by the user-data. It
	// exits 0 once bootstrap finished, and non-zero with a reason on
	// stderr otherwise. It resolves every path under $CRABBOX_FS_ROOT when
	// that is set (emulated machines whose file system is a host directory).
	ReadyCommand = "/usr/local/bin/crabbox-ready"
	// BootstrapMarker holds the lease id (BootstrapMarkerContent), written
	// as the very last bootstrap step. ReadyCommand passes only when it
	// holds the box's own lease id, so a marker an image kept from the
	// lease that baked it does not make a new box ready before its own
	// bootstrap ran. Emulated clouds write BootstrapMarkerContent(LeaseID)
	// there when they "boot" a machine.
	BootstrapMarker = "/var/lib/crabbox/bootstrap-done"
	// BrowserEnvFile holds BROWSER=<absolute path of the browser binary>
	// on boxes with a browser.
	BrowserEnvFile = "/var/lib/crabbox/browser.env"
	// LeaseEnvFile records the lease the box was bootstrapped for, as
	// shell variable assignments (CRABBOX_LEASE_ID=..., CRABBOX_USER=...,
	// CRABBOX_WORK_ROOT=..., CRABBOX_DESKTOP=0|1, CRABBOX_BROWSER=0|1,
	// CRABBOX_SHUTDOWN_AFTER=<Go duration>, CRABBOX_DISPLAY=:99).
	LeaseEnvFile = "/var/lib/crabbox/lease.env"
	// SSHDConfigFile is the sshd drop-in the user-data installs.
	SSHDConfigFile = "/etc/ssh/sshd_config.d/60-crabbox.conf"
	// HostKeyFile is where cloud-init installs the ed25519 host key.
	HostKeyFile = "/etc/ssh/ssh_host_ed25519_key"
	// Display is the X display of desktop boxes.
	Display = ":99"
	// ScreenGeometry is the Xvfb screen of desktop boxes.
	ScreenGeometry = "1280x800x24"
	// VNCPort is the port x11vnc listens on, bound to 127.0.0.1 only.
	VNCPort = 5900

	// ReadyShellCommand runs ReadyCommand from a shell on real and on
	// emulated machines alike ($CRABBOX_FS_ROOT is empty on real boxes).
	ReadyShellCommand = `"${CRABBOX_FS_ROOT:-}"` + ReadyCommand
	// MaxUserDataSize is the largest document Render returns: AWS's
	// user-data limit (16 KiB), the strictest of the supported clouds.
	MaxUserDataSize = 16 << 10

	// DisplayShellExpr expands to the box's X display in a shell command:
	// emulated machines may set CRABBOX_DISPLAY to their own display.
	DisplayShellExpr = `"${CRABBOX_DISPLAY:-:99}"`
)

// Unit files of the desktop services.
const (
	xvfbUnit  = "/etc/systemd/system/crabbox-xvfb.service"
	wmUnit    = "/etc/systemd/system/crabbox-wm.service"
	x11vncUnt = "/etc/systemd/system/crabbox-x11vnc.service"
)

// Config describes one box's bootstrap.
type Config struct {
	// LeaseID is recorded in LeaseEnvFile; optional.
	LeaseID string
	// User is the login user; "" means DefaultUser.
	User string
	// AuthorizedKeys are authorized_keys lines for User; at least one.
	AuthorizedKeys []string
	// HostKeyPEM is the OpenSSH-format PEM private ed25519 host key
	// installed as the box's only host key. Required.
	HostKeyPEM []byte
	// HostKeyPublic is its authorized_keys-format public key; derived from
	// HostKeyPEM when empty, and must match it when given.
	HostKeyPublic string
	// WorkRoot is the directory commands run in; "" means DefaultWorkRoot.
	WorkRoot string
	// SSHPorts are the ports sshd listens on; empty means 22 and 2222.
	SSHPorts []int
	// ShutdownAfter > 0 makes the box power itself off after that long
	// (rounded up to whole minutes): the lease's TTL. 0 means never.
	ShutdownAfter time.Duration
	// Desktop starts Xvfb on Display, a window manager and x11vnc bound to
	// 127.0.0.1; Browser installs a browser and writes BrowserEnvFile.
	Desktop, Browser bool
	// Packages are extra packages to install besides DefaultPackages.
	Packages []string
	// Files are extra files to write (after the packages are installed).
	Files []File
}

// File is an extra file written on the box, owned by root.
type File struct {
	Path    string
	Content []byte
	// Mode holds permission bits (and setuid/setgid/sticky); 0 means 0644.
	Mode os.FileMode
}

// DefaultPackages returns the packages every box gets: the base tools, and
// the desktop and browser packages when asked. The user-data's package list
// holds only the base tools (and Config.Packages); the desktop and browser
// packages are installed by DesktopBootstrapScript, and only when the image
// lacks the tools (a baked image skips the package work). Ubuntu 24.04
// ships Chromium as the chromium-browser package (a snap wrapper); the
// bootstrap records the browser binary it finds in BrowserEnvFile.
func DefaultPackages(desktop, browser bool) []string {
	p := []string{"git", "rsync", "curl", "jq", "ca-certificates"}
	if desktop {
		p = append(p, "xvfb", "x11vnc", "xdotool", "scrot", "ffmpeg", "openbox")
	}
	if browser {
		p = append(p, "chromium-browser")
	}
	return p
}

// ReadyTools are the commands ReadyCommand requires on every box.
func ReadyTools() []string { return []string{"git", "rsync", "curl", "jq"} }

var (
	userRe     = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
	leaseRe    = regexp.MustCompile(`^[A-Za-z0-9_.-]{0,128}$`)
	safePathRe = regexp.MustCompile(`^/[A-Za-z0-9/._+@:-]*$`)
	packageRe  = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]*(=[A-Za-z0-9.+:~-]+)?$`)
)

func invalid(format string, args ...any) error {
	return provider.Errorf(provider.ErrInvalidArgument, "cloudinit: "+format, args...)
}

// ownedPaths are the files Render writes itself; Config.Files may not use them.
func ownedPath(p string) bool {
	switch p {
	case SSHDConfigFile, ReadyCommand, BrowserEnvFile, LeaseEnvFile, BootstrapMarker, BootstrapMarker + ".tmp", HostKeyFile,
		HostKeyFile + ".pub", xvfbUnit, wmUnit, x11vncUnt, DesktopBootstrapFile:
		return true
	}
	return false
}

// Normalize validates cfg and returns it with defaults filled in, keys and
// PEM trimmed, packages deduplicated (defaults dropped), and file modes
// defaulted: the value Parse returns for Render(cfg). Errors wrap
// provider.ErrInvalidArgument.
func Normalize(cfg Config) (Config, error) {
	n := Config{
		LeaseID:       cfg.LeaseID,
		User:          cfg.User,
		WorkRoot:      cfg.WorkRoot,
		ShutdownAfter: cfg.ShutdownAfter,
		Desktop:       cfg.Desktop,
		Browser:       cfg.Browser,
	}
	for _, step := range []func(cfg Config, n *Config) error{
		normalizeUser, normalizeHostKey, normalizeWorkRoot, normalizeSSH, normalizePackages, normalizeFiles,
	} {
		if err := step(cfg, &n); err != nil {
			return Config{}, err
		}
	}
	return n, nil
}

// normalizeUser checks the lease id, defaults the user and trims and checks
// its authorized keys.
func normalizeUser(cfg Config, n *Config) error {
	if !leaseRe.MatchString(n.LeaseID) {
		return invalid("lease id %q has characters outside [A-Za-z0-9_.-]", n.LeaseID)
	}
	if n.User == "" {
		n.User = DefaultUser
	}
	if !userRe.MatchString(n.User) || n.User == "root" {
		return invalid("user %q is not a valid non-root login name", n.User)
	}
	if len(cfg.AuthorizedKeys) == 0 {
		return invalid("no authorized key for user %s", n.User)
	}
	for i, k := range cfg.AuthorizedKeys {
		k = strings.TrimSpace(k)
		if err := checkLine(k); err != nil {
			return invalid("authorized key %d: %v", i+1, err)
		}
		if _, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(k)); err != nil || len(rest) != 0 {
			return invalid("authorized key %d is not one authorized_keys line: %v", i+1, err)
		}
		n.AuthorizedKeys = append(n.AuthorizedKeys, k)
	}
	return nil
}

// normalizeHostKey trims and checks the ed25519 host key, and derives its
// public key or checks the given one against it.
func normalizeHostKey(cfg Config, n *Config) error {
	if len(cfg.HostKeyPEM) == 0 {
		return invalid("no host key")
	}
	pem := strings.TrimSpace(string(cfg.HostKeyPEM)) + "\n"
	pub, err := ed25519Public(pem)
	if err != nil {
		return err
	}
	if !blockSafe(pem) {
		return invalid("host key PEM has unexpected characters")
	}
	n.HostKeyPEM = []byte(pem)
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return invalid("host key: %v", err)
	}
	if cfg.HostKeyPublic == "" {
		n.HostKeyPublic = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub)))
		return nil
	}
	n.HostKeyPublic = strings.TrimSpace(cfg.HostKeyPublic)
	if err := checkLine(n.HostKeyPublic); err != nil {
		return invalid("host public key: %v", err)
	}
	given, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(n.HostKeyPublic))
	if err != nil || len(rest) != 0 {
		return invalid("host public key is not one authorized_keys line: %v", err)
	}
	if string(given.Marshal()) != string(sshPub.Marshal()) {
		return invalid("host public key does not match the host private key")
	}
	return nil
}

// ed25519Public parses the PEM private key and returns its public key; any
// other key type is an error.
func ed25519Public(pem string) (ed25519.PublicKey, error) {
	raw, err := ssh.ParseRawPrivateKey([]byte(pem))
	if err != nil {
		return nil, invalid("host key: %v", err)
	}
	switch k := raw.(type) {
	case ed25519.PrivateKey:
		return k.Public().(ed25519.PublicKey), nil
	case *ed25519.PrivateKey:
		return k.Public().(ed25519.PublicKey), nil
	default:
		return nil, invalid("host key is %T, want ed25519", raw)
	}
}

// normalizeWorkRoot defaults and checks the work root.
func normalizeWorkRoot(_ Config, n *Config) error {
	if n.WorkRoot == "" {
		n.WorkRoot = DefaultWorkRoot
	}
	if err := checkPath(n.WorkRoot); err != nil {
		return invalid("work root: %v", err)
	}
	if n.WorkRoot == "/" {
		return invalid("work root may not be /")
	}
	return nil
}

// normalizeSSH defaults and checks the sshd ports, and checks the shutdown
// delay.
func normalizeSSH(cfg Config, n *Config) error {
	if len(cfg.SSHPorts) == 0 {
		n.SSHPorts = []int{22, 2222}
	} else {
		for _, p := range cfg.SSHPorts {
			if p < 1 || p > 65535 {
				return invalid("ssh port %d out of range", p)
			}
			if slices.Contains(n.SSHPorts, p) {
				return invalid("ssh port %d given twice", p)
			}
			n.SSHPorts = append(n.SSHPorts, p)
		}
	}
	if n.ShutdownAfter < 0 {
		return invalid("negative shutdown delay %v", n.ShutdownAfter)
	}
	return nil
}

// normalizePackages trims and checks the extra packages, dropping the
// defaults and repeats.
func normalizePackages(cfg Config, n *Config) error {
	defaults := DefaultPackages(n.Desktop, n.Browser)
	for _, p := range cfg.Packages {
		p = strings.TrimSpace(p)
		if !packageRe.MatchString(p) {
			return invalid("package name %q is not valid", p)
		}
		if slices.Contains(defaults, p) || slices.Contains(n.Packages, p) {
			continue
		}
		n.Packages = append(n.Packages, p)
	}
	return nil
}

// normalizeFiles checks the extra files, defaults their modes and copies
// their contents.
func normalizeFiles(cfg Config, n *Config) error {
	for i, f := range cfg.Files {
		if err := checkPath(f.Path); err != nil {
			return invalid("file %d: %v", i+1, err)
		}
		if ownedPath(f.Path) {
			return invalid("file %s is written by crabbox itself", f.Path)
		}
		for _, g := range n.Files {
			if g.Path == f.Path {
				return invalid("file %s given twice", f.Path)
			}
		}
		mode := f.Mode
		if mode == 0 {
			mode = 0o644
		}
		if mode&^(os.ModePerm|os.ModeSetuid|os.ModeSetgid|os.ModeSticky) != 0 {
			return invalid("file %s: mode %v is not a permission mode", f.Path, f.Mode)
		}
		n.Files = append(n.Files, File{Path: f.Path, Content: append([]byte{}, f.Content...), Mode: mode})
	}
	return nil
}

// checkLine rejects strings that are not one printable line.
func checkLine(s string) error {
	if s == "" {
		return fmt.Errorf("empty")
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("not valid UTF-8")
	}
	for _, r := range s {
		if r == '\n' || r == '\r' || (r != '\t' && !unicode.IsPrint(r) && r != ' ') {
			return fmt.Errorf("contains control character %U", r)
		}
	}
	return nil
}

// checkPath accepts clean absolute paths made of safe characters, so they
// can be written unquoted in shell commands and sshd configuration.
func checkPath(p string) error {
	if !safePathRe.MatchString(p) {
		return fmt.Errorf("path %q must be absolute and use only [A-Za-z0-9/._+@:-]", p)
	}
	if path.Clean(p) != p {
		return fmt.Errorf("path %q is not clean", p)
	}
	return nil
}

// shellQuote single-quotes s for sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// modeString formats a permission mode as cloud-init's octal string,
// including setuid/setgid/sticky bits.
func modeString(m os.FileMode) string {
	v := uint32(m.Perm())
	if m&os.ModeSetuid != 0 {
		v |= 0o4000
	}
	if m&os.ModeSetgid != 0 {
		v |= 0o2000
	}
	if m&os.ModeSticky != 0 {
		v |= 0o1000
	}
	return fmt.Sprintf("%04o", v)
}

func parseMode(s string) (os.FileMode, error) {
	v, err := strconv.ParseUint(strings.TrimPrefix(s, "0o"), 8, 32)
	if err != nil || v > 0o7777 {
		return 0, fmt.Errorf("bad permissions %q", s)
	}
	m := os.FileMode(v & 0o777)
	if v&0o4000 != 0 {
		m |= os.ModeSetuid
	}
	if v&0o2000 != 0 {
		m |= os.ModeSetgid
	}
	if v&0o1000 != 0 {
		m |= os.ModeSticky
	}
	return m, nil
}

// shutdownMinutes rounds d up to whole minutes (at least 1).
func shutdownMinutes(d time.Duration) int64 {
	m := int64((d + time.Minute - 1) / time.Minute)
	if m < 1 {
		m = 1
	}
	return m
}

// Render validates cfg and returns the "#cloud-config" user-data document.
// Errors wrap provider.ErrInvalidArgument.
func Render(cfg Config) ([]byte, error) {
	c, err := Normalize(cfg)
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	b.WriteString("#cloud-config\n")
	b.WriteString("# Rendered by crabbox")
	if c.LeaseID != "" {
		b.WriteString(" for lease " + c.LeaseID)
	}
	b.WriteString(". Parsed back by crabbox's cloudinit.Parse: edit with care.\n")
	renderUsers(&b, c)
	renderHostKey(&b, c)
	renderFiles(&b, c)
	renderPackages(&b, c)
	renderCommands(&b, c)
	if b.Len() > MaxUserDataSize {
		return nil, invalid("user-data is %d bytes, more than the %d clouds accept (extra files too large?)", b.Len(), MaxUserDataSize)
	}
	return []byte(b.String()), nil
}

// renderUsers writes the users: only the lease user (no distribution
// default user).
func renderUsers(b *strings.Builder, c Config) {
	b.WriteString("users:\n")
	b.WriteString("  - name: " + yamlQuote(c.User) + "\n")
	b.WriteString("    gecos: \"crabbox lease user\"\n")
	b.WriteString("    shell: /bin/bash\n")
	b.WriteString("    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n")
	b.WriteString("    lock_passwd: true\n")
	b.WriteString("    ssh_authorized_keys:\n")
	for _, k := range c.AuthorizedKeys {
		b.WriteString("      - " + yamlQuote(k) + "\n")
	}
	b.WriteString("disable_root: true\n")
	b.WriteString("ssh_pwauth: false\n")
}

// renderHostKey writes the host key: exactly the lease's ed25519 key,
// nothing generated. cloud-init generates host keys only when ssh_keys is
// absent, and never over an existing key file, so ssh_genkeytypes names
// only the lease's own key type: an empty list is what we mean, but
// cloud-init's schema requires at least one item ("ssh_genkeytypes: [] is
// too short", cloud-init 22.4).
func renderHostKey(b *strings.Builder, c Config) {
	b.WriteString("ssh_deletekeys: true\n")
	b.WriteString("ssh_genkeytypes: [ed25519]\n")
	b.WriteString("ssh_keys:\n")
	b.WriteString("  ed25519_private: ")
	yamlBlock(b, 4, string(c.HostKeyPEM))
	b.WriteString("  ed25519_public: " + yamlQuote(c.HostKeyPublic) + "\n")
}

// renderFiles writes the files: crabbox's own as text blocks, extra ones as
// base64, written after the packages are installed (defer).
func renderFiles(b *strings.Builder, c Config) {
	b.WriteString("write_files:\n")
	for _, f := range bootFiles(c) {
		b.WriteString("  - path: " + f.Path + "\n")
		b.WriteString("    owner: \"root:root\"\n")
		b.WriteString("    permissions: \"" + modeString(f.Mode) + "\"\n")
		if ownedPath(f.Path) {
			b.WriteString("    content: ")
			yamlBlock(b, 6, string(f.Content))
			continue
		}
		b.WriteString("    encoding: b64\n")
		b.WriteString("    defer: true\n")
		b.WriteString("    content: \"" + base64.StdEncoding.EncodeToString(f.Content) + "\"\n")
	}
}

// renderPackages writes the package list.
func renderPackages(b *strings.Builder, c Config) {
	b.WriteString("package_update: true\n")
	b.WriteString("packages:\n")
	// Base tools only: the desktop bootstrap installs the desktop and
	// browser packages when the image lacks them.
	for _, p := range append(DefaultPackages(false, false), c.Packages...) {
		b.WriteString("  - " + yamlQuote(p) + "\n")
	}
}

// renderCommands writes the commands, in order; the marker comes last.
func renderCommands(b *strings.Builder, c Config) {
	b.WriteString("runcmd:\n")
	cmd := func(args ...string) {
		q := make([]string, len(args))
		for i, a := range args {
			q[i] = yamlQuote(a)
		}
		b.WriteString("  - [" + strings.Join(q, ", ") + "]\n")
	}
	cmd("mkdir", "-p", c.WorkRoot, path.Dir(BootstrapMarker))
	cmd("chown", c.User+":"+c.User, c.WorkRoot)
	// Ubuntu 24.04 starts sshd by socket activation on port 22 only: move
	// to the plain service so the drop-in's ports apply.
	cmd("sh", "-c", "if systemctl is-enabled --quiet ssh.socket 2>/dev/null; then "+
		"systemctl disable --now ssh.socket; systemctl enable ssh.service; fi; "+
		"systemctl restart ssh.service || systemctl restart sshd.service")
	if c.ShutdownAfter > 0 {
		cmd("shutdown", "-P", "+"+strconv.FormatInt(shutdownMinutes(c.ShutdownAfter), 10), "crabbox lease TTL reached")
	}
	if c.Desktop || c.Browser {
		// Installs what is missing, starts the display services (the
		// units below), records the browser; see DesktopBootstrapScript.
		cmd(DesktopBootstrapFile)
	}
	// The marker names the lease, written atomically (ReadyCommand never
	// reads a half-written one).
	cmd("sh", "-c", markerCommand(c.LeaseID))
}

// BootFiles validates cfg and returns every file the user-data writes, in
// order: crabbox's own (sshd drop-in, ReadyCommand, LeaseEnvFile,
// BrowserEnvFile, desktop units) followed by cfg.Files. Emulated machines
// write them under their file-system root to "boot". Errors wrap
// provider.ErrInvalidArgument.
func BootFiles(cfg Config) ([]File, error) {
	c, err := Normalize(cfg)
	if err != nil {
		return nil, err
	}
	return bootFiles(c), nil
}

// bootFiles lists the files of a normalized config.
func bootFiles(c Config) []File {
	text := func(p string, mode os.FileMode, content string) File {
		return File{Path: p, Content: []byte(content), Mode: mode}
	}
	files := []File{
		text(SSHDConfigFile, 0o644, sshdConfig(c)),
		text(ReadyCommand, 0o755, readyScript(c)),
		text(LeaseEnvFile, 0o644, leaseEnv(c)),
	}
	if c.Browser {
		files = append(files, text(BrowserEnvFile, 0o644, "BROWSER=/usr/bin/chromium\n"))
	}
	if c.Desktop {
		files = append(files,
			text(xvfbUnit, 0o644, unit("Crabbox virtual display "+Display, c.User, "",
				"/usr/bin/Xvfb "+Display+" -screen 0 "+ScreenGeometry+" -nolisten tcp")),
			text(wmUnit, 0o644, unit("Crabbox window manager", c.User, "crabbox-xvfb.service",
				"/usr/bin/openbox")),
			text(x11vncUnt, 0o644, unit("Crabbox VNC server (127.0.0.1 only)", c.User, "crabbox-xvfb.service",
				"/usr/bin/x11vnc -display "+Display+" -localhost -rfbport "+strconv.Itoa(VNCPort)+" -forever -shared -nopw -quiet")))
	}
	if c.Desktop || c.Browser {
		files = append(files, text(DesktopBootstrapFile, 0o755, DesktopBootstrapScript(c)))
	}
	for _, f := range c.Files {
		files = append(files, File{Path: f.Path, Content: append([]byte{}, f.Content...), Mode: f.Mode})
	}
	return files
}

func sshdConfig(c Config) string {
	var b strings.Builder
	b.WriteString("# Managed by crabbox.\n")
	for _, p := range c.SSHPorts {
		b.WriteString("Port " + strconv.Itoa(p) + "\n")
	}
	b.WriteString("PasswordAuthentication no\n")
	b.WriteString("KbdInteractiveAuthentication no\n")
	b.WriteString("PermitRootLogin no\n")
	b.WriteString("HostKey " + HostKeyFile + "\n")
	return b.String()
}

func leaseEnv(c Config) string {
	bit := func(v bool) string {
		if v {
			return "1"
		}
		return "0"
	}
	var b strings.Builder
	b.WriteString("CRABBOX_LEASE_ID=" + shellQuote(c.LeaseID) + "\n")
	b.WriteString("CRABBOX_USER=" + shellQuote(c.User) + "\n")
	b.WriteString("CRABBOX_WORK_ROOT=" + shellQuote(c.WorkRoot) + "\n")
	b.WriteString("CRABBOX_DESKTOP=" + bit(c.Desktop) + "\n")
	b.WriteString("CRABBOX_BROWSER=" + bit(c.Browser) + "\n")
	b.WriteString("CRABBOX_SHUTDOWN_AFTER=" + shellQuote(c.ShutdownAfter.String()) + "\n")
	if c.Desktop {
		b.WriteString("CRABBOX_DISPLAY=" + shellQuote(Display) + "\n")
	}
	return b.String()
}

func unit(desc, user, after, exec string) string {
	var b strings.Builder
	b.WriteString("[Unit]\n")
	b.WriteString("Description=" + desc + "\n")
	if after != "" {
		b.WriteString("After=" + after + "\n")
		b.WriteString("Requires=" + after + "\n")
	}
	b.WriteString("\n[Service]\n")
	b.WriteString("User=" + user + "\n")
	b.WriteString("Environment=DISPLAY=" + Display + "\n")
	b.WriteString("ExecStart=" + exec + "\n")
	b.WriteString("Restart=always\n")
	b.WriteString("RestartSec=1\n")
	b.WriteString("\n[Install]\n")
	b.WriteString("WantedBy=multi-user.target\n")
	return b.String()
}

// BootstrapMarkerContent returns what the last bootstrap step writes to
// BootstrapMarker for the lease leaseID: the lease id and a newline.
func BootstrapMarkerContent(leaseID string) []byte { return []byte(leaseID + "\n") }

// markerCommand is the shell command writing BootstrapMarkerContent.
func markerCommand(leaseID string) string {
	tmp := BootstrapMarker + ".tmp"
	return "printf '%s\\n' " + shellQuote(leaseID) + " >" + tmp + " && mv -f " + tmp + " " + BootstrapMarker
}

func readyScript(c Config) string {
	var b strings.Builder
	b.WriteString("#!/bin/sh\n")
	b.WriteString("# crabbox readiness check: exits 0 once the box finished its bootstrap.\n")
	b.WriteString("# Paths are resolved under $CRABBOX_FS_ROOT when set (emulated machines).\n")
	b.WriteString("root=\"${CRABBOX_FS_ROOT:-}\"\n")
	b.WriteString("fail() {\n  echo \"crabbox-ready: $*\" >&2\n  exit 1\n}\n")
	b.WriteString("test -f \"$root\"" + shellQuote(BootstrapMarker) + " || fail \"bootstrap not finished\"\n")
	// A marker from another lease (kept in the image this box booted)
	// means this box's own bootstrap has not finished yet.
	b.WriteString("lease=" + shellQuote(c.LeaseID) + "\n")
	b.WriteString("marker=$(cat \"$root\"" + shellQuote(BootstrapMarker) + " 2>/dev/null) || fail \"bootstrap marker unreadable\"\n")
	b.WriteString("[ \"$marker\" = \"$lease\" ] || fail \"bootstrap not finished (marker is from lease '$marker', not '$lease')\"\n")
	b.WriteString("test -d \"$root\"" + shellQuote(c.WorkRoot) + " || fail \"work root " + c.WorkRoot + " missing\"\n")
	b.WriteString("for tool in " + strings.Join(ReadyTools(), " ") + "; do\n")
	b.WriteString("  command -v \"$tool\" >/dev/null 2>&1 || fail \"missing tool $tool\"\n")
	b.WriteString("done\n")
	if c.Desktop {
		b.WriteString("display=\"${CRABBOX_DISPLAY:-" + Display + "}\"\n")
		b.WriteString("DISPLAY=\"$display\" xdotool getdisplaygeometry >/dev/null 2>&1 || fail \"display $display does not answer\"\n")
	}
	if c.Browser {
		b.WriteString("test -r \"$root\"" + shellQuote(BrowserEnvFile) + " || fail \"browser env file missing\"\n")
		b.WriteString(". \"$root\"" + shellQuote(BrowserEnvFile) + "\n")
		b.WriteString("\"$BROWSER\" --version >/dev/null 2>&1 || fail \"browser $BROWSER does not run\"\n")
	}
	b.WriteString("echo ready\n")
	return b.String()
}
