package reliability

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	bolt "go.etcd.io/bbolt"

	"github.com/swapbridge/swapbridge/store"
	"github.com/swapbridge/swapbridge/wire"
)

// rawStation is a station played by the test over paho: one connection,
// no automatic reconnect, every publish QoS 1.
type rawStation struct {
	sid, secret string
	c           paho.Client
	lost        chan error
}

func dialStation(addr, sid, secret string, onCmd func(wire.Command)) (*rawStation, error) {
	s := &rawStation{sid: sid, secret: secret, lost: make(chan error, 1)}
	o := paho.NewClientOptions().
		AddBroker("tcp://" + addr).
		SetClientID(sid).SetUsername(sid).SetPassword(secret).
		SetProtocolVersion(4).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(5 * time.Second).
		SetWriteTimeout(5 * time.Second).
		SetKeepAlive(30 * time.Second).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			select {
			case s.lost <- err:
			default:
			}
		})
	s.c = paho.NewClient(o)
	tok := s.c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, errors.New("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	if onCmd != nil {
		st := s.c.Subscribe(wire.Topic(sid, wire.KindCmd), 1, func(_ paho.Client, m paho.Message) {
			var c wire.Command
			if json.Unmarshal(m.Payload(), &c) == nil {
				onCmd(c)
			}
		})
		if !st.WaitTimeout(10*time.Second) || st.Error() != nil {
			s.c.Disconnect(0)
			return nil, fmt.Errorf("subscribe: %v", st.Error())
		}
	}
	return s, nil
}

// publish sends one QoS 1 message and waits for its PUBACK.
func (s *rawStation) publish(kind wire.TopicKind, payload []byte, retained bool) error {
	tok := s.c.Publish(wire.Topic(s.sid, kind), 1, retained, payload)
	if !tok.WaitTimeout(10 * time.Second) {
		return errors.New("no PUBACK within 10s")
	}
	if err := tok.Error(); err != nil {
		return err
	}
	if !s.c.IsConnectionOpen() {
		// paho completes tokens of a lost connection without error in some
		// paths; only a live connection proves the PUBACK came.
		return errors.New("connection lost")
	}
	return nil
}

func (s *rawStation) close() { s.c.Disconnect(50) }

// telemetryFor builds the test's telemetry: seq 1 is a full report of
// slots batteries; every later seq puts a new battery, unique to that seq,
// into one slot, so each message has exactly one battery_added as its
// effect.
func telemetryFor(sid, boot string, seq uint64, slots int) []byte {
	mk := func(slot int, battery string, soc float64) wire.Slot {
		b := battery
		return wire.Slot{Slot: slot, BatteryID: &b, SoC: soc, SoH: 95, TempC: 25, VoltageV: 52, Door: wire.DoorClosed, Locked: true}
	}
	t := wire.Telemetry{BootID: boot, Seq: seq, TS: time.Now().UTC(), Full: seq == 1}
	if seq == 1 {
		for i := 1; i <= slots; i++ {
			t.Slots = append(t.Slots, mk(i, fmt.Sprintf("B-%s-init-%d", sid, i), 95))
		}
	} else {
		slot := int((seq-2)%uint64(slots)) + 1
		t.Slots = []wire.Slot{mk(slot, batteryFor(sid, seq), 40)}
	}
	b, _ := json.Marshal(t)
	return b
}

func batteryFor(sid string, seq uint64) string { return fmt.Sprintf("B-%s-%d", sid, seq) }

// frame is the part of an event frame the checks read.
type frame struct {
	Type      string  `json:"type"`
	Seq       uint64  `json:"seq"`
	StationID string  `json:"station_id"`
	BatteryID string  `json:"battery_id"`
	BookingID string  `json:"booking_id"`
	Slot      int     `json:"slot"`
	SoC       float64 `json:"soc"`
}

// checkDB runs bbolt's consistency check on the data file of a stopped
// swapd, then reads its whole event log through the store.
func checkDB(t *testing.T, path string) []frame {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("bbolt open %s: %v", path, err)
	}
	var problems []string
	err = db.View(func(tx *bolt.Tx) error {
		for e := range tx.Check() {
			problems = append(problems, e.Error())
		}
		return nil
	})
	db.Close()
	if err != nil || len(problems) > 0 {
		t.Fatalf("bbolt check of %s: %v %v", path, err, problems)
	}
	st, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatalf("store open: %v", err)
	}
	defer st.Close()
	evs, err := st.EventsAfter(store.Channel{Kind: store.Everything}, 0, 10_000_000)
	if err != nil {
		t.Fatalf("read event log: %v", err)
	}
	out := make([]frame, 0, len(evs))
	var last uint64
	for _, ev := range evs {
		var f frame
		if err := json.Unmarshal(ev.Data, &f); err != nil {
			t.Fatalf("event %d: undecodable frame %q: %v", ev.Seq, ev.Data, err)
		}
		if f.Seq != ev.Seq || ev.Seq <= last {
			t.Fatalf("event log order broken: seq %d (frame says %d) after %d", ev.Seq, f.Seq, last)
		}
		last = ev.Seq
		out = append(out, f)
	}
	return out
}
