package broker

import (
	"errors"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/swapbridge/swapbridge/wire"
)

// hook plugs the broker's auth, ACL, limits and Handler into mochi. Every
// method runs on the goroutine of the client concerned.
type hook struct {
	mqtt.HookBase
	b *Broker
}

func (h *hook) ID() string { return "swapd-stations" }

func (h *hook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPublish,
		mqtt.OnWillSent, mqtt.OnSessionEstablish, mqtt.OnSessionEstablished, mqtt.OnDisconnect,
		mqtt.OnPacketEncode:
		return true
	}
	return false
}

// OnConnect clamps what the client asked for before authentication: the
// Will is sent without delay and the keepalive is bounded.
func (h *hook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	cl.Properties.Will.WillDelayInterval = 0
	maxKA := uint16(h.b.cfg.MaxKeepalive.Seconds())
	if cl.State.Keepalive == 0 || cl.State.Keepalive > maxKA {
		cl.State.Keepalive = maxKA
		cl.State.ServerKeepalive = true
	}
	return nil
}

// OnConnectAuthenticate is the deny-by-default station authentication. A
// refusal makes mochi answer with CONNACK "bad username or password" (MQTT
// 5, 0x86) or "not authorized" (MQTT 3.1.1, 5).
func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	host := remoteHost(cl.Net.Remote)
	if h.b.auth.blocked(host, cl.ID, time.Now()) {
		h.b.m.refused[ReasonTooManyFailures].Inc()
		h.b.log.Debug("mqtt connect refused", "client", cl.ID, "remote", cl.Net.Remote, "reason", ReasonTooManyFailures)
		return false
	}
	reason, err := h.b.creds.authenticate(cl.ID, pk.Connect.Username, pk.Connect.Password, pk.Connect.PasswordFlag)
	if reason == "" && pk.Connect.WillFlag &&
		(!allowed(cl.ID, pk.Connect.WillTopic, true) || len(pk.Connect.WillPayload) > wire.MaxPayload) {
		reason = ReasonWillDenied
	}
	if reason == "" {
		return true
	}
	h.b.m.refused[reason].Inc()
	if err != nil {
		h.b.log.Warn("mqtt connect refused", "client", cl.ID, "remote", cl.Net.Remote, "reason", reason, "error", err)
	} else {
		h.b.log.Debug("mqtt connect refused", "client", cl.ID, "remote", cl.Net.Remote, "reason", reason) // counted; a storm must not flood the log
	}
	if reason != ReasonStoreError && reason != ReasonWillDenied {
		delay, blocked, hostBlocked := h.b.auth.failed(host, cl.ID, time.Now())
		if blocked {
			h.b.log.Warn("mqtt logins of a client from an address blocked after repeated failures", "client", cl.ID, "remote", host, "for", h.b.cfg.AuthBlock)
		}
		if hostBlocked {
			h.b.log.Warn("mqtt failed logins from an address slowed down after too many", "remote", host, "for", h.b.cfg.AuthBlock)
		}
		h.b.pause(delay) // slows down guessing; only this connection waits
	}
	return false
}

// OnACLCheck runs on every publish, subscribe and delivery. The inline
// client is never checked by mochi for its publishes; it is allowed here
// for completeness.
func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if cl.Net.Inline || allowed(cl.ID, topic, write) {
		return true
	}
	if write {
		h.b.m.pubDenied.Inc()
		if cl.Properties.ProtocolVersion == 5 {
			// mochi answers it with a PUBACK 0x87 and reads the next one:
			// refused publishes take their turn like the others.
			h.b.limitPublish(cl)
		} else {
			// MQTT 3.1.1 cannot tell a client its publish was refused; the
			// server must close the connection [MQTT-3.3.5-2]. Closing it
			// here keeps mochi from sending a DISCONNECT, which 3.1.1
			// clients treat as a protocol error. The station is expected to
			// reconnect, so its Will is not published.
			atomic.StoreUint32(&cl.Properties.Will.Flag, 0)
			cl.Stop(packets.ErrNotAuthorized)
		}
	} else {
		h.b.m.subDenied.Inc()
	}
	h.b.log.Debug("mqtt acl denied", "client", cl.ID, "topic", topic, "write", write)
	return false
}

// OnPublish hands a station publish to the Handler before it is
// acknowledged. A QoS 1 publish that is not retained goes to the
// connection's ackQueue: it is handed over, mochi is told to drop it
// (ErrRejectPacket: no PUBACK, no delivery), and the queue writes its
// PUBACK once the handler reports it done, in arrival order, while the
// connection is read on. Any other publish (the retained status, QoS 0)
// waits for the ones before it to be acknowledged and for its own done,
// then mochi acknowledges (and retains) it when the hook returns.
// Returning ErrRejectPacket after closing the connection makes the
// station resend.
func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	// The ACL already ran on the topic as sent; check the effective one
	// again (it is also where the kind comes from).
	sid, kind, ok := wire.ParseTopic(pk.TopicName)
	if !ok || sid != cl.ID || kind == wire.KindCmd {
		h.b.m.pubDenied.Inc()
		return pk, packets.ErrRejectPacket
	}
	if len(pk.Payload) > wire.MaxPayload {
		h.b.m.oversized.Inc()
		h.b.log.Info("mqtt payload too large", "client", cl.ID, "topic", pk.TopicName, "bytes", len(pk.Payload))
		h.b.dropClient(cl, packets.ErrPacketTooLarge)
		return pk, packets.ErrRejectPacket
	}
	if !h.b.limitPublish(cl) {
		return pk, packets.ErrRejectPacket
	}
	if h.b.handler == nil {
		return pk, nil
	}
	if tc, ok := cl.Net.Conn.(*trackedConn); ok && tc.acks != nil {
		if pk.FixedHeader.Qos == 1 && !pk.FixedHeader.Retain {
			return pk, h.pipelined(tc.acks, sid, kind, pk)
		}
		// mochi writes this one's PUBACK (and retains it) when the hook
		// returns: the pipelined ones before it are acknowledged first.
		if !tc.acks.drain() {
			return pk, packets.ErrRejectPacket
		}
	}
	if err := h.b.handleAndWait(sid, kind, pk.Payload); err != nil {
		if h.b.badPayload(sid, kind, err) {
			// Resending cannot fix it: acknowledge, drop, keep the station.
			if cl.Properties.ProtocolVersion == 5 && pk.FixedHeader.Qos > 0 {
				return pk, packets.ErrPayloadFormatInvalid
			}
			return pk, packets.CodeSuccessIgnore
		}
		h.b.notAccepted(sid, kind, err)
		h.b.dropClient(cl, packets.ErrImplementationSpecificError)
		return pk, packets.ErrRejectPacket
	}
	return pk, nil
}

// handleAndWait hands a publish to the Handler and waits until it is done
// (for the publishes mochi acknowledges itself, and the Will).
func (b *Broker) handleAndWait(sid string, kind wire.TopicKind, payload []byte) error {
	ch := make(chan error, 1)
	if err := b.handler.HandlePublish(sid, kind, payload, func(err error) { ch <- err }); err != nil {
		return err
	}
	return <-ch
}

// limitPublish makes a publish of cl wait its turn in the station's
// publish rate; it slows this station down, others are not affected. It
// reports false when cl was disconnected instead (its turn is more than
// PublishWait away).
func (b *Broker) limitPublish(cl *mqtt.Client) bool {
	wait, ok := b.pubs.reserve(cl.ID, time.Now())
	if !ok {
		b.m.rateLimited.Inc()
		b.log.Info("station over its publish rate; disconnecting", "station", cl.ID, "rate", b.cfg.PublishRate)
		b.dropClient(cl, packets.ErrMessageRateTooHigh)
		return false
	}
	b.pause(wait)
	return true
}

// OnPacketEncode corrects the reason code of the PUBACKs mochi writes for
// QoS 1 publishes: mochi sets 0x01 ("granted QoS 1", a SUBACK code), which
// is not a PUBACK reason; success is 0x00 [MQTT-3.4.2.1].
func (h *hook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Puback && pk.ReasonCode == packets.CodeGrantedQos1.Code {
		pk.ReasonCode = packets.CodeSuccess.Code
	}
	return pk
}

// badPayload reports whether a Handler error means the payload can never
// be applied (wire.ErrBadPayload), and counts and logs it if so.
func (b *Broker) badPayload(sid string, kind wire.TopicKind, err error) bool {
	if !errors.Is(err, wire.ErrBadPayload) {
		return false
	}
	b.m.badPayloads.Inc()
	b.log.Warn("station payload rejected", "station", sid, "kind", string(kind), "error", err)
	return true
}

// notAccepted counts and logs a publish that failed in the Handler; the
// caller closes the connection.
func (b *Broker) notAccepted(sid string, kind wire.TopicKind, err error) {
	b.m.handlerErrors.Inc()
	b.log.Warn("station publish not accepted; disconnecting", "station", sid, "kind", string(kind), "error", err)
}

// OnWillSent passes a station's Will, already published and retained by
// mochi, to the Handler if the connection it belongs to is still the
// station's live one.
func (h *hook) OnWillSent(cl *mqtt.Client, pk packets.Packet) {
	if cl.Net.Inline || h.b.handler == nil || h.b.closing.Load() {
		return
	}
	sid, kind, ok := wire.ParseTopic(pk.TopicName)
	if !ok || sid != cl.ID {
		return
	}
	// The station's stripe lock orders this Will against a new connection
	// of the same station being reported.
	sl := h.b.stripe(sid)
	sl.Lock()
	defer sl.Unlock()
	h.b.mu.Lock()
	current := h.b.sessions[sid] == cl
	h.b.mu.Unlock()
	if _, ok := replacedBy(cl); !current || ok {
		return // the station is back on a newer connection: no offline
	}
	if err := h.b.handleAndWait(sid, kind, pk.Payload); err != nil {
		h.b.m.handlerErrors.Inc()
		h.b.log.Warn("station will not accepted", "station", sid, "kind", string(kind), "error", err)
	}
}

// OnSessionEstablished records cl as the station's live connection, after
// the CONNACK and before any of its packets is read.
func (h *hook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	if cl.Net.Inline {
		return
	}
	if tc, ok := cl.Net.Conn.(*trackedConn); ok {
		tc.established.Store(true)
		if h.b.handler != nil {
			tc.acks = newAckQueue(h.b, cl, h.b.cfg.PipelineDepth)
		}
	}
	sl := h.b.stripe(cl.ID)
	sl.Lock()
	defer sl.Unlock()
	settled(cl)
	h.b.mu.Lock()
	h.b.sessions[cl.ID] = cl
	h.b.m.connected.Set(float64(len(h.b.sessions)))
	h.b.mu.Unlock()
	h.b.sessionUp(cl, pk.Connect.Password)
	if hd := h.b.handler; hd != nil && !h.b.closing.Load() {
		hd.StationConnected(cl.ID)
	}
}

// OnDisconnect reports the end of the station's live connection; the end
// of a connection already replaced by a newer one is not reported.
func (h *hook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	if cl.Net.Inline {
		return
	}
	if tc, ok := cl.Net.Conn.(*trackedConn); ok && tc.acks != nil {
		tc.acks.fail()
	}
	h.b.logins.forget(cl)
	if errors.Is(err, packets.ErrPacketTooLarge) {
		h.b.m.oversized.Inc()
		h.b.log.Info("mqtt packet too large; disconnected", "client", cl.ID)
	}
	sl := h.b.stripe(cl.ID)
	sl.Lock()
	defer sl.Unlock()
	h.b.mu.Lock()
	current := h.b.sessions[cl.ID] == cl
	if current {
		delete(h.b.sessions, cl.ID)
		h.b.m.connected.Set(float64(len(h.b.sessions)))
	}
	h.b.mu.Unlock()
	if !current {
		return
	}
	if by, ok := replacedBy(cl); ok {
		by.owesDown = true // reported by the newer connection if it never comes up
		return
	}
	if hd := h.b.handler; hd != nil && !h.b.closing.Load() {
		hd.StationDisconnected(cl.ID)
	}
}
