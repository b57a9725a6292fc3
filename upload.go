// Files in: Lease.Upload writes a reader to a file on the box with a mode,
// Lease.UploadFile a local file, and Lease.SyncDir copies a local directory
// tree (tar over the session), leaving out by default what the do-not-bake
// rules name so nothing private reaches an image by accident.

package crabbox

import (
	"archive/tar"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

var (
	//go:embed upload_write.sh
	uploadWriteScript string
	//go:embed upload_install.sh
	uploadInstallScript string
	//go:embed upload_sync.sh
	uploadSyncScript string
)

// Upload writes everything r yields to remotePath on the box, with the
// permission bits of mode, creating missing parent directories. Paths are
// resolved as Fetch resolves them: absolute paths below ${CRABBOX_FS_ROOT}
// (empty on a real box), "~/..." below $HOME, relative ones in the
// directory commands run in. The file is written beside its destination
// and moved into place only once every byte arrived and r ended without an
// error, so the destination is never left half written. An unwritable
// destination matches ErrPermission.
func (l *Lease) Upload(ctx context.Context, r io.Reader, remotePath string, mode os.FileMode) error {
	if err := l.usable("upload"); err != nil {
		return err
	}
	if err := l.upload(ctx, r, remotePath, mode); err != nil {
		return l.c.opErr("upload", l.ID, err)
	}
	return nil
}

// UploadFile uploads the local file localPath to remotePath with the local
// file's permission bits (see Upload).
func (l *Lease) UploadFile(ctx context.Context, localPath, remotePath string) error {
	if err := l.usable("upload"); err != nil {
		return err
	}
	f, err := os.Open(localPath)
	if err != nil {
		return l.c.opErr("upload", l.ID, localFileErr(err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return l.c.opErr("upload", l.ID, localFileErr(err))
	}
	if !fi.Mode().IsRegular() {
		return l.c.opErr("upload", l.ID, fmt.Errorf("%w: %s is not a regular file", ErrInvalidArgument, localPath))
	}
	if err := l.upload(ctx, f, remotePath, fi.Mode().Perm()); err != nil {
		return l.c.opErr("upload", l.ID, err)
	}
	return nil
}

func localFileErr(err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: %v", ErrNotFound, err)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%w: %v", ErrPermission, err)
	}
	return err
}

func checkRemotePath(p string) error {
	if strings.TrimSpace(p) == "" || strings.ContainsAny(p, "\x00\n\r") {
		return fmt.Errorf("%w: remote path %q", ErrInvalidArgument, p)
	}
	return nil
}

// upload writes r to a temporary file on the box, checks the byte count
// and installs it.
func (l *Lease) upload(ctx context.Context, r io.Reader, remotePath string, mode os.FileMode) error {
	if err := checkRemotePath(remotePath); err != nil {
		return err
	}
	if r == nil {
		return fmt.Errorf("%w: nil reader", ErrInvalidArgument)
	}
	if mode&^os.ModePerm != 0 {
		return fmt.Errorf("%w: mode %v has more than permission bits", ErrInvalidArgument, mode)
	}
	what := "uploading " + remotePath
	src := &readCounter{r: r}
	out, err := l.runStdin(ctx, what, "p="+boxPath(remotePath)+"\n"+uploadWriteScript, src)
	if err != nil {
		return err
	}
	kv := keyValues(out)
	tmp := kv["tmp"]
	if tmp == "" {
		return fmt.Errorf("%s: the box did not report its temporary file: %q", what, out)
	}
	drop := "0"
	var cause error
	sent, rerr := src.result()
	switch size, perr := strconv.ParseInt(kv["size"], 10, 64); {
	case rerr != nil:
		drop, cause = "1", fmt.Errorf("%s: reading the source: %w", what, rerr)
	case perr != nil || size != sent:
		drop, cause = "1", fmt.Errorf("%w: %s: sent %d bytes, the box received %s", ErrConnectionLost, what, sent, kv["size"])
	}
	install := fmt.Sprintf("p=%s\nt=%s\nmode=%04o\ndrop=%s\n%s", boxPath(remotePath), ShellQuote(tmp), mode.Perm(), drop, uploadInstallScript)
	// The temporary file is removed even when ctx ended meanwhile.
	ictx := ctx
	if cause != nil {
		var cancel context.CancelFunc
		ictx, cancel = context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
	}
	if _, err := l.runStdin(ictx, what, install, nil); err != nil {
		return errors.Join(cause, err)
	}
	return cause
}

// runStdin runs a script with stdin and maps its exit codes as the desktop
// scripts' are mapped; it returns stdout.
func (l *Lease) runStdin(ctx context.Context, what, script string, stdin io.Reader) (string, error) {
	var out strings.Builder
	errTail := newTail(4 << 10)
	opts := []RunOption{WithStdout(&out), WithStderr(errTail)}
	if stdin != nil {
		opts = append(opts, WithStdin(stdin))
	}
	res, err := l.Run(ctx, script, opts...)
	if err != nil && (res == nil || !errors.Is(err, ErrCommandFailed)) {
		return out.String(), err
	}
	if res.ExitCode != 0 || res.Signal != "" {
		return out.String(), scriptError(what, res.ExitCode, errTail.String())
	}
	return out.String(), nil
}

// readCounter counts what it reads and keeps the source's error, which it
// turns into EOF: the box sees the end of its input, and the caller, not
// the box, decides what an incomplete source means.
type readCounter struct {
	r io.Reader

	mu  sync.Mutex // the SSH stdin copy reads; the caller checks after
	n   int64
	err error
}

func (c *readCounter) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, io.EOF
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	if err != nil && err != io.EOF {
		c.err = err
		return n, io.EOF
	}
	return n, err
}

func (c *readCounter) result() (int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n, c.err
}

// DefaultSyncExcludes are the names SyncDir leaves out unless told
// otherwise: what the do-not-bake rules (the Hygiene checks) name, so that
// a synced work tree never carries credentials, browser profiles,
// checkouts or dependency trees into a box that may become an image. A
// name without "/" matches any path component (shell patterns, as
// path.Match); one with "/" matches consecutive components.
func DefaultSyncExcludes() []string {
	return []string{
		// Credentials.
		".aws", ".ssh", ".gnupg", ".docker", ".netrc", ".git-credentials", ".npmrc", ".pypirc",
		".config/gcloud", ".config/gh", ".config/hcloud",
		"id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", "id_ecdsa_sk", "id_ed25519_sk",
		"*.pem", "*.key",
		// Environment files.
		".env", ".env.*", "*.env",
		// Browser profiles, cookies and chat sessions.
		".config/chromium", ".config/google-chrome*", ".mozilla", "snap/chromium", "snap/firefox",
		"Cookies", "Cookies-journal", "cookies.sqlite",
		".config/[Ss]lack", ".config/[Dd]iscord", ".config/[Ss]ignal",
		// Checkouts and dependency trees.
		".git", "node_modules", ".pnpm-store",
	}
}

// errSyncEnded stops SyncDir's tar writer once the box stopped reading.
var errSyncEnded = errors.New("the box's tar exited")

type syncOptions struct {
	excludes []string
}

// SyncOption configures SyncDir.
type SyncOption func(*syncOptions) error

// SyncExclude leaves out more names (patterns as in DefaultSyncExcludes).
func SyncExclude(patterns ...string) SyncOption {
	return func(o *syncOptions) error {
		for _, p := range patterns {
			if err := checkPattern(p); err != nil {
				return err
			}
		}
		o.excludes = append(o.excludes, patterns...)
		return nil
	}
}

// SyncWithoutDefaultExcludes drops DefaultSyncExcludes: everything not
// excluded by SyncExclude is copied, private files included.
func SyncWithoutDefaultExcludes() SyncOption {
	return func(o *syncOptions) error {
		defaults := map[string]bool{}
		for _, p := range DefaultSyncExcludes() {
			defaults[p] = true
		}
		kept := o.excludes[:0:0]
		for _, p := range o.excludes {
			if !defaults[p] {
				kept = append(kept, p)
			}
		}
		o.excludes = kept
		return nil
	}
}

func checkPattern(p string) error {
	if p == "" || strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") {
		return fmt.Errorf("%w: exclude pattern %q", ErrInvalidArgument, p)
	}
	for _, part := range strings.Split(p, "/") {
		if _, err := path.Match(part, ""); err != nil {
			return fmt.Errorf("%w: exclude pattern %q: %v", ErrInvalidArgument, p, err)
		}
	}
	return nil
}

// excluded reports whether the slash-separated relative path rel matches
// one of the patterns.
func excluded(rel string, patterns []string) bool {
	comps := strings.Split(rel, "/")
	for _, p := range patterns {
		parts := strings.Split(p, "/")
		for i := 0; i+len(parts) <= len(comps); i++ {
			all := true
			for j, part := range parts {
				if ok, _ := path.Match(part, comps[i+j]); !ok {
					all = false
					break
				}
			}
			if all {
				return true
			}
		}
	}
	return false
}

// SyncResult is what SyncDir copied and left out.
type SyncResult struct {
	// Files is the number of regular files copied; Dirs and Symlinks of
	// directories and symbolic links made.
	Files    int   `json:"files"`
	Dirs     int   `json:"dirs"`
	Symlinks int   `json:"symlinks"`
	Bytes    int64 `json:"bytes"`
	// Excluded are the relative paths left out (a directory's contents
	// are not listed), Skipped those of other file types (sockets,
	// devices, pipes).
	Excluded []string `json:"excluded,omitempty"`
	Skipped  []string `json:"skipped,omitempty"`
}

// SyncDir copies the tree below localDir into remoteDir on the box
// (created if missing; paths resolved as Upload's), as one tar stream over
// the lease's SSH connection extracted by the box's tar: regular files with
// their permission bits, directories, and symbolic links as links. Files
// already in remoteDir stay unless overwritten. Names matching
// DefaultSyncExcludes (credentials, .env files, browser profiles, .git
// checkouts, node_modules, ...) and SyncExclude are left out and listed in
// the result. A file that cannot be read fails the sync; what was
// extracted before it stays.
func (l *Lease) SyncDir(ctx context.Context, localDir, remoteDir string, opts ...SyncOption) (*SyncResult, error) {
	if err := l.usable("sync"); err != nil {
		return nil, err
	}
	o := syncOptions{excludes: DefaultSyncExcludes()}
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return nil, l.c.opErr("sync", l.ID, err)
		}
	}
	if err := checkRemotePath(remoteDir); err != nil {
		return nil, l.c.opErr("sync", l.ID, err)
	}
	fi, err := os.Stat(localDir)
	if err != nil {
		return nil, l.c.opErr("sync", l.ID, localFileErr(err))
	}
	if !fi.IsDir() {
		return nil, l.c.opErr("sync", l.ID, fmt.Errorf("%w: %s is not a directory", ErrInvalidArgument, localDir))
	}
	pr, pw := io.Pipe()
	res := &SyncResult{}
	tarDone := make(chan error, 1)
	go func() {
		err := writeTree(pw, localDir, o.excludes, res)
		_ = pw.CloseWithError(err)
		tarDone <- err
	}()
	_, err = l.runStdin(ctx, "syncing "+localDir+" to "+remoteDir, "p="+boxPath(remoteDir)+"\n"+uploadSyncScript, pr)
	// The box's tar has exited: unblock the writer, if it still writes
	// (the box's tar may stop reading once it saw the archive's end).
	_ = pr.CloseWithError(errSyncEnded)
	if terr := <-tarDone; terr != nil && !errors.Is(terr, errSyncEnded) {
		err = errors.Join(err, terr)
	}
	if err != nil {
		return res, l.c.opErr("sync", l.ID, err)
	}
	return res, nil
}

// writeTree writes the tree below root as a tar stream, leaving out the
// excluded names.
func writeTree(w io.Writer, root string, excludes []string, res *SyncResult) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return localFileErr(err)
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		rel = filepath.ToSlash(rel)
		if excluded(rel, excludes) {
			res.Excluded = append(res.Excluded, rel)
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return localFileErr(err)
		}
		var link string
		switch {
		case fi.Mode().IsRegular(), fi.IsDir():
		case fi.Mode()&fs.ModeSymlink != 0:
			if link, err = os.Readlink(p); err != nil {
				return localFileErr(err)
			}
		default:
			res.Skipped = append(res.Skipped, rel)
			return nil
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		hdr.Name = rel
		if fi.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
		hdr.Mode = int64(fi.Mode().Perm())
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		switch {
		case fi.IsDir():
			res.Dirs++
		case link != "":
			res.Symlinks++
		default:
			f, err := os.Open(p)
			if err != nil {
				return localFileErr(err)
			}
			n, err := io.Copy(tw, f)
			f.Close()
			if err != nil {
				return fmt.Errorf("copying %s: %w", rel, err)
			}
			res.Files++
			res.Bytes += n
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
