package broker

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	mpackets "github.com/mochi-mqtt/server/v2/packets"

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

// connack connects and returns the CONNACK reason code (0: accepted) and
// the connection.
func connack(t *testing.T, addr, id, secret string, version byte) (byte, *rawConn) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(waitFor))
	c := &rawConn{c: nc, r: bufio.NewReader(nc), version: version}
	c.write(t, mpackets.Packet{
		FixedHeader: mpackets.FixedHeader{Type: mpackets.Connect},
		Connect: mpackets.ConnectParams{
			ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30,
			ClientIdentifier: id, UsernameFlag: true, Username: []byte(id),
			PasswordFlag: true, Password: []byte(secret),
		},
	})
	pk := c.read(t)
	if pk.FixedHeader.Type != mpackets.Connack {
		t.Fatalf("CONNECT %s: got packet type %d", id, pk.FixedHeader.Type)
	}
	return pk.ReasonCode, c
}

// closedBy reads until the broker ends the connection and returns the
// reason code of its DISCONNECT (MQTT 5), or 0 when it just closed it.
func closedBy(t *testing.T, c *rawConn) byte {
	t.Helper()
	for {
		pk, err := c.readPacket()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("the session was not closed")
			}
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				t.Logf("connection ended with %v", err)
			}
			return 0
		}
		if pk.FixedHeader.Type == mpackets.Disconnect {
			return pk.ReasonCode
		}
	}
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
			c := dialRaw(t, b.Addr(), "st-1", "one", version)
			c.barrier(t, "logged in")
			rotate(t, st, "two", 0)
			b.Revoke("st-1")
			code := closedBy(t, c)
			if version == 5 && code != mpackets.ErrNotAuthorized.Code {
				t.Errorf("DISCONNECT reason %#x, want 0x87 (not authorized)", code)
			}
			if r, _ := connack(t, b.Addr(), "st-1", "one", version); r == 0 {
				t.Fatal("the old secret is accepted after the rotation")
			}
			n := dialRaw(t, b.Addr(), "st-1", "two", version)
			n.barrier(t, "logged in with the new secret")
		})
	}
}

// Rotation with a grace period: a session logged in with the old secret
// stays until the grace ends and is closed then; the old secret logs in
// during the grace and not after; a session logged in with the new secret
// is left alone.
func TestRevokeRotationGrace(t *testing.T) {
	b, st, _ := revokeStack(t)
	old := dialRaw(t, b.Addr(), "st-1", "one", 5)
	old.barrier(t, "logged in")
	const grace = 700 * time.Millisecond
	until := rotate(t, st, "two", grace)
	b.Revoke("st-1")
	old.barrier(t, "the old session after a rotation with grace") // still up: Revoke closes synchronously

	// A new login with the old secret during the grace takes over, and is
	// closed at its end.
	r, again := connack(t, b.Addr(), "st-1", "one", 5)
	if r != 0 {
		t.Fatalf("old secret refused during the grace: %#x", r)
	}
	if time.Now().After(until) {
		t.Skip("the machine is too slow for this grace period")
	}
	closedBy(t, old) // taken over
	if code := closedBy(t, again); code != mpackets.ErrNotAuthorized.Code {
		t.Errorf("at the grace's end: DISCONNECT %#x, want 0x87", code)
	}
	if time.Now().Before(until) {
		t.Errorf("closed %s before the grace ended", time.Until(until))
	}
	if r, _ := connack(t, b.Addr(), "st-1", "one", 5); r == 0 {
		t.Fatal("the old secret is accepted after the grace")
	}

	// A session with the new secret is left alone.
	cur := dialRaw(t, b.Addr(), "st-1", "two", 5)
	cur.barrier(t, "logged in with the new secret")
	b.Revoke("st-1")
	cur.barrier(t, "the new secret's session after Revoke")
}

// A session logged in with the new secret during the grace gets no timer
// for the grace's end, and one that logged in with the old secret loses its
// timer when it goes.
func TestRevokeGraceSparesNewSecret(t *testing.T) {
	b, st, _ := revokeStack(t)
	rotate(t, st, "two", time.Hour)
	b.Revoke("st-1")
	old := dialRaw(t, b.Addr(), "st-1", "one", 5)
	old.barrier(t, "logged in with the old secret")
	if n := timers(b); n != 1 {
		t.Fatalf("%d grace timers for a session on the old secret, want 1", n)
	}
	cur := dialRaw(t, b.Addr(), "st-1", "two", 5) // takes over
	closedBy(t, old)
	cur.barrier(t, "logged in with the new secret")
	deadline := time.Now().Add(waitFor)
	for timers(b) != 0 { // the old session's end is reported on its own goroutine
		if time.Now().After(deadline) {
			t.Fatalf("%d grace timers left after the old session ended", timers(b))
		}
		runtime.Gosched()
	}
	b.Revoke("st-1")
	cur.barrier(t, "the new secret's session after Revoke")
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
	c := dialRaw(t, b.Addr(), "st-1", "one", 4)
	c.barrier(t, "logged in")
	rec.expect(t, "up", "st-1", "", "")
	if _, err := st.Update(context.Background(), func(tx *store.Tx) error { return tx.DeleteStation("st-1") }); err != nil {
		t.Fatal(err)
	}
	b.Revoke("st-1")
	closedBy(t, c)
	if r, _ := connack(t, b.Addr(), "st-1", "one", 4); r == 0 {
		t.Fatal("a deleted station logged in")
	}
	// The end of the session is reported once it left the live sessions.
	rec.expect(t, "down", "st-1", "", "")
	if b.Connected("st-1") {
		t.Error("the deleted station is still reported connected")
	}
}
