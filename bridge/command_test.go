package bridge

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/swapbridge/swapbridge/wire"
)

// The command state machine: every (from, to) pair, allowed or refused.
func TestCommandTransitions(t *testing.T) {
	all := []cmdState{cmdQueued, cmdSent, cmdAcked, cmdFailed}
	allowed := map[[2]cmdState]bool{
		{cmdQueued, cmdSent}:   true,
		{cmdQueued, cmdAcked}:  true,
		{cmdQueued, cmdFailed}: true,
		{cmdSent, cmdAcked}:    true,
		{cmdSent, cmdFailed}:   true,
	}
	for _, from := range all {
		for _, to := range all {
			t.Run(from.String()+"→"+to.String(), func(t *testing.T) {
				c := &command{Cmd: wire.Command{ID: "c1"}, State: from}
				got, err := c.to(to, "why")
				if want := allowed[[2]cmdState{from, to}]; !want {
					if !errors.Is(err, errCommandState) || got != nil {
						t.Fatalf("refused transition gave %+v, %v", got, err)
					}
					return
				}
				if err != nil || got.State != to {
					t.Fatalf("allowed transition: %+v, %v", got, err)
				}
				if c.State != from {
					t.Fatal("to changed the command it was called on")
				}
				if (to == cmdFailed) != (got.Error == "why") {
					t.Fatalf("error text %q after → %s", got.Error, to)
				}
				if got.pending() != (to == cmdSent) {
					t.Fatalf("pending() = %v in %s", got.pending(), to)
				}
			})
		}
	}
}

// Records keep their text states, and old records still load.
func TestCommandRecord(t *testing.T) {
	now := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	c := newCommand(wire.Command{ID: "c1", Action: wire.ActionReserve, Slot: 2, BookingID: "bk1"}, "S1", now, 2*time.Second, time.Minute)
	if c.State != cmdQueued || c.Attempts != 1 || !c.Deadline.Equal(now.Add(time.Minute)) || !c.NextAt.Equal(now.Add(2*time.Second)) {
		t.Fatalf("new command %+v", c)
	}
	raw, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]any
	_ = json.Unmarshal(raw, &fields)
	if fields["state"] != "queued" {
		t.Fatalf("stored state %v, want \"queued\"", fields["state"])
	}
	old := `{"cmd":{"id":"c0","action":"unlock","slot":1},"sid":"S1","state":"sent","n":3,"created":"2026-12-01T00:00:00Z","deadline":"2026-12-01T00:02:00Z"}`
	got, err := decodeCommand([]byte(old))
	if err != nil || got.State != cmdSent || got.Attempts != 3 || !got.pending() {
		t.Fatalf("old record: %+v, %v", got, err)
	}
	if _, err := decodeCommand([]byte(`{"state":"lost"}`)); err == nil {
		t.Fatal("an unknown state decoded")
	}
	c.resent(now, func(n int) time.Duration { return time.Duration(n) * time.Second })
	if c.Attempts != 2 || !c.NextAt.Equal(now.Add(2*time.Second)) {
		t.Fatalf("after a resend: %+v", c)
	}
}
