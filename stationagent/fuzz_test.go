package stationagent

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/swapbridge/swapbridge/wire"
)

// inMsg is an inbound cmd message as paho hands it over.
type inMsg struct {
	payload []byte
	acked   atomic.Bool
}

func (m *inMsg) Duplicate() bool   { return false }
func (m *inMsg) Qos() byte         { return 1 }
func (m *inMsg) Retained() bool    { return false }
func (m *inMsg) Topic() string     { return wire.Topic("st-1", wire.KindCmd) }
func (m *inMsg) MessageID() uint16 { return 1 }
func (m *inMsg) Payload() []byte   { return m.payload }
func (m *inMsg) Ack()              { m.acked.Store(true) }

// offlineAgent is an agent with its state and sim driver open but no MQTT
// session, for driving the command path directly.
func offlineAgent(t testing.TB) *Agent {
	t.Helper()
	cfg := testConfig(nil, "tcp://127.0.0.1:1", t.TempDir())
	a, err := New(cfg, WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	st, err := openState(cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.close() })
	a.st = st
	if a.drv, err = a.openDriver(); err != nil {
		t.Fatal(err)
	}
	a.bootID = "st-1-1-test"
	a.wake = make(chan struct{}, 1)
	a.res = map[int]Reservation{}
	a.poll(context.Background(), true)
	return a
}

// FuzzCommand feeds arbitrary cmd payloads through decoding, the history and
// execution: never a panic, always acknowledged to the broker, and every
// queued record is a valid ack or telemetry message.
func FuzzCommand(f *testing.F) {
	exp := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, c := range []wire.Command{
		{ID: "1", Action: wire.ActionReserve, Slot: 1, BookingID: "b", ExpiresAt: exp},
		{ID: "2", Action: wire.ActionUnlock, Slot: 1, BookingID: "b"},
		{ID: "3", Action: wire.ActionRelease, BookingID: "b"},
		{ID: "4", Action: wire.ActionSnapshot},
		{ID: "5", Action: wire.ActionSetAvailability, Slot: 99},
	} {
		b, _ := json.Marshal(c)
		f.Add(b)
	}
	f.Add([]byte(`{"id":"x","action":"unlock","slot":-5}`))
	f.Add([]byte(`{"id":"y","slot":"three"}`))
	f.Add([]byte(`[1,2]`))
	f.Add([]byte{0xff, 0xfe})
	a := offlineAgent(f)
	f.Fuzz(func(t *testing.T, payload []byte) {
		m := &inMsg{payload: payload}
		a.handleMessage(context.Background(), m)
		if !m.acked.Load() {
			t.Fatal("message not acknowledged to the broker")
		}
		recs, err := a.st.outboxAfter(0, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		keys := make([]uint64, 0, len(recs))
		for _, r := range recs {
			keys = append(keys, r.key)
			switch r.kind {
			case recAck:
				var ack wire.Ack
				if err := json.Unmarshal(r.payload, &ack); err != nil || ack.ID == "" || ack.OK == (ack.Error != "") {
					t.Fatalf("bad ack %q", r.payload)
				}
			case recTelemetry:
				var tel wire.Telemetry
				if err := json.Unmarshal(r.payload, &tel); err != nil {
					t.Fatal(err)
				}
				if err := tel.Validate(4); err != nil {
					t.Fatalf("bad telemetry: %v", err)
				}
			default:
				t.Fatalf("record kind %q", r.kind)
			}
		}
		if err := a.st.deleteOutbox(keys...); err != nil {
			t.Fatal(err)
		}
	})
}

func TestCommandHistoryBounded(t *testing.T) {
	a := offlineAgent(t)
	a.cfg.CommandHistory = 5
	for i := range 20 {
		b, _ := json.Marshal(wire.Command{ID: string(rune('a'+i)) + "-id", Action: wire.ActionSnapshot})
		a.handleMessage(context.Background(), &inMsg{payload: b})
	}
	n := 0
	if err := a.st.db.View(func(tx *boltTx) error {
		n = tx.Bucket(bktCmds).Stats().KeyN
		if m := tx.Bucket(bktCmdTime).Stats().KeyN; m != n {
			t.Errorf("index holds %d ids, table %d", m, n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n != 5 {
		t.Errorf("history holds %d ids, want 5", n)
	}
	// The newest ids are kept: a repeat is answered from history.
	if _, found, _ := a.st.cmdResult("t-id"); !found {
		t.Error("newest id pruned")
	}
	if _, found, _ := a.st.cmdResult("a-id"); found {
		t.Error("oldest id kept")
	}
}

func TestInterruptedCommandNotRetried(t *testing.T) {
	a := offlineAgent(t)
	// A crash after beginCmd and before finishCmd leaves a pending record.
	if err := a.st.beginCmd("u9", time.Now()); err != nil {
		t.Fatal(err)
	}
	drv := &countingDriver{Driver: a.drv}
	a.drv = drv
	b, _ := json.Marshal(wire.Command{ID: "u9", Action: wire.ActionUnlock, Slot: 1, BookingID: "b"})
	a.handleMessage(context.Background(), &inMsg{payload: b})
	rec, found, err := a.st.cmdResult("u9")
	if err != nil || !found || !rec.Done || rec.Ack.OK || rec.Ack.Error != errInterrupted {
		t.Fatalf("record = %+v found %v err %v", rec, found, err)
	}
	if drv.Unlocks() != 0 {
		t.Error("interrupted command executed again")
	}
}
