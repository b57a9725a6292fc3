// Test helpers shared by the external test files of package crabbox: local
// and sshhost clients, contexts, bakes and proofs, keys.

package crabbox_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/internal/testenv/sshd"
	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/sshhost"
)

func fast() []crabbox.Option {
	return []crabbox.Option{
		crabbox.WithPollBackoff(crabbox.ConstantBackoff(10 * time.Millisecond)),
		crabbox.WithImagePollBackoff(crabbox.ConstantBackoff(10 * time.Millisecond)),
	}
}

func localClient(t *testing.T, drv provider.Driver, opts ...crabbox.Option) *crabbox.Client {
	t.Helper()
	c, err := crabbox.New(drv, append(append(fast(), crabbox.WithStateDir(t.TempDir()), crabbox.WithOperator("tester")), opts...)...)
	require.NoError(t, err)
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func imageName(t *testing.T, purpose string) string {
	n, err := crabbox.NewImageName("crabbox", "test", purpose, time.Now())
	require.NoError(t, err)
	return n.String()
}

// smokeOK runs a minimal passing smoke on a lease.
func smokeOK(t *testing.T, ctx context.Context, l *crabbox.Lease) *crabbox.SmokeReport {
	t.Helper()
	rep, err := crabbox.Smoke(ctx, l, []crabbox.SmokeCheck{crabbox.CommandExists("sh"), crabbox.WorkRootExists()})
	require.NoError(t, err)
	require.True(t, rep.OK())
	return rep
}

// bake warms a source lease, writes a marker file and images it.
func bake(t *testing.T, ctx context.Context, c *crabbox.Client, purpose string) *crabbox.Image {
	t.Helper()
	src, err := c.Warmup(ctx, crabbox.WithClass("small"))
	require.NoError(t, err)
	defer src.Release(context.Background())
	_, err = src.Run(ctx, `echo `+purpose+` > "${CRABBOX_FS_ROOT:-}/etc-marker"`)
	require.NoError(t, err)
	img, err := c.CreateImage(ctx, src.ID, imageName(t, purpose), crabbox.WithPrepare(), crabbox.WithWait(time.Minute))
	require.NoError(t, err)
	return img
}

func proveImage(t *testing.T, ctx context.Context, c *crabbox.Client, imageID string) *crabbox.SmokeReport {
	t.Helper()
	l, err := c.Warmup(ctx, crabbox.WithImage(imageID), crabbox.WithClass("small"))
	require.NoError(t, err)
	defer l.Release(context.Background())
	assert.Equal(t, crabbox.ImageExplicit, l.ImageSource)
	return smokeOK(t, ctx, l)
}

// proveNormal smokes a normal lease (no image override) and checks it
// booted the promoted image want.
func proveNormal(t *testing.T, ctx context.Context, c *crabbox.Client, want string) *crabbox.SmokeReport {
	t.Helper()
	l, err := c.Warmup(ctx, crabbox.WithClass("small"))
	require.NoError(t, err)
	defer l.Release(context.Background())
	require.Equal(t, crabbox.ImagePromoted, l.ImageSource)
	require.Equal(t, want, l.ImageID)
	return smokeOK(t, ctx, l)
}

func dirEntries(state string) ([]string, error) {
	es, err := os.ReadDir(filepath.Join(state, "leases"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out, err
}

func mustSigner(t *testing.T) ssh.Signer {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	s, err := ssh.NewSignerFromKey(priv)
	require.NoError(t, err)
	return s
}

func hostFor(s *sshd.Server) sshhost.Host {
	return sshhost.Host{Addr: s.Addr, User: s.User, Signer: s.ClientKey.Signer, HostKey: s.HostKey}
}

func sshhostClient(t *testing.T, hosts []sshhost.Host, opts ...crabbox.Option) (*crabbox.Client, *sshhost.Driver) {
	t.Helper()
	drv, err := sshhost.New(hosts)
	require.NoError(t, err)
	opts = append([]crabbox.Option{
		crabbox.WithStateDir(t.TempDir()),
		crabbox.WithPollBackoff(crabbox.ConstantBackoff(50 * time.Millisecond)),
		crabbox.WithOperator("tester"),
	}, opts...)
	c, err := crabbox.New(drv, opts...)
	require.NoError(t, err)
	return c, drv
}

func liveLeases(t *testing.T, c *crabbox.Client) int {
	t.Helper()
	ls, err := c.Leases(context.Background())
	require.NoError(t, err)
	return len(ls)
}

func mustDriver(t *testing.T, hosts ...sshhost.Host) *sshhost.Driver {
	d, err := sshhost.New(hosts)
	require.NoError(t, err)
	return d
}

// boxRoot returns the host directory an emulated box (the local cloud)
// keeps its file system in, as the box's own environment says
// (CRABBOX_FS_ROOT); the SDK itself never knows it.
func boxRoot(t *testing.T, l *crabbox.Lease) string {
	t.Helper()
	res, err := l.Run(testCtx(t), `printf %s "${CRABBOX_FS_ROOT:?not an emulated box}"`, crabbox.Strict())
	if err != nil {
		t.Fatalf("box root: %v", err)
	}
	return res.StdoutTail
}
