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
	s.setHostKey(leaseID, priv)
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

// setHostKey remembers the host key rendered for a lease, so a login to its
// machine can pin it.
func (s *suite) setHostKey(leaseID string, priv ed25519.PrivateKey) {
	pub, err := ssh.NewPublicKey(priv.Public())
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hostKeys == nil {
		s.hostKeys = map[string]ssh.PublicKey{}
	}
	s.hostKeys[leaseID] = pub
}

// hostKey is the host key rendered for a lease, nil if the harness made
// the user-data.
func (s *suite) hostKey(leaseID string) ssh.PublicKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hostKeys[leaseID]
}
