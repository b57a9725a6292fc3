// The AccessProvider subtest: MachineAccess tells the SDK how to log in to a
// machine of the test, and refuses a machine that does not exist.

package providertest

import (
	"errors"
	"testing"

	"github.com/crabbox/crabbox-go/provider"
)

func (s *suite) testAccessProvider(t *testing.T) {
	ap, ok := s.h.Driver.(provider.AccessProvider)
	if !ok {
		t.Skip("driver does not implement provider.AccessProvider")
	}
	ctx := t.Context()
	m := s.createMachine(t, "access")
	running := s.waitRunning(t, m.ID)

	acc, err := ap.MachineAccess(ctx, running)
	switch {
	case err != nil:
		t.Fatalf("MachineAccess(%s): %v", m.ID, err)
	case acc == nil:
		t.Fatalf("MachineAccess(%s) = nil, nil: want the access", m.ID)
	}
	if acc.User == "" {
		t.Errorf("MachineAccess(%s).User is empty", m.ID)
	}
	if acc.Signer == nil {
		t.Errorf("MachineAccess(%s).Signer is nil: the SDK cannot log in", m.ID)
	}
	if acc.HostKey == nil {
		t.Errorf("MachineAccess(%s).HostKey is nil: the SDK cannot pin the host", m.ID)
	}

	unknown := *running
	unknown.ID = missingID(m.ID)
	if acc, err := ap.MachineAccess(ctx, &unknown); !errors.Is(err, provider.ErrNotFound) && !errors.Is(err, provider.ErrInvalidArgument) {
		t.Errorf("MachineAccess(%s) of a machine that never existed = %+v, %v: want ErrNotFound or ErrInvalidArgument", unknown.ID, acc, err)
	}
	if acc, err := ap.MachineAccess(ctx, nil); !errors.Is(err, provider.ErrInvalidArgument) && !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("MachineAccess(nil) = %+v, %v: want ErrInvalidArgument or ErrNotFound", acc, err)
	}
	_, err = ap.MachineAccess(cancelledCtx(), running)
	checkCancelled(t, "MachineAccess", err)
}
