//go:build !unix

// The state file lock where flock is missing (unsupported).

package sshhost

import (
	"context"

	"github.com/crabbox/crabbox-go/provider"
)

// lockFile is not available without flock: WithStateFile needs a Unix system.
func lockFile(ctx context.Context, path string) (unlock func(), err error) {
	return nil, provider.Errorf(provider.ErrUnsupported, "sshhost: state files need flock (Unix)")
}
