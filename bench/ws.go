package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/swapbridge/swapbridge/wire"
)

type wsKind int

const (
	wsAll     wsKind = iota // /ws/stations/
	wsStation               // /ws/stations/{sid}/
	wsUser                  // /ws/notifications/
)

// wsClient is one app client's socket. Its reader goroutine matches every
// live inventory_update to the telemetry step that caused it and records
// the publish→frame latency.
type wsClient struct {
	run  *runner
	kind wsKind
	st   *station // wsStation
	user *user    // wsUser
	conn *websocket.Conn

	// cursors[i] is the last step of station i (wsAll) or of st (wsStation,
	// index 0) matched by a frame. Only the reader goroutine touches them.
	cursors []uint64

	frames    atomic.Uint64 // live station events received
	delivered atomic.Uint64 // inventory_updates matched to a step
	unmatched atomic.Uint64 // inventory_updates that matched no step
	lost      atomic.Uint64 // steps skipped over by a later match

	closing atomic.Bool
	done    chan struct{}
}

var wsDialer = websocket.Dialer{HandshakeTimeout: 15 * time.Second, ReadBufferSize: 4096, WriteBufferSize: 512}

// dialWS opens a socket, reads the hello and starts the reader goroutine.
func (r *runner) dialWS(ctx context.Context, kind wsKind, st *station, u *user) (*wsClient, error) {
	base := r.tgt.wsBase
	var url string
	hdr := http.Header{}
	switch kind {
	case wsAll:
		url = base + "/ws/stations/"
	case wsStation:
		url = base + "/ws/stations/" + st.id + "/"
	case wsUser:
		url = base + "/ws/notifications/"
		hdr.Set("Authorization", "Bearer "+u.token)
	}
	conn, resp, err := wsDialer.DialContext(ctx, url, hdr)
	if err != nil {
		if resp != nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			return nil, fmt.Errorf("websocket %s: %v: %s", url, err, bytes.TrimSpace(b))
		}
		return nil, fmt.Errorf("websocket %s: %w", url, err)
	}
	c := &wsClient{run: r, kind: kind, st: st, user: u, conn: conn, done: make(chan struct{})}
	switch kind {
	case wsAll:
		c.cursors = make([]uint64, len(r.stations))
	case wsStation:
		c.cursors = make([]uint64, 1)
	}
	conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	_, msg, err := conn.ReadMessage()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("websocket %s: no hello: %w", url, err)
	}
	if !bytes.HasPrefix(msg, []byte(`{"type":"hello"`)) {
		conn.Close()
		return nil, fmt.Errorf("websocket %s: first message is not a hello: %.120s", url, msg)
	}
	conn.SetReadDeadline(time.Time{})
	// Server pings are answered by gorilla's default ping handler while
	// the reader runs.
	go c.readLoop()
	return c, nil
}

// close closes the socket and waits for the reader. Idempotent.
func (c *wsClient) close() {
	if c.closing.CompareAndSwap(false, true) {
		c.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		c.conn.Close()
	}
	<-c.done
}

func (c *wsClient) readLoop() {
	defer close(c.done)
	var buf bytes.Buffer
	for {
		_, rd, err := c.conn.NextReader()
		if err != nil {
			if !c.closing.Load() {
				c.run.errorf("websocket %s closed by server: %v", c.name(), err)
			}
			return
		}
		buf.Reset()
		if _, err := buf.ReadFrom(rd); err != nil {
			if !c.closing.Load() {
				c.run.errorf("websocket %s: read: %v", c.name(), err)
			}
			return
		}
		c.handle(buf.Bytes(), time.Now())
	}
}

func (c *wsClient) name() string {
	switch c.kind {
	case wsStation:
		return "station:" + c.st.id
	case wsUser:
		return "user:" + c.user.id
	}
	return "stations"
}

// field returns the string value of key (given as `"key":"`) in frame.
func field(frame []byte, key string) []byte {
	i := bytes.Index(frame, []byte(key))
	if i < 0 {
		return nil
	}
	v := frame[i+len(key):]
	j := bytes.IndexByte(v, '"')
	if j < 0 {
		return nil
	}
	return v[:j]
}

// intField returns the integer value of key (given as `"key":`) in frame.
func intField(frame []byte, key string) (int, bool) {
	i := bytes.Index(frame, []byte(key))
	if i < 0 {
		return 0, false
	}
	v := frame[i+len(key):]
	j := 0
	for j < len(v) && v[j] >= '0' && v[j] <= '9' {
		j++
	}
	n, err := strconv.Atoi(string(v[:j]))
	return n, err == nil
}

func (c *wsClient) handle(frame []byte, now time.Time) {
	typ := field(frame, `"type":"`)
	switch string(typ) {
	case wire.TypeInventoryUpdate:
		if bytes.Contains(frame, []byte(`"snapshot":true`)) {
			return
		}
		c.frames.Add(1)
		st := c.run.byID[string(field(frame, `"station_id":"`))]
		avail, ok := intField(frame, `"available_batteries":`)
		if st == nil || !ok {
			c.unmatched.Add(1)
			return
		}
		var cur *uint64
		switch c.kind {
		case wsAll:
			cur = &c.cursors[st.idx]
		case wsStation:
			if st != c.st {
				c.unmatched.Add(1)
				return
			}
			cur = &c.cursors[0]
		default:
			c.unmatched.Add(1)
			return
		}
		c.match(st, cur, avail, now)
	case wire.TypeBookingConfirmed, wire.TypeBookingReady:
		if c.user != nil {
			c.user.event(string(typ), string(field(frame, `"booking_id":"`)), now)
		}
	case wire.TypeError:
		c.run.errorf("websocket %s: error frame: %.200s", c.name(), frame)
	case wire.TypeBatteryBooked, wire.TypeBatteryCollected, wire.TypeBatteryAdded, wire.TypeStationStatus, wire.TypeBatteryRemoved, wire.TypeNotification:
		c.frames.Add(1)
	}
}

// match finds the step of st a frame carrying available_batteries = avail
// reports: the first step after *cur whose walk position gives that count.
// Events of one station arrive in order, and consecutive steps differ by
// one, so a single lost event never makes a later one match the wrong step.
func (c *wsClient) match(st *station, cur *uint64, avail int, now time.Time) {
	if st.toggle == 0 {
		return
	}
	sent := st.step.Load()
	limit := *cur + uint64(2*st.toggle)
	for s := *cur + 1; s <= sent && s <= limit; s++ {
		if tri(s, st.toggle) != avail {
			continue
		}
		c.lost.Add(s - *cur - 1)
		*cur = s
		if sent >= s+stepRing {
			c.unmatched.Add(1) // too far behind: the send time is gone
			return
		}
		c.delivered.Add(1)
		c.run.latency().Record(now.Sub(time.Unix(0, st.ring[s%stepRing].Load())))
		if c.run.notify != nil {
			select {
			case c.run.notify <- struct{}{}:
			default:
			}
		}
		return
	}
	c.unmatched.Add(1)
}

// expected returns how many matched events the client should have received
// by now: the acknowledged steps of its stations.
func (c *wsClient) expected() uint64 {
	switch c.kind {
	case wsAll:
		return c.run.acked.Load()
	case wsStation:
		return c.st.acked.Load()
	}
	return 0
}

// user is an app user of the rush scenario, with its bookings in flight.
type user struct {
	id, token string

	mu  sync.Mutex
	bks map[string]*pendingBooking
}

type pendingBooking struct {
	confirmed, ready time.Time
	readyCh          chan struct{}
}

// get returns the booking's record, creating it: its frames may arrive
// before the HTTP answer that names it.
func (u *user) get(id string) *pendingBooking {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.bks == nil {
		u.bks = make(map[string]*pendingBooking)
	}
	b := u.bks[id]
	if b == nil {
		b = &pendingBooking{readyCh: make(chan struct{})}
		u.bks[id] = b
	}
	return b
}

func (u *user) forget(id string) {
	u.mu.Lock()
	delete(u.bks, id)
	u.mu.Unlock()
}

func (u *user) event(typ, id string, now time.Time) {
	if id == "" {
		return
	}
	b := u.get(id)
	u.mu.Lock()
	defer u.mu.Unlock()
	switch typ {
	case wire.TypeBookingConfirmed:
		if b.confirmed.IsZero() {
			b.confirmed = now
		}
	case wire.TypeBookingReady:
		if b.ready.IsZero() {
			b.ready = now
			close(b.readyCh)
		}
	}
}
