package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/swapbridge/swapbridge/store"
	"github.com/swapbridge/swapbridge/wire"
)

// MaxGrace bounds the grace period of a station secret rotation.
const MaxGrace = 30 * 24 * time.Hour

// Credentials is the part of the store the credential lifecycle writes
// through. *store.Store satisfies it.
type Credentials interface {
	RotateStationSecret(ctx context.Context, id string, hash [32]byte, grace time.Duration) (time.Time, error)
	AddUserToken(ctx context.Context, uid string, hash [32]byte) (string, error)
	RevokeUserTokens(ctx context.Context, uid string) (int, error)
	DeleteUser(ctx context.Context, uid string) error
}

// StationRemover is the part of the bridge that deletes stations and
// cancels a user's bookings. *bridge.Bridge satisfies it.
type StationRemover interface {
	DeleteStation(ctx context.Context, sid string) error
	CancelUserBookings(ctx context.Context, uid string) (int, error)
}

// UserSessions closes a user's live connections when its tokens are
// revoked (the WebSocket hub).
type UserSessions interface {
	DisconnectUser(uid, reason string) int
}

// SetUserSessions tells the API whom to ask to close a user's WebSockets
// when its tokens are revoked. Call it before serving; without it only the
// tokens are revoked.
func (a *API) SetUserSessions(s UserSessions) { a.sessions = s }

// rotateSecret serves POST /api/admin/stations/{sid}/secret.
func (a *API) rotateSecret(w http.ResponseWriter, r *http.Request) error {
	sid, aerr := pathID(r, "sid", "station id")
	if aerr != nil {
		return aerr
	}
	var req wire.RotateSecretRequest
	if r.ContentLength != 0 {
		if aerr := decodeBody(w, r, &req); aerr != nil {
			return aerr
		}
	}
	var grace time.Duration
	if req.Grace != "" {
		d, err := time.ParseDuration(req.Grace)
		if err != nil {
			return errorf(http.StatusBadRequest, "invalid_field", "grace must be a duration such as \"1h\" or \"30m\"")
		}
		grace = d
	}
	if grace < 0 || grace > MaxGrace {
		return errorf(http.StatusBadRequest, "invalid_field", "grace must be from 0s to %s", MaxGrace)
	}
	secret := NewSecret()
	until, err := a.store.RotateStationSecret(r.Context(), sid, HashToken(secret), grace)
	if errors.Is(err, store.ErrNotFound) {
		return errorf(http.StatusNotFound, "station_not_found", "no such station %q", sid)
	}
	if err != nil {
		return err
	}
	if a.creds != nil {
		a.creds.Revoke(sid)
	}
	a.log.Info("station secret rotated", "station", sid, "grace", grace, "old_secret_until", until)
	writeJSON(w, http.StatusOK, wire.CreateStationResponse{ID: sid, Secret: secret})
	return nil
}

// deleteStation serves DELETE /api/admin/stations/{sid}.
func (a *API) deleteStation(w http.ResponseWriter, r *http.Request) error {
	sid, aerr := pathID(r, "sid", "station id")
	if aerr != nil {
		return aerr
	}
	if err := a.bridge.DeleteStation(r.Context(), sid); err != nil {
		return err
	}
	if a.creds != nil {
		a.creds.Revoke(sid)
	}
	a.log.Info("station deleted", "station", sid)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// addToken serves POST /api/admin/users/{uid}/tokens.
func (a *API) addToken(w http.ResponseWriter, r *http.Request) error {
	uid, aerr := pathID(r, "uid", "user id")
	if aerr != nil {
		return aerr
	}
	token := NewSecret()
	id, err := a.store.AddUserToken(r.Context(), uid, HashToken(token))
	if errors.Is(err, store.ErrNotFound) {
		return userNotFound(uid)
	}
	if err != nil {
		return err
	}
	a.log.Info("user token added", "user", uid, "token_id", id)
	writeJSON(w, http.StatusCreated, wire.UserTokenResponse{ID: id, UserID: uid, Token: token})
	return nil
}

// revokeTokens serves DELETE /api/admin/users/{uid}/tokens.
func (a *API) revokeTokens(w http.ResponseWriter, r *http.Request) error {
	uid, aerr := pathID(r, "uid", "user id")
	if aerr != nil {
		return aerr
	}
	n, err := a.store.RevokeUserTokens(r.Context(), uid)
	if errors.Is(err, store.ErrNotFound) {
		return userNotFound(uid)
	}
	if err != nil {
		return err
	}
	closed := a.disconnectUser(uid)
	a.log.Info("user tokens revoked", "user", uid, "tokens", n, "websockets_closed", closed)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// deleteUser serves DELETE /api/admin/users/{uid}: the tokens go first (so
// the user can start nothing new), then its WebSockets, then its active
// bookings are cancelled, then the user.
func (a *API) deleteUser(w http.ResponseWriter, r *http.Request) error {
	uid, aerr := pathID(r, "uid", "user id")
	if aerr != nil {
		return aerr
	}
	if _, err := a.store.RevokeUserTokens(r.Context(), uid); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			err = userNotFound(uid)
		}
		return err
	}
	closed := a.disconnectUser(uid)
	cancelled, err := a.bridge.CancelUserBookings(r.Context(), uid)
	if err != nil {
		return fmt.Errorf("delete user %s: %w", uid, err)
	}
	if err := a.store.DeleteUser(r.Context(), uid); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	a.log.Info("user deleted", "user", uid, "websockets_closed", closed, "bookings_cancelled", cancelled)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *API) disconnectUser(uid string) int {
	if a.sessions == nil {
		return 0
	}
	return a.sessions.DisconnectUser(uid, "token revoked")
}

func userNotFound(uid string) *apiError {
	return errorf(http.StatusNotFound, "user_not_found", "no such user %q", uid)
}
