// Package mqtttest is a raw MQTT client for tests: it speaks 3.1.1 and 5
// on mochi's packet codec, so a test can send exactly the bytes an
// attacker or a broken station would (a second CONNECT, user properties,
// a client that never reads) and see exactly what the server answers.
//
// Every call blocks until its write or read is done or the connection's
// deadline passes; nothing runs in the background.
package mqtttest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Versions of the protocol a Conn speaks.
const (
	V311 byte = 4
	V5   byte = 5
)

// Conn is one raw MQTT connection.
type Conn struct {
	NC      net.Conn
	r       *bufio.Reader
	Version byte
}

// Dial opens a TCP connection to addr without sending anything. The
// connection's deadline is set to now + timeout.
func Dial(addr string, version byte, timeout time.Duration) (*Conn, error) {
	nc, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	_ = nc.SetDeadline(time.Now().Add(timeout))
	return &Conn{NC: nc, r: bufio.NewReader(nc), Version: version}, nil
}

// ConnectPacket is a CONNECT of station id with secret as its password.
func ConnectPacket(id, secret string) packets.Packet {
	return packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: packets.ConnectParams{
			ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30,
			ClientIdentifier: id, UsernameFlag: true, Username: []byte(id),
			PasswordFlag: true, Password: []byte(secret),
		},
	}
}

// Connect dials addr, sends the CONNECT of id/secret and reads the
// CONNACK. It returns the connection and the CONNACK's reason code; err
// is set only when no CONNACK was read.
func Connect(addr, id, secret string, version byte, timeout time.Duration) (*Conn, byte, error) {
	c, err := Dial(addr, version, timeout)
	if err != nil {
		return nil, 0, err
	}
	if err := c.Write(ConnectPacket(id, secret)); err != nil {
		c.Close()
		return nil, 0, err
	}
	pk, err := c.Read()
	if err != nil {
		c.Close()
		return nil, 0, fmt.Errorf("read CONNACK: %w", err)
	}
	if pk.FixedHeader.Type != packets.Connack {
		c.Close()
		return nil, 0, fmt.Errorf("got packet type %d, want CONNACK", pk.FixedHeader.Type)
	}
	return c, pk.ReasonCode, nil
}

// Close closes the connection.
func (c *Conn) Close() error { return c.NC.Close() }

// Encode returns the bytes of pk in the connection's protocol version.
func (c *Conn) Encode(pk packets.Packet) ([]byte, error) {
	pk.ProtocolVersion = c.Version
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&buf)
	case packets.Pingreq:
		err = pk.PingreqEncode(&buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(&buf)
	default:
		return nil, fmt.Errorf("mqtttest: cannot encode packet type %d", pk.FixedHeader.Type)
	}
	return buf.Bytes(), err
}

// Write encodes and sends pk.
func (c *Conn) Write(pk packets.Packet) error {
	b, err := c.Encode(pk)
	if err != nil {
		return err
	}
	_, err = c.NC.Write(b)
	return err
}

// Publish sends a publish at qos with packet id id (ignored at QoS 0).
// props, when not nil, are its MQTT 5 properties.
func (c *Conn) Publish(topic string, qos byte, id uint16, payload []byte, retain bool, props *packets.Properties) error {
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos, Retain: retain},
		TopicName:   topic, Payload: payload,
	}
	if qos > 0 {
		pk.PacketID = id
	}
	if props != nil {
		pk.Properties = *props
	}
	return c.Write(pk)
}

// UserProperties returns MQTT 5 properties carrying about size bytes of
// user properties.
func UserProperties(size int) *packets.Properties {
	var p packets.Properties
	val := string(bytes.Repeat([]byte("v"), 1000))
	for n := 0; n < size; n += len(val) + 1 {
		p.User = append(p.User, packets.UserProperty{Key: "k", Val: val})
	}
	return &p
}

// Read reads one packet. CONNACK, PUBACK, SUBACK, DISCONNECT and PINGRESP
// are decoded; a PUBLISH is decoded too (commands sent to a station).
func (c *Conn) Read() (packets.Packet, error) {
	var pk packets.Packet
	b, err := c.r.ReadByte()
	if err != nil {
		return pk, err
	}
	pk.ProtocolVersion = c.Version
	if err := pk.FixedHeader.Decode(b); err != nil {
		return pk, err
	}
	n, _, err := packets.DecodeLength(c.r)
	if err != nil {
		return pk, err
	}
	pk.FixedHeader.Remaining = n
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return pk, err
	}
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Pingresp:
	default:
		err = fmt.Errorf("mqtttest: unexpected packet type %d", pk.FixedHeader.Type)
	}
	return pk, err
}

// ReadUntilClosed reads and discards packets until the server closes the
// connection or the deadline passes. It returns the packets read and the
// error that ended the reading (io.EOF or a reset for a close; a timeout
// when the server kept the connection open).
func (c *Conn) ReadUntilClosed() ([]packets.Packet, error) {
	var got []packets.Packet
	for {
		pk, err := c.Read()
		if err != nil {
			return got, err
		}
		got = append(got, pk)
	}
}

// Closed reports whether err (from a Read) means the server closed the
// connection, as opposed to the deadline passing.
func Closed(err error) bool {
	if err == nil {
		return false
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return false
	}
	return true
}
