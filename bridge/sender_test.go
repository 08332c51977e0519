package bridge

import (
	"context"
	"fmt"
	"testing"

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
