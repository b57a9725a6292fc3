// Tests of the retry layering: a driver that retries each request itself is
// run once by the client; any other driver's transient errors are retried.

package crabbox_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/crabboxtest"
	"github.com/crabbox/crabbox-go/provider"
)

// throttledCloud's ListMachines is always throttled; retries says whether
// it claims to retry each request itself.
type throttledCloud struct {
	*crabboxtest.Cloud
	retries bool
	lists   atomic.Int32
}

func (c *throttledCloud) ListMachines(ctx context.Context, labels map[string]string) ([]*provider.Machine, error) {
	c.lists.Add(1)
	return nil, provider.Errorf(provider.ErrThrottled, "throttled")
}

func (c *throttledCloud) RetriesRequests() bool { return c.retries }

func TestClientRetriesOnlyDriversThatDoNot(t *testing.T) {
	for _, tc := range []struct {
		retries bool
		want    int32
	}{{true, 1}, {false, 3}} {
		cloud := &throttledCloud{Cloud: crabboxtest.Start(t), retries: tc.retries}
		c := localClient(t, cloud, crabbox.WithRetryAttempts(3))
		_, err := c.Leases(testCtx(t))
		require.ErrorIs(t, err, crabbox.ErrThrottled)
		assert.Equal(t, tc.want, cloud.lists.Load(), "RetriesRequests %v", tc.retries)
	}
}
