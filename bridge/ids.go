package bridge

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"time"
)

// newID returns a unique id: the prefix, then the creation time in
// nanoseconds and 40 random bits, in sortable base32 (ids of one prefix sort
// by creation time).
func newID(prefix string, now time.Time) string {
	var buf [13]byte
	binary.BigEndian.PutUint64(buf[:8], uint64(now.UnixNano()))
	_, _ = rand.Read(buf[8:])
	return prefix + idEnc.EncodeToString(buf[:])
}

var idEnc = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)
