package realtime

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/swapbridge/swapbridge/store"
)

// maxSpareItems bounds the queue array a connection keeps for reuse, so a
// connection that once had a burst does not hold its memory while idle.
const maxSpareItems = 16

// closeGrace is how long the writer waits for the client's close reply after
// sending a close frame, before closing the TCP connection.
const closeGrace = time.Second

type connState uint8

const (
	stateOpen    connState = iota // subscribed; events queue up
	stateClosing                  // a close frame is pending; nothing more is queued
	stateClosed                   // the socket is closed
)

// item is one queued text frame, header included (an event's frame is
// shared by every connection it goes to). seq is the event's seq (0 for
// replies such as pong and error).
type item struct {
	seq  uint64
	data []byte
}

// client is one WebSocket connection. It has at most two goroutines: the
// reader, for the life of the connection, and the writer, started when
// something is queued and ended when the queue is empty, so an idle
// connection has one parked goroutine and no buffers but gorilla's small read
// buffer.
//
// Until the handshake (hello, replay or snapshot) is written, the handler
// goroutine is the only writer and live events accumulate in the queue;
// started marks the hand-over to the writer.
type client struct {
	hub        *Hub
	ch         store.Channel
	ip         string
	uid        string // the authenticated user, if any
	conn       net.Conn
	ws         *websocket.Conn // reading only; every write goes through the writer
	readerDone chan struct{}

	mu          sync.Mutex
	state       connState
	started     bool // the handshake is written; the writer may run
	writing     bool // a writer goroutine is running
	queue       []item
	spare       []item
	qbytes      int
	pingDue     bool
	pongDue     bool
	pongData    []byte
	closeCode   int // 0: close without a close frame
	closeReason string
	pingTimer   *time.Timer
	burst       uint64 // the shard delivery that queued the last event
	// lastSeq is the newest event seq queued or written (by the handshake):
	// an event at or below it is one the client has or will have, which a
	// shard may still deliver when the replay read it from the log first.
	lastSeq uint64
}

// enqueueReply frames and adds a reply message (pong, error); a client over
// its queue bounds is closed with 1013. It never blocks on the network.
func (c *client) enqueueReply(msg []byte) {
	f := textFrame(msg)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.enqueueLocked(0, f, true)
}

// burstLimit is how far one burst may take a queue past its bounds (as a
// multiple of them) before the client is closed anyway.
const burstLimit = 8

// enqueueEvent adds an event's frame (header included) of the shard
// delivery numbered burst (one or more commits' events). The queue bounds
// apply when a burst begins: a client that still holds more than they
// allow when the next events arrive is slow and is closed with 1013.
// Within a burst the queue may grow to burstLimit times the bounds, so
// that one large commit (thousands of events handed over at once) never
// closes a client that keeps up.
func (c *client) enqueueEvent(seq uint64, data []byte, burst uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	start := c.burst != burst
	c.burst = burst
	c.enqueueLocked(seq, data, start)
}

func (c *client) enqueueLocked(seq uint64, data []byte, check bool) {
	if c.state != stateOpen {
		return
	}
	if seq != 0 {
		if seq <= c.lastSeq {
			return
		}
		c.lastSeq = seq
	}
	cfg := &c.hub.cfg
	limit := 1
	if !check {
		limit = burstLimit
	}
	if len(c.queue) >= limit*cfg.QueueMessages || c.qbytes+len(data) > limit*cfg.QueueBytes {
		clear(c.queue)
		c.queue = c.queue[:0]
		c.qbytes = 0
		c.hub.m.slowCloses.Inc()
		c.hub.log.Info("ws slow client closed", "channel", channelName(c.ch), "ip", c.ip)
		c.startCloseLocked(websocket.CloseTryAgainLater,
			fmt.Sprintf("slow consumer: over %d messages or %d bytes queued; reconnect with since", cfg.QueueMessages, cfg.QueueBytes))
		return
	}
	c.queue = append(c.queue, item{seq: seq, data: data})
	c.qbytes += len(data)
	c.kickLocked()
}

// close starts a graceful close with code and reason.
func (c *client) close(code int, reason string) {
	c.mu.Lock()
	c.startCloseLocked(code, reason)
	c.mu.Unlock()
}

// open reports whether the connection is neither closing nor closed.
func (c *client) open() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state == stateOpen
}

// abandon drops everything queued and starts a close: for a handshake that
// failed, after which queued live events would leave a gap.
func (c *client) abandon(code int, reason string) {
	c.mu.Lock()
	clear(c.queue)
	c.queue = c.queue[:0]
	c.qbytes = 0
	c.startCloseLocked(code, reason)
	c.mu.Unlock()
}

func (c *client) startCloseLocked(code int, reason string) {
	if c.state != stateOpen {
		return
	}
	c.state = stateClosing
	c.closeCode, c.closeReason = code, reason
	if c.pingTimer != nil {
		c.pingTimer.Stop()
	}
	c.kickLocked()
}

// kickLocked starts the writer if there is one to start.
func (c *client) kickLocked() {
	if !c.started || c.writing || c.state == stateClosed {
		return
	}
	c.writing = true
	c.hub.wg.Add(1)
	go c.writeLoop()
}

// abort closes the socket at once, without a close frame.
func (c *client) abort() {
	c.mu.Lock()
	c.state = stateClosed
	if c.pingTimer != nil {
		c.pingTimer.Stop()
	}
	c.mu.Unlock()
	_ = c.conn.Close()
}

// writeLoop drains the queue in batches, each one write under one deadline,
// and exits when the queue is empty. After a close frame it waits for the
// reader (the client's close reply, at most closeGrace) and closes the socket.
func (c *client) writeLoop() {
	defer c.hub.wg.Done()
	var b *batch
	defer func() {
		if b != nil {
			putBatch(b)
		}
	}()
	for {
		c.mu.Lock()
		items := c.queue
		closing := c.state == stateClosing
		if c.state == stateClosed || (len(items) == 0 && !c.pingDue && !c.pongDue && !closing) {
			c.writing = false
			c.mu.Unlock()
			return
		}
		c.queue, c.spare = c.spare[:0], nil
		c.qbytes = 0
		if b == nil {
			b = getBatch()
		}
		b.reset()
		for _, it := range items {
			b.framed(it.data)
		}
		if c.pongDue {
			b.control(opPong, c.pongData)
			c.pongDue, c.pongData = false, nil
		}
		if c.pingDue {
			b.control(opPing, nil)
			c.pingDue = false
		}
		if closing && c.closeCode != 0 {
			b.closeFrame(c.closeCode, c.closeReason)
		}
		c.mu.Unlock()

		_ = c.conn.SetWriteDeadline(time.Now().Add(c.hub.cfg.WriteTimeout))
		err := b.writeTo(c.conn)
		if len(items) > 0 {
			c.hub.m.framesSent.Add(float64(len(items)))
			c.hub.m.queueDepth.Observe(float64(len(items)))
		}
		clear(items)
		c.mu.Lock()
		if c.spare == nil && cap(items) <= maxSpareItems {
			c.spare = items[:0]
		}
		c.mu.Unlock()
		if err != nil {
			c.hub.log.Debug("ws write failed", "channel", channelName(c.ch), "ip", c.ip, "err", err)
			c.mu.Lock()
			c.writing = false
			c.mu.Unlock()
			c.abort()
			return
		}
		if closing {
			c.mu.Lock()
			_ = c.conn.SetReadDeadline(time.Now().Add(closeGrace))
			c.mu.Unlock()
			<-c.readerDone
			c.mu.Lock()
			c.writing = false
			c.mu.Unlock()
			c.abort()
			return
		}
	}
}

// extendReadLocked pushes the read deadline one ping period plus the pong
// timeout ahead, unless the connection is closing.
func (c *client) extendReadLocked() {
	if c.state == stateOpen {
		_ = c.conn.SetReadDeadline(time.Now().Add(c.hub.cfg.PingInterval + c.hub.cfg.PongTimeout))
	}
}

// onPingTimer queues a protocol ping and re-arms the timer.
func (c *client) onPingTimer() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateOpen {
		return
	}
	c.pingDue = true
	c.kickLocked()
	c.pingTimer.Reset(c.hub.cfg.PingInterval)
}

// readLoop reads client messages until the connection ends, answers each
// one (pong or error), and then unregisters the client.
func (c *client) readLoop() {
	defer c.hub.wg.Done()
	ws := c.ws
	ws.SetReadLimit(c.hub.cfg.hardReadLimit())
	ws.SetPingHandler(func(data string) error {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.extendReadLocked()
		if c.state == stateOpen {
			c.pongDue, c.pongData = true, []byte(data)
			c.kickLocked()
		}
		return nil
	})
	ws.SetPongHandler(func(string) error {
		c.mu.Lock()
		c.extendReadLocked()
		c.mu.Unlock()
		return nil
	})
	// The writer answers a client's close frame (see finish).
	ws.SetCloseHandler(func(int, string) error { return nil })

	limit := c.hub.cfg.ReadLimit
	var err error
	for {
		c.mu.Lock()
		c.extendReadLocked()
		c.mu.Unlock()
		var (
			mt int
			r  io.Reader
		)
		mt, r, err = ws.NextReader()
		if err != nil {
			break
		}
		bp := c.hub.readPool.Get().(*[]byte)
		buf := (*bp)[:limit+1]
		n, rerr := io.ReadFull(r, buf)
		tooLarge := false
		switch rerr {
		case nil:
			tooLarge = true
			_, rerr = io.Copy(io.Discard, r)
		case io.EOF, io.ErrUnexpectedEOF:
			rerr = nil
		}
		if rerr != nil {
			c.hub.readPool.Put(bp)
			err = rerr
			break
		}
		reply := clientReply(mt, buf[:n], tooLarge, time.Now())
		c.hub.readPool.Put(bp)
		c.enqueueReply(reply)
	}
	c.finish(err)
}

// finish runs when the reader ends: it starts the close (echoing a client's
// close, or 1008 after a ping timeout), releases the reader's hold on the
// writer and unregisters the client.
func (c *client) finish(err error) {
	code, reason := 0, ""
	var ce *websocket.CloseError
	var ne net.Error
	switch {
	case errors.As(err, &ce):
		code = websocket.CloseNormalClosure
	case errors.As(err, &ne) && ne.Timeout():
		code, reason = websocket.ClosePolicyViolation, "ping timeout"
	}
	c.hub.log.Debug("ws reader done", "channel", channelName(c.ch), "ip", c.ip, "err", err)
	c.mu.Lock()
	c.startCloseLocked(code, reason)
	c.mu.Unlock()
	close(c.readerDone)
	c.hub.unregister(c)
}
