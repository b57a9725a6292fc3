// Tests of the machine SSH server's key check (machines.go
// sshServerConfig): like OpenSSH it reads the user's authorized_keys on
// the box at every login, so removing the file locks the key out.

package crabboxtest

import (
	"os"
	"path/filepath"
	"testing"
)

func TestRemovedAuthorizedKeysLockTheKeyOut(t *testing.T) {
	c := Start(t)
	l := newLease(t, nil)
	m := boot(t, c, l)
	live := dial(t, m.Machine, l)
	ak := filepath.Join(m.FSRoot, "home", l.cfg.User, ".ssh", "authorized_keys")
	if _, err := os.Stat(ak); err != nil {
		t.Fatalf("the box has no authorized_keys: %v", err)
	}
	if err := os.Remove(ak); err != nil {
		t.Fatal(err)
	}
	if cl, err := dialAs(m.SSHAddr, l.cfg.User, l.signer, l.hostKey); err == nil {
		cl.Close()
		t.Fatal("the key still logs in after authorized_keys was removed from the box")
	}
	// A session already open is not cut off (as with OpenSSH).
	if out := mustRun(t, live, "echo still"); out != "still\n" {
		t.Errorf("open connection: %q", out)
	}
	// Putting the key back lets it in again.
	if err := os.WriteFile(ak, []byte(l.cfg.AuthorizedKeys[0]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cl, err := dialAs(m.SSHAddr, l.cfg.User, l.signer, l.hostKey)
	if err != nil {
		t.Fatalf("dial with the key restored: %v", err)
	}
	cl.Close()
}
