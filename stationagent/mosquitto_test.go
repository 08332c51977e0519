package stationagent

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/swapbridge/swapbridge/internal/testwait"
	"github.com/swapbridge/swapbridge/wire"
)

const mosquittoBin = "/usr/sbin/mosquitto"

// startMosquitto runs a plain Mosquitto on a free loopback port.
func startMosquitto(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(mosquittoBin); err != nil {
		t.Skipf("mosquitto not installed at %s (apt-get install mosquitto): skipping the interop test", mosquittoBin)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	dir := t.TempDir()
	conf := filepath.Join(dir, "mosquitto.conf")
	body := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n", port)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(mosquittoBin, "-c", conf)
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot start mosquitto: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return "tcp://" + addr
		}
		select {
		case err := <-exited:
			t.Fatalf("mosquitto exited: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto did not listen on %s", addr)
		}
	}
}

func TestAgainstMosquitto(t *testing.T) {
	url := startMosquitto(t)
	obs := newObserver(t, url, "observer")
	cfg := testConfig(t, url, t.TempDir())
	sid := cfg.StationID
	r := startAgent(t, cfg)

	st := obs.next(t, "status", isTopic(sid, wire.KindStatus))
	if s := decode[wire.Status](t, st); !s.Online || s.BootID == "" || st.QoS != 1 {
		t.Fatalf("status = %+v qos %d", s, st.QoS)
	}
	tel := decode[wire.Telemetry](t, obs.next(t, "telemetry", isTopic(sid, wire.KindTelemetry)))
	if !tel.Full || tel.Seq != 1 || len(tel.Slots) != 4 {
		t.Errorf("first telemetry seq %d full %v slots %d", tel.Seq, tel.Full, len(tel.Slots))
	}
	obs.publish(t, wire.Topic(sid, wire.KindCmd), wire.Command{ID: "m1", Action: wire.ActionReserve, Slot: 1, BookingID: "bk", ExpiresAt: time.Now().Add(time.Hour)})
	if a := decode[wire.Ack](t, obs.next(t, "ack", ackFor(sid, "m1"))); !a.OK {
		t.Errorf("ack = %+v", a)
	}
	late := newObserver(t, url, "late")
	if m := late.next(t, "retained status", isTopic(sid, wire.KindStatus)); !m.Retained {
		t.Error("status not retained on mosquitto")
	}
	r.Stop(t)
	if s := decode[wire.Status](t, obs.next(t, "offline", isTopic(sid, wire.KindStatus))); s.Online {
		t.Errorf("after stop: %+v", s)
	}

	// A command sent while the agent is away waits in its persistent
	// session (CleanSession=false) and is executed on the next start.
	obs.publish(t, wire.Topic(sid, wire.KindCmd), wire.Command{ID: "m2", Action: wire.ActionRelease, Slot: 1, BookingID: "bk"})
	r2 := startAgent(t, cfg)
	if a := decode[wire.Ack](t, obs.next(t, "ack of the queued command", ackFor(sid, "m2"))); !a.OK {
		t.Errorf("ack = %+v", a)
	}
	testwait.For(t, testwait.Timeout, "reservation released", func() bool { return len(r2.A.Status().Reservations) == 0 })
}
