// The state dir: each lease's client key and pinned host public key, kept in
// files (0600) under <state dir>/leases/<id>/ so another process can re-attach.

package crabbox

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/crypto/ssh"
)

func newEd25519() (ed25519.PrivateKey, ssh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating key: %w", err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, nil, fmt.Errorf("generating key: %w", err)
	}
	return priv, s, nil
}

func marshalPrivateKey(k ed25519.PrivateKey, comment string) ([]byte, error) {
	blk, err := ssh.MarshalPrivateKey(k, comment)
	if err != nil {
		return nil, fmt.Errorf("encoding key: %w", err)
	}
	return pem.EncodeToMemory(blk), nil
}

// leaseDir is the lease's directory in the state dir. The id is validated
// first: an id read from a machine's labels may be anything, and must never
// lead out of <state dir>/leases.
func (c *Client) leaseDir(id string) (string, error) {
	if _, err := ParseLeaseID(id); err != nil {
		return "", err
	}
	return filepath.Join(c.o.stateDir, "leases", id), nil
}

func (c *Client) saveLeaseKeys(id string, clientKey ed25519.PrivateKey, hostKey ssh.PublicKey) error {
	dir, err := c.leaseDir(id)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("%w: %w", ErrStateDir, err)
	}
	pemBytes, err := marshalPrivateKey(clientKey, "crabbox lease "+id)
	if err != nil {
		return err
	}
	if err := writeFile0600(filepath.Join(dir, "id_ed25519"), pemBytes); err != nil {
		return err
	}
	return writeFile0600(filepath.Join(dir, "host_key.pub"), ssh.MarshalAuthorizedKey(hostKey))
}

func writeFile0600(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("%w: %w", ErrStateDir, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("%w: %w", ErrStateDir, err)
	}
	return nil
}

func (c *Client) loadLeaseKeys(id string) (ssh.Signer, ssh.PublicKey, error) {
	dir, err := c.leaseDir(id)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, "id_ed25519"))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: no key for lease %s in %s: %w", ErrStateDir, id, c.o.stateDir, errors.Join(ErrNotFound, err))
	}
	signer, err := ssh.ParsePrivateKey(keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: lease %s key: %w", ErrStateDir, id, err)
	}
	hostLine, err := os.ReadFile(filepath.Join(dir, "host_key.pub"))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: no host key for lease %s in %s: %w", ErrStateDir, id, c.o.stateDir, errors.Join(ErrNotFound, err))
	}
	hostKey, _, _, _, err := ssh.ParseAuthorizedKey(hostLine)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: lease %s host key: %w", ErrStateDir, id, err)
	}
	return signer, hostKey, nil
}

func (c *Client) removeLeaseKeys(id string) {
	if dir, err := c.leaseDir(id); err == nil {
		_ = os.RemoveAll(dir)
	}
}
