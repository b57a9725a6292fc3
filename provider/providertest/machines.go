// The Machines subtest and the machine helpers every subtest shares:
// create a labelled test machine (deleted when the subtest ends), wait for
// it to run or to go, and check labels and the not-found contract.

package providertest

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"maps"
	"testing"

	"github.com/crabbox/crabbox-go/provider"
)

// machineLabels are the labels of the suite's machine with the given role.
func (s *suite) machineLabels(role string) map[string]string {
	return map[string]string{LabelRun: s.runID, LabelRole: role}
}

// createMachine creates a test machine with the given role and registers a
// cleanup that deletes it (and anything else carrying its labels) with a
// fresh context when t ends.
func (s *suite) createMachine(t *testing.T, role string) *provider.Machine {
	t.Helper()
	m, _ := s.createMachineToken(t, role)
	return m
}

// createMachineToken is createMachine that also returns the idempotency
// token the machine was created with.
func (s *suite) createMachineToken(t *testing.T, role string) (*provider.Machine, string) {
	t.Helper()
	m, req, _ := s.createMachineReq(t, role)
	return m, req.Token
}

// createMachineReq is createMachine that also returns the request and the
// client's private key.
func (s *suite) createMachineReq(t *testing.T, role string) (*provider.Machine, provider.CreateMachineRequest, ed25519.PrivateKey) {
	t.Helper()
	d := s.h.Driver
	labels := s.machineLabels(role)
	image, typ := s.image(t), s.machineType(t)

	authorized, priv := newClientKey(t)
	token := "cbx_" + randomHex(6)
	userData := s.userData(t, token, authorized)

	var created string
	t.Cleanup(func() {
		ctx, cancel := s.cleanupCtx()
		defer cancel()
		ids := map[string]bool{}
		if created != "" {
			ids[created] = true
		}
		ms, err := d.ListMachines(ctx, labels)
		if err != nil {
			t.Errorf("cleanup: ListMachines(%v): %v", labels, err)
		}
		for _, m := range ms {
			if m != nil && m.ID != "" {
				ids[m.ID] = true
			}
		}
		for id := range ids {
			if err := d.DeleteMachine(ctx, id); err != nil {
				t.Errorf("cleanup: DeleteMachine(%s): %v", id, err)
			}
		}
	})

	req := provider.CreateMachineRequest{
		Token:         token,
		Name:          unsafeName(role, s.runID),
		Image:         image,
		Type:          typ,
		UserData:      userData,
		Labels:        maps.Clone(labels),
		AuthorizedKey: []byte(authorized + "\n"),
	}
	m, err := d.CreateMachine(t.Context(), req)
	if m != nil {
		created = m.ID
	}
	if err != nil {
		t.Fatalf("CreateMachine(image %q, type %q): %v", image, typ, err)
	}
	if m == nil || m.ID == "" {
		t.Fatalf("CreateMachine returned machine %+v and no error: want a machine with an id", m)
	}
	if miss := missingLabels(m.Labels, labels); len(miss) > 0 {
		t.Errorf("CreateMachine returned machine %s without the requested labels: %v", m.ID, miss)
	}
	if m.Name == "" || provider.SanitizeLabelValue(m.Name) != m.Name {
		t.Errorf("CreateMachine(Name %q) returned machine %s named %q: want the name sanitized to a label value (provider.SanitizeLabelValue)",
			req.Name, m.ID, m.Name)
	}
	return m, req, priv
}

// waitRunning polls GetMachine until the machine is running with an SSH
// address.
func (s *suite) waitRunning(t *testing.T, id string) *provider.Machine {
	t.Helper()
	var got *provider.Machine
	s.poll(t, fmt.Sprintf("machine %s to be running with an SSH address", id), func(ctx context.Context) (bool, string, error) {
		m, err := s.h.Driver.GetMachine(ctx, id)
		if err != nil {
			return false, "", err
		}
		if m == nil {
			return false, "", errors.New("GetMachine returned nil, nil")
		}
		seen := fmt.Sprintf("state %q, SSHAddr %q", m.State, m.SSHAddr)
		switch m.State {
		case provider.MachineTerminated, provider.MachineStopped, provider.MachineStopping:
			return false, seen, fmt.Errorf("machine %s is %s", id, m.State)
		}
		got = m
		return m.State == provider.MachineRunning && m.SSHAddr != "", seen, nil
	})
	if err := checkSSHAddr(got.SSHAddr); err != nil {
		t.Errorf("machine %s: SSHAddr is not host:port: %v", id, err)
	}
	return got
}

// testMachines creates a machine and checks Get, running, listing, label
// updates, delete, and the not-found contract.
func (s *suite) testMachines(t *testing.T) {
	const role = "machine"
	labels := s.machineLabels(role)

	m, req, key := s.createMachineReq(t, role)
	id := m.ID

	s.checkGetMachine(t, id, labels)
	s.checkMachineToken(t, req, id)
	// It becomes running with an address, where the SDK can log in.
	running := s.waitRunning(t, id)
	s.checkLogin(t, running, req.Token, key)
	s.checkDoneContexts(t, id)
	s.checkMachineListing(t, id, role, labels)
	s.checkMachineLabelUpdates(t, id, labels)
	s.checkMachineDelete(t, id, labels)

	// An id that never existed.
	s.checkMissingMachine(t, missingID(id))
	s.checkMissingMachine(t, "")
}

// checkGetMachine checks that GetMachine, right after CreateMachine, returns
// the machine with the labels it was created with.
func (s *suite) checkGetMachine(t *testing.T, id string, labels map[string]string) {
	got, err := s.h.Driver.GetMachine(t.Context(), id)
	if err != nil {
		t.Fatalf("GetMachine(%s) right after CreateMachine: %v", id, err)
	}
	if got == nil {
		t.Fatalf("GetMachine(%s) = nil, nil", id)
	}
	if got.ID != id {
		t.Errorf("GetMachine(%s).ID = %q", id, got.ID)
	}
	if miss := missingLabels(got.Labels, labels); len(miss) > 0 {
		t.Errorf("GetMachine(%s) lacks the labels it was created with: %v", id, miss)
	}
}

// checkMachineListing checks that listing by labels finds exactly the
// machine, with its labels, and that other label values find nothing.
func (s *suite) checkMachineListing(t *testing.T, id, role string, labels map[string]string) {
	d, ctx := s.h.Driver, t.Context()
	var listed []*provider.Machine
	s.poll(t, fmt.Sprintf("ListMachines(%v) to return machine %s", labels, id), func(ctx context.Context) (bool, string, error) {
		ms, err := d.ListMachines(ctx, labels)
		if err != nil {
			return false, "", err
		}
		listed = ms
		return containsMachine(ms, id), fmt.Sprintf("%d machines: %v", len(ms), machineIDs(ms)), nil
	})
	if len(listed) != 1 {
		t.Errorf("ListMachines(%v) = %v: want exactly machine %s", labels, machineIDs(listed), id)
	}
	for _, lm := range listed {
		if lm != nil && lm.ID == id {
			if miss := missingLabels(lm.Labels, labels); len(miss) > 0 {
				t.Errorf("ListMachines returned machine %s without its labels: %v", id, miss)
			}
		}
	}
	other := map[string]string{LabelRun: s.runID + "-other", LabelRole: role}
	if ms, err := d.ListMachines(ctx, other); err != nil {
		t.Errorf("ListMachines(%v): %v", other, err)
	} else if len(ms) != 0 {
		t.Errorf("ListMachines(%v) = %v: want none (the driver ignores the label filter?)", other, machineIDs(ms))
	}
	partial := map[string]string{LabelRun: s.runID, LabelRole: role, LabelExtra: "absent"}
	if ms, err := d.ListMachines(ctx, partial); err != nil {
		t.Errorf("ListMachines(%v): %v", partial, err)
	} else if containsMachine(ms, id) {
		t.Errorf("ListMachines(%v) returned machine %s, which lacks %s: every label must match", partial, id, LabelExtra)
	}
}

// checkMachineLabelUpdates checks that UpdateMachineLabels merges (adding a
// label, then changing it) and that a machine that never existed is not
// found.
func (s *suite) checkMachineLabelUpdates(t *testing.T, id string, labels map[string]string) {
	d, ctx := s.h.Driver, t.Context()
	add := map[string]string{LabelExtra: "one"}
	if err := d.UpdateMachineLabels(ctx, id, add); err != nil {
		t.Fatalf("UpdateMachineLabels(%s, %v): %v", id, add, err)
	}
	want := merged(labels, add)
	s.checkMachineLabels(t, id, want)
	change := map[string]string{LabelExtra: "two"}
	if err := d.UpdateMachineLabels(ctx, id, change); err != nil {
		t.Fatalf("UpdateMachineLabels(%s, %v): %v", id, change, err)
	}
	want = merged(want, change)
	s.checkMachineLabels(t, id, want)
	// An empty value removes the label.
	if err := d.UpdateMachineLabels(ctx, id, map[string]string{LabelExtra: ""}); err != nil {
		t.Fatalf("UpdateMachineLabels(%s, %s=\"\"): %v", id, LabelExtra, err)
	}
	if m, err := d.GetMachine(ctx, id); err != nil {
		t.Fatalf("GetMachine(%s): %v", id, err)
	} else if v, ok := m.Labels[LabelExtra]; ok {
		t.Errorf("after UpdateMachineLabels(%s, %s=\"\"), the label is still there (%q): an empty value removes it", id, LabelExtra, v)
	}
	if err := d.UpdateMachineLabels(ctx, missingID(id), add); !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("UpdateMachineLabels(%s) of a machine that never existed: %v: want ErrNotFound", missingID(id), err)
	}
}

// checkMachineDelete deletes the machine and checks that it goes away, from
// GetMachine and from ListMachines, and that deleting again is fine.
func (s *suite) checkMachineDelete(t *testing.T, id string, labels map[string]string) {
	d, ctx := s.h.Driver, t.Context()
	if err := d.DeleteMachine(ctx, id); err != nil {
		t.Fatalf("DeleteMachine(%s): %v", id, err)
	}
	s.waitMachineGone(t, id)
	if err := d.DeleteMachine(ctx, id); err != nil {
		t.Errorf("DeleteMachine(%s) a second time: %v: want nil (idempotent)", id, err)
	}
	s.poll(t, fmt.Sprintf("ListMachines(%v) to drop deleted machine %s", labels, id), func(ctx context.Context) (bool, string, error) {
		ms, err := d.ListMachines(ctx, labels)
		if err != nil {
			return false, "", err
		}
		return !containsMachine(ms, id), fmt.Sprintf("%d machines: %v", len(ms), machineIDs(ms)), nil
	})
}

func (s *suite) checkMachineLabels(t *testing.T, id string, want map[string]string) {
	t.Helper()
	m, err := s.h.Driver.GetMachine(t.Context(), id)
	if err != nil {
		t.Fatalf("GetMachine(%s): %v", id, err)
	}
	if m == nil {
		t.Fatalf("GetMachine(%s) = nil, nil", id)
	}
	if miss := missingLabels(m.Labels, want); len(miss) > 0 {
		t.Errorf("after UpdateMachineLabels, machine %s labels %v lack %v (labels must merge)", id, m.Labels, miss)
	}
}

// waitMachineGone polls GetMachine until it returns ErrNotFound.
func (s *suite) waitMachineGone(t *testing.T, id string) {
	t.Helper()
	s.poll(t, fmt.Sprintf("GetMachine(%s) to return ErrNotFound after DeleteMachine", id), func(ctx context.Context) (bool, string, error) {
		m, err := s.h.Driver.GetMachine(ctx, id)
		switch {
		case errors.Is(err, provider.ErrNotFound):
			return true, "ErrNotFound", nil
		case err != nil:
			return false, "", err
		case m == nil:
			return false, "", errors.New("GetMachine returned nil, nil: want ErrNotFound")
		}
		return false, fmt.Sprintf("state %q", m.State), nil
	})
}

// checkMissingMachine checks the not-found contract for an id that does not
// exist ("" included: it must be an error, never nil-nil or a panic).
func (s *suite) checkMissingMachine(t *testing.T, id string) {
	t.Helper()
	ctx := t.Context()
	m, err := s.h.Driver.GetMachine(ctx, id)
	switch {
	case id == "" && (errors.Is(err, provider.ErrNotFound) || errors.Is(err, provider.ErrInvalidArgument)):
	case id == "":
		t.Errorf("GetMachine(\"\") = %+v, %v: want ErrNotFound or ErrInvalidArgument", m, err)
	case !errors.Is(err, provider.ErrNotFound):
		t.Errorf("GetMachine(%q) of a machine that never existed = %+v, %v: want ErrNotFound", id, m, err)
	}
	if id == "" {
		return
	}
	if err := s.h.Driver.DeleteMachine(ctx, id); err != nil {
		t.Errorf("DeleteMachine(%q) of a machine that never existed: %v: want nil", id, err)
	}
}

func containsMachine(ms []*provider.Machine, id string) bool {
	for _, m := range ms {
		if m != nil && m.ID == id {
			return true
		}
	}
	return false
}

func machineIDs(ms []*provider.Machine) []string {
	out := make([]string, 0, len(ms))
	for _, m := range ms {
		if m == nil {
			out = append(out, "<nil>")
			continue
		}
		out = append(out, m.ID)
	}
	return out
}
