package bench

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// The bench's own minimal MQTT 3.1.1 client: CONNECT/CONNACK,
// PUBLISH QoS 0/1 with PUBACK, SUBSCRIBE/SUBACK, PINGREQ and DISCONNECT, with
// one reader goroutine per connection and writes done by the caller. A
// general client keeps several goroutines, timers and stores per connection;
// this one keeps a goroutine, a 1 KiB read buffer and a small write buffer, so
// that 10,000 simulated stations fit on one machine next to the server.

// ErrRefused is returned (wrapped) by dialMQTT when the broker answers
// CONNACK with a non-zero return code.
var ErrRefused = errors.New("mqtt connect refused")

// errClosed is returned by writes on a closed connection.
var errClosed = errors.New("mqtt connection closed")

// maxInbound bounds a packet from the broker.
const maxInbound = 1 << 20

type mqttOptions struct {
	ClientID, Username, Password string
	Keepalive                    time.Duration // 0: none requested
	CleanSession                 bool
	WillTopic                    string
	WillPayload                  []byte
	WillRetain                   bool
	Timeout                      time.Duration // dial + CONNACK; 0: 10s
	// OnPublish runs on the reader goroutine for every PUBLISH received
	// (after its PUBACK was written); payload is only valid during the call.
	OnPublish func(topic string, payload []byte)
	// OnPuback runs on the reader goroutine for every PUBACK.
	OnPuback func(id uint16)
	// OnClose runs on the reader goroutine when the connection ended, for
	// whatever reason, before Done is closed.
	OnClose func(err error)
}

type mqttConn struct {
	conn net.Conn
	opt  mqttOptions

	wmu    sync.Mutex
	wbuf   []byte
	nextID uint16
	closed bool

	subacks chan uint16
	done    chan struct{}
	err     atomic.Pointer[error]
	once    sync.Once
	// lastWrite is the unix nano time of the last write (for keepalive pings).
	lastWrite atomic.Int64
}

// dialMQTT connects, sends CONNECT and waits for the CONNACK, then starts the
// reader goroutine. Close (or the broker) ends it.
func dialMQTT(ctx context.Context, addr string, o mqttOptions) (*mqttConn, error) {
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	d := net.Dialer{Timeout: o.Timeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("mqtt dial %s: %w", addr, err)
	}
	c := &mqttConn{conn: nc, opt: o, subacks: make(chan uint16, 4), done: make(chan struct{})}
	if err := c.connect(); err != nil {
		nc.Close()
		return nil, err
	}
	go c.readLoop(bufio.NewReaderSize(nc, 1024))
	return c, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func appendRemLen(b []byte, n int) []byte {
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

func (c *mqttConn) connect() error {
	o := &c.opt
	var vh []byte
	vh = appendString(vh, "MQTT")
	vh = append(vh, 4) // 3.1.1
	var flags byte
	if o.CleanSession {
		flags |= 0x02
	}
	if o.WillTopic != "" {
		flags |= 0x04 | 0x08 // will, QoS 1
		if o.WillRetain {
			flags |= 0x20
		}
	}
	if o.Username != "" {
		flags |= 0x80
	}
	if o.Password != "" {
		flags |= 0x40
	}
	vh = append(vh, flags)
	vh = binary.BigEndian.AppendUint16(vh, uint16(o.Keepalive/time.Second))
	vh = appendString(vh, o.ClientID)
	if o.WillTopic != "" {
		vh = appendString(vh, o.WillTopic)
		vh = binary.BigEndian.AppendUint16(vh, uint16(len(o.WillPayload)))
		vh = append(vh, o.WillPayload...)
	}
	if o.Username != "" {
		vh = appendString(vh, o.Username)
	}
	if o.Password != "" {
		vh = appendString(vh, o.Password)
	}
	pk := appendRemLen([]byte{0x10}, len(vh))
	pk = append(pk, vh...)
	deadline := time.Now().Add(o.Timeout)
	c.conn.SetDeadline(deadline)
	defer c.conn.SetDeadline(time.Time{})
	if _, err := c.conn.Write(pk); err != nil {
		return fmt.Errorf("mqtt connect %s: %w", o.ClientID, err)
	}
	var ack [4]byte
	if _, err := io.ReadFull(c.conn, ack[:]); err != nil {
		return fmt.Errorf("mqtt connack %s: %w", o.ClientID, err)
	}
	if ack[0] != 0x20 || ack[1] != 2 {
		return fmt.Errorf("mqtt connack %s: unexpected packet % x", o.ClientID, ack)
	}
	if ack[3] != 0 {
		return fmt.Errorf("%w: %s: return code %d", ErrRefused, o.ClientID, ack[3])
	}
	c.lastWrite.Store(time.Now().UnixNano())
	return nil
}

// write sends one packet built by fill under the write lock.
func (c *mqttConn) write(fill func(b []byte) []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed {
		return errClosed
	}
	c.wbuf = fill(c.wbuf[:0])
	c.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := c.conn.Write(c.wbuf)
	if err != nil {
		return fmt.Errorf("mqtt write %s: %w", c.opt.ClientID, err)
	}
	if cap(c.wbuf) > 16<<10 {
		c.wbuf = nil // keep idle connections small after a large snapshot
	}
	c.lastWrite.Store(time.Now().UnixNano())
	return nil
}

// publish sends a PUBLISH; for QoS 1 it returns the packet id, whose PUBACK
// reaches OnPuback. pre, when not nil, is called with the packet id under
// the write lock before the packet is written, so that bookkeeping is in
// place before the PUBACK can arrive.
func (c *mqttConn) publish(topic string, qos byte, retain bool, payload []byte, pre func(id uint16)) (uint16, error) {
	var id uint16
	err := c.write(func(b []byte) []byte {
		h := byte(0x30) | qos<<1
		if retain {
			h |= 0x01
		}
		n := 2 + len(topic) + len(payload)
		if qos > 0 {
			c.nextID++
			if c.nextID == 0 {
				c.nextID = 1
			}
			id = c.nextID
			n += 2
		}
		if pre != nil {
			pre(id)
		}
		b = append(b, h)
		b = appendRemLen(b, n)
		b = appendString(b, topic)
		if qos > 0 {
			b = binary.BigEndian.AppendUint16(b, id)
		}
		return append(b, payload...)
	})
	return id, err
}

// subscribe subscribes to one filter at QoS 1 and waits for the SUBACK.
func (c *mqttConn) subscribe(filter string, timeout time.Duration) error {
	var id uint16
	err := c.write(func(b []byte) []byte {
		c.nextID++
		if c.nextID == 0 {
			c.nextID = 1
		}
		id = c.nextID
		b = append(b, 0x82)
		b = appendRemLen(b, 2+2+len(filter)+1)
		b = binary.BigEndian.AppendUint16(b, id)
		b = appendString(b, filter)
		return append(b, 1)
	})
	if err != nil {
		return err
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case got := <-c.subacks:
			if got == id {
				return nil
			}
		case <-c.done:
			return fmt.Errorf("mqtt subscribe %s: %w", filter, c.Err())
		case <-t.C:
			return fmt.Errorf("mqtt subscribe %s: no SUBACK within %v", filter, timeout)
		}
	}
}

// ping sends PINGREQ.
func (c *mqttConn) ping() error {
	return c.write(func(b []byte) []byte { return append(b, 0xC0, 0) })
}

// disconnect sends DISCONNECT (no Will) and closes.
func (c *mqttConn) disconnect() {
	_ = c.write(func(b []byte) []byte { return append(b, 0xE0, 0) })
	c.Close()
}

// Close closes the socket (abruptly: the broker sends the Will) and waits
// for the reader goroutine. It is idempotent.
func (c *mqttConn) Close() error {
	c.wmu.Lock()
	c.closed = true
	c.wmu.Unlock()
	c.once.Do(func() { c.conn.Close() })
	<-c.done
	return nil
}

// Done is closed when the reader goroutine has ended.
func (c *mqttConn) Done() <-chan struct{} { return c.done }

// Err is why the connection ended (nil while it is up).
func (c *mqttConn) Err() error {
	if p := c.err.Load(); p != nil {
		return *p
	}
	return nil
}

func (c *mqttConn) readLoop(r *bufio.Reader) {
	defer close(c.done)
	err := c.read(r)
	c.err.Store(&err)
	c.wmu.Lock()
	c.closed = true
	c.wmu.Unlock()
	c.once.Do(func() { c.conn.Close() })
	if c.opt.OnClose != nil {
		c.opt.OnClose(err)
	}
}

func (c *mqttConn) read(r *bufio.Reader) error {
	var body []byte
	for {
		h, err := r.ReadByte()
		if err != nil {
			return err
		}
		n, err := readRemLen(r)
		if err != nil {
			return err
		}
		if n > maxInbound {
			return fmt.Errorf("mqtt: packet of %d bytes from broker exceeds %d", n, maxInbound)
		}
		if cap(body) < n {
			body = make([]byte, n)
		}
		body = body[:n]
		if _, err := io.ReadFull(r, body); err != nil {
			return err
		}
		switch h >> 4 {
		case 4: // PUBACK
			if n < 2 {
				return errors.New("mqtt: short PUBACK")
			}
			if c.opt.OnPuback != nil {
				c.opt.OnPuback(binary.BigEndian.Uint16(body))
			}
		case 3: // PUBLISH
			qos := (h >> 1) & 3
			if n < 2 {
				return errors.New("mqtt: short PUBLISH")
			}
			tl := int(binary.BigEndian.Uint16(body))
			p := 2 + tl
			if p > n {
				return errors.New("mqtt: PUBLISH topic overruns packet")
			}
			topic := string(body[2:p])
			if qos > 0 {
				if p+2 > n {
					return errors.New("mqtt: PUBLISH without packet id")
				}
				id := binary.BigEndian.Uint16(body[p:])
				p += 2
				if err := c.write(func(b []byte) []byte {
					return binary.BigEndian.AppendUint16(append(b, 0x40, 2), id)
				}); err != nil {
					return err
				}
			}
			if c.opt.OnPublish != nil {
				c.opt.OnPublish(topic, body[p:])
			}
		case 9: // SUBACK
			if n < 3 {
				return errors.New("mqtt: short SUBACK")
			}
			if body[2] == 0x80 {
				return errors.New("mqtt: subscription refused")
			}
			select {
			case c.subacks <- binary.BigEndian.Uint16(body):
			default:
			}
		case 13: // PINGRESP
		default:
			return fmt.Errorf("mqtt: unexpected packet type %d from broker", h>>4)
		}
		if cap(body) > 16<<10 {
			body = nil // keep idle connections small after a large packet
		}
	}
}

func readRemLen(r *bufio.Reader) (int, error) {
	n, mul := 0, 1
	for i := 0; i < 4; i++ {
		b, err := r.ReadByte()
		if err != nil {
			return 0, err
		}
		n += int(b&0x7f) * mul
		if b&0x80 == 0 {
			return n, nil
		}
		mul *= 128
	}
	return 0, errors.New("mqtt: malformed remaining length")
}
