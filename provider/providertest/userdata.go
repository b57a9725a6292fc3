// The user-data of the suite's test machines: the harness's own, or one
// rendered with internal/cloudinit with a fresh host key.

package providertest

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/crabbox/crabbox-go/internal/cloudinit"
)

// userData returns the user-data for a test machine accepting authorizedKey:
// Harness.UserData's, or one rendered with internal/cloudinit (with a fresh
// host key) when that is nil.
func (s *suite) userData(t *testing.T, leaseID, authorizedKey string) []byte {
	t.Helper()
	if s.h.UserData != nil {
		return s.h.UserData(authorizedKey)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatalf("generating the host key: %v", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatalf("encoding the host key: %v", err)
	}
	ud, err := cloudinit.Render(cloudinit.Config{
		LeaseID:        leaseID,
		AuthorizedKeys: []string{authorizedKey},
		HostKeyPEM:     pem.EncodeToMemory(block),
	})
	if err != nil {
		t.Fatalf("rendering user-data with internal/cloudinit: %v", err)
	}
	return ud
}
