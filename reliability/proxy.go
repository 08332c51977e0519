package reliability

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy is a fault-injecting TCP proxy: it accepts connections on a
// loopback port and forwards each to Target, while the test drops, delays,
// cuts or swallows the traffic. The zero value is not usable; create it with
// NewProxy and stop it with Close.
type Proxy struct {
	target string
	ln     net.Listener

	delay     atomic.Int64 // ns added before every forwarded chunk
	blackHole atomic.Bool  // new chunks are read and discarded
	refuse    atomic.Bool  // new connections are closed at once
	cutArmed  atomic.Int32 // chunks still to be cut mid-way

	mu     sync.Mutex
	conns  map[*pair]struct{}
	closed bool

	accepted, cuts, dropped atomic.Int64
	wg                      sync.WaitGroup
}

// pair is one proxied connection: the client side and the target side.
type pair struct {
	client, server net.Conn
	once           sync.Once
}

func (p *pair) close() {
	p.once.Do(func() {
		p.client.Close()
		p.server.Close()
	})
}

// Stats counts what the proxy did.
type Stats struct {
	Accepted int64 // connections accepted
	Dropped  int64 // connections closed by Drop
	Cuts     int64 // connections cut in the middle of a chunk
}

// NewProxy listens on 127.0.0.1 (a free port) and forwards every connection
// to target.
func NewProxy(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{target: target, ln: ln, conns: make(map[*pair]struct{})}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr is the proxy's listening address (host:port).
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetDelay delays every chunk forwarded from now on, in both directions, by
// d (order is kept). 0 removes the delay.
func (p *Proxy) SetDelay(d time.Duration) { p.delay.Store(int64(d)) }

// SetBlackHole makes every connection, open and new, swallow what it reads
// in both directions without forwarding or closing anything: the peers see a
// silent link until their keepalives give up. Turning it off forwards new
// chunks again (those swallowed are lost, so the streams are usually
// broken and the peers close them).
func (p *Proxy) SetBlackHole(on bool) { p.blackHole.Store(on) }

// SetRefuse makes the proxy close new connections right after accepting
// them, as a server that is down but whose port is open.
func (p *Proxy) SetRefuse(on bool) { p.refuse.Store(on) }

// CutNext arms n cuts: each of the next n chunks read on any connection, in
// either direction, is forwarded only in its first half and then both sides
// of that connection are closed, so the peer sees a packet cut in the
// middle.
func (p *Proxy) CutNext(n int) { p.cutArmed.Store(int32(n)) }

// Drop closes every open connection and reports how many there were.
func (p *Proxy) Drop() int {
	p.mu.Lock()
	ps := make([]*pair, 0, len(p.conns))
	for c := range p.conns {
		ps = append(ps, c)
	}
	p.mu.Unlock()
	for _, c := range ps {
		c.close()
	}
	p.dropped.Add(int64(len(ps)))
	return len(ps)
}

// Open is the number of connections being forwarded now.
func (p *Proxy) Open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Stats returns the counters.
func (p *Proxy) Stats() Stats {
	return Stats{Accepted: p.accepted.Load(), Dropped: p.dropped.Load(), Cuts: p.cuts.Load()}
}

// Close stops listening, closes every connection and waits for the proxy's
// goroutines. It is idempotent.
func (p *Proxy) Close() error {
	p.mu.Lock()
	already := p.closed
	p.closed = true
	p.mu.Unlock()
	if !already {
		p.ln.Close()
		p.Drop()
	}
	p.wg.Wait()
	return nil
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		if p.refuse.Load() {
			c.Close()
			continue
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *Proxy) serve(c net.Conn) {
	defer p.wg.Done()
	s, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		c.Close()
		return
	}
	pr := &pair{client: c, server: s}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		pr.close()
		return
	}
	p.conns[pr] = struct{}{}
	p.mu.Unlock()
	defer func() {
		pr.close()
		p.mu.Lock()
		delete(p.conns, pr)
		p.mu.Unlock()
	}()
	var wg sync.WaitGroup
	wg.Go(func() { p.pump(pr, s, c) })
	p.pump(pr, c, s)
	wg.Wait()
}

// pump copies src to dst chunk by chunk, applying the faults, until either
// side fails; then it closes the pair.
func (p *Proxy) pump(pr *pair, src, dst net.Conn) {
	defer pr.close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			if d := time.Duration(p.delay.Load()); d > 0 {
				time.Sleep(d) // injected latency, not synchronisation
			}
			switch {
			case p.blackHole.Load():
				// swallowed
			case n >= 2 && p.takeCut():
				p.cuts.Add(1)
				_, _ = dst.Write(chunk[:n/2])
				return
			default:
				if _, werr := dst.Write(chunk); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return // EOF or a closed side: the pair is closed by the defer
		}
	}
}

func (p *Proxy) takeCut() bool {
	for {
		n := p.cutArmed.Load()
		if n <= 0 {
			return false
		}
		if p.cutArmed.CompareAndSwap(n, n-1) {
			return true
		}
	}
}
