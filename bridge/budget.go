package bridge

import (
	"time"

	"github.com/swapbridge/swapbridge/wire"
)

// The per-station event budget.
//
// A station reporting battery-id churn (a new id in every slot of every
// message) makes two events per slot per message: a 256-slot station at
// the publish limit would write ~25,000 events/s into the one log every
// user's notifications live in. So each station has a token bucket
// (Config.StationEventRate, Config.StationEventBurst) that its per-battery
// events (battery_added, and battery_removed of a battery no booking held)
// and its inventory_update events draw from. Beyond it the per-battery
// events are dropped and only counted: they are coalesced into the
// station's inventory_update, whose counts carry their effect, and which
// is then published at most once a second (a held-back one is published
// by the timer loop, so the last counts always go out). Booking lifecycle
// events (battery_booked, battery_collected, battery_removed of a reserved
// battery, the users' events) and station_status are never held back.
// An episode starts when the bucket first runs dry and ends when it is
// full again; its start is logged once (warning) and its end with the
// number of events coalesced (info).
//
// The budget lives in memory: a restart gives every station a full bucket.

// eventBudget is one station's token bucket and episode (station.mu).
type eventBudget struct {
	tokens  float64
	last    time.Time // last refill
	lastInv time.Time // last inventory_update let through
	// invHeld: an inventory_update was held back; the station's stored
	// Inv is the last one published, so the next finish (or the timer
	// loop) publishes the current counts.
	invHeld bool
	dry     bool   // in an episode
	merged  uint64 // events coalesced in this episode
	init    bool
}

// churnEvent reports whether ev is per-battery churn that the budget may
// coalesce.
func churnEvent(ev *outEvent) bool {
	switch ev.Type {
	case wire.TypeBatteryAdded:
		return true
	case wire.TypeBatteryRemoved:
		return ev.Churn
	}
	return false
}

// shape applies s's event budget to a transition of s (whose mu the caller
// holds) from s.st to next: per-battery events beyond it are dropped, and
// an inventory_update over it is held back unless a second has passed
// since the last one (next.Inv then stays the last published counts).
func (b *Bridge) shape(s *station, next *stationState, eff *effects, now time.Time) {
	rate, burst := b.cfg.StationEventRate, float64(b.cfg.StationEventBurst)
	if rate < 0 {
		return
	}
	bu := &s.budget
	if !bu.init {
		bu.init, bu.tokens, bu.last = true, burst, now
	}
	if d := now.Sub(bu.last); d > 0 {
		bu.tokens = min(burst, bu.tokens+d.Seconds()*rate)
		bu.last = now
	}
	if bu.dry && bu.tokens >= burst {
		bu.dry = false
		b.lg.Info("bridge: station back within its event budget", "station", s.info.ID, "coalesced", bu.merged)
		bu.merged = 0
	}
	take := func() bool {
		if bu.tokens >= 1 {
			bu.tokens--
			return true
		}
		if !bu.dry {
			bu.dry = true
			b.metrics.episodes.Inc()
			b.lg.Warn("bridge: station over its event budget; per-battery events are coalesced into inventory_update",
				"station", s.info.ID, "rate", rate, "burst", b.cfg.StationEventBurst)
		}
		return false
	}
	kept := eff.Events[:0]
	var merged uint64
	for _, ev := range eff.Events {
		switch {
		case churnEvent(&ev):
			if !take() {
				merged++
				continue
			}
		case ev.Type == wire.TypeInventoryUpdate && ev.UserID == "":
			if !take() && now.Sub(bu.lastInv) < time.Second {
				next.Inv = s.st.Inv
				bu.invHeld = true
				continue
			}
			bu.lastInv = now
			bu.invHeld = false
		}
		kept = append(kept, ev)
	}
	clear(eff.Events[len(kept):])
	eff.Events = kept
	if merged > 0 {
		bu.merged += merged
		b.metrics.coalesced.Add(float64(merged))
	}
}
