package tcpproxy_test

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"

	"github.com/crabbox/crabbox-go/internal/testenv/tcpproxy"
)

func echoServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

func TestDelayAndBlackhole(t *testing.T) {
	const oneWay = 50 * time.Millisecond
	p := tcpproxy.Start(t, echoServer(t), oneWay)
	c, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)

	start := time.Now()
	io.WriteString(c, "ping\n")
	if line, err := r.ReadString('\n'); err != nil || line != "ping\n" {
		t.Fatalf("echo = %q, %v", line, err)
	}
	// A lower bound only: the reply cannot come before two delays.
	if rtt := time.Since(start); rtt < 2*oneWay {
		t.Errorf("round trip %v, want at least %v", rtt, 2*oneWay)
	}

	p.SetBlackhole(true)
	io.WriteString(c, "lost\n")
	c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if line, err := r.ReadString('\n'); err == nil {
		t.Fatalf("blackholed proxy delivered %q", line)
	}
	c.SetReadDeadline(time.Time{})
	p.SetBlackhole(false)
	io.WriteString(c, "back\n")
	if line, err := r.ReadString('\n'); err != nil || line != "back\n" {
		t.Fatalf("after blackhole: %q, %v", line, err)
	}
	if p.Accepted() != 1 {
		t.Errorf("accepted %d", p.Accepted())
	}
}
