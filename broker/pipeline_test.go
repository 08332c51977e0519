package broker

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	mpackets "github.com/mochi-mqtt/server/v2/packets"

	"github.com/swapbridge/swapbridge/wire"
)

// submission is one HandlePublish call whose done the test holds.
type submission struct {
	sid     string
	kind    wire.TopicKind
	payload string
	done    func(error)
}

// holder is a Handler that hands every telemetry and ack to the test and
// reports it done only when the test says so. Statuses and the session
// calls go to the embedded recorder (done at once).
type holder struct {
	*recorder
	subs      chan submission
	submitted atomic.Int64
	// reject, when set, is returned synchronously by HandlePublish for
	// the payloads it picks (done is then not held).
	reject func(payload string) error
}

func newHolder() *holder {
	return &holder{recorder: newRecorder(), subs: make(chan submission, 256)}
}

func (h *holder) HandlePublish(sid string, kind wire.TopicKind, payload []byte, done func(error)) error {
	if kind == wire.KindStatus {
		return h.recorder.HandlePublish(sid, kind, payload, done)
	}
	h.submitted.Add(1)
	if h.reject != nil {
		if err := h.reject(string(payload)); err != nil {
			return err
		}
	}
	once := atomic.Bool{}
	h.subs <- submission{sid, kind, string(payload), func(err error) {
		if once.Swap(true) {
			panic("done called twice")
		}
		done(err)
	}}
	return nil
}

// next waits for the next held HandlePublish call.
func (h *holder) next(t *testing.T) submission {
	t.Helper()
	return within(t, h.subs, "a HandlePublish call")
}

// quiet checks that ch gets nothing for a short while: a negative check
// (the thing must not happen), never used to wait for something.
func quiet[T any](t *testing.T, ch <-chan T, what string) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("%s: got %+v", what, v)
	case <-time.After(150 * time.Millisecond):
	}
}

// rawConn is a raw MQTT client (3.1.1 or 5) on mochi's packet codec.
type rawConn struct {
	c       net.Conn
	r       *bufio.Reader
	version byte
}

// dialRaw connects a station with MQTT version 4 (3.1.1) or 5.
func dialRaw(t *testing.T, addr, id, secret string, version byte) *rawConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(waitFor))
	c := &rawConn{c: nc, r: bufio.NewReader(nc), version: version}
	c.write(t, mpackets.Packet{
		FixedHeader: mpackets.FixedHeader{Type: mpackets.Connect},
		Connect: mpackets.ConnectParams{
			ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30,
			ClientIdentifier: id, UsernameFlag: true, Username: []byte(id),
			PasswordFlag: true, Password: []byte(secret),
		},
	})
	pk := c.read(t)
	if pk.FixedHeader.Type != mpackets.Connack || pk.ReasonCode != 0 {
		t.Fatalf("CONNECT %s: got packet type %d reason %#x", id, pk.FixedHeader.Type, pk.ReasonCode)
	}
	return c
}

func (c *rawConn) write(t *testing.T, pk mpackets.Packet) {
	t.Helper()
	pk.ProtocolVersion = c.version
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case mpackets.Connect:
		err = pk.ConnectEncode(&buf)
	case mpackets.Publish:
		err = pk.PublishEncode(&buf)
	case mpackets.Pingreq:
		err = pk.PingreqEncode(&buf)
	case mpackets.Subscribe:
		err = pk.SubscribeEncode(&buf)
	default:
		t.Fatalf("cannot encode packet type %d", pk.FixedHeader.Type)
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.c.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
}

// publish sends a QoS 1 publish with packet id id.
func (c *rawConn) publish(t *testing.T, topic string, id uint16, payload string, retain bool) {
	t.Helper()
	c.write(t, mpackets.Packet{
		FixedHeader: mpackets.FixedHeader{Type: mpackets.Publish, Qos: 1, Retain: retain},
		TopicName:   topic, PacketID: id, Payload: []byte(payload),
	})
}

// readPacket reads one packet; io errors are returned, not fatal.
func (c *rawConn) readPacket() (mpackets.Packet, error) {
	var pk mpackets.Packet
	b, err := c.r.ReadByte()
	if err != nil {
		return pk, err
	}
	pk.ProtocolVersion = c.version
	if err := pk.FixedHeader.Decode(b); err != nil {
		return pk, err
	}
	n, _, err := mpackets.DecodeLength(c.r)
	if err != nil {
		return pk, err
	}
	pk.FixedHeader.Remaining = n
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return pk, err
	}
	switch pk.FixedHeader.Type {
	case mpackets.Connack:
		err = pk.ConnackDecode(body)
	case mpackets.Puback:
		err = pk.PubackDecode(body)
	case mpackets.Disconnect:
		err = pk.DisconnectDecode(body)
	case mpackets.Suback:
		err = pk.SubackDecode(body)
	case mpackets.Pingresp:
	default:
		err = fmt.Errorf("unexpected packet type %d", pk.FixedHeader.Type)
	}
	return pk, err
}

func (c *rawConn) read(t *testing.T) mpackets.Packet {
	t.Helper()
	pk, err := c.readPacket()
	if err != nil {
		t.Fatalf("read packet: %v", err)
	}
	return pk
}

// expectPuback reads the next packet, which must be the PUBACK of id with
// reason code.
func (c *rawConn) expectPuback(t *testing.T, id uint16, code byte) {
	t.Helper()
	pk := c.read(t)
	if pk.FixedHeader.Type != mpackets.Puback || pk.PacketID != id || pk.ReasonCode != code {
		t.Fatalf("got packet type %d id %d reason %#x, want PUBACK %d reason %#x", pk.FixedHeader.Type, pk.PacketID, pk.ReasonCode, id, code)
	}
}

// barrier sends PINGREQ and reads up to its PINGRESP, failing on anything
// else: whatever the broker wrote before answering the ping has arrived.
func (c *rawConn) barrier(t *testing.T, what string) {
	t.Helper()
	c.write(t, mpackets.Packet{FixedHeader: mpackets.FixedHeader{Type: mpackets.Pingreq}})
	pk := c.read(t)
	if pk.FixedHeader.Type != mpackets.Pingresp {
		t.Fatalf("%s: got packet type %d id %d before PINGRESP", what, pk.FixedHeader.Type, pk.PacketID)
	}
}

// expectClosed reads until the connection ends, failing on any PUBACK (an
// MQTT 5 DISCONNECT is allowed).
func (c *rawConn) expectClosed(t *testing.T) {
	t.Helper()
	for {
		pk, err := c.readPacket()
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isReset(err) {
				return
			}
			t.Fatalf("waiting for the connection to close: %v", err)
		}
		if pk.FixedHeader.Type != mpackets.Disconnect {
			t.Fatalf("got packet type %d id %d, want the connection closed", pk.FixedHeader.Type, pk.PacketID)
		}
	}
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}

// startPipelined starts a broker with station S1 and h as its handler.
func startPipelined(t *testing.T, depth int, h Handler) *Broker {
	t.Helper()
	return startBroker(t, Config{PipelineDepth: depth}, newCreds("S1", "one"), h)
}

var telemetryTopic = wire.Topic("S1", wire.KindTelemetry)

// Five publishes read without waiting; their dones come in reverse order.
// No PUBACK is written before the oldest is done, then all five, in
// publish order.
func TestPipelinePubacksInOrder(t *testing.T) {
	for _, version := range []byte{4, 5} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			h := newHolder()
			b := startPipelined(t, 0, h)
			c := dialRaw(t, b.Addr(), "S1", "one", version)
			h.expect(t, "up", "S1", "", "")
			for id := uint16(1); id <= 5; id++ {
				c.publish(t, telemetryTopic, id, fmt.Sprintf(`{"seq":%d}`, id), false)
			}
			subs := make([]submission, 5)
			for i := range subs {
				subs[i] = h.next(t)
				if want := fmt.Sprintf(`{"seq":%d}`, i+1); subs[i].payload != want || subs[i].sid != "S1" || subs[i].kind != wire.KindTelemetry {
					t.Fatalf("submission %d = %+v, want S1 telemetry %s", i, subs[i], want)
				}
			}
			for i := 4; i >= 1; i-- {
				subs[i].done(nil)
			}
			c.barrier(t, "PUBACK before the oldest publish was done")
			subs[0].done(nil)
			for id := uint16(1); id <= 5; id++ {
				c.expectPuback(t, id, 0)
			}
			c.barrier(t, "after the five PUBACKs")
			if n := len(h.events); n != 0 {
				t.Errorf("HandlePublish or session calls: %d, want none", n)
			}
			if got := value(t, b.m.handlerErrors); got != 0 {
				t.Errorf("handler_errors_total = %v", got)
			}
		})
	}
}

// A failure reported for the third of five publishes closes the
// connection: PUBACKs of the first two, none for the third, nor for the
// later ones even though they were done first.
func TestPipelineFailureClosesWithoutLaterPubacks(t *testing.T) {
	for _, version := range []byte{4, 5} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			h := newHolder()
			b := startPipelined(t, 0, h)
			c := dialRaw(t, b.Addr(), "S1", "one", version)
			h.expect(t, "up", "S1", "", "")
			for id := uint16(1); id <= 5; id++ {
				c.publish(t, telemetryTopic, id, fmt.Sprintf(`{"seq":%d}`, id), false)
			}
			subs := make([]submission, 5)
			for i := range subs {
				subs[i] = h.next(t)
			}
			subs[0].done(nil)
			subs[1].done(nil)
			c.expectPuback(t, 1, 0)
			c.expectPuback(t, 2, 0)
			subs[3].done(nil)
			subs[4].done(nil)
			c.barrier(t, "PUBACK of a publish after the pending third")
			subs[2].done(errStoreDown)
			c.expectClosed(t)
			h.expect(t, "down", "S1", "", "")
			if got := value(t, b.m.handlerErrors); got != 1 {
				t.Errorf("handler_errors_total = %v, want 1", got)
			}
			// The station reconnects and resends: pipelined again.
			c = dialRaw(t, b.Addr(), "S1", "one", version)
			h.expect(t, "up", "S1", "", "")
			c.publish(t, telemetryTopic, 3, `{"seq":3}`, false)
			s := h.next(t)
			if s.payload != `{"seq":3}` {
				t.Fatalf("resend submitted as %q", s.payload)
			}
			s.done(nil)
			c.expectPuback(t, 3, 0)
		})
	}
}

// A payload HandlePublish rejects as bad is acknowledged (MQTT 5: reason
// 0x99) in its turn and the connection stays.
func TestPipelineBadPayload(t *testing.T) {
	for _, tc := range []struct {
		version byte
		code    byte
	}{{4, 0}, {5, mpackets.ErrPayloadFormatInvalid.Code}} {
		t.Run(fmt.Sprintf("v%d", tc.version), func(t *testing.T) {
			h := newHolder()
			h.reject = func(p string) error {
				if p == "bad" {
					return fmt.Errorf("%w: test", wire.ErrBadPayload)
				}
				return nil
			}
			b := startPipelined(t, 0, h)
			c := dialRaw(t, b.Addr(), "S1", "one", tc.version)
			h.expect(t, "up", "S1", "", "")

			// Bad payload alone: acknowledged at once.
			c.publish(t, telemetryTopic, 1, "bad", false)
			c.expectPuback(t, 1, tc.code)

			// Behind a pending good one: acknowledged after it.
			c.publish(t, telemetryTopic, 2, `{"seq":2}`, false)
			s := h.next(t)
			c.publish(t, telemetryTopic, 3, "bad", false)
			c.barrier(t, "PUBACK of the bad payload before the pending one")
			s.done(nil)
			c.expectPuback(t, 2, 0)
			c.expectPuback(t, 3, tc.code)

			// The connection is still good.
			c.publish(t, telemetryTopic, 4, `{"seq":4}`, false)
			h.next(t).done(nil)
			c.expectPuback(t, 4, 0)
			if got := value(t, b.m.badPayloads); got != 2 {
				t.Errorf("payloads_rejected_total = %v, want 2", got)
			}
			if got := value(t, b.m.handlerErrors); got != 0 {
				t.Errorf("handler_errors_total = %v, want 0", got)
			}
			if got := h.submitted.Load(); got != 4 {
				t.Errorf("held calls = %d, want 4", got)
			}
		})
	}
}

// A retained publish (a station's status) after pipelined ones waits until
// they are acknowledged and for its own done; its PUBACK (written by mochi,
// which retains it) comes after theirs.
func TestPipelineRetainedWaitsForQueue(t *testing.T) {
	h := newHolder()
	b := startPipelined(t, 0, h)
	c := dialRaw(t, b.Addr(), "S1", "one", 4)
	h.expect(t, "up", "S1", "", "")
	c.publish(t, telemetryTopic, 1, `{"seq":1}`, false)
	c.publish(t, telemetryTopic, 2, `{"seq":2}`, false)
	s1, s2 := h.next(t), h.next(t)
	status := `{"online":true,"boot_id":"b1"}`
	c.publish(t, wire.Topic("S1", wire.KindStatus), 3, status, true)
	// The reader waits in the retained publish for the queue to drain:
	// HandlePublish is not called yet.
	quiet(t, h.events, "HandlePublish before the pipelined publishes were acknowledged")
	s2.done(nil)
	quiet(t, h.events, "HandlePublish before the oldest pipelined publish was acknowledged")
	s1.done(nil)
	c.expectPuback(t, 1, 0)
	c.expectPuback(t, 2, 0)
	c.expectPuback(t, 3, 0)
	h.expect(t, "publish", "S1", wire.KindStatus, status)
	if got := h.submitted.Load(); got != 2 {
		t.Errorf("held calls = %d, want 2 (not the retained one)", got)
	}
	// mochi retained it.
	if got, ok := b.srv.Topics.Retained.Get(wire.Topic("S1", wire.KindStatus)); !ok || string(got.Payload) != status {
		t.Errorf("retained status = %q, want %q", got.Payload, status)
	}
	// Pipelining goes on after it.
	c.publish(t, telemetryTopic, 4, `{"seq":4}`, false)
	h.next(t).done(nil)
	c.expectPuback(t, 4, 0)
}

// With PipelineDepth 2, a third publish is not submitted until the first
// is done.
func TestPipelineDepth(t *testing.T) {
	h := newHolder()
	b := startPipelined(t, 2, h)
	c := dialRaw(t, b.Addr(), "S1", "one", 5)
	h.expect(t, "up", "S1", "", "")
	for id := uint16(1); id <= 3; id++ {
		c.publish(t, telemetryTopic, id, fmt.Sprintf(`{"seq":%d}`, id), false)
	}
	s1, s2 := h.next(t), h.next(t)
	quiet(t, h.subs, "third publish submitted with two unacknowledged")
	if got := h.submitted.Load(); got != 2 {
		t.Fatalf("held calls = %d, want 2", got)
	}
	s2.done(nil) // not the oldest: still two unacknowledged
	quiet(t, h.subs, "third publish submitted before the oldest was acknowledged")
	s1.done(nil)
	c.expectPuback(t, 1, 0)
	c.expectPuback(t, 2, 0)
	s3 := h.next(t)
	if s3.payload != `{"seq":3}` || h.submitted.Load() != 3 {
		t.Fatalf("third submission %q, %d calls", s3.payload, h.submitted.Load())
	}
	s3.done(nil)
	c.expectPuback(t, 3, 0)
}

// A negative PipelineDepth is depth 1: each publish is acknowledged before
// the next is handed over.
func TestPipelineNegativeDepthIsOne(t *testing.T) {
	h := newHolder()
	b := startPipelined(t, -1, h)
	c := dialRaw(t, b.Addr(), "S1", "one", 4)
	h.expect(t, "up", "S1", "", "")
	for id := uint16(1); id <= 3; id++ {
		c.publish(t, telemetryTopic, id, fmt.Sprintf(`{"seq":%d}`, id), false)
	}
	for id := uint16(1); id <= 3; id++ {
		s := h.next(t)
		if want := fmt.Sprintf(`{"seq":%d}`, id); s.payload != want {
			t.Fatalf("handed over %q, want %q", s.payload, want)
		}
		quiet(t, h.subs, "a publish handed over before the previous one was done")
		s.done(nil)
		c.expectPuback(t, id, 0)
	}
}

// A client that goes away while its reader waits for room in a full queue:
// the reader goes on once the oldest is done, the disconnect is reported,
// dones after it write nothing, and a new connection pipelines again.
func TestPipelineClientGoneWhileFull(t *testing.T) {
	h := newHolder()
	b := startPipelined(t, 1, h)
	c := dialRaw(t, b.Addr(), "S1", "one", 4)
	h.expect(t, "up", "S1", "", "")
	c.publish(t, telemetryTopic, 1, `{"seq":1}`, false)
	c.publish(t, telemetryTopic, 2, `{"seq":2}`, false)
	s1 := h.next(t)
	quiet(t, h.subs, "second publish submitted with depth 1")
	c.c.Close()
	s1.done(nil) // its PUBACK goes to a closed connection, or nowhere
	// The reader takes the second publish it had read (unless writing the
	// first PUBACK already failed), then sees the end.
	h.expect(t, "down", "S1", "", "")
	select {
	case s2 := <-h.subs:
		if s2.payload != `{"seq":2}` {
			t.Fatalf("submitted %q after the first", s2.payload)
		}
		s2.done(nil)
	default:
	}

	c = dialRaw(t, b.Addr(), "S1", "one", 4)
	h.expect(t, "up", "S1", "", "")
	c.publish(t, telemetryTopic, 2, `{"seq":2}`, false)
	h.next(t).done(nil)
	c.expectPuback(t, 2, 0)
	if got := value(t, b.m.handlerErrors); got != 0 {
		t.Errorf("handler_errors_total = %v", got)
	}
}
