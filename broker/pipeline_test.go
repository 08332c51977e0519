package broker

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	mpackets "github.com/mochi-mqtt/server/v2/packets"

	"github.com/swapbridge/swapbridge/internal/mqtttest"
	"github.com/swapbridge/swapbridge/internal/testwait"
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
	return testwait.Recv(t, h.subs, waitFor, "a HandlePublish call")
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
			c := mqtttest.MustConnect(t, b.Addr(), "S1", "one", version)
			h.expect(t, "up", "S1", "", "")
			for id := uint16(1); id <= 5; id++ {
				c.MustPublish(t, telemetryTopic, id, fmt.Sprintf(`{"seq":%d}`, id), false)
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
			c.Barrier(t, "PUBACK before the oldest publish was done")
			subs[0].done(nil)
			for id := uint16(1); id <= 5; id++ {
				c.ExpectPuback(t, id, 0)
			}
			c.Barrier(t, "after the five PUBACKs")
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
			c := mqtttest.MustConnect(t, b.Addr(), "S1", "one", version)
			h.expect(t, "up", "S1", "", "")
			for id := uint16(1); id <= 5; id++ {
				c.MustPublish(t, telemetryTopic, id, fmt.Sprintf(`{"seq":%d}`, id), false)
			}
			subs := make([]submission, 5)
			for i := range subs {
				subs[i] = h.next(t)
			}
			subs[0].done(nil)
			subs[1].done(nil)
			c.ExpectPuback(t, 1, 0)
			c.ExpectPuback(t, 2, 0)
			subs[3].done(nil)
			subs[4].done(nil)
			c.Barrier(t, "PUBACK of a publish after the pending third")
			subs[2].done(errStoreDown)
			c.ExpectClosed(t)
			h.expect(t, "down", "S1", "", "")
			if got := value(t, b.m.handlerErrors); got != 1 {
				t.Errorf("handler_errors_total = %v, want 1", got)
			}
			// The station reconnects and resends: pipelined again.
			c = mqtttest.MustConnect(t, b.Addr(), "S1", "one", version)
			h.expect(t, "up", "S1", "", "")
			c.MustPublish(t, telemetryTopic, 3, `{"seq":3}`, false)
			s := h.next(t)
			if s.payload != `{"seq":3}` {
				t.Fatalf("resend submitted as %q", s.payload)
			}
			s.done(nil)
			c.ExpectPuback(t, 3, 0)
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
			c := mqtttest.MustConnect(t, b.Addr(), "S1", "one", tc.version)
			h.expect(t, "up", "S1", "", "")

			// Bad payload alone: acknowledged at once.
			c.MustPublish(t, telemetryTopic, 1, "bad", false)
			c.ExpectPuback(t, 1, tc.code)

			// Behind a pending good one: acknowledged after it.
			c.MustPublish(t, telemetryTopic, 2, `{"seq":2}`, false)
			s := h.next(t)
			c.MustPublish(t, telemetryTopic, 3, "bad", false)
			c.Barrier(t, "PUBACK of the bad payload before the pending one")
			s.done(nil)
			c.ExpectPuback(t, 2, 0)
			c.ExpectPuback(t, 3, tc.code)

			// The connection is still good.
			c.MustPublish(t, telemetryTopic, 4, `{"seq":4}`, false)
			h.next(t).done(nil)
			c.ExpectPuback(t, 4, 0)
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
	c := mqtttest.MustConnect(t, b.Addr(), "S1", "one", 4)
	h.expect(t, "up", "S1", "", "")
	c.MustPublish(t, telemetryTopic, 1, `{"seq":1}`, false)
	c.MustPublish(t, telemetryTopic, 2, `{"seq":2}`, false)
	s1, s2 := h.next(t), h.next(t)
	status := `{"online":true,"boot_id":"b1"}`
	c.MustPublish(t, wire.Topic("S1", wire.KindStatus), 3, status, true)
	// The reader waits in the retained publish for the queue to drain:
	// HandlePublish is not called yet.
	quiet(t, h.events, "HandlePublish before the pipelined publishes were acknowledged")
	s2.done(nil)
	quiet(t, h.events, "HandlePublish before the oldest pipelined publish was acknowledged")
	s1.done(nil)
	c.ExpectPuback(t, 1, 0)
	c.ExpectPuback(t, 2, 0)
	c.ExpectPuback(t, 3, 0)
	h.expect(t, "publish", "S1", wire.KindStatus, status)
	if got := h.submitted.Load(); got != 2 {
		t.Errorf("held calls = %d, want 2 (not the retained one)", got)
	}
	// mochi retained it.
	if got, ok := b.srv.Topics.Retained.Get(wire.Topic("S1", wire.KindStatus)); !ok || string(got.Payload) != status {
		t.Errorf("retained status = %q, want %q", got.Payload, status)
	}
	// Pipelining goes on after it.
	c.MustPublish(t, telemetryTopic, 4, `{"seq":4}`, false)
	h.next(t).done(nil)
	c.ExpectPuback(t, 4, 0)
}

// With PipelineDepth 2, a third publish is not submitted until the first
// is done.
func TestPipelineDepth(t *testing.T) {
	h := newHolder()
	b := startPipelined(t, 2, h)
	c := mqtttest.MustConnect(t, b.Addr(), "S1", "one", 5)
	h.expect(t, "up", "S1", "", "")
	for id := uint16(1); id <= 3; id++ {
		c.MustPublish(t, telemetryTopic, id, fmt.Sprintf(`{"seq":%d}`, id), false)
	}
	s1, s2 := h.next(t), h.next(t)
	quiet(t, h.subs, "third publish submitted with two unacknowledged")
	if got := h.submitted.Load(); got != 2 {
		t.Fatalf("held calls = %d, want 2", got)
	}
	s2.done(nil) // not the oldest: still two unacknowledged
	quiet(t, h.subs, "third publish submitted before the oldest was acknowledged")
	s1.done(nil)
	c.ExpectPuback(t, 1, 0)
	c.ExpectPuback(t, 2, 0)
	s3 := h.next(t)
	if s3.payload != `{"seq":3}` || h.submitted.Load() != 3 {
		t.Fatalf("third submission %q, %d calls", s3.payload, h.submitted.Load())
	}
	s3.done(nil)
	c.ExpectPuback(t, 3, 0)
}

// A negative PipelineDepth is depth 1: each publish is acknowledged before
// the next is handed over.
func TestPipelineNegativeDepthIsOne(t *testing.T) {
	h := newHolder()
	b := startPipelined(t, -1, h)
	c := mqtttest.MustConnect(t, b.Addr(), "S1", "one", 4)
	h.expect(t, "up", "S1", "", "")
	for id := uint16(1); id <= 3; id++ {
		c.MustPublish(t, telemetryTopic, id, fmt.Sprintf(`{"seq":%d}`, id), false)
	}
	for id := uint16(1); id <= 3; id++ {
		s := h.next(t)
		if want := fmt.Sprintf(`{"seq":%d}`, id); s.payload != want {
			t.Fatalf("handed over %q, want %q", s.payload, want)
		}
		quiet(t, h.subs, "a publish handed over before the previous one was done")
		s.done(nil)
		c.ExpectPuback(t, id, 0)
	}
}

// A client that goes away while its reader waits for room in a full queue:
// the reader goes on once the oldest is done, the disconnect is reported,
// dones after it write nothing, and a new connection pipelines again.
func TestPipelineClientGoneWhileFull(t *testing.T) {
	h := newHolder()
	b := startPipelined(t, 1, h)
	c := mqtttest.MustConnect(t, b.Addr(), "S1", "one", 4)
	h.expect(t, "up", "S1", "", "")
	c.MustPublish(t, telemetryTopic, 1, `{"seq":1}`, false)
	c.MustPublish(t, telemetryTopic, 2, `{"seq":2}`, false)
	s1 := h.next(t)
	quiet(t, h.subs, "second publish submitted with depth 1")
	c.Close()
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

	c = mqtttest.MustConnect(t, b.Addr(), "S1", "one", 4)
	h.expect(t, "up", "S1", "", "")
	c.MustPublish(t, telemetryTopic, 2, `{"seq":2}`, false)
	h.next(t).done(nil)
	c.ExpectPuback(t, 2, 0)
	if got := value(t, b.m.handlerErrors); got != 0 {
		t.Errorf("handler_errors_total = %v", got)
	}
}
