// Tests of idempotent releases on moto: a second or concurrent
// DeleteMachine calls no API on a resource already gone.

package awsec2_test

import (
	"sync"
	"testing"

	"github.com/crabbox/crabbox-go/internal/testenv/moto"
)

// mutations counts the mutating calls DeleteMachine may make.
func mutations(e *env) map[string]int {
	m := map[string]int{}
	for _, a := range []string{"DeleteKeyPair", "CreateTags", "TerminateInstances"} {
		m[a] = e.faults.Calls(a)
	}
	return m
}

func TestSecondDeleteMachineCallsNothingOnWhatIsGone(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	m, err := e.d.CreateMachine(ctx, createReq(t, e, "cbx_2e1ea5e00001"))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.d.DeleteMachine(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	if n := e.faults.Calls("DeleteKeyPair"); n != 1 {
		t.Fatalf("first DeleteMachine: DeleteKeyPair called %d times, want 1", n)
	}
	before := mutations(e)
	if err := e.d.DeleteMachine(ctx, m.ID); err != nil {
		t.Fatalf("second DeleteMachine: %v", err)
	}
	if after := mutations(e); after["DeleteKeyPair"] != before["DeleteKeyPair"] || after["CreateTags"] != before["CreateTags"] ||
		after["TerminateInstances"] != before["TerminateInstances"] {
		t.Errorf("second DeleteMachine made calls on what is gone: before %v, after %v", before, after)
	}
	e.expectClean()
}

// Two releases at once: whichever deletes the key pair, the other's
// refused DeleteKeyPair (the key lost its tag with it, so the policy
// denies) is not an error once the key is seen gone.
func TestConcurrentDeleteMachine(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	m, err := e.d.CreateMachine(ctx, createReq(t, e, "cbx_2e1ea5e00002"))
	if err != nil {
		t.Fatal(err)
	}
	// The other release deleted the key between this one's check and its
	// delete: the delete lands but is refused, as IAM refuses it on a
	// missing key.
	e.faults.Add(moto.Fault{Action: "DeleteKeyPair", Times: 1, After: true, Code: "UnauthorizedOperation", Status: 403})
	if err := e.d.DeleteMachine(ctx, m.ID); err != nil {
		t.Fatalf("DeleteMachine after a concurrent key deletion: %v", err)
	}
	m2, err := e.d.CreateMachine(ctx, createReq(t, e, "cbx_2e1ea5e00003"))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = e.d.DeleteMachine(ctx, m2.ID) }()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent DeleteMachine %d: %v", i, err)
		}
	}
	e.expectClean()
}
