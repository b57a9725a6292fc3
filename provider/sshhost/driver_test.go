// Test helpers, and tests of driver.go: New, options, Info.

package sshhost

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/crabbox/crabbox-go/provider"
)

func newSigner(t testing.TB) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testHosts returns n hosts with fresh keys on loopback addresses that no
// test dials.
func testHosts(t testing.TB, n int) []Host {
	t.Helper()
	hosts := make([]Host, n)
	for i := range hosts {
		hosts[i] = Host{
			Addr:    fmt.Sprintf("127.0.0.%d:22", i+1),
			User:    fmt.Sprintf("user%d", i),
			Signer:  newSigner(t),
			HostKey: newSigner(t).PublicKey(),
		}
	}
	return hosts
}

func mustNew(t testing.TB, hosts []Host, opts ...Option) *Driver {
	t.Helper()
	d, err := New(hosts, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return d
}

func TestNewValidates(t *testing.T) {
	good := testHosts(t, 1)[0]
	mod := func(f func(h *Host)) []Host { h := good; f(&h); return []Host{h} }
	for name, tc := range map[string]struct {
		hosts []Host
		opts  []Option
	}{
		"no hosts":          {hosts: nil},
		"empty addr":        {hosts: mod(func(h *Host) { h.Addr = "" })},
		"bad port":          {hosts: mod(func(h *Host) { h.Addr = "127.0.0.1:99999" })},
		"non-numeric port":  {hosts: mod(func(h *Host) { h.Addr = "127.0.0.1:ssh" })},
		"no user":           {hosts: mod(func(h *Host) { h.User = "" })},
		"no signer":         {hosts: mod(func(h *Host) { h.Signer = nil })},
		"no host key":       {hosts: mod(func(h *Host) { h.HostKey = nil })},
		"relative workroot": {hosts: mod(func(h *Host) { h.WorkRoot = "work" })},
		"duplicate address": {hosts: []Host{good, mod(func(h *Host) { h.Addr = "127.0.0.1" })[0]}},
		"empty name":        {hosts: []Host{good}, opts: []Option{WithName("")}},
		"blank name":        {hosts: []Host{good}, opts: []Option{WithName("  ")}},
		"blank state file":  {hosts: []Host{good}, opts: []Option{WithStateFile("  ")}},
	} {
		t.Run(name, func(t *testing.T) {
			d, err := New(tc.hosts, tc.opts...)
			if !errors.Is(err, provider.ErrInvalidArgument) || d != nil {
				t.Fatalf("New = %v, %v: want nil, ErrInvalidArgument", d, err)
			}
		})
	}
}

// TestNewEmptyStateFileMeansMemory: WithStateFile("") keeps the state in
// memory, as before options could fail, so an optional flag passes through.
func TestNewEmptyStateFileMeansMemory(t *testing.T) {
	d := mustNew(t, testHosts(t, 1), WithStateFile(""), nil)
	if d.store == nil {
		t.Fatal("no store")
	}
	if _, ok := d.store.(*fileStore); ok {
		t.Fatal(`WithStateFile("") made a file store`)
	}
}

func TestNormalizeAddr(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1":      "127.0.0.1:22",
		"127.0.0.1:2222": "127.0.0.1:2222",
		"box.example":    "box.example:22",
		"::1":            "[::1]:22",
		"[::1]:2200":     "[::1]:2200",
	} {
		got, err := normalizeAddr(in)
		if err != nil || got != want {
			t.Errorf("normalizeAddr(%q) = %q, %v: want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", " ", ":22", "a b:22", "h:0", "h:-1"} {
		if got, err := normalizeAddr(in); err == nil {
			t.Errorf("normalizeAddr(%q) = %q: want an error", in, got)
		}
	}
}

func TestInfoTypesImage(t *testing.T) {
	d := mustNew(t, testHosts(t, 1), WithName("lab"))
	if got := d.Info().Name; got != "lab" {
		t.Errorf("Info().Name = %q, want lab", got)
	}
	if got := mustNew(t, testHosts(t, 1)).Info().Name; got != DefaultName {
		t.Errorf("default Info().Name = %q, want %q", got, DefaultName)
	}
	for _, c := range provider.Classes() {
		types, err := d.MachineTypes(c, "arm64")
		if err != nil || len(types) != 1 || types[0] != MachineType {
			t.Errorf("MachineTypes(%q) = %q, %v", c, types, err)
		}
	}
	if _, err := d.MachineTypes("huge", "amd64"); !errors.Is(err, provider.ErrInvalidArgument) {
		t.Errorf("MachineTypes(huge) error = %v, want ErrInvalidArgument", err)
	}
	if _, err := d.MachineTypes("small", "riscv"); !errors.Is(err, provider.ErrInvalidArgument) {
		t.Errorf("MachineTypes(small, riscv) error = %v, want ErrInvalidArgument", err)
	}
	if img, err := d.BaseImage(t.Context(), "amd64"); err != nil || img != BaseImageID {
		t.Errorf("BaseImage = %q, %v", img, err)
	}
	var _ provider.Driver = d
	if _, ok := any(d).(provider.Images); ok {
		t.Error("sshhost must not implement provider.Images")
	}
	if _, ok := any(d).(provider.Channels); ok {
		t.Error("sshhost must not implement provider.Channels")
	}
}
