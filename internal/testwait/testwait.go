// Package testwait waits in tests for something observable to happen: a
// condition polled on a ticker, or a value on a channel, each with a
// deadline. It never sleeps to let a goroutine run; what it polls must be
// state the test can see (a metric, a store, an HTTP answer).
package testwait

import (
	"os"
	"runtime/pprof"
	"testing"
	"time"
)

// Timeout is the usual deadline: long enough for a loaded CI machine,
// short enough that a hung test says so.
const Timeout = 10 * time.Second

// Tick is how often a condition is polled: often enough to be quick,
// seldom enough that polling over HTTP stays under swapd's per-address
// rate limit.
const Tick = 10 * time.Millisecond

// Until polls cond every Tick until it holds or d passed, and reports
// whether it held.
func Until(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	tick := time.NewTicker(Tick)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
	return true
}

// For polls cond until it holds, failing t after d with what it waited
// for.
func For(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Until(d, cond) {
		t.Fatalf("timed out after %s waiting for %s", d, what)
	}
}

// Recv receives from ch, failing t after d with what it waited for and
// the stacks of every goroutine (a hang is easier to read with them).
func Recv[T any](t testing.TB, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 2)
		t.Fatalf("timed out after %s waiting for %s", d, what)
		var zero T
		return zero
	}
}
