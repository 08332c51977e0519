package broker

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mpackets "github.com/mochi-mqtt/server/v2/packets"

	"github.com/swapbridge/swapbridge/internal/mqtttest"
	"github.com/swapbridge/swapbridge/internal/testlog"
	"github.com/swapbridge/swapbridge/internal/testwait"
	"github.com/swapbridge/swapbridge/wire"
)

// logBuf is a log destination safe for concurrent writes.
type logBuf = testlog.Buffer

func bufLogger(lb *logBuf, level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(lb, &slog.HandlerOptions{Level: level}))
}

func badPayload(int, string, wire.TopicKind, []byte) error {
	return fmt.Errorf("status: %w", wire.ErrBadPayload)
}

// TestLogKeepsNoPacket: at debug level, the lines mochi and the broker
// write about a second CONNECT on a live connection, a foreign-topic
// publish and malformed retained statuses carry neither the password nor
// the payloads nor the user properties, and a station repeating an error
// gets a bounded number of warnings.
func TestLogKeepsNoPacket(t *testing.T) {
	var lb logBuf
	rec := newRecorder()
	rec.fail = badPayload
	b := startBroker(t, Config{Logger: bufLogger(&lb, slog.LevelDebug), PublishRate: -1}, newCreds("S1", "secret-S1-Qw3rty", "S2", "secret-S2-Zx9"), rec)
	const mark = "PAYLOAD-MARK-7f3a"

	// A second CONNECT: mochi logs the packet it refused, password included.
	c := mqtttest.MustConnect(t, b.Addr(), "S1", "secret-S1-Qw3rty", 4)
	rec.expect(t, "up", "S1", "", "")
	c.MustWrite(t, mpackets.Packet{
		FixedHeader: mpackets.FixedHeader{Type: mpackets.Connect},
		Connect: mpackets.ConnectParams{
			ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30,
			ClientIdentifier: "S1", UsernameFlag: true, Username: []byte("S1"),
			PasswordFlag: true, Password: []byte("secret-S1-Qw3rty"),
		},
	})
	c.ExpectClosed(t)
	rec.expect(t, "down", "S1", "", "")

	// A foreign-topic publish (3.1.1: the connection is closed).
	c = mqtttest.MustConnect(t, b.Addr(), "S1", "secret-S1-Qw3rty", 4)
	rec.expect(t, "up", "S1", "", "")
	c.MustPublish(t, wire.Topic("S2", wire.KindTelemetry), 1, mark+strings.Repeat("x", 60<<10), false)
	c.ExpectClosed(t)
	rec.expect(t, "down", "S1", "", "")

	// Malformed retained statuses with user properties under MQTT 5: each
	// is acknowledged 0x99 and the connection stays up.
	v5 := mqtttest.MustConnect(t, b.Addr(), "S2", "secret-S2-Zx9", mqtttest.V5)
	rec.expect(t, "up", "S2", "", "")
	for i := range 50 {
		v5.MustWrite(t, mpackets.Packet{
			FixedHeader: mpackets.FixedHeader{Type: mpackets.Publish, Qos: 1, Retain: true},
			TopicName:   wire.Topic("S2", wire.KindStatus), PacketID: uint16(i + 1),
			Payload:    []byte(`{"online":"` + mark + `"}`),
			Properties: mpackets.Properties{User: []mpackets.UserProperty{{Key: "k", Val: mark}}},
		})
		v5.ExpectPuback(t, uint16(i+1), mpackets.ErrPayloadFormatInvalid.Code)
		rec.next(t)
	}

	out := lb.String()
	b64 := base64.StdEncoding.EncodeToString // a logged []byte is base64 in JSON
	for _, secret := range []string{"secret-S1-Qw3rty", "secret-S2-Zx9", mark, "xxxxxxxx", b64([]byte("secret-S1-Qw3rty")), b64([]byte(mark))[:12]} {
		if i := strings.Index(out, secret); i >= 0 {
			t.Errorf("%q reached the log: …%s…", secret, out[max(0, i-300):min(len(out), i+100)])
		}
	}
	if n := strings.Count(out, `"station payload rejected"`); n > logPerClient {
		t.Errorf("%d warnings about one station's bad payloads, want at most %d", n, logPerClient)
	}
	if !strings.Contains(out, `"error processing packet"`) || !strings.Contains(out, `"level":"DEBUG"`) {
		t.Errorf("mochi's per-packet lines are missing at debug level:\n%.3000s", out)
	}
}

// TestLogBoundedAtInfo: at the production level, the same misbehaviour
// repeated (reconnecting after each refused publish, and malformed
// retained statuses over MQTT 5) writes a few KB of log, not the packets.
func TestLogBoundedAtInfo(t *testing.T) {
	var lb logBuf
	rec := newRecorder()
	rec.fail = badPayload
	b := startBroker(t, Config{Logger: bufLogger(&lb, slog.LevelInfo), PublishRate: -1}, newCreds("S1", "one", "S2", "two"), rec)
	start := lb.Len()
	for range 20 {
		c := mqtttest.MustConnect(t, b.Addr(), "S1", "one", 4)
		c.MustPublish(t, wire.Topic("S2", wire.KindTelemetry), 1, strings.Repeat("x", 60<<10), false)
		c.ExpectClosed(t)
	}
	foreign := lb.Len() - start

	start = lb.Len()
	v5 := mqtttest.MustConnect(t, b.Addr(), "S2", "two", mqtttest.V5)
	bad := `{"online":"maybe","boot_id":` + strings.Repeat(`"x`, 20000) + `"}`
	for i := range 150 {
		v5.MustPublish(t, wire.Topic("S2", wire.KindStatus), uint16(i+1), bad, true)
		v5.ExpectPuback(t, uint16(i+1), mpackets.ErrPayloadFormatInvalid.Code)
	}
	status := lb.Len() - start
	t.Logf("log bytes: 20 foreign-topic publishes of 60 KB with reconnects %d, 150 malformed retained statuses %d", foreign, status)
	if foreign > 4<<10 || status > 4<<10 {
		t.Errorf("log bytes %d and %d, want at most 4 KiB each:\n%.2000s", foreign, status, lb.String())
	}
}

// stuckClient connects station sid over MQTT 5 with a small receive
// buffer and subscribes to its commands. Then it sends retained statuses
// with 60 KB of user properties each and never reads again: were they
// echoed in the PUBACKs, the broker's reader would block writing them and
// stop reading (the client's writes then fail, which ends the flood). With
// flood, it then has the broker send it 64 KB commands until the broker's
// queue for it is full (mochi logs "failed publishing packet" to lb at
// debug level), so that the broker's writes to it block.
func stuckClient(t *testing.T, b *Broker, lb *logBuf, sid, secret string, flood bool) *mqtttest.Conn {
	t.Helper()
	c, err := mqtttest.Dial(b.Addr(), mqtttest.V5, waitFor)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	nc := c.NC
	_ = nc.(*net.TCPConn).SetReadBuffer(4 << 10)
	connect := mqtttest.ConnectPacket(sid, secret)
	connect.Connect.Keepalive = 300
	c.MustWrite(t, connect)
	if pk := c.MustRead(t); pk.FixedHeader.Type != mpackets.Connack || pk.ReasonCode != 0 {
		t.Fatalf("CONNACK %#x", pk.ReasonCode)
	}
	if _, err := c.Subscribe(wire.Topic(sid, wire.KindCmd), 1, 1); err != nil {
		t.Fatalf("SUBSCRIBE: %v", err)
	}
	var buf bytes.Buffer
	for i := range 150 {
		pk := mpackets.Packet{
			FixedHeader: mpackets.FixedHeader{Type: mpackets.Publish, Qos: 1, Retain: true},
			TopicName:   wire.Topic(sid, wire.KindStatus), PacketID: uint16(i + 2),
			Payload:    []byte(`{"online":true,"boot_id":"b"}`),
			Properties: mpackets.Properties{User: mqtttest.UserProperties(60 << 10).User}, ProtocolVersion: 5,
		}
		buf.Reset()
		if err := pk.PublishEncode(&buf); err != nil {
			t.Fatal(err)
		}
		_ = nc.SetWriteDeadline(time.Now().Add(2 * time.Second))
		if _, err := nc.Write(buf.Bytes()); err != nil {
			break // the broker stopped reading
		}
	}
	if !flood {
		return c
	}
	cmd := []byte(`{"x":"` + strings.Repeat("c", wire.MaxPayload-16) + `"}`)
	for range 5000 {
		if err := b.SendToStation(sid, cmd); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(lb.String(), `"failed publishing packet"`) {
			return c
		}
	}
	t.Fatal("the broker's queue for a client that does not read never filled")
	return nil
}

// TestStuckClientDoesNotHoldTheStation: a client holding a station's
// credentials that stops reading does not hold back the station's next
// connection (its CONNACK comes at once, not after a write to the old
// one) nor Close (within its grace, whatever the client does), and is
// disconnected once a write to it has waited the write timeout.
func TestStuckClientDoesNotHoldTheStation(t *testing.T) {
	t.Run("takeover", func(t *testing.T) {
		rec := newRecorder()
		var lb logBuf
		b := startBroker(t, Config{Logger: bufLogger(&lb, slog.LevelDebug)}, newCreds("S1", "one"), rec)
		stuckClient(t, b, &lb, "S1", "one", false)
		start := time.Now()
		c := mqtttest.MustConnect(t, b.Addr(), "S1", "one", 4) // fails unless a CONNACK comes within waitFor
		t.Logf("CONNACK behind a client that stopped reading: %.3fs (write timeout %s)", time.Since(start).Seconds(), DefaultWriteTimeout)
		c.Barrier(t, "the new connection")
	})
	t.Run("write timeout", func(t *testing.T) {
		rec := newRecorder()
		var lb logBuf
		b := startBroker(t, Config{WriteTimeout: time.Second, Logger: bufLogger(&lb, slog.LevelDebug)}, newCreds("S1", "one"), rec)
		stuckClient(t, b, &lb, "S1", "one", true)
		rec.expect(t, "up", "S1", "", "")
		start := time.Now()
		for e := rec.next(t); e.what != "down"; e = rec.next(t) { // the statuses are publishes
		}
		t.Logf("a client that stopped reading dropped after %.2fs (write timeout 1s)", time.Since(start).Seconds())
	})
	t.Run("close", func(t *testing.T) {
		rec := newRecorder()
		var lb logBuf
		b, err := New(Config{Addr: "127.0.0.1:0", NotFound: errNotFound, Logger: bufLogger(&lb, slog.LevelDebug)}, newCreds("S1", "one"))
		if err != nil {
			t.Fatal(err)
		}
		b.SetHandler(rec)
		if err := b.Start(); err != nil {
			t.Fatal(err)
		}
		stuckClient(t, b, &lb, "S1", "one", false)
		start := time.Now()
		done := make(chan struct{})
		go func() { _ = b.Close(); close(done) }()
		testwait.Recv(t, done, waitFor, "Close with a client that stopped reading") // waitFor: 10 s, swapd's whole shutdown budget
		t.Logf("Close with a client that stopped reading: %.2fs (grace %s)", time.Since(start).Seconds(), closeGrace)
	})
}

// TestNoAckEchoesUserProperties: acks (to a refused publish and to a
// retained status) carry no user properties, a retained status is
// acknowledged 0x00, and refused MQTT 5 publishes count against the
// station's publish rate.
func TestNoAckEchoesUserProperties(t *testing.T) {
	rec := newRecorder()
	b := startBroker(t, Config{PublishRate: 0.1, PublishBurst: 2, PublishWait: 50 * time.Millisecond}, newCreds("S1", "one"), rec)
	c := mqtttest.MustConnect(t, b.Addr(), "S1", "one", mqtttest.V5)
	rec.expect(t, "up", "S1", "", "")
	props := mpackets.Properties{User: mqtttest.UserProperties(30 << 10).User}
	c.MustWrite(t, mpackets.Packet{
		FixedHeader: mpackets.FixedHeader{Type: mpackets.Publish, Qos: 1, Retain: true},
		TopicName:   wire.Topic("S1", wire.KindStatus), PacketID: 1,
		Payload: []byte(`{"online":true,"boot_id":"b"}`), Properties: props,
	})
	pk := c.MustRead(t)
	if pk.FixedHeader.Type != mpackets.Puback || pk.ReasonCode != 0 || len(pk.Properties.User) != 0 {
		t.Fatalf("status PUBACK: type %d reason %#x, %d user properties; want PUBACK 0x00 without", pk.FixedHeader.Type, pk.ReasonCode, len(pk.Properties.User))
	}
	rec.expect(t, "publish", "S1", wire.KindStatus, `{"online":true,"boot_id":"b"}`)
	c.MustWrite(t, mpackets.Packet{
		FixedHeader: mpackets.FixedHeader{Type: mpackets.Publish, Qos: 1},
		TopicName:   wire.Topic("S2", wire.KindTelemetry), PacketID: 2,
		Payload: []byte(`{}`), Properties: props,
	})
	pk = c.MustRead(t)
	if pk.FixedHeader.Type != mpackets.Puback || pk.ReasonCode != mpackets.ErrNotAuthorized.Code || len(pk.Properties.User) != 0 {
		t.Fatalf("refused publish: type %d reason %#x, %d user properties; want PUBACK 0x87 without", pk.FixedHeader.Type, pk.ReasonCode, len(pk.Properties.User))
	}
	// The burst of 2 is spent; the next refused publish's turn is 10 s
	// away: the connection is closed as for a permitted one.
	c.MustWrite(t, mpackets.Packet{
		FixedHeader: mpackets.FixedHeader{Type: mpackets.Publish, Qos: 1},
		TopicName:   wire.Topic("S2", wire.KindTelemetry), PacketID: 3, Payload: []byte(`{}`),
	})
	c.ExpectClosed(t)
	if got := value(t, b.m.rateLimited); got != 1 {
		t.Errorf("publishes_rate_limited_total = %v, want 1", got)
	}
}

// TestTakeoverNoOfflineChurn: a station that reconnects again and again
// while its previous connection is open is reported up each time and never
// down, and its Will does not reach the Handler; its last connection's end
// is reported as usual.
func TestTakeoverNoOfflineChurn(t *testing.T) {
	rec := newRecorder()
	b := startBroker(t, Config{}, newCreds("S1", "one"), rec)
	status := wire.Topic("S1", wire.KindStatus)
	will := `{"online":false,"boot_id":"b1"}`
	var last connCapture
	for i := range 8 {
		o := stationOpts(b.Addr(), "S1", "S1", "one").SetWill(status, will, 1, true).SetCustomOpenConnectionFn(last.open)
		mustDial(t, o)
		if e := rec.next(t); e.what != "up" {
			t.Fatalf("takeover %d: handler event %+v before the new session is up", i, e)
		}
	}
	last.kill()
	rec.expect(t, "publish", "S1", wire.KindStatus, will)
	rec.expect(t, "down", "S1", "", "")
	if b.Connected("S1") {
		t.Error("station still connected")
	}
}

// TestAuthFailuresPerClientID: wrong secrets for one station block that
// station from that address, not its neighbours behind the same address;
// past the per-address ceiling, wrong attempts are slowed and right ones
// still pass.
func TestAuthFailuresPerClientID(t *testing.T) {
	b := startBroker(t, Config{AuthFailures: 3, AuthHostFailures: 6, AuthBlock: time.Minute, AuthDelay: -1},
		newCreds("S1", "one", "S2", "two", "S3", "three"), nil)
	try := func(id, pass string) (time.Duration, error) {
		start := time.Now()
		c := paho.NewClient(stationOpts(b.Addr(), id, id, pass))
		tok := c.Connect()
		if !tok.WaitTimeout(waitFor) {
			t.Fatal("connect timed out")
		}
		if tok.Error() == nil {
			c.Disconnect(0)
		}
		return time.Since(start), tok.Error()
	}
	for range 3 {
		if _, err := try("S1", "wrong"); err == nil {
			t.Fatal("wrong secret accepted")
		}
	}
	if _, err := try("S1", "one"); err == nil {
		t.Error("S1 with its secret right after 3 failures for it: accepted, want blocked")
	}
	if _, err := try("S2", "two"); err != nil {
		t.Errorf("a neighbour with its own secret: %v", err)
	}
	// Spraying: 3 more failures over other ids reach the address's
	// ceiling of 6; from now on every failure is answered 1 s late, and
	// right secrets still pass at once.
	for _, id := range []string{"S2", "S3", "S9"} {
		try(id, "wrong")
	}
	if d, err := try("S3", "wrong-again"); err == nil || d < maxAuthDelay {
		t.Errorf("a failure past the address's ceiling: refused after %v (%v), want at least %v", d, err, maxAuthDelay)
	}
	if _, err := try("S3", "three"); err != nil {
		t.Errorf("right secret from an address past its ceiling: %v", err)
	}
}
