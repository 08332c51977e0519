// Package broker is the embedded MQTT broker of swapd: it wraps mochi-mqtt v2
// and owns the station-facing side of the contract's MQTT section.
//
// It owns:
//   - the TCP listener and the optional TLS listener (cert and key files);
//   - station authentication: deny by default; a CONNECT succeeds only when
//     client id == username == a valid, provisioned station id and the
//     SHA-256 of the password equals the stored secret hash (constant-time
//     compare). Hashes are cached; unknown ids are cached briefly;
//     Invalidate drops an entry after provisioning; with RotatingCredentials
//     a rotated station's previous secret is accepted until its grace period
//     ends; Revoke (after a rotation or a deletion) closes the live session
//     at once when its secret is no longer valid, or when the grace period
//     of the secret it used ends (see revoke.go);
//   - the per-station ACL, an O(1), allocation-free check run on every
//     publish, subscribe and delivery: a station may publish only to its own
//     swap/v1/stations/{sid}/status|telemetry|ack and subscribe only to its
//     own swap/v1/stations/{sid}/cmd. Server-side publishes (SendToStation,
//     through mochi's inline client) bypass it. A Will must name one of the
//     station's own publish topics or the CONNECT is refused;
//   - finite limits: packet size (64 KiB payload plus header room), inbound
//     and outbound QoS windows, pending writes per client, keepalive, session
//     and message expiry, connection count and a deadline for the CONNECT;
//   - abuse limits: failed CONNECTs of one client id from one remote
//     address are answered more and more slowly and, past
//     Config.AuthFailures within a window, every CONNECT of that id from
//     that address is refused for a while (too_many_failures); other ids
//     behind the same address (a NAT, a load balancer) are not affected.
//     Past Config.AuthHostFailures failures of an address, whatever the
//     ids, each further failure from it is answered 1s late; correct
//     credentials are never refused or slowed for it. Each station's
//     publishes (MQTT 5 publishes refused by the ACL included) are held to
//     Config.PublishRate by making them wait their turn;
//   - slow clients: every write to a client has a deadline
//     (Config.WriteTimeout); a client that does not read for that long is
//     disconnected. Acks never carry the user properties of the packet
//     they acknowledge;
//   - the log: mochi's lines and the broker's own go through a handler
//     that never lets a packet, a payload, a password or a byte slice
//     through (strings are cut to 128 bytes, error texts to 256), demotes
//     mochi's per-packet warnings to debug, and logs at most 10 warnings
//     about one client per minute (then one "log lines suppressed" line
//     with their count);
//   - Prometheus counters for refused connects (by reason), denied
//     publishes and subscribes, oversized packets and handler failures, and a
//     gauge of connected stations.
//
// Only stations and the inline client use this broker; there are no other
// MQTT users. Station publishes still follow normal MQTT semantics
// (retained status, delivery to any permitted subscriber), but no station is
// permitted to subscribe to another station's topics, so in practice the
// Handler is their only consumer.
//
// # Handler
//
// The bridge implements Handler. HandlePublish is called on the publishing
// connection's goroutine and reports through its done callback when the
// message's effects are durable; a QoS 1 publish is acknowledged only after
// its done(nil). If it returns an error, or done reports one, the packet is not acknowledged, not delivered and not retained,
// and the connection is closed (MQTT 5 clients first get a DISCONNECT with
// reason 0x83); the station resends the message after reconnecting. Such a
// disconnect does not publish the station's Will. The exception is an error
// wrapping wire.ErrBadPayload (malformed JSON, values out of range, a slot
// beyond the station's count): resending cannot help, so the publish is
// acknowledged (MQTT 5 QoS 1: PUBACK with reason 0x99, payload format
// invalid), not delivered, not retained, counted in
// swapd_broker_payloads_rejected_total and logged, and the connection stays
// up.
//
// # Pipelining
//
// A station's QoS 1 publishes that are not retained (its telemetry and
// acks) do not wait for their commit: the hook hands each to HandlePublish
// and returns at once, so mochi reads the connection's next packet while
// earlier ones are committed, and mochi itself writes nothing for them. The
// connection's ackQueue writes their PUBACKs once the Handler reports each
// done, strictly in the order the
// publishes arrived [MQTT-4.6.0-2], through mochi's own write path (so they
// stay in order with the PUBACKs mochi writes). At most PipelineDepth
// publishes of a connection are in the handler at once; the next waits (the
// connection is not read) until the oldest is done. A failure reported for
// one publish closes the connection with no PUBACK for it or any later
// publish, as above; a bad payload gets its PUBACK (0x99 under MQTT 5) in
// its turn. A retained or QoS 0 publish (the status) first waits until every
// earlier PUBACK is written, then for its own done, so mochi retains it and
// acknowledges it after them. PipelineDepth is a limit, not a mode: a
// negative one is 1. The guarantee is unchanged: a
// PUBACK is written only after the message's effects are durable.
//
// A station's Will (its status topic, {"online":false,...}) is delivered to
// subscribers and retained as usual and also passed to HandlePublish when
// the connection ends abnormally, unless a newer connection of the same
// station has already been established. Will delay intervals are ignored
// (the Will is sent at once).
//
// StationConnected and StationDisconnected are called in order per station
// (under a per-station lock) and must not block. When a station reconnects
// while its old connection is still open (a takeover), the old connection
// is closed before the new one gets its CONNACK (MQTT 5: without a
// DISCONNECT 0x8E, which a client that stopped reading could hold up), and
// its end is not an offline: its Will does not reach the Handler and no
// StationDisconnected is reported for it; the new session is reported up.
// (mochi still publishes and retains that Will as plain MQTT; no client may
// subscribe to a station's status.) Only if the new connection ends before
// it is up is the StationDisconnected reported, by it. A connection that
// ended by itself before the new one arrived is reported as usual. The
// last call for a station always reflects its live session.
//
// # Refusals
//
// A refused CONNECT gets CONNACK "not authorized" (MQTT 3.1.1, code 5) or
// "bad username or password" (MQTT 5, 0x86). A subscription outside the
// station's own cmd gets SUBACK failure 0x80 (3.1.1) or 0x87 (5). A publish
// outside its own topics closes the connection under MQTT 3.1.1, which has
// no negative acknowledgement [MQTT-3.3.5-2]; under MQTT 5 it gets PUBACK
// 0x87 at QoS 1 and is dropped at QoS 0. A packet over MaxPacketSize or a
// payload over 64 KiB closes the connection. Each of these is counted.
//
// # Blocking
//
// Start binds the listeners and returns; connections are served in the
// background. The abuse limits block only the connection concerned: a
// refused CONNECT may be held back up to 1s, and a station's publish waits
// for its turn (at most 1/Config.PublishRate, as a connection's publishes
// are read one at a time; a turn further than Config.PublishWait away
// closes the connection instead); Close ends those waits. A write to a
// client blocks its writer at most Config.WriteTimeout. Close stops the
// listeners, disconnects every client (no write to a client lasts more than
// 1s past the start of Close; then the sockets are closed, whatever the
// clients do) and waits for all connection goroutines, including running Handler calls, and for the goroutines
// writing pipelined PUBACKs (a done reported after Close writes nothing);
// once Close has begun no further Will or StationDisconnected is reported,
// and after it returns no Handler method runs. SendToStation does not block
// on the network: it queues the message for the station's connection (or its
// persistent session) and returns. Invalidate and the accessors do not
// block; Revoke reads the station's credentials from the Credentials and
// closes its session without waiting for the client.
package broker
