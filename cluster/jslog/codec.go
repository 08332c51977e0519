package jslog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/swapbridge/swapbridge/internal/commitlog"
)

// A commit group is one stream message: a version byte, then its commits
// one after the other, each
//
//	flags(1: 1 Reopen, 2 RemoveStation) | uvarint(records) | records | uvarint(events) | events
//	record: str(kind) | str(key) | present(1) | bytes(value)
//	event:  str(type) | varint(unix nanos) | str(station) | str(user) | bytes(fields)
//
// where str and bytes are a uvarint length and the bytes. The station is
// the message's subject; the writer (node and incarnation) is a header.
const groupVersion = 1

const (
	flagReopen = 1 << iota
	flagRemove
)

var errCorrupt = errors.New("jslog: corrupt commit group")

func appendBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

func appendStr(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// appendCommit encodes c.
func appendCommit(dst []byte, c *commitlog.Commit) []byte {
	var flags byte
	if c.Reopen {
		flags |= flagReopen
	}
	if c.RemoveStation {
		flags |= flagRemove
	}
	dst = append(dst, flags)
	dst = binary.AppendUvarint(dst, uint64(len(c.Records)))
	for _, r := range c.Records {
		dst = appendStr(dst, string(r.Kind))
		dst = appendStr(dst, r.Key)
		if r.Value == nil {
			dst = append(dst, 0)
			continue
		}
		dst = append(dst, 1)
		dst = appendBytes(dst, r.Value)
	}
	dst = binary.AppendUvarint(dst, uint64(len(c.Events)))
	for _, e := range c.Events {
		dst = appendStr(dst, e.Type)
		t := e.Time
		if t.IsZero() {
			t = time.Now()
		}
		dst = binary.AppendVarint(dst, t.UnixNano())
		dst = appendStr(dst, e.StationID)
		dst = appendStr(dst, e.UserID)
		dst = appendBytes(dst, e.Fields)
	}
	return dst
}

// decoder reads a group; its slices point into the message.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errCorrupt
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errCorrupt
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) == 0 {
		d.err = errCorrupt
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.b)) {
		d.err = errCorrupt
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

// decodeGroup returns the commits of a group (Station unset).
func decodeGroup(b []byte) ([]commitlog.Commit, error) {
	if len(b) == 0 || b[0] != groupVersion {
		return nil, fmt.Errorf("%w: version", errCorrupt)
	}
	d := &decoder{b: b[1:]}
	var out []commitlog.Commit
	for len(d.b) > 0 && d.err == nil {
		var c commitlog.Commit
		flags := d.byte()
		c.Reopen, c.RemoveStation = flags&flagReopen != 0, flags&flagRemove != 0
		n := d.uvarint()
		if n > uint64(len(d.b)) {
			return nil, errCorrupt
		}
		c.Records = make([]commitlog.Record, 0, n)
		for range n {
			r := commitlog.Record{Kind: commitlog.Kind(d.bytes()), Key: string(d.bytes())}
			if d.byte() == 1 {
				r.Value = d.bytes()
			}
			c.Records = append(c.Records, r)
		}
		n = d.uvarint()
		if n > uint64(len(d.b)) {
			return nil, errCorrupt
		}
		c.Events = make([]commitlog.Event, 0, n)
		for range n {
			e := commitlog.Event{Type: string(d.bytes())}
			e.Time = time.Unix(0, d.varint()).UTC()
			e.StationID = string(d.bytes())
			e.UserID = string(d.bytes())
			e.Fields = d.bytes()
			c.Events = append(c.Events, e)
		}
		out = append(out, c)
	}
	if d.err != nil {
		return nil, d.err
	}
	return out, nil
}
