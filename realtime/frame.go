package realtime

import (
	"encoding/binary"
	"net"
	"sync"
)

// Server frames are never masked (RFC 6455 §5.1), so the hub frames its
// messages itself: the header is a few bytes per connection and the payload
// is the event's Data, shared by every connection. A batch of queued frames
// goes out in one write (writev on TCP), under one write deadline.

// WebSocket opcodes used by the writer.
const (
	opText  = 0x1
	opClose = 0x8
	opPing  = 0x9
	opPong  = 0xA
)

func appendFrameHeader(dst []byte, op byte, n int) []byte {
	dst = append(dst, 0x80|op) // FIN + opcode
	switch {
	case n < 126:
		return append(dst, byte(n))
	case n <= 0xFFFF:
		return append(dst, 126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 127)
		return binary.BigEndian.AppendUint64(dst, uint64(n))
	}
}

// batch collects frames for one write. Batches are pooled so an idle
// connection holds none.
type batch struct {
	hdr   []byte // frame headers and small control payloads
	parts []part
	bufs  net.Buffers
	flat  []byte
	n     int // frames in the batch
}

// part is a header range in hdr followed by an optional shared payload.
type part struct {
	start, end int
	payload    []byte
}

var batchPool = sync.Pool{New: func() any { return new(batch) }}

func (b *batch) reset() {
	b.hdr = b.hdr[:0]
	clear(b.parts)
	b.parts = b.parts[:0]
	b.n = 0
}

// text adds a text frame whose payload is shared (not copied).
func (b *batch) text(payload []byte) {
	s := len(b.hdr)
	b.hdr = appendFrameHeader(b.hdr, opText, len(payload))
	b.parts = append(b.parts, part{start: s, end: len(b.hdr), payload: payload})
	b.n++
}

// control adds a control frame (ping, pong, close); payload ≤ 125 bytes is
// copied.
func (b *batch) control(op byte, payload []byte) {
	if len(payload) > 125 {
		payload = payload[:125]
	}
	s := len(b.hdr)
	b.hdr = appendFrameHeader(b.hdr, op, len(payload))
	b.hdr = append(b.hdr, payload...)
	b.parts = append(b.parts, part{start: s, end: len(b.hdr)})
	b.n++
}

// closeFrame adds a close frame with code and reason (cut to fit 125 bytes).
func (b *batch) closeFrame(code int, reason string) {
	var p [125]byte
	binary.BigEndian.PutUint16(p[:2], uint16(code))
	n := 2 + copy(p[2:], reason)
	b.control(opClose, p[:n])
}

// writeTo writes the whole batch to c in one call: writev on TCP and Unix
// sockets, a single Write of a flattened copy otherwise (so another writer on
// a TLS connection can never interleave inside a frame).
func (b *batch) writeTo(c net.Conn) error {
	if len(b.parts) == 0 {
		return nil
	}
	switch c.(type) {
	case *net.TCPConn, *net.UnixConn:
		b.bufs = b.bufs[:0]
		for _, p := range b.parts {
			b.bufs = append(b.bufs, b.hdr[p.start:p.end])
			if len(p.payload) > 0 {
				b.bufs = append(b.bufs, p.payload)
			}
		}
		bufs := b.bufs
		_, err := bufs.WriteTo(c)
		clear(b.bufs)
		return err
	}
	b.flat = b.flat[:0]
	for _, p := range b.parts {
		b.flat = append(b.flat, b.hdr[p.start:p.end]...)
		b.flat = append(b.flat, p.payload...)
	}
	_, err := c.Write(b.flat)
	if cap(b.flat) > 1<<20 {
		b.flat = nil // do not pool huge buffers
	}
	return err
}
