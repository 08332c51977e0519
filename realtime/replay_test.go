package realtime

import (
	"net/http"
	"testing"

	"github.com/swapbridge/swapbridge/store"
)

// TestReplayBound: a station channel's resume more than MaxReplay seqs
// behind the newest event is answered as one outside retention
// (recovered:false, then the snapshot, then live events); within the bound
// it is replayed; the user channel is not bounded.
func TestReplayBound(t *testing.T) {
	e := newEnv(t, Config{MaxReplay: 5, ReplayPage: 2}, store.Options{})
	for i := range 6 {
		e.append(stationEvent("s1", i), stationEvent("s2", i))
	}
	e.append(userEvent("u1", "hi"))
	last := e.st.LastSeq()
	if last != 13 {
		t.Fatalf("last seq %d, want 13", last)
	}

	// behind is how far since lies behind the newest seq (0: since=0).
	bounded := []struct {
		path, channel string
		behind        uint64
	}{
		{"/ws/stations/", "stations", 0},
		{"/ws/stations/", "stations", 6},
		{"/ws/stations/s1/", "station:s1", 0},
		{"/ws/stations/s1/", "station:s1", 6},
	}
	for _, tc := range bounded {
		since := uint64(0)
		if tc.behind > 0 {
			since = last - tc.behind
		}
		t.Run(tc.channel+"/since="+itoa(since), func(t *testing.T) {
			c := e.mustDial(tc.path+"?since="+itoa(since), nil)
			h := readMsg(t, c)
			if h.Type != "hello" || h.Recovered || h.Seq != last || h.Channel != tc.channel {
				t.Fatalf("hello = %+v, want recovered false seq %d on %s", h, last, tc.channel)
			}
			want := map[string]bool{"s1": true}
			if tc.channel == "stations" {
				want["s2"] = true
			}
			for n := len(want); n > 0; n-- {
				m := readMsg(t, c)
				if !m.Snapshot || !want[m.StationID] || m.Seq != last {
					t.Fatalf("want a snapshot with the hello's seq, got %+v", m)
				}
				delete(want, m.StationID)
			}
			// Then live events, nothing of the log.
			ev := e.append(stationEvent("s1", 9))
			if m := readMsg(t, c); m.Seq != ev[0].Seq || m.Snapshot {
				t.Fatalf("after the snapshot got %+v, want the live event %d", m, ev[0].Seq)
			}
			last = ev[0].Seq
		})
	}
	if v := e.metricValue("swapd_ws_replays_bounded_total", "", ""); v != float64(len(bounded)) {
		t.Errorf("swapd_ws_replays_bounded_total = %v, want %d", v, len(bounded))
	}

	// Exactly MaxReplay behind: replayed, in pages.
	c := e.mustDial("/ws/stations/?since="+itoa(last-5), nil)
	if h := readMsg(t, c); !h.Recovered || h.Seq != last {
		t.Fatalf("hello = %+v, want recovered true seq %d", h, last)
	}
	// The user event (13) is not on the stations channel.
	if seqs := readUntil(t, c, last); len(seqs) != 4 || seqs[0] != 14 {
		t.Errorf("replayed %v, want the 4 station events 14…%d", seqs, last)
	}

	// The user channel replays from anywhere in retention.
	u := e.mustDial("/ws/notifications/?since=0", bearer("tok-u1"))
	if h := readMsg(t, u); !h.Recovered {
		t.Fatalf("user hello = %+v, want recovered true", h)
	}
	if m := readMsg(t, u); m.Seq != 13 || m.Title != "hi" {
		t.Fatalf("user replay %+v, want the notification at 13", m)
	}
}

func TestReplayBoundDefaultAndOff(t *testing.T) {
	e := newEnv(t, Config{}, store.Options{})
	if e.hub.cfg.MaxReplay != DefaultMaxReplay || DefaultMaxReplay != 10000 {
		t.Errorf("MaxReplay default %d, want 10000", e.hub.cfg.MaxReplay)
	}
	off := newEnv(t, Config{MaxReplay: -1}, store.Options{})
	for i := range 3 {
		off.append(stationEvent("s1", i))
	}
	c := off.mustDial("/ws/stations/?since=0", nil)
	if h := readMsg(t, c); !h.Recovered {
		t.Fatalf("hello = %+v, want recovered with MaxReplay < 0", h)
	}
	if seqs := readUntil(t, c, off.st.LastSeq()); len(seqs) != 3 {
		t.Errorf("replayed %v, want all 3", seqs)
	}
}

// TestAuthFailedHook: a wrong token is reported to Config.AuthFailed before
// the 401; a missing or right one is not.
func TestAuthFailedHook(t *testing.T) {
	var failed []string
	e := newEnv(t, Config{AuthFailed: func(r *http.Request) { failed = append(failed, r.URL.RawQuery) }}, store.Options{})
	if _, resp, err := e.dial("/ws/notifications/?token=nope", nil); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong token: %v, want 401", err)
	}
	if _, resp, err := e.dial("/ws/notifications/", nil); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no token: %v, want 401", err)
	}
	e.mustDial("/ws/notifications/", bearer("tok-u1"))
	if len(failed) != 1 || failed[0] != "token=nope" {
		t.Errorf("AuthFailed calls %q, want one for the wrong token", failed)
	}
}
