package bridge

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"path/filepath"
	"slices"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/swapbridge/swapbridge/broker"
	"github.com/swapbridge/swapbridge/store"
	"github.com/swapbridge/swapbridge/wire"
)

// brokerEnv is a real store, bridge and mochi broker on 127.0.0.1:0.
type brokerEnv struct {
	st  *store.Store
	brk *broker.Broker
	b   *Bridge
}

func newBrokerEnv(t *testing.T, slots int) *brokerEnv {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "swapd.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	info := store.Station{ID: "S1", Name: "One", Slots: slots, SecretHash: sha256.Sum256([]byte(testSecret))}
	if err := st.CreateStation(context.Background(), info); err != nil {
		t.Fatal(err)
	}
	brk, err := broker.New(broker.Config{Addr: "127.0.0.1:0", NotFound: store.ErrNotFound}, st)
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(Config{TickInterval: time.Hour}, st, brk)
	if err != nil {
		t.Fatal(err)
	}
	brk.SetHandler(b)
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := brk.Start(); err != nil {
		t.Fatal(err)
	}
	e := &brokerEnv{st: st, brk: brk, b: b}
	t.Cleanup(func() {
		brk.Close()
		b.Close()
		st.Close()
	})
	return e
}

// pahoStation is a paho client acting as station S1, subscribed to its cmd
// topic.
type pahoStation struct {
	c    paho.Client
	cmds chan wire.Command
	lost chan error
}

func connectStation(t *testing.T, addr, boot string) *pahoStation {
	t.Helper()
	s := &pahoStation{cmds: make(chan wire.Command, 64), lost: make(chan error, 1)}
	will, _ := json.Marshal(wire.Status{Online: false, BootID: boot})
	opts := paho.NewClientOptions().AddBroker("tcp://"+addr).
		SetClientID("S1").SetUsername("S1").SetPassword(testSecret).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
		SetBinaryWill(wire.Topic("S1", wire.KindStatus), will, 1, true).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			select {
			case s.lost <- err:
			default:
			}
		})
	s.c = paho.NewClient(opts)
	if tok := s.c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	t.Cleanup(func() { s.c.Disconnect(0) })
	tok := s.c.Subscribe(wire.Topic("S1", wire.KindCmd), 1, func(_ paho.Client, m paho.Message) {
		var c wire.Command
		if json.Unmarshal(m.Payload(), &c) == nil {
			select {
			case s.cmds <- c:
			default:
			}
		}
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	return s
}

// publish publishes at QoS 1 and returns the token once it completed.
func (s *pahoStation) publish(t *testing.T, kind wire.TopicKind, v any, retained bool) paho.Token {
	t.Helper()
	p, _ := json.Marshal(v)
	tok := s.c.Publish(wire.Topic("S1", kind), 1, retained, p)
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatalf("publish %s: no outcome within 10s", kind)
	}
	return tok
}

func (s *pahoStation) mustPublish(t *testing.T, kind wire.TopicKind, v any, retained bool) {
	t.Helper()
	if tok := s.publish(t, kind, v, retained); tok.Error() != nil {
		t.Fatalf("publish %s: %v", kind, tok.Error())
	}
}

func (s *pahoStation) next(t *testing.T, action string) wire.Command {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case c := <-s.cmds:
			if c.Action == action {
				return c
			}
		case <-deadline:
			t.Fatalf("station got no %s within 5s", action)
		}
	}
}

func TestPahoStationEndToEnd(t *testing.T) {
	e := newBrokerEnv(t, 4)
	s := connectStation(t, e.brk.Addr(), "A")
	s.mustPublish(t, wire.KindStatus, wire.Status{Online: true, BootID: "A", Slots: 4}, true)
	s.mustPublish(t, wire.KindTelemetry, fullOf("A", 1, 4, 2), false)

	// The PUBACK came after the commit: the events are in the log now.
	evs, err := e.st.EventsAfter(store.Channel{Kind: store.Everything}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := evTypes(evs); !slices.Equal(got, []string{wire.TypeStationStatus, wire.TypeInventoryUpdate}) {
		t.Fatalf("events %v", got)
	}
	for i := range evs {
		if evs[i].Seq != uint64(i+1) {
			t.Fatalf("event %d seq %d", i, evs[i].Seq)
		}
	}

	// A booking goes out as reserve over MQTT; the ack comes back over MQTT.
	bk, err := e.b.Book(context.Background(), "u1", "S1")
	if err != nil {
		t.Fatal(err)
	}
	reserve := s.next(t, wire.ActionReserve)
	if reserve.BookingID != bk.ID || reserve.Slot != bk.Slot {
		t.Fatalf("reserve %+v for booking %+v", reserve, bk)
	}
	s.mustPublish(t, wire.KindAck, wire.Ack{ID: reserve.ID, OK: true}, false)
	if got, _ := e.b.Booking("u1", bk.ID); got.Status != wire.BookingStatusReady {
		t.Fatalf("booking after ack: %+v", got)
	}
	if _, err := e.b.Collect(context.Background(), "u1", bk.ID); err != nil {
		t.Fatal(err)
	}
	unlock := s.next(t, wire.ActionUnlock)
	s.mustPublish(t, wire.KindAck, wire.Ack{ID: unlock.ID, OK: true}, false)
	s.mustPublish(t, wire.KindTelemetry, telem("A", 2, false, slotOf(bk.Slot, "", 0)), false)
	if got, _ := e.b.Booking("u1", bk.ID); got.Status != wire.BookingStatusCollected {
		t.Fatalf("booking after removal: %+v", got)
	}
	// A gap: the station is asked for a snapshot.
	s.mustPublish(t, wire.KindTelemetry, telem("A", 9, false, slotOf(1, "B1", 99)), false)
	s.next(t, wire.ActionSnapshot)

	last := e.st.LastSeq()
	evs, _ = e.st.EventsAfter(store.Channel{Kind: store.Everything}, 0, 0)
	if uint64(len(evs)) != last || evs[len(evs)-1].Seq != last {
		t.Fatalf("log has %d events, last seq %d", len(evs), last)
	}
}

func TestPahoPublishNotAckedWhenCommitFails(t *testing.T) {
	e := newBrokerEnv(t, 4)
	s := connectStation(t, e.brk.Addr(), "A")
	s.mustPublish(t, wire.KindTelemetry, fullOf("A", 1, 4, 2), false)
	before := e.st.LastSeq()

	e.st.Close() // every commit fails from now on
	tok := s.publish(t, wire.KindTelemetry, telem("A", 2, false, slotOf(4, "B9", 99)), false)
	if tok.Error() == nil {
		t.Fatal("the publish was acknowledged although its commit failed")
	}
	select {
	case <-s.lost:
	case <-time.After(5 * time.Second):
		t.Fatal("the station was not disconnected")
	}
	if v, _ := e.b.StationView("S1"); v.Slots[3].BatteryID != nil {
		t.Fatal("state changed without a commit")
	}
	if e.st.LastSeq() != before {
		t.Fatal("events appended")
	}
}
