// cloud-init's own schema check of a user-data document, run with the
// image's cloud-init.

package cloudbox

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

const schemaDoc = "/var/lib/crabbox-testimage/schema/user-data"

// Schema runs `cloud-init schema --config-file` on doc with the image's
// cloud-init (in throwaway namespaces over the image: the image is not
// changed) and returns its output. A document cloud-init rejects is an
// error holding that output; so is one it accepts with deprecation
// warnings (a later release would reject or ignore those keys).
func Schema(ctx context.Context, image string, doc []byte) (string, error) {
	if err := hostTools(); err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "cbx-schema-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	for _, d := range []string{"upper", "work", "merged"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return "", err
		}
	}
	full := filepath.Join(dir, "upper", schemaDoc)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(full, doc, 0o600); err != nil {
		return "", err
	}
	cmd := initCommand(image, dir, "/usr/bin/env", "LANG=C.UTF-8", "/usr/bin/cloud-init", "schema", "--config-file", schemaDoc)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("cloudbox: schema: %w", err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-done
		return out.String(), fmt.Errorf("cloudbox: schema: %w", ctx.Err())
	}
	if err != nil {
		return out.String(), fmt.Errorf("cloudbox: cloud-init schema rejected the document (%v):\n%s", err, out.String())
	}
	if deprecated(out.String()) {
		return out.String(), fmt.Errorf("cloudbox: cloud-init schema accepted the document with deprecations:\n%s", out.String())
	}
	return out.String(), nil
}

// deprecated reports whether schema output lists deprecations (22.4 prints
// an empty "Cloud config schema deprecations:" line when there are none).
func deprecated(out string) bool {
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "DEPRECATED") {
			return true
		}
		if _, rest, ok := strings.Cut(line, "deprecations:"); ok && strings.TrimSpace(rest) != "" {
			return true
		}
	}
	return false
}
