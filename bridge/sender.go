package bridge

import (
	"time"

	"encoding/json"

	"github.com/swapbridge/swapbridge/wire"
)

// The sender goroutine delivers commands to stations through the
// CommandSender, off every caller's path: commits hand it their new
// commands once durable, the timer loop its retries.

type sendReq struct {
	sid, cmdID string // cmdID empty: not persisted (snapshot)
	payload    []byte
}

// trySend hands req to the sender without blocking; a full queue drops it
// (counted): a persisted command is left to the retry timer.
func (b *Bridge) trySend(req sendReq) {
	select {
	case b.sendq <- req:
	default:
		b.metrics.sendDropped.Inc()
		b.lg.Debug("bridge: send queue full; command left to retry", "station", req.sid, "id", req.cmdID)
	}
}

// requestSnapshot asks s (locked) for a full telemetry, at most once per
// CommandRetry.
func (b *Bridge) requestSnapshot(s *station, now time.Time) {
	if !s.lastSnap.IsZero() && now.Sub(s.lastSnap) < b.cfg.CommandRetry {
		return
	}
	s.lastSnap = now
	cmd := wire.Command{ID: newID("s", now), Action: wire.ActionSnapshot}
	payload, _ := json.Marshal(&cmd)
	b.trySend(sendReq{sid: s.info.ID, payload: payload})
}

// sendBatch bounds how many queued commands the sender delivers before it
// records them as sent.
const sendBatch = 128

// sender delivers queued commands. It takes what is queued (up to
// sendBatch), delivers each, then records the delivered persisted commands
// as sent: one commit per station, queued together (group commit makes a
// burst cost about one fsync).
func (b *Bridge) sender() {
	defer b.wg.Done()
	batch := make([]sendReq, 0, sendBatch)
	for {
		select {
		case <-b.done:
			return
		case req := <-b.sendq:
			batch = append(batch[:0], req)
		drain:
			for len(batch) < sendBatch {
				select {
				case req := <-b.sendq:
					batch = append(batch, req)
				default:
					break drain
				}
			}
			sent := batch[:0]
			for _, req := range batch {
				if err := b.cmds.SendToStation(req.sid, req.payload); err != nil {
					b.lg.Debug("bridge: send command", "station", req.sid, "id", req.cmdID, "err", err)
					continue
				}
				if req.cmdID != "" {
					sent = append(sent, req)
				}
			}
			b.markSent(sent)
			clear(batch)
		}
	}
}

// markSent records delivered commands as sent: a queued command becomes
// sent by a commit of its station; one acknowledged or failed meanwhile is
// left alone. Every station's commit is queued, then they are waited for
// together (one group commit), so the sender's marks are on record when
// it returns.
func (b *Bridge) markSent(reqs []sendReq) {
	bySt := map[string][]string{}
	var order []string
	for _, req := range reqs {
		if bySt[req.sid] == nil {
			order = append(order, req.sid)
		}
		bySt[req.sid] = append(bySt[req.sid], req.cmdID)
	}
	now := b.cfg.Clock()
	answers := make(chan error, len(order))
	n := 0
	for _, sid := range order {
		b.mu.RLock()
		s := b.stations[sid]
		b.mu.RUnlock()
		if s == nil {
			continue
		}
		b.lockStation(s)
		c := &change{next: s.st, sameState: true}
		for _, id := range bySt[sid] {
			if r := s.cmds[id]; r != nil {
				if upd, err := r.to(cmdSent, ""); err == nil {
					c.cmdUpdates = append(c.cmdUpdates, upd)
				}
			}
		}
		if len(c.cmdUpdates) > 0 {
			n++
			b.commit(s, c, now, func(err error) { answers <- err })
		}
		s.mu.Unlock()
	}
	for ; n > 0; n-- {
		if err := <-answers; err != nil {
			// The record stays queued; a resend marks it later.
			b.lg.Warn("bridge: mark commands sent", "err", err)
		}
	}
}
