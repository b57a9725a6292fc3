// Fetching files from the lease: Lease.Fetch streams a file on the box to a
// writer, Lease.FetchFile to a local file.

package crabbox

import (
	"context"
	_ "embed"
	"fmt"
	"io"
	"os"
	"strings"
)

//go:embed fetch.sh
var fetchScript string

// Fetch copies a file from the box to w (cat over the lease's SSH
// connection) and returns the number of bytes written. Absolute paths are
// resolved below ${CRABBOX_FS_ROOT} like the smoke checks do, "~/..."
// below $HOME. A missing file matches ErrNotFound, an unreadable one
// ErrPermission.
func (l *Lease) Fetch(ctx context.Context, remotePath string, w io.Writer) (int64, error) {
	if err := l.usable("fetch"); err != nil {
		return 0, err
	}
	n, err := fetch(ctx, leaseTarget{l}, remotePath, w)
	if err != nil {
		return n, l.c.opErr("fetch", l.ID, err)
	}
	return n, nil
}

// FetchFile copies a file from the box to a local file (created or
// truncated, mode 0644); on error the partial local file is removed.
func (l *Lease) FetchFile(ctx context.Context, remotePath, localPath string) error {
	if err := l.usable("fetch"); err != nil {
		return err
	}
	if err := fetchToFile(ctx, leaseTarget{l}, remotePath, localPath); err != nil {
		return l.c.opErr("fetch", l.ID, err)
	}
	return nil
}

func fetch(ctx context.Context, r boxRunner, remotePath string, w io.Writer) (int64, error) {
	if strings.TrimSpace(remotePath) == "" || strings.ContainsAny(remotePath, "\x00\n\r") {
		return 0, fmt.Errorf("%w: remote path %q", ErrInvalidArgument, remotePath)
	}
	if w == nil {
		return 0, fmt.Errorf("%w: nil writer", ErrInvalidArgument)
	}
	cw := &countingWriter{w: w}
	_, err := runScript(ctx, r, "fetching "+remotePath, "p="+boxPath(remotePath)+"\n"+fetchScript, cw)
	return cw.n, err
}

func fetchToFile(ctx context.Context, r boxRunner, remotePath, localPath string) error {
	if strings.TrimSpace(localPath) == "" {
		return fmt.Errorf("%w: empty local path", ErrInvalidArgument)
	}
	f, err := os.Create(localPath)
	if err != nil {
		return fmt.Errorf("fetching %s: %w", remotePath, err)
	}
	_, err = fetch(ctx, r, remotePath, f)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("fetching %s: %w", remotePath, cerr)
	}
	if err != nil {
		_ = os.Remove(localPath)
		return err
	}
	return nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
