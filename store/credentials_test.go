package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func hashOf(s string) [32]byte { return sha256.Sum256([]byte(s)) }

// Rotation with a grace period keeps the replaced secret valid until its
// end; a second rotation drops it; grace 0 refuses it at once; bad input
// and unknown stations change nothing.
func TestRotateStationSecret(t *testing.T) {
	s := openT(t, "", Options{})
	ctx := context.Background()
	if err := s.CreateStation(ctx, Station{ID: "st-1", Slots: 4, SecretHash: hashOf("one")}); err != nil {
		t.Fatal(err)
	}
	cur, prev, until, err := s.StationSecretHashes("st-1")
	if err != nil || cur != hashOf("one") || prev != ([32]byte{}) || !until.IsZero() {
		t.Fatalf("before rotation: %x %x %v %v", cur[:4], prev[:4], until, err)
	}

	before := time.Now()
	got, err := s.RotateStationSecret(ctx, "st-1", hashOf("two"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got.Before(before.Add(time.Hour)) || got.After(time.Now().Add(time.Hour)) {
		t.Fatalf("grace ends %v, want about an hour from now", got)
	}
	cur, prev, until, err = s.StationSecretHashes("st-1")
	if err != nil || cur != hashOf("two") || prev != hashOf("one") || !until.Equal(got) {
		t.Fatalf("in grace: cur %x prev %x until %v (want %v) %v", cur[:4], prev[:4], until, got, err)
	}
	if h, _ := s.StationSecretHash("st-1"); h != hashOf("two") {
		t.Fatalf("StationSecretHash %x, want the new one", h[:4])
	}

	// A second rotation: only the secret it replaces keeps working.
	if _, err := s.RotateStationSecret(ctx, "st-1", hashOf("three"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if cur, prev, _, _ = s.StationSecretHashes("st-1"); cur != hashOf("three") || prev != hashOf("two") {
		t.Fatalf("after a second rotation: cur %x prev %x", cur[:4], prev[:4])
	}

	// Grace 0: the old secret is gone at once.
	if u, err := s.RotateStationSecret(ctx, "st-1", hashOf("four"), 0); err != nil || !u.IsZero() {
		t.Fatalf("rotate with grace 0: %v %v", u, err)
	}
	if cur, prev, until, _ = s.StationSecretHashes("st-1"); cur != hashOf("four") || prev != ([32]byte{}) || !until.IsZero() {
		t.Fatalf("after grace 0: cur %x prev %x until %v", cur[:4], prev[:4], until)
	}

	if _, err := s.RotateStationSecret(ctx, "nope", hashOf("x"), 0); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown station: %v, want ErrNotFound", err)
	}
	if _, err := s.RotateStationSecret(ctx, "st-1", hashOf("x"), -time.Second); err == nil {
		t.Error("negative grace accepted")
	}
	if _, err := s.RotateStationSecret(ctx, "st-1", [32]byte{}, 0); err == nil {
		t.Error("zero hash accepted")
	}
	if cur, _, _, _ = s.StationSecretHashes("st-1"); cur != hashOf("four") {
		t.Errorf("a refused rotation changed the secret")
	}
	if _, _, _, err := s.StationSecretHashes("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("StationSecretHashes unknown: %v", err)
	}
}

// An expired previous secret is not returned.
func TestPreviousSecretExpires(t *testing.T) {
	s := openT(t, "", Options{})
	ctx := context.Background()
	if err := s.CreateStation(ctx, Station{ID: "st-1", Slots: 4, SecretHash: hashOf("one")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RotateStationSecret(ctx, "st-1", hashOf("two"), time.Hour); err != nil {
		t.Fatal(err)
	}
	// Move the grace period's end into the past.
	err := s.db.Update(func(btx *bolt.Tx) error {
		b := btx.Bucket(bucketPrevSecret)
		v := bytes.Clone(b.Get([]byte("st-1")))
		binary.BigEndian.PutUint64(v[32:], uint64(time.Now().Add(-time.Second).UnixNano()))
		return b.Put([]byte("st-1"), v)
	})
	if err != nil {
		t.Fatal(err)
	}
	if cur, prev, u, err := s.StationSecretHashes("st-1"); err != nil || cur != hashOf("two") || prev != ([32]byte{}) || !u.IsZero() {
		t.Fatalf("after the grace: cur %x prev %x until %v %v", cur[:4], prev[:4], u, err)
	}
}

// Deleting a station removes it and its credentials but keeps its events.
func TestDeleteStation(t *testing.T) {
	s := openT(t, "", Options{})
	ctx := context.Background()
	if err := s.CreateStation(ctx, Station{ID: "st-1", Slots: 4, SecretHash: hashOf("one")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RotateStationSecret(ctx, "st-1", hashOf("two"), time.Hour); err != nil {
		t.Fatal(err)
	}
	appendAll(t, s, stationEv("st-1", "inventory_update"))
	if _, err := s.Update(ctx, func(tx *Tx) error { return tx.DeleteStation("st-1") }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Station("st-1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Station after delete: %v", err)
	}
	if _, _, _, err := s.StationSecretHashes("st-1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("StationSecretHashes after delete: %v", err)
	}
	if n := countKeys(t, s, bucketPrevSecret); n != 0 {
		t.Errorf("%d previous secrets left", n)
	}
	if evs, err := s.EventsAfter(Channel{Kind: OneStation, ID: "st-1"}, 0, 0); err != nil || len(evs) != 1 {
		t.Errorf("events after delete: %d, %v; want the one event", len(evs), err)
	}
	if _, err := s.Update(ctx, func(tx *Tx) error { return tx.DeleteStation("st-1") }); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete: %v, want ErrNotFound", err)
	}
	// The id can be provisioned again, with no trace of the old secrets.
	if err := s.CreateStation(ctx, Station{ID: "st-1", Slots: 2, SecretHash: hashOf("new")}); err != nil {
		t.Fatal(err)
	}
	if cur, prev, _, _ := s.StationSecretHashes("st-1"); cur != hashOf("new") || prev != ([32]byte{}) {
		t.Errorf("re-provisioned: cur %x prev %x", cur[:4], prev[:4])
	}
}

// A user holds several tokens; revocation removes every one of them and
// no other user's; deleting the user removes it and its tokens.
func TestUserTokens(t *testing.T) {
	s := openT(t, "", Options{})
	ctx := context.Background()
	for _, u := range []string{"ann", "an", "bob"} {
		if err := s.CreateUser(ctx, User{ID: u, TokenHash: hashOf(u + "-0")}); err != nil {
			t.Fatal(err)
		}
	}
	id1, err := s.AddUserToken(ctx, "ann", hashOf("ann-1"))
	if err != nil || id1 != TokenID(hashOf("ann-1")) {
		t.Fatalf("AddUserToken: %q %v", id1, err)
	}
	if _, err := s.AddUserToken(ctx, "ann", hashOf("ann-2")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddUserToken(ctx, "ann", hashOf("bob-0")); !errors.Is(err, ErrExists) {
		t.Errorf("someone else's token hash: %v, want ErrExists", err)
	}
	if _, err := s.AddUserToken(ctx, "zed", hashOf("zed-1")); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown user: %v, want ErrNotFound", err)
	}
	for _, tok := range []string{"ann-0", "ann-1", "ann-2"} {
		if u, err := s.UserByTokenHash(hashOf(tok)); err != nil || u.ID != "ann" {
			t.Fatalf("token %s: %v %v", tok, u.ID, err)
		}
	}
	ids, err := s.UserTokenIDs("ann")
	want := []string{TokenID(hashOf("ann-0")), TokenID(hashOf("ann-1")), TokenID(hashOf("ann-2"))}
	slices.Sort(want)
	slices.Sort(ids)
	if err != nil || !slices.Equal(ids, want) {
		t.Fatalf("UserTokenIDs: %v %v, want %v", ids, err, want)
	}

	n, err := s.RevokeUserTokens(ctx, "ann")
	if err != nil || n != 3 {
		t.Fatalf("RevokeUserTokens: %d %v, want 3", n, err)
	}
	for _, tok := range []string{"ann-0", "ann-1", "ann-2"} {
		if _, err := s.UserByTokenHash(hashOf(tok)); !errors.Is(err, ErrNotFound) {
			t.Errorf("revoked token %s: %v", tok, err)
		}
	}
	for _, u := range []string{"an", "bob"} { // "an" is a prefix of "ann"
		if got, err := s.UserByTokenHash(hashOf(u + "-0")); err != nil || got.ID != u {
			t.Errorf("%s's token after ann's revocation: %v %v", u, got.ID, err)
		}
	}
	if _, err := s.User("ann"); err != nil {
		t.Errorf("the user must stay after revocation: %v", err)
	}
	// A new token works after the revocation.
	if _, err := s.AddUserToken(ctx, "ann", hashOf("ann-3")); err != nil {
		t.Fatal(err)
	}
	if u, err := s.UserByTokenHash(hashOf("ann-3")); err != nil || u.ID != "ann" {
		t.Errorf("new token: %v %v", u.ID, err)
	}
	if _, err := s.RevokeUserTokens(ctx, "zed"); !errors.Is(err, ErrNotFound) {
		t.Errorf("revoke unknown user: %v", err)
	}

	if err := s.DeleteUser(ctx, "ann"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.User("ann"); !errors.Is(err, ErrNotFound) {
		t.Errorf("User after delete: %v", err)
	}
	if _, err := s.UserByTokenHash(hashOf("ann-3")); !errors.Is(err, ErrNotFound) {
		t.Errorf("token after delete: %v", err)
	}
	if err := s.DeleteUser(ctx, "ann"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete: %v", err)
	}
	if n := countKeys(t, s, bucketTokenList); n != 2 {
		t.Errorf("%d token list entries, want 2 (an, bob)", n)
	}
}

// A file of an earlier version (one token per user, in the index only) is
// migrated at open: the user's token can be revoked, and the migration is
// idempotent.
func TestTokenListMigration(t *testing.T) {
	path := filepath.Join(t.TempDir(), "swapd.db")
	s := openT(t, path, Options{})
	ctx := context.Background()
	for _, u := range []string{"ann", "bob"} {
		if err := s.CreateUser(ctx, User{ID: u, TokenHash: hashOf(u)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(btx *bolt.Tx) error { return btx.DeleteBucket(bucketTokenList) }); err != nil {
		t.Fatal(err)
	}
	db.Close()

	for range 2 {
		s = openT(t, path, Options{})
		if n := countKeys(t, s, bucketTokenList); n != 2 {
			t.Fatalf("%d token list entries after migration, want 2", n)
		}
		if ids, err := s.UserTokenIDs("ann"); err != nil || len(ids) != 1 || ids[0] != TokenID(hashOf("ann")) {
			t.Fatalf("ann's tokens after migration: %v %v", ids, err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	s = openT(t, path, Options{})
	if n, err := s.RevokeUserTokens(ctx, "ann"); err != nil || n != 1 {
		t.Fatalf("revoke the migrated token: %d %v", n, err)
	}
	if _, err := s.UserByTokenHash(hashOf("ann")); !errors.Is(err, ErrNotFound) {
		t.Errorf("migrated token still works: %v", err)
	}
	if u, err := s.UserByTokenHash(hashOf("bob")); err != nil || u.ID != "bob" {
		t.Errorf("bob's token: %v %v", u.ID, err)
	}
}
