// Parsing a rendered user-data document back into its Config.

package cloudinit

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Parse reads a document written by Render and returns its configuration
// (normalized, see Normalize). It accepts only the YAML subset Render
// writes; anything else, and any configuration Render would refuse, is an
// error wrapping provider.ErrInvalidArgument.
func Parse(userData []byte) (*Config, error) {
	if !bytes.HasPrefix(userData, []byte("#cloud-config\n")) {
		return nil, invalid("user-data does not start with #cloud-config")
	}
	root, err := parseYAML(string(userData))
	if err != nil {
		return nil, invalid("user-data: %v", err)
	}
	// In document order: LeaseEnvFile names the user parsed before it, and
	// the packages to drop depend on the desktop and browser it records.
	var c Config
	for _, section := range []func(*node, *Config) error{parseUser, parseHostKey, parseFiles, parsePackages} {
		if err := section(root, &c); err != nil {
			return nil, err
		}
	}
	n, err := Normalize(c)
	if err != nil {
		return nil, err
	}
	return &n, nil
}

// parseUser reads the lease user and its authorized keys from users.
func parseUser(root *node, c *Config) error {
	users := root.get("users")
	if users == nil || users.kind != seqNode {
		return invalid("user-data has no users list")
	}
	var found bool
	for _, u := range users.seq {
		if u.kind == scalarNode && u.scalar == "default" {
			continue
		}
		if u.kind != mapNode {
			return invalid("line %d: user entry is not a mapping", u.line)
		}
		if found {
			return invalid("line %d: more than one user", u.line)
		}
		found = true
		var err error
		if c.User, err = scalar(u, "name"); err != nil {
			return err
		}
		keys := u.get("ssh_authorized_keys")
		if keys != nil {
			if c.AuthorizedKeys, err = scalars(keys); err != nil {
				return err
			}
		}
	}
	if !found {
		return invalid("user-data creates no user")
	}
	return nil
}

// parseHostKey reads the host key pair from ssh_keys.
func parseHostKey(root *node, c *Config) error {
	sk := root.get("ssh_keys")
	if sk == nil || sk.kind != mapNode {
		return invalid("user-data has no ssh_keys")
	}
	pem, err := scalar(sk, "ed25519_private")
	if err != nil {
		return err
	}
	c.HostKeyPEM = []byte(pem)
	if c.HostKeyPublic, err = scalar(sk, "ed25519_public"); err != nil {
		return err
	}
	return nil
}

// parseFiles reads write_files: the sshd drop-in gives the ports,
// LeaseEnvFile (required) the lease fields, crabbox's other files are
// rendered from those, and the rest are the extra files.
func parseFiles(root *node, c *Config) error {
	var leaseEnvSeen bool
	if wf := root.get("write_files"); wf != nil {
		if wf.kind != seqNode {
			return invalid("line %d: write_files is not a list", wf.line)
		}
		for _, f := range wf.seq {
			p, data, m, err := parseFile(f)
			if err != nil {
				return err
			}
			switch {
			case p == SSHDConfigFile:
				if err := parseSSHDPorts(string(data), c); err != nil {
					return err
				}
			case p == LeaseEnvFile:
				leaseEnvSeen = true
				if err := parseLeaseEnv(string(data), c); err != nil {
					return err
				}
			case ownedPath(p):
				// Rendered from the other fields.
			default:
				c.Files = append(c.Files, File{Path: p, Content: data, Mode: m})
			}
		}
	}
	if !leaseEnvSeen {
		return invalid("user-data has no %s", LeaseEnvFile)
	}
	return nil
}

// parseFile reads one write_files entry: its path, decoded content and
// permissions (default 0644).
func parseFile(f *node) (p string, data []byte, m os.FileMode, err error) {
	if f.kind != mapNode {
		return "", nil, 0, invalid("line %d: write_files entry is not a mapping", f.line)
	}
	if p, err = scalar(f, "path"); err != nil {
		return "", nil, 0, err
	}
	if data, err = fileContent(f, p); err != nil {
		return "", nil, 0, err
	}
	mode := "0644"
	if f.get("permissions") != nil {
		if mode, err = scalar(f, "permissions"); err != nil {
			return "", nil, 0, err
		}
	}
	if m, err = parseMode(mode); err != nil {
		return "", nil, 0, invalid("line %d: file %s: %v", f.line, p, err)
	}
	return p, data, m, nil
}

// fileContent returns the content of the write_files entry f (path p),
// base64-decoded when its encoding says so.
func fileContent(f *node, p string) ([]byte, error) {
	content := ""
	if f.get("content") != nil {
		var err error
		if content, err = scalar(f, "content"); err != nil {
			return nil, err
		}
	}
	enc := f.get("encoding")
	if enc == nil {
		return []byte(content), nil
	}
	switch enc.scalar {
	case "b64", "base64":
		data, err := base64.StdEncoding.DecodeString(strings.TrimSpace(content))
		if err != nil {
			return nil, invalid("line %d: file %s: %v", f.line, p, err)
		}
		return data, nil
	default:
		return nil, invalid("line %d: file %s: unsupported encoding %q", f.line, p, enc.scalar)
	}
}

// parseSSHDPorts appends the Port lines of the sshd drop-in s to c.SSHPorts.
func parseSSHDPorts(s string, c *Config) error {
	for _, line := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(line, "Port "); ok {
			port, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				return invalid("sshd drop-in: bad port %q", v)
			}
			c.SSHPorts = append(c.SSHPorts, port)
		}
	}
	return nil
}

// parsePackages reads the extra packages: the list without the defaults.
func parsePackages(root *node, c *Config) error {
	pk := root.get("packages")
	if pk == nil {
		return nil
	}
	all, err := scalars(pk)
	if err != nil {
		return err
	}
	defaults := DefaultPackages(c.Desktop, c.Browser)
	for _, p := range all {
		if !slices.Contains(defaults, p) {
			c.Packages = append(c.Packages, p)
		}
	}
	return nil
}

// parseLeaseEnv reads LeaseEnvFile's content into c.
func parseLeaseEnv(s string, c *Config) error {
	for _, line := range strings.Split(s, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return invalid("%s: bad line %q", LeaseEnvFile, line)
		}
		v, err := shellUnquote(v)
		if err != nil {
			return invalid("%s: %s: %v", LeaseEnvFile, k, err)
		}
		switch k {
		case "CRABBOX_LEASE_ID":
			c.LeaseID = v
		case "CRABBOX_USER":
			if v != c.User {
				return invalid("%s names user %q but the user-data creates %q", LeaseEnvFile, v, c.User)
			}
		case "CRABBOX_WORK_ROOT":
			c.WorkRoot = v
		case "CRABBOX_DESKTOP":
			c.Desktop = v == "1"
		case "CRABBOX_BROWSER":
			c.Browser = v == "1"
		case "CRABBOX_SHUTDOWN_AFTER":
			d, err := time.ParseDuration(v)
			if err != nil {
				return invalid("%s: shutdown delay: %v", LeaseEnvFile, err)
			}
			c.ShutdownAfter = d
		}
	}
	return nil
}

// shellUnquote undoes shellQuote (and accepts unquoted words).
func shellUnquote(s string) (string, error) {
	if !strings.HasPrefix(s, "'") {
		if strings.ContainsAny(s, " \t'\"\\$`") {
			return "", fmt.Errorf("unsupported shell word %q", s)
		}
		return s, nil
	}
	var b strings.Builder
	for s != "" {
		if !strings.HasPrefix(s, "'") {
			return "", fmt.Errorf("unsupported shell quoting")
		}
		end := strings.IndexByte(s[1:], '\'')
		if end < 0 {
			return "", fmt.Errorf("unterminated quote")
		}
		b.WriteString(s[1 : 1+end])
		s = s[end+2:]
		if strings.HasPrefix(s, `\'`) {
			b.WriteByte('\'')
			s = s[2:]
		}
	}
	return b.String(), nil
}

func scalar(n *node, key string) (string, error) {
	v := n.get(key)
	if v == nil {
		return "", invalid("line %d: missing %s", n.line, key)
	}
	if v.kind != scalarNode {
		return "", invalid("line %d: %s is not a scalar", v.line, key)
	}
	return v.scalar, nil
}

func scalars(n *node) ([]string, error) {
	if n.kind != seqNode {
		return nil, invalid("line %d: expected a list", n.line)
	}
	out := make([]string, 0, len(n.seq))
	for _, v := range n.seq {
		if v.kind != scalarNode {
			return nil, invalid("line %d: expected a list of strings", v.line)
		}
		out = append(out, v.scalar)
	}
	return out, nil
}
