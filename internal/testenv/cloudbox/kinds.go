// The lease kinds the tier boots: one cloud-init configuration per kind of
// document the SDK renders, with fresh keys.

package cloudbox

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/crabbox/crabbox-go/internal/cloudinit"
)

// Lease is one lease kind's configuration and the keys behind it.
type Lease struct {
	// Kind names the kind: base, desktop, browser, packages, files.
	Kind   string
	Config cloudinit.Config
	// Client signs in as the lease user (its public key is the only
	// authorized key); HostKey is the public key the box must present.
	Client  ssh.Signer
	HostKey ssh.PublicKey
}

// Kinds are the lease kinds: the documents the SDK's Warmup renders (base;
// desktop; desktop with a browser; extra packages, here ExtraPackage from
// the image's offline repository), and one with extra files, which only
// the renderer's other callers use. Every kind has a TTL.
func Kinds() []string { return []string{"base", "desktop", "browser", "packages", "files"} }

// NewLease returns the configuration of a lease of the given kind, as the
// SDK makes it (root package lease.go cloudConfig), with fresh ed25519
// client and host keys.
func NewLease(kind string) (Lease, error) {
	_, cpriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return Lease{}, err
	}
	client, err := ssh.NewSignerFromKey(cpriv)
	if err != nil {
		return Lease{}, err
	}
	hpub, hpriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return Lease{}, err
	}
	blk, err := ssh.MarshalPrivateKey(hpriv, "crabbox host")
	if err != nil {
		return Lease{}, err
	}
	host, err := ssh.NewPublicKey(hpub)
	if err != nil {
		return Lease{}, err
	}
	id := "cbx_" + strings.ReplaceAll(fmt.Sprintf("%-12s", kind), " ", "0")
	cfg := cloudinit.Config{
		LeaseID:        id,
		User:           cloudinit.DefaultUser,
		AuthorizedKeys: []string{strings.TrimSpace(string(ssh.MarshalAuthorizedKey(client.PublicKey())))},
		HostKeyPEM:     pem.EncodeToMemory(blk),
		HostKeyPublic:  strings.TrimSpace(string(ssh.MarshalAuthorizedKey(host))),
		ShutdownAfter:  90 * time.Minute,
	}
	switch kind {
	case "base":
	case "desktop":
		cfg.Desktop = true
	case "browser":
		cfg.Desktop, cfg.Browser = true, true
	case "packages":
		cfg.Packages = []string{ExtraPackage}
	case "files":
		cfg.Files = []cloudinit.File{
			{Path: "/etc/crabbox-test/hello.txt", Content: []byte("hello from the lease\n")},
			{Path: "/usr/local/bin/crabbox-hello", Content: []byte("#!/bin/sh\necho hello\n"), Mode: 0o755},
		}
	default:
		return Lease{}, fmt.Errorf("cloudbox: unknown lease kind %q", kind)
	}
	return Lease{Kind: kind, Config: cfg, Client: client, HostKey: host}, nil
}
