package wire

import (
	"errors"
	"fmt"
)

// MaxIDLen is the longest station or user id the contract allows.
const MaxIDLen = 64

// ErrInvalidID is returned (wrapped) by CheckID for ids outside the contract's
// pattern ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$.
var ErrInvalidID = errors.New("invalid id")

// ValidID reports whether s matches ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$, the
// pattern every station id and user id must match.
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > MaxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case i > 0 && (c == '_' || c == '.' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// CheckID returns nil for a valid id and a descriptive error wrapping
// ErrInvalidID otherwise. what names the id in the message ("station id").
func CheckID(what, s string) error {
	if ValidID(s) {
		return nil
	}
	if s == "" {
		return fmt.Errorf("%w: %s is empty", ErrInvalidID, what)
	}
	return fmt.Errorf("%w: %s %q must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", ErrInvalidID, what, truncate(s, 80))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
