package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/swapbridge/swapbridge/wire"
	bolt "go.etcd.io/bbolt"
)

// The credential lifecycle: station secret rotation with a grace period,
// several opaque tokens per user, revocation and deletion.
//
// A user's tokens live in two buckets: the token index (user_tokens,
// sha256(token) → uid), which authentication reads, and the per-user list
// (user_token_list, uid 0x00 sha256(token) → created unix nanos), which
// revocation walks. A token's id is derived from its hash (TokenID), so
// neither bucket stores it. Files of earlier versions held one token per
// user in the index only; Open adds the missing list entries.
//
// A rotated station's previous secret hash lives in station_prev_secret
// (sid → sha256(previous secret) | be64(unix nanos of its expiry)) until
// the next rotation or the station's deletion; an expired entry is ignored.
var (
	bucketTokenList  = []byte("user_token_list")
	bucketPrevSecret = []byte("station_prev_secret")
)

// TokenID is the public id of the token whose SHA-256 is h: "tk-" and the
// first 8 bytes of the hash in hex. It names the token without revealing it.
func TokenID(h [32]byte) string { return "tk-" + hex.EncodeToString(h[:8]) }

func tokenListKey(uid string, h []byte) []byte {
	k := make([]byte, 0, len(uid)+1+len(h))
	k = append(k, uid...)
	k = append(k, 0)
	return append(k, h...)
}

// initCredentials creates the credential buckets and migrates the token
// index of earlier versions (one token per user, no per-user list). It is
// idempotent and runs inside Open's transaction.
func initCredentials(btx *bolt.Tx) error {
	for _, name := range [][]byte{bucketTokenList, bucketPrevSecret} {
		if _, err := btx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	list := btx.Bucket(bucketTokenList)
	users := btx.Bucket(bucketUsers)
	return btx.Bucket(bucketTokens).ForEach(func(h, uid []byte) error {
		k := tokenListKey(string(uid), h)
		if list.Get(k) != nil {
			return nil
		}
		var created [8]byte
		if u, err := decodeUser(string(uid), users.Get(uid)); err == nil {
			binary.BigEndian.PutUint64(created[:], uint64(u.CreatedAt.UnixNano()))
		}
		if err := list.Put(k, created[:]); err != nil {
			return fmt.Errorf("migrate token of user %q: %w", uid, err)
		}
		return nil
	})
}

// StationSecretHashes returns the SHA-256 of the station's current secret
// and, while a rotation's grace period runs, of its previous secret with the
// end of that grace period (a zero previous and a zero time otherwise).
// ErrNotFound for an unknown station. It is what the broker authenticates
// against.
func (s *Store) StationSecretHashes(id string) (current, previous [32]byte, previousUntil time.Time, err error) {
	now := time.Now()
	err = s.view(func(btx *bolt.Tx) error {
		v := btx.Bucket(bucketStations).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("store: station %q: %w", id, ErrNotFound)
		}
		if len(v) < entityHdrLen || v[0] != entityVersion {
			return fmt.Errorf("%w: station %q", errCorrupt, id)
		}
		copy(current[:], v[hashOff:entityHdrLen])
		if p := btx.Bucket(bucketPrevSecret).Get([]byte(id)); len(p) == 40 {
			until := time.Unix(0, int64(binary.BigEndian.Uint64(p[32:]))).UTC()
			if now.Before(until) {
				copy(previous[:], p[:32])
				previousUntil = until
			}
		}
		return nil
	})
	return current, previous, previousUntil, err
}

// RotateStationSecret makes hash the station's secret hash. With grace > 0
// the secret it replaces stays valid until now+grace, which is returned
// (a previous secret still in its grace period is dropped: only the one
// being replaced keeps working). With grace 0 the old secret is refused at
// once. ErrNotFound for an unknown station; a negative grace or a zero hash
// is an error. It is durable when it returns.
func (s *Store) RotateStationSecret(ctx context.Context, id string, hash [32]byte, grace time.Duration) (until time.Time, err error) {
	if hash == ([32]byte{}) {
		return time.Time{}, fmt.Errorf("store: rotate secret of %q: no secret hash", id)
	}
	if grace < 0 {
		return time.Time{}, fmt.Errorf("store: rotate secret of %q: negative grace %s", id, grace)
	}
	_, err = s.Update(ctx, func(tx *Tx) error {
		if err := tx.check(true); err != nil {
			return err
		}
		b := tx.btx.Bucket(bucketStations)
		v := b.Get([]byte(id))
		if v == nil {
			return fmt.Errorf("store: station %q: %w", id, ErrNotFound)
		}
		if len(v) < entityHdrLen || v[0] != entityVersion {
			return fmt.Errorf("%w: station %q", errCorrupt, id)
		}
		nv := bytes.Clone(v)
		old := nv[hashOff:entityHdrLen]
		prev := tx.btx.Bucket(bucketPrevSecret)
		if grace > 0 {
			until = time.Now().Add(grace).UTC()
			p := make([]byte, 40)
			copy(p, old)
			binary.BigEndian.PutUint64(p[32:], uint64(until.UnixNano()))
			if err := prev.Put([]byte(id), p); err != nil {
				return fmt.Errorf("store: rotate secret of %q: %w", id, err)
			}
		} else if err := prev.Delete([]byte(id)); err != nil {
			return fmt.Errorf("store: rotate secret of %q: %w", id, err)
		}
		copy(old, hash[:])
		if err := b.Put([]byte(id), nv); err != nil {
			return fmt.Errorf("store: rotate secret of %q: %w", id, err)
		}
		return nil
	})
	if err != nil {
		return time.Time{}, err
	}
	return until, nil
}

// DeleteStation removes the provisioned station and its credentials
// (current and previous secret) within the transaction, so that it can no
// longer log in. Its events stay in the log; the records the bridge keeps
// for it are the bridge's to delete. ErrNotFound for an unknown station.
func (tx *Tx) DeleteStation(id string) error {
	if err := tx.check(true); err != nil {
		return err
	}
	b := tx.btx.Bucket(bucketStations)
	if b.Get([]byte(id)) == nil {
		return fmt.Errorf("store: station %q: %w", id, ErrNotFound)
	}
	if err := b.Delete([]byte(id)); err != nil {
		return fmt.Errorf("store: delete station %q: %w", id, err)
	}
	if err := tx.btx.Bucket(bucketPrevSecret).Delete([]byte(id)); err != nil {
		return fmt.Errorf("store: delete station %q: %w", id, err)
	}
	return nil
}

// AddUserToken gives the user one more token, whose SHA-256 is hash, and
// returns its id (TokenID). ErrNotFound for an unknown user, ErrExists when
// the hash is already some user's token. It is durable when it returns.
func (s *Store) AddUserToken(ctx context.Context, uid string, hash [32]byte) (string, error) {
	if hash == ([32]byte{}) {
		return "", fmt.Errorf("store: add token of %q: no token hash", uid)
	}
	_, err := s.Update(ctx, func(tx *Tx) error {
		if err := tx.check(true); err != nil {
			return err
		}
		if tx.btx.Bucket(bucketUsers).Get([]byte(uid)) == nil {
			return fmt.Errorf("store: user %q: %w", uid, ErrNotFound)
		}
		return tx.addToken(uid, hash, time.Now())
	})
	if err != nil {
		return "", err
	}
	return TokenID(hash), nil
}

func (tx *Tx) addToken(uid string, hash [32]byte, created time.Time) error {
	tokens := tx.btx.Bucket(bucketTokens)
	if tokens.Get(hash[:]) != nil {
		return fmt.Errorf("store: user %q: token hash in use: %w", uid, ErrExists)
	}
	if err := tokens.Put(hash[:], []byte(uid)); err != nil {
		return fmt.Errorf("store: add token of %q: %w", uid, err)
	}
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], uint64(created.UnixNano()))
	if err := tx.btx.Bucket(bucketTokenList).Put(tokenListKey(uid, hash[:]), v[:]); err != nil {
		return fmt.Errorf("store: add token of %q: %w", uid, err)
	}
	return nil
}

// UserTokenIDs returns the ids of the user's tokens in hash order;
// ErrNotFound for an unknown user.
func (s *Store) UserTokenIDs(uid string) ([]string, error) {
	ids := []string{}
	err := s.view(func(btx *bolt.Tx) error {
		if btx.Bucket(bucketUsers).Get([]byte(uid)) == nil {
			return fmt.Errorf("store: user %q: %w", uid, ErrNotFound)
		}
		prefix := tokenListKey(uid, nil)
		c := btx.Bucket(bucketTokenList).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			var h [32]byte
			copy(h[:], k[len(prefix):])
			ids = append(ids, TokenID(h))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ids, nil
}

// RevokeUserTokens removes every token of the user and returns how many
// there were; the user stays. ErrNotFound for an unknown user. It is
// durable when it returns: from then on UserByTokenHash finds none of them.
func (s *Store) RevokeUserTokens(ctx context.Context, uid string) (int, error) {
	var n int
	_, err := s.Update(ctx, func(tx *Tx) error {
		if err := tx.check(true); err != nil {
			return err
		}
		if tx.btx.Bucket(bucketUsers).Get([]byte(uid)) == nil {
			return fmt.Errorf("store: user %q: %w", uid, ErrNotFound)
		}
		var err error
		n, err = tx.revokeTokens(uid)
		return err
	})
	return n, err
}

func (tx *Tx) revokeTokens(uid string) (int, error) {
	tokens, list := tx.btx.Bucket(bucketTokens), tx.btx.Bucket(bucketTokenList)
	prefix := tokenListKey(uid, nil)
	var keys [][]byte
	c := list.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		keys = append(keys, bytes.Clone(k))
	}
	for _, k := range keys {
		h := k[len(prefix):]
		// The index entry is removed only if it is this user's (it always
		// is, unless the file was edited by hand).
		if bytes.Equal(tokens.Get(h), []byte(uid)) {
			if err := tokens.Delete(h); err != nil {
				return 0, fmt.Errorf("store: revoke tokens of %q: %w", uid, err)
			}
		}
		if err := list.Delete(k); err != nil {
			return 0, fmt.Errorf("store: revoke tokens of %q: %w", uid, err)
		}
	}
	return len(keys), nil
}

// DeleteUser removes the user and every token of it. Its events, bookings
// and their index stay (the history). ErrNotFound for an unknown user. It
// is durable when it returns.
func (s *Store) DeleteUser(ctx context.Context, uid string) error {
	if err := wire.CheckID("user id", uid); err != nil {
		return fmt.Errorf("store: delete user: %w", err)
	}
	_, err := s.Update(ctx, func(tx *Tx) error {
		if err := tx.check(true); err != nil {
			return err
		}
		users := tx.btx.Bucket(bucketUsers)
		if users.Get([]byte(uid)) == nil {
			return fmt.Errorf("store: user %q: %w", uid, ErrNotFound)
		}
		if _, err := tx.revokeTokens(uid); err != nil {
			return err
		}
		if err := users.Delete([]byte(uid)); err != nil {
			return fmt.Errorf("store: delete user %q: %w", uid, err)
		}
		return nil
	})
	return err
}
