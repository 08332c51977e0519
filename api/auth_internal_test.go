package api

import (
	"strconv"
	"testing"
	"time"
)

func TestLoginLimiterDelays(t *testing.T) {
	l := newLoginLimiter(0, 0)
	now := time.Unix(1_000_000, 0)
	l.now = func() time.Time { return now }
	for i := 1; i <= 12; i++ {
		want := min(time.Duration(i)*DefaultLoginDelay, DefaultLoginDelayMax)
		if got := l.failed("10.0.0.1"); got != want {
			t.Errorf("failure %d: delay %v, want %v", i, got, want)
		}
		now = now.Add(time.Second)
	}
	if got := l.failed("10.0.0.2"); got != DefaultLoginDelay {
		t.Errorf("another address's first failure: %v, want %v", got, DefaultLoginDelay)
	}
	now = now.Add(LoginFailWindow)
	if got := l.failed("10.0.0.1"); got != DefaultLoginDelay {
		t.Errorf("first failure after the window: %v, want %v", got, DefaultLoginDelay)
	}

	custom := newLoginLimiter(10*time.Millisecond, 25*time.Millisecond)
	for i, want := range []time.Duration{10, 20, 25, 25} {
		if got := custom.failed("h"); got != want*time.Millisecond {
			t.Errorf("custom failure %d: %v, want %v", i+1, got, want*time.Millisecond)
		}
	}

	off := newLoginLimiter(-1, 0)
	if off != nil || off.failed("h") != 0 {
		t.Errorf("a negative delay must turn the slowdown off")
	}
}

func TestLoginLimiterBounded(t *testing.T) {
	l := newLoginLimiter(0, 0)
	now := time.Unix(1_000_000, 0)
	l.now = func() time.Time { return now }
	for i := range maxLoginTracked + 100 {
		l.failed("h" + strconv.Itoa(i))
	}
	if n := len(l.m); n > maxLoginTracked {
		t.Errorf("%d addresses tracked, want at most %d", n, maxLoginTracked)
	}
}
