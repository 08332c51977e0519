package realtime

import (
	"context"
	"testing"

	"github.com/swapbridge/swapbridge/store"
)

// When the per-station retention cap removed a flooding station's oldest
// events from the middle of the log, a client of that station (or of all
// stations) resuming from before the cut gets recovered:false and a
// snapshot; from after the cut it recovers; other stations' and users'
// channels resume from before the flood as if nothing happened.
func TestResumeAcrossStationCap(t *testing.T) {
	e := newEnv(t, Config{}, store.Options{Retention: store.Retention{MaxAge: -1, MaxEvents: -1, MaxStationEvents: 5}})
	early := e.append(userEvent("u1", "early"), stationEvent("s2", 1))
	for i := range 20 {
		e.append(stationEvent("s1", i))
	}
	if n, err := e.st.Compact(context.Background()); err != nil || n != 15 {
		t.Fatalf("Compact = %d, %v; want 15 of s1's events removed", n, err)
	}
	last := e.st.LastSeq()
	from := e.st.FirstSeqOf(store.Channel{Kind: store.OneStation, ID: "s1"})
	for _, path := range []string{"/ws/stations/s1/?since=" + itoa(from-2), "/ws/stations/?since=0"} {
		c := e.mustDial(path, nil)
		if h := readMsg(t, c); h.Recovered || h.Seq != last {
			t.Fatalf("%s: hello %+v, want recovered false", path, h)
		}
		if m := readMsg(t, c); !m.Snapshot {
			t.Fatalf("%s: %+v, want a snapshot", path, m)
		}
	}
	c := e.mustDial("/ws/stations/s1/?since="+itoa(from-1), nil)
	if h := readMsg(t, c); !h.Recovered {
		t.Fatalf("s1 from its cut: hello %+v, want recovered", h)
	}
	if got := readUntil(t, c, last); len(got) != 5 || got[0] != from {
		t.Fatalf("s1 replay %v, want the 5 newest from %d", got, from)
	}
	c = e.mustDial("/ws/stations/s2/?since=0", nil)
	if h := readMsg(t, c); !h.Recovered {
		t.Fatalf("s2: hello %+v, want recovered", h)
	}
	if m := readMsg(t, c); m.Seq != early[1].Seq {
		t.Fatalf("s2 replay %+v, want seq %d", m, early[1].Seq)
	}
	c = e.mustDial("/ws/notifications/?since=0", bearer("tok-u1"))
	if h := readMsg(t, c); !h.Recovered {
		t.Fatalf("u1: hello %+v, want recovered", h)
	}
	if m := readMsg(t, c); m.Seq != early[0].Seq || m.Title != "early" {
		t.Fatalf("u1 replay %+v, want the early notification", m)
	}
}
