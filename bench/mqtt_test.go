package bench

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

func startTestBaseline(t *testing.T) *baseline {
	t.Helper()
	b, err := startBaseline()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.close() })
	return b
}

func TestMQTTClientPublishSubscribeRoundTrip(t *testing.T) {
	b := startTestBaseline(t)
	ctx := context.Background()
	acks := make(chan uint16, 10)
	got := make(chan string, 10)
	sub, err := dialMQTT(ctx, b.addr, mqttOptions{ClientID: "sub", CleanSession: true,
		OnPublish: func(topic string, payload []byte) { got <- topic + " " + string(payload) }})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := sub.subscribe("t/+", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	pub, err := dialMQTT(ctx, b.addr, mqttOptions{ClientID: "pub", CleanSession: true, Keepalive: time.Minute,
		OnPuback: func(id uint16) { acks <- id }})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	var pre uint16
	id, err := pub.publish("t/1", 1, false, []byte("hello"), func(id uint16) { pre = id })
	if err != nil {
		t.Fatal(err)
	}
	if id == 0 || pre != id {
		t.Fatalf("packet id %d, pre saw %d", id, pre)
	}
	select {
	case a := <-acks:
		if a != id {
			t.Fatalf("PUBACK for %d, want %d", a, id)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no PUBACK")
	}
	select {
	case m := <-got:
		if m != "t/1 hello" {
			t.Fatalf("subscriber got %q", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("subscriber got nothing")
	}
	if err := pub.ping(); err != nil {
		t.Fatal(err)
	}
	pub.Close()
	pub.Close() // idempotent
	if _, err := pub.publish("t/1", 1, false, nil, nil); err == nil {
		t.Fatal("publish on a closed connection must fail")
	}
}

func TestMQTTClientRejectsMalformedBrokerInput(t *testing.T) {
	cases := map[string][]byte{
		"bad connack":        {0x20, 0x02, 0x00, 0x05},
		"wrong packet":       {0x30, 0x02, 0x00, 0x00},
		"huge length":        {0x20, 0x02, 0x00, 0x00, 0x30, 0xff, 0xff, 0xff, 0x7f},
		"endless length":     {0x20, 0x02, 0x00, 0x00, 0x30, 0xff, 0xff, 0xff, 0xff, 0x01},
		"topic overrun":      {0x20, 0x02, 0x00, 0x00, 0x30, 0x03, 0x00, 0x09, 'a'},
		"qos1 without id":    {0x20, 0x02, 0x00, 0x00, 0x32, 0x03, 0x00, 0x01, 'a'},
		"unknown type":       {0x20, 0x02, 0x00, 0x00, 0xF0, 0x00},
		"short puback":       {0x20, 0x02, 0x00, 0x00, 0x40, 0x01, 0x00},
		"truncated by close": {0x20, 0x02, 0x00, 0x00, 0x30, 0x10, 0x00},
	}
	for name, reply := range cases {
		t.Run(name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				buf := make([]byte, 256)
				c.Read(buf) // the CONNECT
				c.Write(reply)
			}()
			var closed atomic.Bool
			c, err := dialMQTT(context.Background(), ln.Addr().String(), mqttOptions{ClientID: "x", Timeout: 5 * time.Second,
				OnClose: func(error) { closed.Store(true) }})
			if err != nil {
				if name == "bad connack" && !errors.Is(err, ErrRefused) {
					t.Fatalf("want ErrRefused, got %v", err)
				}
				return
			}
			select {
			case <-c.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("the connection must end on malformed input")
			}
			if c.Err() == nil || !closed.Load() {
				t.Fatalf("err %v, OnClose called %v", c.Err(), closed.Load())
			}
		})
	}
}

func TestStationRefusedWithWrongSecret(t *testing.T) {
	cfg := Defaults(Steady)
	cfg.Embedded = true
	tgt, err := openTarget(context.Background(), &cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	defer tgt.closeFn()
	r := newRunner(cfg, tgt, "refused")
	r.cfg.Slots = 4
	if err := r.provision(context.Background(), 1, 2, 60); err != nil {
		t.Fatal(err)
	}
	st := r.stations[0]
	good := st.secret
	st.secret = "wrong"
	if err := st.connect(context.Background(), tgt.mqttAddr, 5*time.Second); !errors.Is(err, ErrRefused) {
		t.Fatalf("wrong secret: want ErrRefused, got %v", err)
	}
	st.secret = good
	if err := st.connect(context.Background(), tgt.mqttAddr, 5*time.Second); err != nil {
		t.Fatalf("right secret: %v", err)
	}
	st.disconnect(true)
	r.closeAll()
	if r.errs.Load() != 0 {
		t.Fatalf("errors: %v", r.errSamples)
	}
}
