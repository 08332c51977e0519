package reliability

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mpackets "github.com/mochi-mqtt/server/v2/packets"

	"github.com/swapbridge/swapbridge/internal/testwait"
	"github.com/swapbridge/swapbridge/wire"
)

// windowStation is a station played by a raw MQTT 3.1.1 client that keeps
// up to window QoS 1 publishes unacknowledged, as a station with an outbox
// does, and checks that their PUBACKs come in publish order.
type windowStation struct {
	sid, secret string
	c           net.Conn
	r           *bufio.Reader
	acks        chan uint16   // packet ids of PUBACKs, in arrival order
	readErr     chan error    // the reader's end
	stopped     chan struct{} // closed when the reader returned
}

func dialWindowStation(addr, sid, secret string) (*windowStation, error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	s := &windowStation{sid: sid, secret: secret, c: nc, r: bufio.NewReader(nc), acks: make(chan uint16, 1024), readErr: make(chan error, 1), stopped: make(chan struct{})}
	if err := s.write(mpackets.Packet{
		FixedHeader: mpackets.FixedHeader{Type: mpackets.Connect},
		Connect: mpackets.ConnectParams{
			ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30,
			ClientIdentifier: sid, UsernameFlag: true, Username: []byte(sid),
			PasswordFlag: true, Password: []byte(secret),
		},
	}); err != nil {
		nc.Close()
		return nil, err
	}
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	typ, _, code, err := s.readPacket()
	if err != nil || typ != mpackets.Connack || code != 0 {
		nc.Close()
		return nil, fmt.Errorf("CONNECT %s: packet type %d code %#x, %v", sid, typ, code, err)
	}
	go s.readLoop()
	return s, nil
}

func (s *windowStation) write(pk mpackets.Packet) error {
	pk.ProtocolVersion = 4
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case mpackets.Connect:
		err = pk.ConnectEncode(&buf)
	case mpackets.Publish:
		err = pk.PublishEncode(&buf)
	}
	if err != nil {
		return err
	}
	_ = s.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err = s.c.Write(buf.Bytes())
	return err
}

// readPacket reads one packet: its type, packet id and (CONNACK) code.
func (s *windowStation) readPacket() (typ byte, id uint16, code byte, err error) {
	b, err := s.r.ReadByte()
	if err != nil {
		return 0, 0, 0, err
	}
	var fh mpackets.FixedHeader
	if err := fh.Decode(b); err != nil {
		return 0, 0, 0, err
	}
	n, _, err := mpackets.DecodeLength(s.r)
	if err != nil {
		return 0, 0, 0, err
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(s.r, body); err != nil {
		return 0, 0, 0, err
	}
	switch fh.Type {
	case mpackets.Connack:
		if n < 2 {
			return fh.Type, 0, 0, errors.New("short CONNACK")
		}
		return fh.Type, 0, body[1], nil
	case mpackets.Puback:
		if n < 2 {
			return fh.Type, 0, 0, errors.New("short PUBACK")
		}
		return fh.Type, uint16(body[0])<<8 | uint16(body[1]), 0, nil
	}
	return fh.Type, 0, 0, fmt.Errorf("unexpected packet type %d", fh.Type)
}

func (s *windowStation) readLoop() {
	defer close(s.stopped)
	for {
		_ = s.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		typ, id, _, err := s.readPacket()
		if err != nil {
			s.readErr <- err
			return
		}
		if typ == mpackets.Puback {
			s.acks <- id
		}
	}
}

func (s *windowStation) close() {
	s.c.Close()
	<-s.stopped
}

// pipeState is what one windowed publisher knows.
type pipeState struct {
	mu    sync.Mutex
	acked map[uint64]bool
	next  uint64 // the first seq not acknowledged: where a new connection starts
	// order problems: a PUBACK that was not for the oldest unacknowledged
	// publish.
	disorder []string
}

// packetID maps a seq to a packet id (1..65535), unique within a window.
func packetID(seq uint64) uint16 { return uint16(seq%65535) + 1 }

// TestCrashUnderPipelinedLoad is TestCrashUnderTelemetryLoad with each
// station keeping a window of up to 16 QoS 1 telemetries unacknowledged, so
// that swapd's pipelined path has many of a station's commits queued when
// it is SIGKILLed (twice). After the last restart every acknowledged
// message has its effect in the log exactly once, no effect is there
// twice, and each station's PUBACKs arrived in publish order.
func TestCrashUnderPipelinedLoad(t *testing.T) {
	const (
		stations  = 4
		slots     = 8
		window    = 16
		crashes   = 2
		killEvery = 1500 // acknowledged messages between kills
		after     = 40   // messages per station after the last restart
	)
	// Every acknowledged message's effect is checked by its battery_added
	// event: the per-station event budget, which folds such events into
	// inventory_update past 10/s, is off, like the publish limit.
	env := []string{"SWAPD_MQTT_PUBLISH_RATE=-1", "SWAPD_MQTT_PIPELINE=64", "SWAPD_EVENTS_STATION_RATE=-1"}
	dir := t.TempDir()
	p := startSwapd(t, dir, env...)
	ids := make([]string, stations)
	for i := range ids {
		ids[i] = fmt.Sprintf("PL-%d", i+1)
	}
	secrets := provision(t, p.admin(), slots, ids...)
	states := map[string]*pipeState{}
	for _, id := range ids {
		states[id] = &pipeState{acked: map[uint64]bool{}, next: 1}
	}
	boot := func(sid string) string { return "boot-" + sid }

	// run publishes from st.next with up to window unacknowledged, until
	// stop is closed, the connection fails, or (limit > 0) every seq up to
	// limit is acknowledged. It returns after the first failure.
	var total atomic.Int64
	var maxInFlight atomic.Int64
	run := func(addr, sid string, limit uint64, stop <-chan struct{}) error {
		s, err := dialWindowStation(addr, sid, secrets[sid])
		if err != nil {
			return err
		}
		defer s.close()
		st := states[sid]
		st.mu.Lock()
		seq := st.next
		st.mu.Unlock()
		var inflight []uint64 // seqs sent and not acknowledged, oldest first
		for {
			for len(inflight) < window && (limit == 0 || seq <= limit) {
				err := s.write(mpackets.Packet{
					FixedHeader: mpackets.FixedHeader{Type: mpackets.Publish, Qos: 1},
					TopicName:   wire.Topic(sid, wire.KindTelemetry),
					PacketID:    packetID(seq),
					Payload:     telemetryFor(sid, boot(sid), seq, slots),
				})
				if err != nil {
					return err
				}
				inflight = append(inflight, seq)
				seq++
			}
			if n := int64(len(inflight)); n > maxInFlight.Load() {
				maxInFlight.Store(n) // only a statistic
			}
			if len(inflight) == 0 {
				return nil // limit reached, all acknowledged
			}
			select {
			case <-stop:
				return nil
			case err := <-s.readErr:
				return err
			case id := <-s.acks:
				st.mu.Lock()
				if id != packetID(inflight[0]) {
					st.disorder = append(st.disorder, fmt.Sprintf("PUBACK id %d while seq %d (id %d) was the oldest unacknowledged", id, inflight[0], packetID(inflight[0])))
					st.mu.Unlock()
					return errors.New("PUBACK out of order")
				}
				st.acked[inflight[0]] = true
				st.next = inflight[0] + 1
				st.mu.Unlock()
				inflight = inflight[1:]
				total.Add(1)
			}
		}
	}

	var wg sync.WaitGroup
	var ackedAtKill []int64
	for c := range crashes {
		if c > 0 {
			p = startSwapd(t, dir, env...)
		}
		stop := make(chan struct{})
		for _, id := range ids {
			wg.Go(func() { _ = run(p.mqtt, id, 0, stop) })
		}
		goal := int64((c + 1) * killEvery)
		testwait.For(t, 15*time.Second, "acknowledged telemetry before the kill", func() bool { return total.Load() >= goal })
		p.kill()
		close(stop)
		wg.Wait()
		ackedAtKill = append(ackedAtKill, total.Load())
		checkDB(t, filepath.Join(dir, "swapd.db")) // consistent after the kill
	}

	// Last restart: each station resends from its first unacknowledged seq
	// and publishes a few more, all acknowledged.
	p = startSwapd(t, dir, env...)
	errs := make(chan error, stations)
	for _, id := range ids {
		st := states[id]
		st.mu.Lock()
		limit := st.next + after
		st.mu.Unlock()
		wg.Go(func() { errs <- run(p.mqtt, id, limit, nil) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("publishing after the restart: %v", err)
		}
	}
	p.stop(t)

	frames := checkDB(t, filepath.Join(dir, "swapd.db"))
	added := map[string]int{}
	for _, f := range frames {
		if f.Type == wire.TypeBatteryAdded {
			added[f.BatteryID]++
		}
	}
	var acked int
	for _, id := range ids {
		st := states[id]
		st.mu.Lock()
		for _, d := range st.disorder {
			t.Errorf("%s: %s", id, d)
		}
		for seq := range st.next {
			if seq == 0 {
				continue
			}
			if !st.acked[seq] {
				t.Errorf("%s seq %d below the first unacknowledged seq %d was never acknowledged", id, seq, st.next)
			}
		}
		for seq := range st.acked {
			acked++
			if seq == 1 {
				continue // the first report sets the slots without battery_added
			}
			switch n := added[batteryFor(id, seq)]; {
			case n == 0:
				t.Errorf("%s seq %d was acknowledged but its battery_added is not in the log", id, seq)
			case n > 1:
				t.Errorf("%s seq %d: battery_added %d times", id, seq, n)
			}
		}
		st.mu.Unlock()
	}
	for b, n := range added {
		if n > 1 {
			t.Errorf("battery %s added %d times", b, n)
		}
	}
	t.Logf("pipelined crash: %d stations, window %d (%d reached), %d SIGKILLs with %v acknowledged at each, %d acknowledged in all, %d events in the log",
		stations, window, maxInFlight.Load(), crashes, ackedAtKill, acked, len(frames))
}
