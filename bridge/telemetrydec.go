package bridge

import (
	"encoding/json"
	"strconv"

	"github.com/swapbridge/swapbridge/wire"
)

// decodeTelemetry decodes a telemetry payload into t, whose Slots are
// reused (t must be zero but for the capacity of Slots). Telemetry is the
// bulk of what stations send, so the usual shape (the contract's keys, each
// at most once, plain ASCII strings without escapes) is read by a small
// scanner that allocates only the strings it keeps and does not recurse
// (~0.4 µs for one slot against ~2.5 µs). Anything else (unknown or
// repeated keys, escapes, non-ASCII, null where the contract has none,
// malformed JSON) goes to encoding/json, which gives the same result or the
// error; FuzzDecodeTelemetry checks that the two agree.
func decodeTelemetry(payload []byte, t *wire.Telemetry) error {
	slots := t.Slots
	if fastTelemetry(payload, t) {
		return nil
	}
	clear(slots[:cap(slots)])
	*t = wire.Telemetry{Slots: slots[:0]}
	return json.Unmarshal(payload, t)
}

// tscan is a cursor over a JSON payload; ok turns false at the first thing
// the fast path does not handle, after which every method is a no-op.
type tscan struct {
	b  []byte
	i  int
	ok bool
}

func (s *tscan) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// next skips whitespace and returns the next byte (0 at the end).
func (s *tscan) next() byte {
	s.ws()
	if s.i >= len(s.b) {
		return 0
	}
	return s.b[s.i]
}

func (s *tscan) expect(c byte) {
	if s.ok && s.next() == c {
		s.i++
		return
	}
	s.ok = false
}

// str reads a string without escapes or non-ASCII bytes and returns its
// contents (aliasing the payload).
func (s *tscan) str() []byte {
	if !s.ok || s.next() != '"' {
		s.ok = false
		return nil
	}
	start := s.i + 1
	for j := start; j < len(s.b); j++ {
		c := s.b[j]
		switch {
		case c == '"':
			s.i = j + 1
			return s.b[start:j]
		case c == '\\' || c < 0x20 || c >= 0x80:
			s.ok = false
			return nil
		}
	}
	s.ok = false
	return nil
}

// num reads a JSON number literal (exactly the JSON grammar) and reports
// whether it is an integer (no fraction or exponent).
func (s *tscan) num() (lit []byte, integer bool) {
	if !s.ok {
		return nil, false
	}
	s.ws()
	b, j := s.b, s.i
	digits := func() int {
		n := 0
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			j++
			n++
		}
		return n
	}
	if j < len(b) && b[j] == '-' {
		j++
	}
	switch {
	case j < len(b) && b[j] == '0':
		j++
	case digits() == 0:
		s.ok = false
		return nil, false
	}
	integer = true
	if j < len(b) && b[j] == '.' {
		j++
		integer = false
		if digits() == 0 {
			s.ok = false
			return nil, false
		}
	}
	if j < len(b) && (b[j] == 'e' || b[j] == 'E') {
		j++
		integer = false
		if j < len(b) && (b[j] == '+' || b[j] == '-') {
			j++
		}
		if digits() == 0 {
			s.ok = false
			return nil, false
		}
	}
	lit = b[s.i:j]
	s.i = j
	return lit, integer
}

func (s *tscan) float() float64 {
	lit, _ := s.num()
	if !s.ok {
		return 0
	}
	f, err := strconv.ParseFloat(string(lit), 64)
	if err != nil {
		s.ok = false
	}
	return f
}

func (s *tscan) boolean() bool {
	if !s.ok {
		return false
	}
	s.ws()
	switch {
	case hasLit(s.b[s.i:], "true"):
		s.i += 4
		return true
	case hasLit(s.b[s.i:], "false"):
		s.i += 5
		return false
	}
	s.ok = false
	return false
}

func hasLit(b []byte, lit string) bool {
	return len(b) >= len(lit) && string(b[:len(lit)]) == lit
}

// object reads {"key": value, …}, calling field for each key; field must
// read the value. It fails on a key seen before (bit i of the keys) or
// unknown (field returns -1).
func (s *tscan) object(field func(key []byte) int) {
	s.expect('{')
	if !s.ok {
		return
	}
	if s.next() == '}' {
		s.i++
		return
	}
	var seen uint32
	for s.ok {
		key := s.str()
		s.expect(':')
		if !s.ok {
			return
		}
		k := field(key)
		if k < 0 || seen&(1<<k) != 0 {
			s.ok = false
			return
		}
		seen |= 1 << k
		switch s.next() {
		case ',':
			s.i++
		case '}':
			s.i++
			return
		default:
			s.ok = false
		}
	}
}

// fastTelemetry is the scanner; false means "not handled", and t is then
// in an unspecified state.
func fastTelemetry(payload []byte, t *wire.Telemetry) bool {
	s := tscan{b: payload, ok: true}
	s.object(func(key []byte) int {
		switch string(key) {
		case "boot_id":
			t.BootID = string(s.str())
			return 0
		case "seq":
			lit, integer := s.num()
			if !integer {
				s.ok = false
				return 1
			}
			n, err := strconv.ParseUint(string(lit), 10, 64)
			s.ok = s.ok && err == nil
			t.Seq = n
			return 1
		case "ts":
			if !s.ok || s.next() != '"' {
				s.ok = false
				return 2
			}
			start := s.i
			s.str()
			if s.ok && t.TS.UnmarshalJSON(s.b[start:s.i]) != nil {
				s.ok = false
			}
			return 2
		case "full":
			t.Full = s.boolean()
			return 3
		case "slots":
			s.slots(t)
			return 4
		}
		return -1
	})
	s.ws()
	return s.ok && s.i == len(s.b)
}

func (s *tscan) slots(t *wire.Telemetry) {
	s.expect('[')
	if !s.ok {
		return
	}
	t.Slots = t.Slots[:0]
	if s.next() == ']' {
		s.i++
		return
	}
	for s.ok {
		t.Slots = append(t.Slots, wire.Slot{})
		s.slot(&t.Slots[len(t.Slots)-1])
		switch s.next() {
		case ',':
			s.i++
		case ']':
			s.i++
			return
		default:
			s.ok = false
		}
	}
}

func (s *tscan) slot(sl *wire.Slot) {
	*sl = wire.Slot{}
	s.object(func(key []byte) int {
		switch string(key) {
		case "slot":
			lit, integer := s.num()
			if !integer {
				s.ok = false
				return 0
			}
			n, err := strconv.ParseInt(string(lit), 10, 64)
			s.ok = s.ok && err == nil
			sl.Slot = int(n)
			return 0
		case "battery_id":
			if s.ok && s.next() == 'n' {
				if hasLit(s.b[s.i:], "null") {
					s.i += 4
				} else {
					s.ok = false
				}
				return 1 // BatteryID stays nil
			}
			b := string(s.str())
			sl.BatteryID = &b
			return 1
		case "soc":
			sl.SoC = s.float()
			return 2
		case "soh":
			sl.SoH = s.float()
			return 3
		case "temp_c":
			sl.TempC = s.float()
			return 4
		case "voltage_v":
			sl.VoltageV = s.float()
			return 5
		case "charging":
			sl.Charging = s.boolean()
			return 6
		case "door":
			sl.Door = string(s.str())
			return 7
		case "locked":
			sl.Locked = s.boolean()
			return 8
		case "fault":
			sl.Fault = string(s.str())
			return 9
		}
		return -1
	})
}
