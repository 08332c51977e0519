package realtime

import (
	"encoding/binary"
	"net"
	"sync"
)

// Server frames are never masked (RFC 6455 §5.1), so the hub frames its
// messages itself. A committed event is framed once (header + the event's
// Data, see fanout.go) and that frame is shared by every connection it goes
// to; the handshake's hello, replay and snapshot frames are the
// connection's own. A batch of queued frames goes out in one write, under
// one write deadline.

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

// batch collects frames for one write: the frames are copied into one
// buffer, which is written with a single Write. Batches are pooled, so an
// idle connection holds none, and a single Write keeps frames whole even if
// another goroutine writes to the socket (gorilla answers protocol errors
// from the reader). Copying a few KiB costs less than a syscall, and writev
// would keep an iovec array cached per socket.
type batch struct {
	buf []byte
	n   int // frames in the batch
}

// maxPooledBatch bounds the buffers kept in the pool.
const maxPooledBatch = 256 << 10

var batchPool = sync.Pool{New: func() any { return &batch{buf: make([]byte, 0, 512)} }}

func getBatch() *batch { return batchPool.Get().(*batch) }

func putBatch(b *batch) {
	if cap(b.buf) > maxPooledBatch {
		return
	}
	b.reset()
	batchPool.Put(b)
}

func (b *batch) reset() {
	b.buf = b.buf[:0]
	b.n = 0
}

// text adds a text frame.
func (b *batch) text(payload []byte) {
	b.buf = appendFrameHeader(b.buf, opText, len(payload))
	b.buf = append(b.buf, payload...)
	b.n++
}

// framed adds a frame that already has its header.
func (b *batch) framed(f []byte) {
	b.buf = append(b.buf, f...)
	b.n++
}

// control adds a control frame (ping, pong, close); the payload is cut to
// 125 bytes.
func (b *batch) control(op byte, payload []byte) {
	if len(payload) > 125 {
		payload = payload[:125]
	}
	b.buf = appendFrameHeader(b.buf, op, len(payload))
	b.buf = append(b.buf, payload...)
	b.n++
}

// closeFrame adds a close frame with code and reason (cut to fit 125 bytes).
func (b *batch) closeFrame(code int, reason string) {
	var p [125]byte
	binary.BigEndian.PutUint16(p[:2], uint16(code))
	n := 2 + copy(p[2:], reason)
	b.control(opClose, p[:n])
}

// writeTo writes the whole batch to c in one call.
func (b *batch) writeTo(c net.Conn) error {
	if len(b.buf) == 0 {
		return nil
	}
	_, err := c.Write(b.buf)
	return err
}
