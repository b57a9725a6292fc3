// PartitionMachine: cutting a machine off the network.

package crabboxtest

import (
	"net"
	"sync"

	"github.com/crabbox/crabbox-go/provider"
)

// gate stalls a machine's network traffic while closed (a partition).
type gate struct {
	mu      sync.Mutex
	blocked bool
	open    chan struct{} // closed while traffic flows
}

func newGate() *gate {
	g := &gate{open: make(chan struct{})}
	close(g.open)
	return g
}

func (g *gate) set(blocked bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case blocked && !g.blocked:
		g.open = make(chan struct{})
	case !blocked && g.blocked:
		close(g.open)
	}
	g.blocked = blocked
}

// wait returns once traffic flows, or net.ErrClosed when done closes.
func (g *gate) wait(done <-chan struct{}) error {
	g.mu.Lock()
	open := g.open
	g.mu.Unlock()
	select {
	case <-open:
		return nil
	case <-done:
		return net.ErrClosed
	}
}

// gatedConn is a server-side connection whose bytes stop flowing, in both
// directions, while its machine is partitioned.
type gatedConn struct {
	net.Conn
	g         *gate
	done      chan struct{}
	closeOnce sync.Once
}

func (c *gatedConn) Read(p []byte) (int, error) {
	if err := c.g.wait(c.done); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(p)
	// Bytes that arrived as the partition started are held back too.
	if werr := c.g.wait(c.done); werr != nil {
		return 0, werr
	}
	return n, err
}

func (c *gatedConn) Write(p []byte) (int, error) {
	if err := c.g.wait(c.done); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

func (c *gatedConn) Close() error {
	c.closeOnce.Do(func() { close(c.done) })
	return c.Conn.Close()
}

// PartitionMachine cuts (true) or restores (false) the machine's network
// like a firewall dropping every packet: established SSH connections stay
// open but no bytes flow either way, and new connections are accepted but
// never answered, until the partition ends. Commands keep running. Only
// keepalives and timeouts notice, as with a box that lost power.
func (c *Cloud) PartitionMachine(id string, partitioned bool) error {
	c.mu.Lock()
	m, ok := c.machines[id]
	c.mu.Unlock()
	if !ok {
		return provider.Errorf(provider.ErrNotFound, "crabboxtest: machine %q not found", id)
	}
	m.gate.set(partitioned)
	return nil
}
