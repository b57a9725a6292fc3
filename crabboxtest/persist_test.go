// Tests of WithPersistentDir: a cloud closed and opened again from its
// directory keeps its machines (running again, same host key, same files),
// images and channels; one cloud at a time holds a directory.

package crabboxtest

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/crabbox/crabbox-go/provider"
)

func TestPersistentDirSurvivesClose(t *testing.T) {
	dir := t.TempDir()
	c1, err := New(WithPersistentDir(dir), WithImagePendingPolls(0))
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	l := newLease(t, nil)
	m := boot(t, c1, l)
	cl := dial(t, m.Machine, l)
	mustRun(t, cl, `echo kept > "$CRABBOX_FS_ROOT/marker"`)
	cl.Close()
	img, err := c1.CreateImage(ctx, provider.CreateImageRequest{MachineID: m.ID, Name: "persisted", Labels: map[string]string{"k": "v"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c1.SetChannel(ctx, provider.SetChannelRequest{Channel: "default", ImageID: img.ID, IfVersion: -1}); err != nil {
		t.Fatal(err)
	}
	stopped := boot(t, c1, newLease(t, nil))
	if err := c1.KillMachine(stopped.ID); err != nil {
		t.Fatal(err)
	}
	// Another cloud cannot take the directory while c1 holds it.
	if _, err := New(WithPersistentDir(dir)); !errors.Is(err, provider.ErrConflict) {
		t.Fatalf("second cloud on a held dir: %v, want ErrConflict", err)
	}
	if err := c1.Close(); err != nil {
		t.Fatal(err)
	}

	c2, err := New(WithPersistentDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	got, err := c2.GetMachine(ctx, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != provider.MachineRunning || got.Labels["lease"] != l.cfg.LeaseID {
		t.Fatalf("restored machine: %+v", got)
	}
	cl = dial(t, got, l) // the same client key and pinned host key
	defer cl.Close()
	if out := mustRun(t, cl, `cat "$CRABBOX_FS_ROOT/marker"`); strings.TrimSpace(out) != "kept" {
		t.Fatalf("marker: %q", out)
	}
	if s, err := c2.GetMachine(ctx, stopped.ID); err != nil || s.State != provider.MachineStopped {
		t.Fatalf("a stopped machine stays stopped: %+v, %v", s, err)
	}
	gi, err := c2.GetImage(ctx, img.ID)
	if err != nil || gi.Name != "persisted" || gi.Labels["k"] != "v" || gi.State != provider.ImageAvailable {
		t.Fatalf("restored image: %+v, %v", gi, err)
	}
	ch, err := c2.CurrentChannel(ctx, "default")
	if err != nil || ch.ImageID != img.ID {
		t.Fatalf("restored channel: %+v, %v", ch, err)
	}
	// A machine boots from the restored image.
	req := newLease(t, nil).request(nil)
	req.Image = img.ID
	m2, err := c2.CreateMachine(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := c2.MachineDir(m2.ID)
	if b, err := os.ReadFile(filepath.Join(root, "marker")); err != nil || string(b) != "kept\n" {
		t.Fatalf("image tree: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(dir, stateFile)); err != nil {
		t.Fatal(err)
	}
}
