// Tests of RunError's message: the prefix every error has, and the command.

package crabbox_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/crabboxtest"
)

// TestRunErrorNamesLeaseAndCommand: a failed command's error starts like
// every other ("crabbox: run [provider] lease: "), names the command (its
// first line, shortened) and stays a *RunError matching ErrCommandFailed.
func TestRunErrorNamesLeaseAndCommand(t *testing.T) {
	cloud, err := crabboxtest.New()
	require.NoError(t, err)
	t.Cleanup(func() { _ = cloud.Close() })
	c := localClient(t, cloud)
	ctx := testCtx(t)
	l, err := c.Warmup(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Release(ctx) })

	_, err = l.Run(ctx, "echo oops >&2; exit 3")
	require.Error(t, err)
	var re *crabbox.RunError
	require.True(t, errors.As(err, &re), "%v is not a *RunError", err)
	assert.ErrorIs(t, err, crabbox.ErrCommandFailed)
	assert.Equal(t, 3, re.Result.ExitCode)
	assert.Equal(t, `crabbox: run [local] `+l.ID+`: command "echo oops >&2; exit 3" failed with exit code 3: oops`, err.Error())

	long := "echo " + strings.Repeat("x", 100) + " >/dev/null\n: second line\nexit 1"
	_, err = l.Run(ctx, long)
	require.Error(t, err)
	msg := err.Error()
	assert.True(t, strings.HasPrefix(msg, "crabbox: run [local] "+l.ID+`: command "echo xxx`), msg)
	assert.Contains(t, msg, `..." failed with exit code 1`)
	assert.NotContains(t, msg, "second line")
	assert.Equal(t, "command failed", (&crabbox.RunError{}).Error())
}
