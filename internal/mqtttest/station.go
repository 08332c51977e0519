package mqtttest

import (
	"errors"
	"io"
	"net"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Timeout is the deadline of a connection made by MustConnect and
// ConnackCode: every read and write on it must be done by then.
const Timeout = 10 * time.Second

// TB is the part of testing.TB the helpers below use (this package is also
// linked into non-test code, which should not import testing).
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// ConnackCode connects station id with secret and returns the CONNACK's
// reason code (0: accepted) and the connection, closed at t's cleanup. It
// fails t when no CONNACK comes within Timeout.
func ConnackCode(t TB, addr, id, secret string, version byte) (byte, *Conn) {
	t.Helper()
	c, code, err := Connect(addr, id, secret, version, Timeout)
	if err != nil {
		t.Fatalf("CONNECT %s: %v", id, err)
	}
	t.Cleanup(func() { c.Close() })
	return code, c
}

// MustConnect connects station id with secret; it fails t unless the
// CONNACK accepts it. The connection is closed at t's cleanup.
func MustConnect(t TB, addr, id, secret string, version byte) *Conn {
	t.Helper()
	code, c := ConnackCode(t, addr, id, secret, version)
	if code != 0 {
		t.Fatalf("CONNECT %s: CONNACK reason %#x", id, code)
	}
	return c
}

// MustWrite sends pk, failing t on error.
func (c *Conn) MustWrite(t TB, pk packets.Packet) {
	t.Helper()
	if err := c.Write(pk); err != nil {
		t.Fatalf("write packet type %d: %v", pk.FixedHeader.Type, err)
	}
}

// MustRead reads one packet, failing t on error.
func (c *Conn) MustRead(t TB) packets.Packet {
	t.Helper()
	pk, err := c.Read()
	if err != nil {
		t.Fatalf("read packet: %v", err)
	}
	return pk
}

// MustPublish sends a QoS 1 publish with packet id id, failing t on error.
func (c *Conn) MustPublish(t TB, topic string, id uint16, payload string, retain bool) {
	t.Helper()
	if err := c.Publish(topic, 1, id, []byte(payload), retain, nil); err != nil {
		t.Fatalf("publish %s id %d: %v", topic, id, err)
	}
}

// Subscribe sends a SUBSCRIBE of filter at qos with packet id id and reads
// its SUBACK, whose reason codes it returns.
func (c *Conn) Subscribe(filter string, qos byte, id uint16) ([]byte, error) {
	err := c.Write(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: id,
		Filters: packets.Subscriptions{{Filter: filter, Qos: qos}},
	})
	if err != nil {
		return nil, err
	}
	pk, err := c.Read()
	if err != nil {
		return nil, err
	}
	if pk.FixedHeader.Type != packets.Suback {
		return nil, errors.New("mqtttest: no SUBACK")
	}
	return pk.ReasonCodes, nil
}

// ExpectPuback reads the next packet, which must be the PUBACK of id with
// reason code.
func (c *Conn) ExpectPuback(t TB, id uint16, code byte) {
	t.Helper()
	pk := c.MustRead(t)
	if pk.FixedHeader.Type != packets.Puback || pk.PacketID != id || pk.ReasonCode != code {
		t.Fatalf("got packet type %d id %d reason %#x, want PUBACK %d reason %#x", pk.FixedHeader.Type, pk.PacketID, pk.ReasonCode, id, code)
	}
}

// Barrier sends PINGREQ and reads up to its PINGRESP, failing t on any
// other packet: whatever the server wrote before answering the ping has
// arrived, and nothing else was written.
func (c *Conn) Barrier(t TB, what string) {
	t.Helper()
	c.MustWrite(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
	pk := c.MustRead(t)
	if pk.FixedHeader.Type != packets.Pingresp {
		t.Fatalf("%s: got packet type %d id %d before PINGRESP", what, pk.FixedHeader.Type, pk.PacketID)
	}
}

// ExpectClosed reads until the server ends the connection, failing t on
// any packet but an MQTT 5 DISCONNECT, or when the deadline passes first.
func (c *Conn) ExpectClosed(t TB) {
	t.Helper()
	for {
		pk, err := c.Read()
		if err != nil {
			if !closedByPeer(err) {
				t.Fatalf("waiting for the connection to close: %v", err)
			}
			return
		}
		if pk.FixedHeader.Type != packets.Disconnect {
			t.Fatalf("got packet type %d id %d, want the connection closed", pk.FixedHeader.Type, pk.PacketID)
		}
	}
}

// ClosedBy reads until the server ends the connection, skipping other
// packets, and returns the reason code of its DISCONNECT (MQTT 5), or 0
// when it just closed the connection. It fails t when the deadline passes
// first.
func (c *Conn) ClosedBy(t TB) byte {
	t.Helper()
	for {
		pk, err := c.Read()
		if err != nil {
			if !Closed(err) {
				t.Fatalf("the session was not closed: %v", err)
			}
			return 0
		}
		if pk.FixedHeader.Type == packets.Disconnect {
			return pk.ReasonCode
		}
	}
}

// closedByPeer reports whether err is the end of a connection the server
// closed (EOF or a reset), as opposed to a deadline or a decoding error.
func closedByPeer(err error) bool {
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}
