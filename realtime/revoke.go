package realtime

import (
	"net/http"

	"github.com/gorilla/websocket"
)

// DisconnectUser closes every WebSocket opened with a token of the user
// (its notifications channel and, when station channels take tokens, those
// too) with 1008 (policy violation) and reason, and returns how many it
// closed. Call it after the user's tokens were revoked: a connection that
// authenticated with one of them while DisconnectUser ran is checked again
// once it is subscribed (see recheck), so none survives. It does not block
// on clients.
func (h *Hub) DisconnectUser(uid, reason string) int {
	h.revocations.Add(1) // before the walk: see recheck
	h.mu.RLock()
	var open []*client
	for c := range h.clients {
		if c.uid == uid {
			open = append(open, c)
		}
	}
	h.mu.RUnlock()
	n := 0
	for _, c := range open {
		if c.open() {
			c.close(websocket.ClosePolicyViolation, reason)
			n++
		}
	}
	return n
}

// recheck reports whether c, authenticated as c.uid when the revocation
// count was gen, must be refused because a DisconnectUser ran since then
// and c's token no longer names c.uid. Called once c is subscribed: a
// DisconnectUser that walked the clients before c was among them bumped
// the count first.
func (h *Hub) recheck(c *client, r *http.Request, gen uint64) bool {
	if c.uid == "" || h.revocations.Load() == gen {
		return false
	}
	uid, err := h.auth.UserForToken(tokenFrom(r))
	return err != nil || uid != c.uid
}
