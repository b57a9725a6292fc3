// Internal tests of statedir.go: paths are built only from valid lease ids.

package crabbox

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crabbox/crabbox-go/crabboxtest"
)

func TestLoadLeaseKeysRefusesInvalidIDs(t *testing.T) {
	base := t.TempDir()
	c, err := New(crabboxtest.Start(t), WithStateDir(filepath.Join(base, "state")))
	require.NoError(t, err)
	// Files where the ids below would lead.
	for _, dir := range []string{filepath.Join(base, "outside"), filepath.Join(base, "state", "leases")} {
		require.NoError(t, os.MkdirAll(dir, 0o700))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "id_ed25519"), []byte("x"), 0o600))
	}
	for _, id := range []string{"../../outside", "", ".", "cbx_../../x", "/etc", "cbx_0123456789AB"} {
		_, _, err := c.loadLeaseKeys(id)
		assert.ErrorIs(t, err, ErrInvalidArgument, "%q", id)
	}
}
