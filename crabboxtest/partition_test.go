// Tests of partition.go.

package crabboxtest

import (
	"errors"
	"testing"
	"time"

	"github.com/crabbox/crabbox-go/provider"
)

func TestPartitionMachine(t *testing.T) {
	c := Start(t)
	l := newLease(t, nil)
	m := boot(t, c, l)
	cl := dial(t, m.Machine, l)
	mustRun(t, cl, "true")

	if err := c.PartitionMachine(m.ID, true); err != nil {
		t.Fatal(err)
	}
	replied := make(chan error, 1)
	go func() {
		_, _, err := cl.SendRequest("keepalive@openssh.com", true, nil)
		replied <- err
	}()
	select {
	case err := <-replied:
		t.Fatalf("keepalive answered through a partition (err %v)", err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := c.PartitionMachine(m.ID, false); err != nil {
		t.Fatal(err)
	}
	if err := <-replied; err != nil {
		t.Fatalf("keepalive after the partition healed: %v", err)
	}
	if out := mustRun(t, cl, "echo back"); out != "back\n" {
		t.Fatalf("after healing: %q", out)
	}

	// Close ends a partitioned machine too.
	if err := c.PartitionMachine(m.ID, true); err != nil {
		t.Fatal(err)
	}
	go func() { _, _, _ = cl.SendRequest("keepalive@openssh.com", true, nil) }()
	if err := c.PartitionMachine("m-missing", true); !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("partition of a missing machine: %v", err)
	}
}
