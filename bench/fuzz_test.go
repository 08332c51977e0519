package bench

import (
	"bufio"
	"bytes"
	"net"
	"testing"
	"time"
)

// FuzzFrameHandle feeds arbitrary WebSocket text to a socket's frame
// handler: it must never panic, and never count a frame as delivered that
// no step explains.
func FuzzFrameHandle(f *testing.F) {
	f.Add([]byte(`{"type":"inventory_update","seq":1,"ts":"2026-01-01T00:00:00Z","station_id":"f-s0","available_batteries":1}`))
	f.Add([]byte(`{"type":"booking_ready","booking_id":"b1"}`))
	f.Add([]byte(`{"type":"error","code":"x"}`))
	f.Add([]byte(`{"type":"inventory_update","station_id":"f-s0","available_batteries":99999999999999999999}`))
	f.Add([]byte(`{"type":"`))
	f.Fuzz(func(t *testing.T, frame []byte) {
		r := newRunner(Defaults(Steady), &target{}, "f")
		st := &station{idx: 0, id: "f-s0", toggle: 3, run: r}
		r.stations = []*station{st}
		r.byID[st.id] = st
		st.step.Store(2)
		u := &user{id: "u"}
		for _, c := range []*wsClient{
			{run: r, kind: wsAll, cursors: make([]uint64, 1)},
			{run: r, kind: wsStation, st: st, cursors: make([]uint64, 1)},
			{run: r, kind: wsUser, user: u},
		} {
			c.handle(frame, time.Now())
			if c.delivered.Load() > 1 || c.cursors != nil && c.cursors[0] > 2 {
				t.Fatalf("one frame delivered %d, cursor %v", c.delivered.Load(), c.cursors)
			}
		}
	})
}

// FuzzMQTTRead feeds arbitrary broker bytes to the light client's packet
// reader: it must return (an error or EOF) without panicking.
func FuzzMQTTRead(f *testing.F) {
	f.Add([]byte{0x40, 0x02, 0x00, 0x01})
	f.Add([]byte{0x32, 0x08, 0x00, 0x01, 'a', 0x00, 0x05, 'h', 'i', '!'})
	f.Add([]byte{0x90, 0x03, 0x00, 0x01, 0x80})
	f.Add([]byte{0x30, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		c := &mqttConn{conn: discardConn{}, subacks: make(chan uint16, 4), done: make(chan struct{}),
			opt: mqttOptions{OnPublish: func(string, []byte) {}, OnPuback: func(uint16) {}}}
		err := c.read(bufio.NewReader(bytes.NewReader(in)))
		if err == nil {
			t.Fatal("read returned nil: it only returns when the input ends or is bad")
		}
	})
}

// discardConn is a net.Conn whose writes (PUBACKs) go nowhere.
type discardConn struct{ net.Conn }

func (discardConn) Write(p []byte) (int, error)      { return len(p), nil }
func (discardConn) SetWriteDeadline(time.Time) error { return nil }
func (discardConn) Close() error                     { return nil }
