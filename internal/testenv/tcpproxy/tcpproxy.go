// Package tcpproxy is a loopback TCP proxy for tests: it can delay each
// direction (to emulate a round-trip time) and can blackhole traffic (the
// peer goes silent without closing anything, like a box that lost power or a
// network partition).
package tcpproxy

import (
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy forwards connections from Addr to a target.
type Proxy struct {
	// Addr is the proxy's listen address.
	Addr string

	target string
	ln     net.Listener

	mu        sync.Mutex
	delay     time.Duration // one way
	blackhole bool
	conns     map[net.Conn]struct{}
	accepted  int
	closed    bool
	wg        sync.WaitGroup
}

// Start listens on 127.0.0.1 and forwards to target; the proxy is closed on
// t.Cleanup. oneWayDelay is added to each direction (RTT = 2*oneWayDelay).
func Start(t testing.TB, target string, oneWayDelay time.Duration) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("tcpproxy: %v", err)
	}
	p := &Proxy{Addr: ln.Addr().String(), target: target, ln: ln, delay: oneWayDelay,
		conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.Close)
	return p
}

// SetBlackhole starts (true) or stops (false) dropping all traffic in both
// directions. Connections stay open; data read while blackholed is lost.
func (p *Proxy) SetBlackhole(on bool) {
	p.mu.Lock()
	p.blackhole = on
	p.mu.Unlock()
}

// Accepted returns how many connections the proxy accepted.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// Close stops the listener and closes all connections.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.ln.Close()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.accepted++
		p.mu.Unlock()
		if !p.track(c) {
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.untrack(c)
			u, err := net.Dial("tcp", p.target)
			if err != nil {
				return
			}
			if !p.track(u) {
				return
			}
			defer p.untrack(u)
			var wg sync.WaitGroup
			wg.Add(2)
			go func() { defer wg.Done(); p.pipe(u, c) }()
			go func() { defer wg.Done(); p.pipe(c, u) }()
			wg.Wait()
		}()
	}
}

type chunk struct {
	b  []byte
	at time.Time
}

// pipe copies src to dst, delaying each chunk and dropping it if
// blackholed. When one side ends, both are closed.
func (p *Proxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	q := make(chan chunk, 1024)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ch := range q {
			if d := time.Until(ch.at); d > 0 {
				time.Sleep(d)
			}
			p.mu.Lock()
			bh := p.blackhole
			p.mu.Unlock()
			if bh {
				continue
			}
			if _, err := dst.Write(ch.b); err != nil {
				// Drain so the reader is not blocked.
				for range q {
				}
				return
			}
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			d, bh := p.delay, p.blackhole
			p.mu.Unlock()
			if !bh {
				q <- chunk{b: append([]byte(nil), buf[:n]...), at: time.Now().Add(d)}
			}
		}
		if err != nil {
			break
		}
	}
	close(q)
	wg.Wait()
}
