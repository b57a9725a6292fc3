// Tests of upload.go: Upload, UploadFile and SyncDir round trips with
// modes, on the local cloud and on real OpenSSH; an incomplete source never
// replaces the destination; the default excludes keep private files out.

package crabbox_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/crabboxtest"
)

func uploadLease(t *testing.T) *crabbox.Lease {
	t.Helper()
	c := localClient(t, crabboxtest.Start(t))
	l, err := c.Warmup(testCtx(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Release(context.Background()) })
	return l
}

// boxes runs f on a local-cloud lease and on a real OpenSSH lease.
func boxes(t *testing.T, f func(t *testing.T, l *crabbox.Lease, dir string)) {
	t.Run("local", func(t *testing.T) { f(t, uploadLease(t), "/tmp/cbx-up") })
	t.Run("openssh", func(t *testing.T) {
		l := sshLease(t)
		// A fresh directory the login user owns.
		res, err := l.Run(testCtx(t), `mktemp -d`)
		require.NoError(t, err)
		dir := strings.TrimSpace(res.StdoutTail)
		t.Cleanup(func() { _, _ = l.Run(context.Background(), "rm -rf "+crabbox.ShellQuote(dir)) })
		f(t, l, dir)
	})
}

func remoteMode(t *testing.T, l *crabbox.Lease, p string) string {
	t.Helper()
	res, err := l.Run(testCtx(t), `stat -c %a "${CRABBOX_FS_ROOT:-}"`+crabbox.ShellQuote(p))
	require.NoError(t, err)
	return strings.TrimSpace(res.StdoutTail)
}

func fetchString(t *testing.T, l *crabbox.Lease, p string) string {
	t.Helper()
	var b bytes.Buffer
	_, err := l.Fetch(testCtx(t), p, &b)
	require.NoError(t, err)
	return b.String()
}

func TestUploadRoundTripsWithModes(t *testing.T) {
	boxes(t, func(t *testing.T, l *crabbox.Lease, dir string) {
		ctx := testCtx(t)
		payload := strings.Repeat("crabbox upload\n", 20000)
		p := dir + "/a/b/run.sh"
		require.NoError(t, l.Upload(ctx, strings.NewReader(payload), p, 0o750))
		assert.Equal(t, payload, fetchString(t, l, p))
		assert.Equal(t, "750", remoteMode(t, l, p))
		// Overwrite with another mode.
		require.NoError(t, l.Upload(ctx, strings.NewReader("v2"), p, 0o604))
		assert.Equal(t, "v2", fetchString(t, l, p))
		assert.Equal(t, "604", remoteMode(t, l, p))
		// Empty file.
		require.NoError(t, l.Upload(ctx, strings.NewReader(""), dir+"/empty", 0o644))
		assert.Equal(t, "", fetchString(t, l, dir+"/empty"))

		local := filepath.Join(t.TempDir(), "secret.txt")
		require.NoError(t, os.WriteFile(local, []byte("only me"), 0o600))
		require.NoError(t, os.Chmod(local, 0o600))
		require.NoError(t, l.UploadFile(ctx, local, dir+"/secret.txt"))
		assert.Equal(t, "only me", fetchString(t, l, dir+"/secret.txt"))
		assert.Equal(t, "600", remoteMode(t, l, dir+"/secret.txt"))
	})
}

// failingReader yields some bytes, then an error.
type failingReader struct{ n int }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, errors.New("disk on fire")
	}
	k := min(len(p), r.n)
	for i := range p[:k] {
		p[i] = 'x'
	}
	r.n -= k
	return k, nil
}

func TestUploadNeverInstallsAnIncompleteSource(t *testing.T) {
	l := uploadLease(t)
	ctx := testCtx(t)
	p := "/tmp/keep/config"
	require.NoError(t, l.Upload(ctx, strings.NewReader("good"), p, 0o644))
	err := l.Upload(ctx, &failingReader{n: 100000}, p, 0o644)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "disk on fire")
	assert.Equal(t, "good", fetchString(t, l, p), "the destination is untouched")
	res, err := l.Run(ctx, `ls -A "${CRABBOX_FS_ROOT:-}/tmp/keep"`)
	require.NoError(t, err)
	assert.Equal(t, "config\n", res.StdoutTail, "no temporary file is left behind")

	// Bad input.
	assert.ErrorIs(t, l.Upload(ctx, strings.NewReader("x"), "", 0o644), crabbox.ErrInvalidArgument)
	assert.ErrorIs(t, l.Upload(ctx, nil, p, 0o644), crabbox.ErrInvalidArgument)
	assert.ErrorIs(t, l.Upload(ctx, strings.NewReader("x"), p, os.ModeDir|0o755), crabbox.ErrInvalidArgument)
	assert.ErrorIs(t, l.UploadFile(ctx, filepath.Join(t.TempDir(), "missing"), p), crabbox.ErrNotFound)
	assert.ErrorIs(t, l.UploadFile(ctx, t.TempDir(), p), crabbox.ErrInvalidArgument)
	// A directory in the way.
	assert.ErrorIs(t, l.Upload(ctx, strings.NewReader("x"), "/tmp/keep", 0o644), crabbox.ErrCommandFailed)
	var zero crabbox.Lease
	assert.ErrorIs(t, zero.Upload(ctx, strings.NewReader("x"), p, 0o644), crabbox.ErrInvalidArgument)
	_, err = zero.SyncDir(ctx, t.TempDir(), p)
	assert.ErrorIs(t, err, crabbox.ErrInvalidArgument)
}

// writeLocalTree makes files (path -> content) with modes under root.
func writeLocalTree(t *testing.T, root string, files map[string]os.FileMode) {
	t.Helper()
	for p, mode := range files {
		full := filepath.Join(root, p)
		require.NoError(t, os.MkdirAll(filepath.Dir(full), 0o755))
		require.NoError(t, os.WriteFile(full, []byte("content of "+p), mode))
		require.NoError(t, os.Chmod(full, mode))
	}
}

func remoteTree(t *testing.T, l *crabbox.Lease, dir string) []string {
	t.Helper()
	res, err := l.Run(testCtx(t), `cd "${CRABBOX_FS_ROOT:-}"`+crabbox.ShellQuote(dir)+` && find . -mindepth 1 -printf '%P %m %y\n'`,
		crabbox.WithTailBytes(1<<20))
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(res.StdoutTail), "\n")
	sort.Strings(lines)
	return lines
}

func TestSyncDirCopiesTheTreeAndLeavesPrivateFilesOut(t *testing.T) {
	boxes(t, func(t *testing.T, l *crabbox.Lease, dir string) {
		ctx := testCtx(t)
		src := t.TempDir()
		writeLocalTree(t, src, map[string]os.FileMode{
			"run.sh":                                0o755,
			"src/app.go":                            0o644,
			"src/env.go":                            0o640,
			"docs/readme.txt":                       0o600,
			".env":                                  0o644,
			"config/.env.production":                0o644,
			"config/prod.env":                       0o644,
			".git/config":                           0o644,
			"web/node_modules/left/index.js":        0o644,
			"home/.ssh/id_ed25519":                  0o600,
			"home/.aws/credentials":                 0o600,
			"home/.config/chromium/Default/Cookies": 0o600,
			"home/.config/gh/hosts.yml":             0o600,
			"home/.netrc":                           0o600,
		})
		require.NoError(t, os.Symlink("src/app.go", filepath.Join(src, "app-link")))
		dest := dir + "/synced"
		res, err := l.SyncDir(ctx, src, dest)
		require.NoError(t, err)
		assert.Equal(t, 4, res.Files)
		assert.Equal(t, 1, res.Symlinks)
		assert.Equal(t, []string{
			"app-link 777 l", "config 755 d", "docs 755 d", "docs/readme.txt 600 f", "home 755 d", "home/.config 755 d",
			"run.sh 755 f", "src 755 d", "src/app.go 644 f", "src/env.go 640 f", "web 755 d",
		}, remoteTree(t, l, dest))
		assert.ElementsMatch(t, []string{".env", ".git", "config/.env.production", "config/prod.env",
			"home/.aws", "home/.config/chromium", "home/.config/gh", "home/.netrc", "home/.ssh", "web/node_modules"}, res.Excluded)
		assert.Equal(t, "content of src/app.go", fetchString(t, l, dest+"/src/app.go"))
		assert.Equal(t, "content of src/app.go", fetchString(t, l, dest+"/app-link"))

		// Extra excludes, and the defaults dropped on request.
		all := dir + "/all"
		res, err = l.SyncDir(ctx, src, all, crabbox.SyncWithoutDefaultExcludes(), crabbox.SyncExclude("home", "*.go"))
		require.NoError(t, err)
		assert.ElementsMatch(t, []string{"home", "src/app.go", "src/env.go"}, res.Excluded)
		assert.Equal(t, "content of .env", fetchString(t, l, all+"/.env"))
		assert.Equal(t, "content of .git/config", fetchString(t, l, all+"/.git/config"))
	})
}

func TestSyncDirRefusesBadInput(t *testing.T) {
	l := uploadLease(t)
	ctx := testCtx(t)
	_, err := l.SyncDir(ctx, filepath.Join(t.TempDir(), "missing"), "/tmp/x")
	assert.ErrorIs(t, err, crabbox.ErrNotFound)
	f := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(f, nil, 0o644))
	_, err = l.SyncDir(ctx, f, "/tmp/x")
	assert.ErrorIs(t, err, crabbox.ErrInvalidArgument)
	_, err = l.SyncDir(ctx, t.TempDir(), "")
	assert.ErrorIs(t, err, crabbox.ErrInvalidArgument)
	_, err = l.SyncDir(ctx, t.TempDir(), "/tmp/x", crabbox.SyncExclude("/abs"))
	assert.ErrorIs(t, err, crabbox.ErrInvalidArgument)
	_, err = l.SyncDir(ctx, t.TempDir(), "/tmp/x", crabbox.SyncExclude("[bad"))
	assert.ErrorIs(t, err, crabbox.ErrInvalidArgument)
}
