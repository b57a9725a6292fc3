// Tests of a nil *Lease: every exported method returns ErrInvalidArgument,
// none panics.

package crabbox_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	crabbox "github.com/crabbox/crabbox-go"
)

// TestNilLeaseMethodsReturnInvalidArgument calls every exported method of
// *Lease on a nil lease.
func TestNilLeaseMethodsReturnInvalidArgument(t *testing.T) {
	ctx := context.Background()
	var l *crabbox.Lease
	dir := t.TempDir()
	calls := map[string]func() error{
		"OpenURL":        func() error { _, err := l.OpenURL(ctx, "http://127.0.0.1/"); return err },
		"PrepareDesktop": func() error { _, err := l.PrepareDesktop(ctx); return err },
		"Fetch":          func() error { _, err := l.Fetch(ctx, "/etc/hostname", &bytes.Buffer{}); return err },
		"FetchFile":      func() error { return l.FetchFile(ctx, "/etc/hostname", filepath.Join(dir, "f")) },
		"Touch":          func() error { return l.Touch(ctx) },
		"Extend":         func() error { return l.Extend(ctx, time.Hour) },
		"Release":        func() error { return l.Release(ctx) },
		"Record":         func() error { _, err := l.Record(ctx, time.Second); return err },
		"Run":            func() error { _, err := l.Run(ctx, "true"); return err },
		"Screenshot":     func() error { _, err := l.Screenshot(ctx); return err },
		"Smoke":          func() error { _, err := l.Smoke(ctx, []crabbox.SmokeCheck{crabbox.CommandExists("sh")}); return err },
		"DialContext":    func() error { _, err := l.DialContext(ctx, "tcp", "127.0.0.1:1"); return err },
		"Forward":        func() error { _, err := l.Forward(ctx, "127.0.0.1:1"); return err },
		"Reverse":        func() error { _, err := l.Reverse(ctx, "127.0.0.1:1", "127.0.0.1:2"); return err },
		"ForwardVNC":     func() error { _, err := l.ForwardVNC(ctx); return err },
		"Upload":         func() error { return l.Upload(ctx, strings.NewReader("x"), "/tmp/x", 0o644) },
		"UploadFile":     func() error { return l.UploadFile(ctx, filepath.Join(dir, "missing"), "/tmp/x") },
		"SyncDir":        func() error { _, err := l.SyncDir(ctx, dir, "/tmp/x"); return err },
		"WaitWindow":     func() error { _, err := l.WaitWindow(ctx, "Chromium"); return err },
		"WaitProofPage":  func() error { _, _, err := l.WaitProofPage(ctx, &crabbox.Browser{}, crabbox.ProofPage{}); return err },
		"UnmarshalJSON":  func() error { return l.UnmarshalJSON([]byte(`{"id":"cbx_0123456789ab"}`)) },
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			err := func() (err error) {
				defer func() {
					if r := recover(); r != nil {
						err = fmt.Errorf("panic: %v", r)
					}
				}()
				return call()
			}()
			if !errors.Is(err, crabbox.ErrInvalidArgument) {
				t.Errorf("(*Lease)(nil).%s: %v, want ErrInvalidArgument", name, err)
			}
		})
	}
	// Closing a nil lease closes nothing; marshalling it writes null.
	t.Run("Close", func(t *testing.T) {
		if err := l.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	t.Run("MarshalJSON", func(t *testing.T) {
		b, err := l.MarshalJSON()
		if err != nil || string(b) != "null" {
			t.Errorf("MarshalJSON: %s, %v", b, err)
		}
	})
}
