package realtime

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/swapbridge/swapbridge/store"
	"github.com/swapbridge/swapbridge/wire"
)

// countConn is a net.Conn that discards writes and counts frames of a known
// size, signalling when a target is reached.
type countConn struct {
	net.Conn // nil: only Write, Close and deadlines are used
	frame    int
	sink     *fanoutSink
}

type fanoutSink struct {
	delivered atomic.Int64
	target    atomic.Int64
	done      chan struct{}
}

func (c *countConn) Write(p []byte) (int, error) {
	n := c.sink.delivered.Add(int64(len(p) / c.frame))
	if n == c.sink.target.Load() {
		c.sink.done <- struct{}{}
	}
	return len(p), nil
}
func (c *countConn) Close() error                     { return nil }
func (c *countConn) SetWriteDeadline(time.Time) error { return nil }
func (c *countConn) SetReadDeadline(time.Time) error  { return nil }

// BenchmarkFanout measures publishing one event to N subscribers of
// /ws/stations/ until every subscriber's writer has written it: the hub's
// cost per event (queueing, writer wake-up, framing, one write each), with
// the socket replaced by a discarding conn.
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{1, 100, 1000, 10000} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			hub, err := NewHub(Config{}, nopHistory{}, &testStations{}, testAuth{})
			if err != nil {
				b.Fatal(err)
			}
			payload := wire.EncodeEvent(nil, wire.TypeInventoryUpdate, 1, time.Now(),
				[]byte(`{"station_id":"s1","available_batteries":3,"booked_batteries":1,"charging_batteries":2,"empty_slots":2,"faulted_slots":0,"total_slots":8}`))
			payload = append(payload, bytes.Repeat([]byte(" "), 120-len(payload)%120)...) // fixed frame size
			frame := len(payload) + 2
			sink := &fanoutSink{done: make(chan struct{}, 1)}
			for range n {
				c := &client{hub: hub, ch: store.Channel{Kind: store.AllStations}, ip: "bench",
					conn: &countConn{frame: frame, sink: sink}, readerDone: make(chan struct{})}
				hub.subscribe(c)
				hub.wg.Done() // no handshake
				c.started = true
			}
			evs := []store.Event{{StationID: "s1", Type: wire.TypeInventoryUpdate, Data: payload}}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				evs[0].Seq = uint64(i + 1)
				sink.target.Add(int64(n))
				hub.Publish(evs)
				<-sink.done
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/delivery")
			hub.mu.Lock()
			hub.closed = true
			hub.mu.Unlock()
			// The fake clients have no reader, so Shutdown would wait for
			// them forever; stop only the fan-out shards.
			hub.stopped.Store(true)
			hub.stopOnce.Do(func() { close(hub.stop) })
			hub.shardWG.Wait()
		})
	}
}

type nopHistory struct{}

func (nopHistory) LastSeq() uint64 { return 0 }
func (nopHistory) EventsAfter(store.Channel, uint64, int) ([]store.Event, error) {
	return nil, nil
}

// BenchmarkIdleConnMemory opens 5,000 real WebSocket connections to
// /ws/stations/s1/ and reports the heap and stack they keep while idle
// (HeapInuse+StackInuse after GC, per connection). The clients are bare TCP
// connections that did the handshake by hand, so the figure is the server's
// cost plus about one net.TCPConn per connection. It measures once per run;
// use -benchtime=1x.
func BenchmarkIdleConnMemory(b *testing.B) {
	const conns = 5000
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < 2*conns+200 {
		lim.Cur = min(lim.Max, 2*conns+1000)
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur < 2*conns+200 {
		b.Skipf("RLIMIT_NOFILE %d is too low for %d connections", lim.Cur, conns)
	}
	e := newEnv(b, Config{MaxConnsPerIP: -1}, store.Options{})
	addr := strings.TrimPrefix(e.srv.URL, "http://")
	req := []byte("GET /ws/stations/s1/ HTTP/1.1\r\nHost: " + addr +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	// One measurement per run, whatever b.N: the figure is per connection.
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	open := make([]net.Conn, 0, conns)
	var buf [512]byte
	for range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatalf("dial: %v", err)
		}
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		// Read until the hello frame arrived (the handshake is done).
		got := 0
		for !bytes.Contains(buf[:got], []byte(`"hello"`)) {
			n, err := c.Read(buf[got:])
			if err != nil {
				b.Fatalf("handshake: %v", err)
			}
			got += n
			if got == len(buf) {
				got = 0
			}
		}
		open = append(open, c)
	}
	waitFor(b, "all connections registered", func() bool {
		return e.metricValue("swapd_ws_connections", "channel", "station") == conns
	})
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	if path := os.Getenv("REALTIME_HEAP_PROFILE"); path != "" {
		if f, err := os.Create(path); err == nil {
			_ = pprof.WriteHeapProfile(f)
			f.Close()
		}
	}
	used := float64(after.HeapInuse+after.StackInuse) - float64(before.HeapInuse+before.StackInuse)
	b.ReportMetric(used/conns, "bytes/conn")
	b.ReportMetric((float64(after.StackInuse)-float64(before.StackInuse))/conns, "stack-bytes/conn")
	b.ReportMetric(float64(runtime.NumGoroutine())/conns, "goroutines/conn")
	for _, c := range open {
		c.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	_ = e.hub.Shutdown(ctx)
	cancel()
}
