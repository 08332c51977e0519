package broker

import (
	"context"
	"crypto/sha256"
	"path/filepath"
	"testing"
	"time"

	mpackets "github.com/mochi-mqtt/server/v2/packets"

	"github.com/swapbridge/swapbridge/internal/mqtttest"
	"github.com/swapbridge/swapbridge/internal/testwait"
	"github.com/swapbridge/swapbridge/store"
)

// revokeStack is a broker over a real store with station st-1 (secret
// "one"); failed logins are not slowed down.
func revokeStack(t *testing.T) (*Broker, *store.Store, *recorder) {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "swapd.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.CreateStation(context.Background(), store.Station{ID: "st-1", Slots: 4, SecretHash: sha256.Sum256([]byte("one"))}); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	b := startBroker(t, Config{NotFound: store.ErrNotFound, AuthFailures: -1, AuthDelay: -1}, st, rec)
	return b, st, rec
}

func rotate(t *testing.T, st *store.Store, secret string, grace time.Duration) time.Time {
	t.Helper()
	until, err := st.RotateStationSecret(context.Background(), "st-1", sha256.Sum256([]byte(secret)), grace)
	if err != nil {
		t.Fatal(err)
	}
	return until
}

// Rotation with grace 0: the live session (MQTT 3.1.1 and 5) is closed at
// Revoke, the old secret is refused from then on, the new one accepted.
func TestRevokeRotationClosesSession(t *testing.T) {
	for _, version := range []byte{4, 5} {
		t.Run(map[byte]string{4: "3.1.1", 5: "5"}[version], func(t *testing.T) {
			b, st, _ := revokeStack(t)
			c := mqtttest.MustConnect(t, b.Addr(), "st-1", "one", version)
			c.Barrier(t, "logged in")
			rotate(t, st, "two", 0)
			b.Revoke("st-1")
			code := c.ClosedBy(t)
			if version == 5 && code != mpackets.ErrNotAuthorized.Code {
				t.Errorf("DISCONNECT reason %#x, want 0x87 (not authorized)", code)
			}
			if r, _ := mqtttest.ConnackCode(t, b.Addr(), "st-1", "one", version); r == 0 {
				t.Fatal("the old secret is accepted after the rotation")
			}
			n := mqtttest.MustConnect(t, b.Addr(), "st-1", "two", version)
			n.Barrier(t, "logged in with the new secret")
		})
	}
}

// Rotation with a grace period: a session logged in with the old secret
// stays until the grace ends and is closed then; the old secret logs in
// during the grace and not after; a session logged in with the new secret
// is left alone.
func TestRevokeRotationGrace(t *testing.T) {
	b, st, _ := revokeStack(t)
	old := mqtttest.MustConnect(t, b.Addr(), "st-1", "one", 5)
	old.Barrier(t, "logged in")
	const grace = 700 * time.Millisecond
	until := rotate(t, st, "two", grace)
	b.Revoke("st-1")
	old.Barrier(t, "the old session after a rotation with grace") // still up: Revoke closes synchronously

	// A new login with the old secret during the grace takes over, and is
	// closed at its end.
	r, again := mqtttest.ConnackCode(t, b.Addr(), "st-1", "one", 5)
	if r != 0 {
		t.Fatalf("old secret refused during the grace: %#x", r)
	}
	if time.Now().After(until) {
		t.Skip("the machine is too slow for this grace period")
	}
	old.ClosedBy(t) // taken over
	if code := again.ClosedBy(t); code != mpackets.ErrNotAuthorized.Code {
		t.Errorf("at the grace's end: DISCONNECT %#x, want 0x87", code)
	}
	if time.Now().Before(until) {
		t.Errorf("closed %s before the grace ended", time.Until(until))
	}
	if r, _ := mqtttest.ConnackCode(t, b.Addr(), "st-1", "one", 5); r == 0 {
		t.Fatal("the old secret is accepted after the grace")
	}

	// A session with the new secret is left alone.
	cur := mqtttest.MustConnect(t, b.Addr(), "st-1", "two", 5)
	cur.Barrier(t, "logged in with the new secret")
	b.Revoke("st-1")
	cur.Barrier(t, "the new secret's session after Revoke")
}

// A session logged in with the new secret during the grace gets no timer
// for the grace's end, and one that logged in with the old secret loses its
// timer when it goes.
func TestRevokeGraceSparesNewSecret(t *testing.T) {
	b, st, _ := revokeStack(t)
	rotate(t, st, "two", time.Hour)
	b.Revoke("st-1")
	old := mqtttest.MustConnect(t, b.Addr(), "st-1", "one", 5)
	old.Barrier(t, "logged in with the old secret")
	if n := timers(b); n != 1 {
		t.Fatalf("%d grace timers for a session on the old secret, want 1", n)
	}
	cur := mqtttest.MustConnect(t, b.Addr(), "st-1", "two", 5) // takes over
	old.ClosedBy(t)
	cur.Barrier(t, "logged in with the new secret")
	// The old session's end is reported on its own goroutine.
	testwait.For(t, waitFor, "the old session's grace timer to go", func() bool { return timers(b) == 0 })
	b.Revoke("st-1")
	cur.Barrier(t, "the new secret's session after Revoke")
	if n := timers(b); n != 0 {
		t.Fatalf("%d grace timers for a session on the new secret", n)
	}
}

func timers(b *Broker) int {
	b.logins.mu.Lock()
	defer b.logins.mu.Unlock()
	return len(b.logins.expires)
}

// A deleted station's session is closed and it cannot log in again.
func TestRevokeDeletedStation(t *testing.T) {
	b, st, rec := revokeStack(t)
	c := mqtttest.MustConnect(t, b.Addr(), "st-1", "one", 4)
	c.Barrier(t, "logged in")
	rec.expect(t, "up", "st-1", "", "")
	if _, err := st.Update(context.Background(), func(tx *store.Tx) error { return tx.DeleteStation("st-1") }); err != nil {
		t.Fatal(err)
	}
	b.Revoke("st-1")
	c.ClosedBy(t)
	if r, _ := mqtttest.ConnackCode(t, b.Addr(), "st-1", "one", 4); r == 0 {
		t.Fatal("a deleted station logged in")
	}
	// The end of the session is reported once it left the live sessions.
	rec.expect(t, "down", "st-1", "", "")
	if b.Connected("st-1") {
		t.Error("the deleted station is still reported connected")
	}
}
