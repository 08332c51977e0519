package bridge

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"time"
)

// A station's state is written on every telemetry, so its record is a
// compact binary encoding rather than JSON (which took ~8 µs and ~2 KB per
// message for 12 slots). Records written by earlier versions are JSON; the
// decoder tells them apart by the first byte ('{' or whitespace for JSON,
// stateCodecV1 or stateCodecV2 for this format) and reads all three.
//
// Format v1 (uvarint: unsigned LEB128; str: uvarint length + bytes;
// float: the float64's bits byte-reversed as a uvarint, so round values are
// short; time: 0 for the zero time, else 1, varint Unix seconds, uvarint
// nanoseconds):
//
//	0xB1 | flags(online 1, maintenance 2) | str id | str boot | uvarint
//	len(old) | str… | uvarint seq | time seen | time off | str status |
//	6 × uvarint inventory (available, booked, charging, empty, faulted,
//	total) | uvarint len(slots) | slot…
//
// Format v2 (0xB2, written since the unavailable count) is v1 with a
// seventh inventory count, unavailable, after the six.
//
//	slot: flags(known 1, charging 2, locked 4, reservation 8) | str battery
//	| float soc | float soh | float temp | float voltage | str door |
//	str fault | [reservation: str booking | str user | str battery |
//	str status | flags(unlocked 1) | time expires]
const (
	stateCodecV1 = 0xB1
	stateCodecV2 = 0xB2
)

// Bounds the decoder applies to a record, far above anything valid, so a
// corrupt record cannot make it allocate without limit.
const (
	maxDecodedSlots = 1 << 12
	maxDecodedOld   = 1 << 8
)

var errStateRecord = errors.New("corrupt station state record")

// appendState appends st's record to dst.
func appendState(dst []byte, st *stationState) []byte {
	dst = append(dst, stateCodecV2)
	var fl byte
	if st.Online {
		fl |= 1
	}
	if st.Maintenance {
		fl |= 2
	}
	dst = append(dst, fl)
	dst = appendStr(dst, st.ID)
	dst = appendStr(dst, st.BootID)
	dst = binary.AppendUvarint(dst, uint64(len(st.OldBoots)))
	for _, b := range st.OldBoots {
		dst = appendStr(dst, b)
	}
	dst = binary.AppendUvarint(dst, st.Seq)
	dst = appendTime(dst, st.LastSeen)
	dst = appendTime(dst, st.OfflineSince)
	dst = appendStr(dst, st.Status)
	inv := &st.Inv
	for _, n := range [...]int{inv.AvailableBatteries, inv.BookedBatteries, inv.ChargingBatteries, inv.EmptySlots, inv.FaultedSlots, inv.TotalSlots, inv.UnavailableBatteries} {
		dst = binary.AppendUvarint(dst, uint64(max(n, 0)))
	}
	dst = binary.AppendUvarint(dst, uint64(len(st.Slots)))
	for i := range st.Slots {
		s := &st.Slots[i]
		fl = 0
		if s.Known {
			fl |= 1
		}
		if s.Charging {
			fl |= 2
		}
		if s.Locked {
			fl |= 4
		}
		res := s.Res != (reservation{})
		if res {
			fl |= 8
		}
		dst = append(dst, fl)
		dst = appendStr(dst, s.BatteryID)
		dst = appendFloat(dst, s.SoC)
		dst = appendFloat(dst, s.SoH)
		dst = appendFloat(dst, s.TempC)
		dst = appendFloat(dst, s.VoltageV)
		dst = appendStr(dst, s.Door)
		dst = appendStr(dst, s.Fault)
		if res {
			r := &s.Res
			dst = appendStr(dst, r.BookingID)
			dst = appendStr(dst, r.UserID)
			dst = appendStr(dst, r.BatteryID)
			dst = appendStr(dst, r.Status)
			var rf byte
			if r.Unlocked {
				rf = 1
			}
			dst = append(dst, rf)
			dst = appendTime(dst, r.ExpiresAt)
		}
	}
	return dst
}

func appendStr(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func appendFloat(dst []byte, f float64) []byte {
	return binary.AppendUvarint(dst, bits.ReverseBytes64(math.Float64bits(f)))
}

func appendTime(dst []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(dst, 0)
	}
	dst = append(dst, 1)
	dst = binary.AppendVarint(dst, t.Unix())
	return binary.AppendUvarint(dst, uint64(t.Nanosecond()))
}

// decodeState reads a station state record in either format into st.
func decodeState(raw []byte, st *stationState) error {
	for len(raw) > 0 && (raw[0] == ' ' || raw[0] == '\t' || raw[0] == '\n' || raw[0] == '\r') {
		raw = raw[1:]
	}
	if len(raw) > 0 && raw[0] == '{' {
		*st = stationState{}
		return json.Unmarshal(raw, st)
	}
	d := stateDecoder{b: raw}
	version := d.byte()
	if version != stateCodecV1 && version != stateCodecV2 {
		return fmt.Errorf("%w: unknown format", errStateRecord)
	}
	var out stationState
	fl := d.byte()
	out.Online, out.Maintenance = fl&1 != 0, fl&2 != 0
	out.ID = d.str()
	out.BootID = d.str()
	if n := d.count(maxDecodedOld); n > 0 {
		out.OldBoots = make([]string, n)
		for i := range out.OldBoots {
			out.OldBoots[i] = d.str()
		}
	}
	out.Seq = d.uvarint()
	out.LastSeen = d.time()
	out.OfflineSince = d.time()
	out.Status = d.str()
	inv := &out.Inv
	for _, p := range [...]*int{&inv.AvailableBatteries, &inv.BookedBatteries, &inv.ChargingBatteries, &inv.EmptySlots, &inv.FaultedSlots, &inv.TotalSlots} {
		*p = int(d.count(math.MaxInt32))
	}
	if version == stateCodecV2 {
		inv.UnavailableBatteries = int(d.count(math.MaxInt32))
	}
	out.Slots = make([]slotState, d.count(maxDecodedSlots))
	for i := range out.Slots {
		s := &out.Slots[i]
		fl := d.byte()
		s.Known, s.Charging, s.Locked = fl&1 != 0, fl&2 != 0, fl&4 != 0
		s.BatteryID = d.str()
		s.SoC = d.float()
		s.SoH = d.float()
		s.TempC = d.float()
		s.VoltageV = d.float()
		s.Door = d.str()
		s.Fault = d.str()
		if fl&8 != 0 {
			r := &s.Res
			r.BookingID = d.str()
			r.UserID = d.str()
			r.BatteryID = d.str()
			r.Status = d.str()
			r.Unlocked = d.byte()&1 != 0
			r.ExpiresAt = d.time()
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%w: %d trailing bytes", errStateRecord, len(d.b))
	}
	if d.err != nil {
		return d.err
	}
	*st = out
	return nil
}

// stateDecoder reads a v1 record; after the first error every read returns
// a zero value and err keeps that error.
type stateDecoder struct {
	b   []byte
	err error
}

func (d *stateDecoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: bad %s", errStateRecord, what)
	}
	d.b = nil
}

func (d *stateDecoder) byte() byte {
	if len(d.b) < 1 {
		d.fail("length")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *stateDecoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("number")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *stateDecoder) count(limit uint64) uint64 {
	n := d.uvarint()
	if n > limit {
		d.fail("count")
		return 0
	}
	return n
}

func (d *stateDecoder) str() string {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail("string")
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *stateDecoder) float() float64 {
	return math.Float64frombits(bits.ReverseBytes64(d.uvarint()))
}

func (d *stateDecoder) time() time.Time {
	switch d.byte() {
	case 0:
		return time.Time{}
	case 1:
	default:
		d.fail("time")
		return time.Time{}
	}
	sec, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("time")
		return time.Time{}
	}
	d.b = d.b[n:]
	ns := d.uvarint()
	if ns >= 1e9 {
		d.fail("time")
		return time.Time{}
	}
	return time.Unix(sec, int64(ns)).UTC()
}
