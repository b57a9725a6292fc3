package hostuser_test

import (
	"bufio"
	"crypto/rand"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/crabbox/crabbox-go/internal/testenv/hostuser"
	"github.com/crabbox/crabbox-go/internal/testenv/sshd"
)

// TestEnsureWaitsForACreatorElsewhere: while another process is between
// useradd and usermod for a shared user, Ensure here waits for it instead
// of handing out the account still locked ("!"), which sshd refuses.
func TestEnsureWaitsForACreatorElsewhere(t *testing.T) {
	sshd.Require(t)
	n, err := rand.Int(rand.Reader, big.NewInt(1e8))
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("cbxr%08d", n.Int64())
	t.Cleanup(func() { _ = os.Remove(filepath.Join(os.TempDir(), "cbx-users", name+".create")) })
	child := exec.Command(os.Args[0], "-test.run=^TestCreatorHelper$", "-test.count=1")
	child.Env = append(os.Environ(), "CBX_HOSTUSER_CREATOR="+name)
	stdin, err := child.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); _ = child.Wait() })
	lines := bufio.NewScanner(out)
	waitFor := func(want string) {
		t.Helper()
		for lines.Scan() {
			if strings.TrimSpace(lines.Text()) == want {
				return
			}
		}
		t.Fatalf("the creator never printed %q", want)
	}
	waitFor("useradd-done")

	u, err := hostuser.Ensure(name)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = u.Release() }()
	shadow, err := exec.Command("getent", "shadow", name).Output()
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Split(strings.TrimSpace(string(shadow)), ":")
	if len(f) < 2 || strings.HasPrefix(f[1], "!") {
		t.Fatalf("Ensure handed out %s still locked: %q", name, shadow)
	}
	waitFor("held")
}

// TestCreatorHelper is the child process of
// TestEnsureWaitsForACreatorElsewhere: it creates the user, pausing
// between useradd and usermod, and holds it until its stdin ends.
func TestCreatorHelper(t *testing.T) {
	name := os.Getenv("CBX_HOSTUSER_CREATOR")
	if name == "" {
		t.Skip("child process of TestEnsureWaitsForACreatorElsewhere")
	}
	hostuser.SetAfterUseradd(func() {
		fmt.Println("useradd-done")
		time.Sleep(1500 * time.Millisecond)
	})
	u, err := hostuser.Ensure(name)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("held")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	if err := u.Release(); err != nil {
		t.Fatal(err)
	}
}
