package reliability

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/swapbridge/swapbridge/internal/testwait"
)

// echoServer echoes every connection until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
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
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func dialProxy(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	return c
}

func TestProxyFaults(t *testing.T) {
	p, err := NewProxy(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	msg := []byte("0123456789")
	buf := make([]byte, len(msg))

	// Pass-through.
	c := dialProxy(t, p)
	c.Write(msg)
	if _, err := io.ReadFull(c, buf); err != nil || !bytes.Equal(buf, msg) {
		t.Fatalf("pass-through: %q %v", buf, err)
	}

	// Delay: the echo takes at least two delays (there and back).
	p.SetDelay(40 * time.Millisecond)
	start := time.Now()
	c.Write(msg)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 80*time.Millisecond {
		t.Errorf("delayed echo took %v, want ≥ 80ms", d)
	}
	p.SetDelay(0)

	// Drop closes the connection.
	if n := p.Drop(); n != 1 {
		t.Errorf("Drop closed %d connections, want 1", n)
	}
	if _, err := c.Read(buf); err == nil {
		t.Error("read after Drop succeeded")
	}

	// Cut: half of the chunk arrives, then the connection closes.
	c = dialProxy(t, p)
	testwait.For(t, 5*time.Second, "the proxied connection", func() bool { return p.Open() == 1 })
	p.CutNext(1)
	c.Write(msg)
	got, _ := io.ReadAll(c)
	if len(got) >= len(msg) || !bytes.HasPrefix(msg, got) {
		t.Errorf("after a cut the peer got %q, want a strict prefix of %q", got, msg)
	}
	if p.Stats().Cuts != 1 {
		t.Errorf("cuts = %d", p.Stats().Cuts)
	}

	// Black hole: nothing comes back, and the connection stays open.
	c = dialProxy(t, p)
	p.SetBlackHole(true)
	c.Write(msg)
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := c.Read(buf); n != 0 || !isTimeout(err) {
		t.Errorf("black hole: read %d bytes, err %v; want a timeout", n, err)
	}
	p.SetBlackHole(false)

	// Refuse: accepted and closed at once.
	p.SetRefuse(true)
	c = dialProxy(t, p)
	if _, err := c.Read(buf); err == nil {
		t.Error("refused connection readable")
	}
	p.SetRefuse(false)

	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	p.Close() // idempotent
	if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		t.Error("proxy still accepts after Close")
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
