package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/swapbridge/swapbridge/wire"
)

// stepRing is how many recent telemetry steps a station remembers the send
// time of; a WebSocket client more than this many events behind a station
// counts the older ones as lost.
const stepRing = 256

// Packet bookkeeping flags in station.pub (low bits of send-time<<2).
const (
	pubStep = 1 // a measured telemetry step
	pubWait = 2 // someone waits for this PUBACK
)

var (
	errNotConnected = errors.New("station not connected")
	errThrottled    = errors.New("station's publish window is full")
)

// station is one simulated station: its credentials, its MQTT connection
// and the telemetry it has sent.
//
// Measured telemetry walks the first `toggle` slots up and down a triangle:
// at step s the first tri(s) of them hold a swappable battery (SoC 95) and
// the others one still charging (SoC 85), so every step changes
// available_batteries by exactly one and the value a frame carries tells
// which step caused it (see wsClient.match).
type station struct {
	idx     int
	id      string
	secret  string
	slots   int
	toggle  int     // slots 1..toggle take part in the walk
	restSoC float64 // SoC of the other slots (rush: 95, swappable)
	run     *runner

	mu     sync.Mutex // wire order of telemetry: conn, bootID, seq, buf
	conn   *mqttConn
	bootID string
	seq    uint64
	buf    []byte

	step     atomic.Uint64 // steps sent
	acked    atomic.Uint64 // steps acknowledged
	ring     [stepRing]atomic.Int64
	inflight atomic.Int32
	pub      [256]atomic.Int64 // by packet id: send ns<<2 | flags

	waitMu  sync.Mutex
	waiters map[uint16]chan struct{}
	// ackNotify, when set, gets a token (without blocking) for every
	// acknowledged step; benchmarks wait on it.
	ackNotify chan struct{}
}

// tri is the number of swappable toggle slots after step s.
func tri(s uint64, k int) int {
	if k <= 0 {
		return 0
	}
	p := int(s % uint64(2*k))
	if p <= k {
		return p
	}
	return 2*k - p
}

func newBootID() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// connect opens the station's MQTT session: CONNECT with a Will (status
// offline, new boot id), SUBSCRIBE to cmd, a retained status online and a
// full telemetry, each waited for.
func (st *station) connect(ctx context.Context, addr string, timeout time.Duration) error {
	boot := newBootID()
	will, _ := json.Marshal(wire.Status{Online: false, BootID: boot})
	c, err := dialMQTT(ctx, addr, mqttOptions{
		ClientID: st.id, Username: st.id, Password: st.secret,
		Keepalive:    2 * time.Minute,
		CleanSession: true,
		WillTopic:    wire.Topic(st.id, wire.KindStatus), WillPayload: will, WillRetain: true,
		Timeout:   timeout,
		OnPublish: st.onCommand,
		OnPuback:  st.onPuback,
		OnClose:   st.onClose,
	})
	if err != nil {
		return err
	}
	if err := c.subscribe(wire.Topic(st.id, wire.KindCmd), timeout); err != nil {
		c.Close()
		return err
	}
	st.mu.Lock()
	st.conn, st.bootID, st.seq = c, boot, 0
	st.inflight.Store(0)
	st.mu.Unlock()
	status, _ := json.Marshal(wire.Status{Online: true, BootID: boot, TS: time.Now(), AgentVersion: "swapbench", Slots: st.slots})
	if err := st.publishWait(wire.KindStatus, status, true, timeout); err != nil {
		return fmt.Errorf("station %s: status: %w", st.id, err)
	}
	if err := st.sendFull(timeout); err != nil {
		return fmt.Errorf("station %s: full telemetry: %w", st.id, err)
	}
	return nil
}

// disconnect ends the session cleanly (DISCONNECT, no Will) or abruptly.
func (st *station) disconnect(clean bool) {
	st.mu.Lock()
	c := st.conn
	st.conn = nil
	st.mu.Unlock()
	if c == nil {
		return
	}
	if clean {
		c.disconnect()
	} else {
		c.Close()
	}
}

// onClose reports a connection that ended without disconnect being called.
func (st *station) onClose(err error) {
	st.mu.Lock()
	lost := st.conn != nil && st.conn.err.Load() != nil // the live connection ended
	if lost {
		st.conn = nil
	}
	st.mu.Unlock()
	if lost {
		st.run.errorf("station %s: connection lost: %v", st.id, err)
	}
}

func (st *station) onPuback(id uint16) {
	v := st.pub[id&255].Swap(0)
	if v == 0 {
		return
	}
	st.inflight.Add(-1)
	now := time.Now().UnixNano()
	if v&pubStep != 0 {
		st.acked.Add(1)
		st.run.acked.Add(1)
		st.run.ackLat.Load().Record(time.Duration(now - v>>2))
		if st.ackNotify != nil {
			select {
			case st.ackNotify <- struct{}{}:
			default:
			}
		}
	}
	if v&pubWait != 0 {
		st.waitMu.Lock()
		ch := st.waiters[id]
		delete(st.waiters, id)
		st.waitMu.Unlock()
		if ch != nil {
			close(ch)
		}
	}
}

// publishLocked publishes on the live connection; st.mu is held. flags are
// pubStep/pubWait; with pubWait the returned channel is closed on PUBACK.
func (st *station) publishLocked(kind wire.TopicKind, payload []byte, retain bool, sent time.Time, flags int64) (chan struct{}, error) {
	if st.conn == nil {
		return nil, errNotConnected
	}
	var ch chan struct{}
	if flags&pubWait != 0 {
		ch = make(chan struct{})
	}
	st.inflight.Add(1)
	_, err := st.conn.publish(wire.Topic(st.id, kind), 1, retain, payload, func(id uint16) {
		if ch != nil {
			st.waitMu.Lock()
			if st.waiters == nil {
				st.waiters = make(map[uint16]chan struct{})
			}
			st.waiters[id] = ch
			st.waitMu.Unlock()
		}
		st.pub[id&255].Store(sent.UnixNano()<<2 | flags)
	})
	if err != nil {
		st.inflight.Add(-1)
		return nil, err
	}
	return ch, nil
}

func (st *station) publishWait(kind wire.TopicKind, payload []byte, retain bool, timeout time.Duration) error {
	st.mu.Lock()
	ch, err := st.publishLocked(kind, payload, retain, time.Now(), pubWait)
	c := st.conn
	st.mu.Unlock()
	if err != nil {
		return err
	}
	return st.waitAck(ch, c, timeout)
}

func (st *station) waitAck(ch chan struct{}, c *mqttConn, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ch:
		return nil
	case <-c.Done():
		return fmt.Errorf("connection lost before PUBACK: %v", c.Err())
	case <-t.C:
		return fmt.Errorf("no PUBACK within %v", timeout)
	}
}

// appendSlot appends slot i's JSON as of step s.
func (st *station) appendSlot(b []byte, i int, s uint64) []byte {
	soc, charging := st.restSoC, st.restSoC < 90
	if i <= st.toggle {
		if i <= tri(s, st.toggle) {
			soc, charging = 95, false
		} else {
			soc, charging = 85, true
		}
	}
	b = append(b, `{"slot":`...)
	b = strconv.AppendInt(b, int64(i), 10)
	b = append(b, `,"battery_id":"B-`...)
	b = append(b, st.id...)
	b = append(b, '-')
	b = strconv.AppendInt(b, int64(i), 10)
	b = append(b, `","soc":`...)
	b = strconv.AppendFloat(b, soc, 'f', -1, 64)
	b = append(b, `,"soh":96,"temp_c":30.5,"voltage_v":52.1,"charging":`...)
	b = strconv.AppendBool(b, charging)
	return append(b, `,"door":"closed","locked":true,"fault":""}`...)
}

// appendTelemetryHead appends {"boot_id":…,"seq":…,"ts":…,"full":…,"slots":[
func (st *station) appendTelemetryHead(b []byte, ts time.Time, full bool) []byte {
	st.seq++
	b = append(b, `{"boot_id":"`...)
	b = append(b, st.bootID...)
	b = append(b, `","seq":`...)
	b = strconv.AppendUint(b, st.seq, 10)
	b = append(b, `,"ts":"`...)
	b = ts.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","full":`...)
	b = strconv.AppendBool(b, full)
	return append(b, `,"slots":[`...)
}

// sendFull publishes a full telemetry of the current state and waits for its
// PUBACK.
func (st *station) sendFull(timeout time.Duration) error {
	st.mu.Lock()
	if st.conn == nil {
		st.mu.Unlock()
		return errNotConnected
	}
	now := time.Now()
	s := st.step.Load()
	b := st.appendTelemetryHead(st.buf[:0], now, true)
	for i := 1; i <= st.slots; i++ {
		if i > 1 {
			b = append(b, ',')
		}
		b = st.appendSlot(b, i, s)
	}
	b = append(b, "]}"...)
	ch, err := st.publishLocked(wire.KindTelemetry, b, false, now, pubWait)
	if cap(b) <= 4<<10 {
		st.buf = b
	}
	c := st.conn
	st.mu.Unlock()
	if err != nil {
		return err
	}
	return st.waitAck(ch, c, timeout)
}

// sendStep publishes the next measured telemetry step: one changed slot.
// It does not wait for the PUBACK; window bounds the unacknowledged
// publishes.
func (st *station) sendStep(window int32) error {
	if st.inflight.Load() >= window {
		return errThrottled
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.conn == nil {
		return errNotConnected
	}
	s := st.step.Load() + 1
	// The slot that changes from step s-1 to s: going up, slot tri(s);
	// going down, slot tri(s)+1.
	p := int(s % uint64(2*st.toggle))
	if p == 0 {
		p = 2 * st.toggle
	}
	slot := p
	if p > st.toggle {
		slot = 2*st.toggle - p + 1
	}
	now := time.Now()
	b := st.appendTelemetryHead(st.buf[:0], now, false)
	b = st.appendSlot(b, slot, s)
	b = append(b, "]}"...)
	st.buf = b
	st.ring[s%stepRing].Store(now.UnixNano())
	st.step.Store(s)
	if _, err := st.publishLocked(wire.KindTelemetry, b, false, now, pubStep); err != nil {
		// The step is lost with the connection; it is never acknowledged, so
		// nobody expects its event.
		return err
	}
	return nil
}

// onCommand answers the server's commands like a station controller with
// simulated hardware: every command is acknowledged at once; snapshot is
// answered with a full telemetry.
func (st *station) onCommand(topic string, payload []byte) {
	var cmd wire.Command
	if err := json.Unmarshal(payload, &cmd); err != nil || cmd.ID == "" {
		st.run.errorf("station %s: undecodable command: %v", st.id, err)
		return
	}
	st.run.countCommand(cmd.Action)
	if cmd.Action == wire.ActionSnapshot {
		// Answered from its own goroutine: this one must keep reading.
		st.run.goStation(func() {
			if err := st.sendFull(10 * time.Second); err != nil && !errors.Is(err, errNotConnected) {
				st.run.errorf("station %s: snapshot: %v", st.id, err)
			}
		})
		return
	}
	ack, _ := json.Marshal(wire.Ack{ID: cmd.ID, OK: true})
	st.mu.Lock()
	_, err := st.publishLocked(wire.KindAck, ack, false, time.Now(), 0)
	st.mu.Unlock()
	if err != nil && !errors.Is(err, errNotConnected) {
		st.run.errorf("station %s: ack %s: %v", st.id, cmd.Action, err)
	}
}
