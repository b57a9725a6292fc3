// Tests of fetch.go on a real desktop test host: Fetch and FetchFile.

package crabbox_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	crabbox "github.com/crabbox/crabbox-go"
)

func TestDesktopFetch(t *testing.T) {
	needDesktopTools(t, desktopTools...)
	h := startDesktopHost(t, hostOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	payload := bytes.Repeat([]byte("crab\x00\xff"), 50000)
	require.NoError(t, os.WriteFile(filepath.Join(h.root, "tmp", "blob"), payload, 0o644))
	var buf bytes.Buffer
	n, err := h.l.Fetch(ctx, "/tmp/blob", &buf)
	require.NoError(t, err)
	assert.Equal(t, int64(len(payload)), n)
	assert.True(t, bytes.Equal(payload, buf.Bytes()))

	local := filepath.Join(t.TempDir(), "blob")
	require.NoError(t, h.l.FetchFile(ctx, "/tmp/blob", local))
	got, err := os.ReadFile(local)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(payload, got))

	_, err = h.l.Fetch(ctx, "/tmp/no-such-file", &buf)
	assert.ErrorIs(t, err, crabbox.ErrNotFound)
	err = h.l.FetchFile(ctx, "/tmp/no-such-file", filepath.Join(t.TempDir(), "x"))
	assert.ErrorIs(t, err, crabbox.ErrNotFound)
	_, err = h.l.Fetch(ctx, "/tmp", &buf)
	assert.ErrorIs(t, err, crabbox.ErrNotFound, "a directory is not a file")
	_, err = h.l.Fetch(ctx, "", &buf)
	assert.ErrorIs(t, err, crabbox.ErrInvalidArgument)
}
