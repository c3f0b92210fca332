package stack

import (
	"io"
	"net"
	"testing"
	"time"
)

// TestProxyNextUp: the channel closes with the first byte up after the
// call; bytes down do not close it.
func TestProxyNextUp(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = c.Write([]byte("hello"))
		_, _ = io.Copy(io.Discard, c)
	}()
	p, err := NewProxy(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	up := p.NextUp()
	c, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.ReadFull(c, make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-up:
		t.Fatal("closed by bytes down")
	default:
	}
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-up:
	case <-time.After(10 * time.Second):
		t.Fatal("not closed 10 s after a byte up")
	}
	if n := p.Up.Load(); n != 1 {
		t.Errorf("Up %d, want 1", n)
	}
	select {
	case <-p.NextUp():
		t.Error("a later NextUp closed by the byte before it")
	default:
	}
}
