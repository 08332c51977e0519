package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/swapbridge/swapbridge/internal/commitlog"
	"github.com/swapbridge/swapbridge/internal/memlog"

	"github.com/swapbridge/swapbridge/store"
	"github.com/swapbridge/swapbridge/wire"
)

// storedCmdStates returns the stored state of every command by booking id.
func storedCmdStates(t *testing.T, st *store.Store) map[string]cmdState {
	t.Helper()
	out := map[string]cmdState{}
	err := st.View(func(tx *store.Tx) error {
		return tx.Scan(store.KindCommand, "", func(k string, v []byte) bool {
			c, err := decodeCommand(v)
			if err != nil {
				t.Fatal(err)
			}
			out[c.Cmd.BookingID] = c.State
			return true
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSenderMarksEveryCommandOfABurstSent books many batteries at once: the
// sender delivers the reserve commands in batches and marks every one of
// them sent.
func TestSenderMarksEveryCommandOfABurstSent(t *testing.T) {
	const n = 8
	e := newEnv(t, 10)
	ctx := context.Background()
	e.mustPublish(wire.KindTelemetry, fullOf("A", 1, 10, 10))
	ids := make([]string, n)
	for i := range ids {
		bk, err := e.b.Book(ctx, fmt.Sprintf("u%d", i), "S1")
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = bk.ID
	}
	for range ids {
		e.sink.next(t, wire.ActionReserve)
	}
	e.b.Close() // waits for the sender and its last commit
	got := storedCmdStates(t, e.st)
	for _, id := range ids {
		if got[id] != cmdSent {
			t.Fatalf("booking %s: command state %q, want %q (all: %v)", id, got[id], cmdSent, got)
		}
	}
}

// TestMarkSentKeepsAnAcknowledgement: a command acknowledged before the
// sender records its delivery stays acknowledged.
func TestMarkSentKeepsAnAcknowledgement(t *testing.T) {
	e := newEnv(t, 2)
	ctx := context.Background()
	e.mustPublish(wire.KindTelemetry, fullOf("A", 1, 2, 2))
	bk, err := e.b.Book(ctx, "u1", "S1")
	if err != nil {
		t.Fatal(err)
	}
	r := e.sink.next(t, wire.ActionReserve)
	e.mustPublish(wire.KindAck, wire.Ack{ID: r.ID, OK: true})
	// A late mark for the same command (as if its delivery was recorded
	// after the ack) must not turn it back into a pending one.
	e.b.markSent([]sendReq{{sid: "S1", cmdID: r.ID}})
	if got := storedCmdStates(t, e.st)[bk.ID]; got != cmdAcked {
		t.Fatalf("state %q after a late mark, want %q", got, cmdAcked)
	}
	// Unknown and purged commands are skipped without an error.
	e.b.markSent([]sendReq{{sid: "S1", cmdID: "no-such-command"}, {sid: "nowhere", cmdID: "x"}})
	if got := storedCmdStates(t, e.st)[bk.ID]; got != cmdAcked {
		t.Fatalf("state %q, want %q", got, cmdAcked)
	}
}

// blockedSender holds every delivery until released.
type blockedSender struct {
	release chan struct{}
	got     chan string
}

func (s *blockedSender) SendToStation(sid string, payload []byte) error {
	s.got <- sid
	<-s.release
	return nil
}

// A full send queue drops the send, counts it, and leaves the command to
// the retry timer.
func TestSendQueueDropsAreCounted(t *testing.T) {
	l := memlog.New()
	defer l.Close()
	l.AddStation(commitlog.StationInfo{ID: "S1", Slots: 8})
	reg := prometheus.NewRegistry()
	snd := &blockedSender{release: make(chan struct{}), got: make(chan string, 16)}
	b, err := New(Config{SendQueue: 1, TickInterval: time.Hour, Registerer: reg}, l, snd)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	defer close(snd.release)
	p, _ := json.Marshal(fullOf("A", 1, 8, 8))
	if err := publishWait(b, "S1", wire.KindTelemetry, p); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := b.Book(ctx, "u1", "S1"); err != nil {
		t.Fatal(err)
	}
	<-snd.got // the sender holds the first reserve
	for _, u := range []string{"u2", "u3", "u4"} {
		if _, err := b.Book(ctx, u, "S1"); err != nil {
			t.Fatal(err)
		}
	}
	// One reserve fits the queue; the other two are dropped.
	if got := counterValue(t, reg, "swapd_bridge_send_queue_dropped_total"); got != 2 {
		t.Fatalf("dropped %v sends, want 2", got)
	}
}
