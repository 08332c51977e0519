package broker

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// A station that reconnects while its previous connection is still open
// (a half-open TCP connection after a network change, typically) takes it
// over. The previous connection is closed before the new one is
// acknowledged: mochi would write it a DISCONNECT first, and a client that
// stopped reading would hold the new CONNACK back for as long as that write
// may take. Its end is not an offline: its Will does not reach the Handler
// and no StationDisconnected is reported for it, unless the new connection
// ends before it is up (then that connection reports the
// StationDisconnected).

// OnSessionEstablish runs once a CONNECT is authenticated, before mochi
// takes over the station's previous connection: it marks the previous
// connection (mochi's and the broker's live one, if they differ) as
// replaced and closes it.
func (h *hook) OnSessionEstablish(cl *mqtt.Client, _ packets.Packet) {
	tc, ok := cl.Net.Conn.(*trackedConn)
	if cl.Net.Inline || !ok {
		return
	}
	sl := h.b.stripe(cl.ID)
	sl.Lock()
	defer sl.Unlock()
	tc.sid = cl.ID
	h.b.mu.Lock()
	live := h.b.sessions[cl.ID]
	h.b.mu.Unlock()
	prev, _ := h.b.srv.Clients.Get(cl.ID)
	for _, old := range [...]*mqtt.Client{live, prev} {
		if old == nil || old == cl {
			continue
		}
		if otc, ok := old.Net.Conn.(*trackedConn); ok {
			otc.replacedBy = tc
		}
		old.Stop(packets.ErrSessionTakenOver) // closes its socket; nothing more is written to it
	}
}

// replacedBy returns the connection that replaced cl's and is up or still
// on its way up. Called with the station's stripe lock held.
func replacedBy(cl *mqtt.Client) (*trackedConn, bool) {
	tc, ok := cl.Net.Conn.(*trackedConn)
	if !ok || tc.replacedBy == nil || tc.replacedBy.ended {
		return nil, false
	}
	return tc.replacedBy, true
}

// settled notes that cl's connection is up: it owes no report of the
// connection it replaced. Called with the station's stripe lock held.
func settled(cl *mqtt.Client) {
	if tc, ok := cl.Net.Conn.(*trackedConn); ok {
		tc.owesDown = false
	}
}

// connEnded runs when the goroutine of tc is done. If tc replaced its
// station's previous connection and never came up, the previous one's end
// was not reported; it is now, unless a newer connection is live.
func (b *Broker) connEnded(tc *trackedConn) {
	if tc.sid == "" { // set on this goroutine, by OnSessionEstablish
		return
	}
	sl := b.stripe(tc.sid)
	sl.Lock()
	defer sl.Unlock()
	tc.ended = true
	if !tc.owesDown {
		return
	}
	tc.owesDown = false
	b.mu.Lock()
	_, live := b.sessions[tc.sid]
	b.mu.Unlock()
	if hd := b.handler; hd != nil && !live && !b.closing.Load() {
		hd.StationDisconnected(tc.sid)
	}
}
