package broker

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mpackets "github.com/mochi-mqtt/server/v2/packets"

	"github.com/swapbridge/swapbridge/internal/mqtttest"
	"github.com/swapbridge/swapbridge/internal/testwait"
	"github.com/swapbridge/swapbridge/wire"
)

var errStoreDown = errors.New("store down")

// MQTT 3.1.1: a failing handler means no PUBACK and a closed connection;
// paho keeps the message and resends it after reconnecting, and the resend
// is handled.
func TestHandlerErrorNoPubackV311(t *testing.T) {
	rec := newRecorder()
	rec.fail = func(n int, _ string, kind wire.TopicKind, _ []byte) error {
		if kind == wire.KindTelemetry && n == 1 {
			return errStoreDown
		}
		return nil
	}
	b := startBroker(t, Config{}, newCreds("S1", "one"), rec)

	// paho's reconnect waits for the gate, so the test can look at the
	// publish token while the client is disconnected. (Once paho resends
	// a stored message it completes the original token itself, whatever
	// the broker answers.)
	gate := make(chan struct{})
	openGate := sync.OnceFunc(func() { close(gate) })
	t.Cleanup(openGate)
	lost := make(chan error, 1)
	reconnected := make(chan struct{}, 1)
	var connects atomic.Int32
	o := stationOpts(b.Addr(), "S1", "S1", "one").
		SetCleanSession(false).
		SetAutoReconnect(true).
		SetMaxReconnectInterval(100*time.Millisecond).
		SetWill(wire.Topic("S1", wire.KindStatus), `{"online":false,"boot_id":"b1"}`, 1, true).
		SetConnectionLostHandler(notify(lost)).
		SetReconnectingHandler(func(paho.Client, *paho.ClientOptions) { <-gate }).
		SetOnConnectHandler(func(paho.Client) {
			if connects.Add(1) > 1 {
				select {
				case reconnected <- struct{}{}:
				default:
				}
			}
		})
	s1 := mustDial(t, o)
	rec.expect(t, "up", "S1", "", "")

	payload := `{"boot_id":"b1","seq":1,"full":true}`
	tok := s1.Publish(wire.Topic("S1", wire.KindTelemetry), 1, false, payload)
	rec.expect(t, "publish", "S1", wire.KindTelemetry, payload) // fails
	testwait.Recv(t, lost, waitFor, "connection lost")
	select {
	case <-tok.Done():
		t.Fatalf("publish token completed (err %v) although the handler failed", tok.Error())
	default:
	}
	// The disconnect is reported, and no Will is sent for it.
	rec.expect(t, "down", "S1", "", "")

	openGate()
	testwait.Recv(t, reconnected, waitFor, "reconnect")
	rec.expect(t, "up", "S1", "", "")
	rec.expect(t, "publish", "S1", wire.KindTelemetry, payload) // the resend, accepted
	if err := wait(t, tok); err != nil {
		t.Fatalf("publish after reconnect: %v", err)
	}
	if got := value(t, b.m.handlerErrors); got != 1 {
		t.Errorf("handler_errors_total = %v, want 1", got)
	}
}

// MQTT 5: the same contract; the client gets DISCONNECT 0x83 instead of a
// PUBACK carrying an error code (which would complete the exchange).
func TestHandlerErrorNoPubackV5(t *testing.T) {
	rec := newRecorder()
	rec.fail = func(n int, _ string, _ wire.TopicKind, _ []byte) error {
		if n == 1 {
			return errStoreDown
		}
		return nil
	}
	b := startBroker(t, Config{}, newCreds("S1", "one"), rec)
	topic := wire.Topic("S1", wire.KindTelemetry)

	c := mqtttest.MustConnect(t, b.Addr(), "S1", "one", mqtttest.V5)
	rec.expect(t, "up", "S1", "", "")
	c.MustWrite(t, mpackets.Packet{
		FixedHeader: mpackets.FixedHeader{Type: mpackets.Publish, Qos: 1},
		TopicName:   topic, PacketID: 7, Payload: []byte(`{"seq":1}`),
	})
	pk := c.MustRead(t)
	if pk.FixedHeader.Type != mpackets.Disconnect || pk.ReasonCode != mpackets.ErrImplementationSpecificError.Code {
		t.Fatalf("after a failed publish: got packet type %d reason %#x, want DISCONNECT 0x83", pk.FixedHeader.Type, pk.ReasonCode)
	}
	if _, err := c.Read(); err != io.EOF {
		t.Fatalf("connection still open after DISCONNECT: %v", err)
	}
	rec.expect(t, "publish", "S1", wire.KindTelemetry, `{"seq":1}`)
	rec.expect(t, "down", "S1", "", "")

	// The resend after reconnecting is acknowledged with success.
	c = mqtttest.MustConnect(t, b.Addr(), "S1", "one", mqtttest.V5)
	rec.expect(t, "up", "S1", "", "")
	c.MustWrite(t, mpackets.Packet{
		FixedHeader: mpackets.FixedHeader{Type: mpackets.Publish, Qos: 1, Dup: true},
		TopicName:   topic, PacketID: 7, Payload: []byte(`{"seq":1}`),
	})
	pk = c.MustRead(t)
	if pk.FixedHeader.Type != mpackets.Puback || pk.PacketID != 7 || pk.ReasonCode != 0 {
		t.Fatalf("resend: got packet type %d id %d reason %#x, want PUBACK 7 success", pk.FixedHeader.Type, pk.PacketID, pk.ReasonCode)
	}
	rec.expect(t, "publish", "S1", wire.KindTelemetry, `{"seq":1}`)

	// Denied publish under MQTT 5: PUBACK "not authorized", connection kept.
	c.MustWrite(t, mpackets.Packet{
		FixedHeader: mpackets.FixedHeader{Type: mpackets.Publish, Qos: 1},
		TopicName:   wire.Topic("S2", wire.KindTelemetry), PacketID: 8, Payload: []byte(`{}`),
	})
	pk = c.MustRead(t)
	if pk.FixedHeader.Type != mpackets.Puback || pk.ReasonCode != mpackets.ErrNotAuthorized.Code {
		t.Fatalf("denied publish: got packet type %d reason %#x, want PUBACK 0x87", pk.FixedHeader.Type, pk.ReasonCode)
	}
}
