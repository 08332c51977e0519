package api

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/swapbridge/swapbridge/bridge"
	"github.com/swapbridge/swapbridge/store"
	"github.com/swapbridge/swapbridge/wire"
)

// domainError maps the bridge's and the store's sentinels to HTTP answers.
func domainError(err error) (status int, code, msg string, ok bool) {
	switch {
	case errors.Is(err, bridge.ErrStationNotFound):
		return http.StatusNotFound, "station_not_found", "no such station", true
	case errors.Is(err, bridge.ErrBookingNotFound):
		return http.StatusNotFound, "booking_not_found", "no such booking", true
	case errors.Is(err, bridge.ErrNoBatteryAvailable):
		return http.StatusConflict, "no_battery_available", "no battery can be booked at this station now", true
	case errors.Is(err, bridge.ErrBookingLimit):
		return http.StatusConflict, "booking_limit", "you already hold as many active bookings as allowed; cancel or collect one first", true
	case errors.Is(err, bridge.ErrBookingState):
		return http.StatusConflict, "invalid_booking_state", cleanMessage(err, "the booking cannot do that in its current state"), true
	case errors.Is(err, bridge.ErrBadRequest):
		return http.StatusBadRequest, "invalid_field", cleanMessage(err, "the request is not valid"), true
	case errors.Is(err, bridge.ErrUserNotFound):
		return http.StatusNotFound, "user_not_found", cleanMessage(err, "no such user"), true
	case errors.Is(err, store.ErrExists):
		return http.StatusConflict, "already_exists", "an entry with that id already exists", true
	case errors.Is(err, store.ErrClosed), errors.Is(err, bridge.ErrClosed):
		return http.StatusServiceUnavailable, "shutting_down", "the server is shutting down", true
	}
	return 0, "", "", false
}

// cleanMessage returns the outermost context of a wrapped domain error
// ("booking b-1 is collected: invalid booking state" → as is) when it is a
// human sentence, else the fallback.
func cleanMessage(err error, fallback string) string {
	s := err.Error()
	if s == "" || len(s) > 300 {
		return fallback
	}
	return strings.TrimPrefix(s, "bridge: ")
}

// checkID validates an id against the contract's pattern; code is the
// error code to answer with ("invalid_id" for a path, "invalid_field" for a
// body field).
func checkID(code, what, v string) *apiError {
	if err := wire.CheckID(what, v); err != nil {
		return errorf(http.StatusBadRequest, code, "%s", strings.TrimPrefix(err.Error(), wire.ErrInvalidID.Error()+": "))
	}
	return nil
}

func pathID(r *http.Request, name, what string) (string, *apiError) {
	v := r.PathValue(name)
	if aerr := checkID("invalid_id", what, v); aerr != nil {
		return "", aerr
	}
	return v, nil
}

func (a *API) listStations(w http.ResponseWriter, r *http.Request) error {
	views, err := a.bridge.StationViews()
	if err != nil {
		return err
	}
	if views == nil {
		views = []wire.StationView{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"stations": views})
	return nil
}

func (a *API) getStation(w http.ResponseWriter, r *http.Request) error {
	sid, aerr := pathID(r, "sid", "station id")
	if aerr != nil {
		return aerr
	}
	v, err := a.bridge.StationView(sid)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

type createBookingRequest struct {
	StationID string `json:"station_id"`
}

func (a *API) createBooking(w http.ResponseWriter, r *http.Request) error {
	var req createBookingRequest
	if aerr := decodeBody(w, r, &req); aerr != nil {
		return aerr
	}
	// The bridge checks station_id (400 invalid_field) and the rest.
	b, err := a.bridge.Book(r.Context(), userFrom(r), req.StationID)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/api/bookings/"+b.ID)
	writeJSON(w, http.StatusCreated, b)
	return nil
}

func (a *API) listBookings(w http.ResponseWriter, r *http.Request) error {
	bs, err := a.bridge.UserBookings(userFrom(r))
	if err != nil {
		return err
	}
	if bs == nil {
		bs = []wire.Booking{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"bookings": bs})
	return nil
}

func (a *API) bookingID(r *http.Request) (string, *apiError) {
	id := r.PathValue("id")
	if !wire.ValidID(id) {
		return "", errorf(http.StatusNotFound, "booking_not_found", "no such booking")
	}
	return id, nil
}

// bookingOp serves GET /api/bookings/{id} and its cancel and collect
// actions: op gets the authenticated user and the booking id.
func (a *API) bookingOp(op func(ctx context.Context, userID, bookingID string) (wire.Booking, error)) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		id, aerr := a.bookingID(r)
		if aerr != nil {
			return aerr
		}
		b, err := op(r.Context(), userFrom(r), id)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, b)
		return nil
	}
}

func (a *API) getBooking(ctx context.Context, userID, bookingID string) (wire.Booking, error) {
	return a.bridge.Booking(userID, bookingID)
}

func (a *API) cancelBooking(ctx context.Context, userID, bookingID string) (wire.Booking, error) {
	return a.bridge.Cancel(ctx, userID, bookingID)
}

func (a *API) collectBooking(ctx context.Context, userID, bookingID string) (wire.Booking, error) {
	return a.bridge.Collect(ctx, userID, bookingID)
}

// eventsPage is the body of GET /api/events.
type eventsPage struct {
	Events []json.RawMessage `json:"events"`
	// NextSince is the since to pass for the next page (the last event's
	// seq, or the request's since when the page is empty).
	NextSince uint64 `json:"next_since"`
	// LastSeq is the newest seq in the whole log.
	LastSeq uint64 `json:"last_seq"`
	// Gap is true when events after since were removed by retention; the
	// page then starts at the oldest retained event.
	Gap bool `json:"gap"`
}

const (
	defaultEventLimit = 100
	maxEventLimit     = 1000
)

// listEvents serves the event log. Without a token: station events (all, or
// one station's with station_id). With a user token and no station_id: that
// user's own events. With the admin token and no station_id: every event.
func (a *API) listEvents(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	var since uint64
	if s := q.Get("since"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return errorf(http.StatusBadRequest, "invalid_since", "since must be a non-negative integer")
		}
		since = v
	}
	limit := defaultEventLimit
	if s := q.Get("limit"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 || v > maxEventLimit {
			return errorf(http.StatusBadRequest, "invalid_limit", "limit must be an integer from 1 to %d", maxEventLimit)
		}
		limit = v
	}
	ch := store.Channel{Kind: store.AllStations}
	if sid := q.Get("station_id"); sid != "" {
		if !wire.ValidID(sid) {
			return errorf(http.StatusBadRequest, "invalid_id", "station_id is not a valid station id")
		}
		if !a.bridge.StationExists(sid) {
			return errorf(http.StatusNotFound, "station_not_found", "no such station")
		}
		ch = store.Channel{Kind: store.OneStation, ID: sid}
	} else if t := bearer(r); t != "" {
		switch {
		case a.isAdmin(r):
			ch = store.Channel{Kind: store.Everything}
		default:
			uid, err := a.UserForToken(t)
			if err != nil {
				if errors.Is(err, ErrBadToken) {
					a.LoginFailed(r)
					return errorf(http.StatusUnauthorized, "unauthorized", "the token is not valid")
				}
				return err
			}
			ch = store.Channel{Kind: store.OneUser, ID: uid}
		}
	}
	page := eventsPage{Events: []json.RawMessage{}, NextSince: since}
	evs, err := a.store.EventsAfter(ch, since, limit)
	if errors.Is(err, store.ErrCompacted) {
		page.Gap = true
		from := a.store.FirstSeqOf(ch)
		if from > 0 {
			from--
		}
		evs, err = a.store.EventsAfter(ch, from, limit)
	}
	if err != nil {
		return err
	}
	for _, ev := range evs {
		page.Events = append(page.Events, json.RawMessage(ev.Data))
		page.NextSince = ev.Seq
	}
	page.LastSeq = a.store.LastSeq()
	writeJSON(w, http.StatusOK, page)
	return nil
}

func (a *API) createStation(w http.ResponseWriter, r *http.Request) error {
	var req wire.CreateStationRequest
	if aerr := decodeBody(w, r, &req); aerr != nil {
		return aerr
	}
	if aerr := checkID("invalid_field", "id", req.ID); aerr != nil {
		return aerr
	}
	switch {
	case req.ID == "inline":
		return errorf(http.StatusBadRequest, "invalid_field", `station id "inline" is reserved for the server's own MQTT client`)
	case req.Slots < 1 || req.Slots > wire.MaxSlots:
		return errorf(http.StatusBadRequest, "invalid_field", "slots must be from 1 to %d", wire.MaxSlots)
	case len(req.Name) > 200:
		return errorf(http.StatusBadRequest, "invalid_field", "name must be at most 200 bytes")
	case wire.HasControl(req.Name):
		return errorf(http.StatusBadRequest, "invalid_field", "name must not contain control characters")
	case math.IsNaN(req.Lat) || req.Lat < -90 || req.Lat > 90 || math.IsNaN(req.Lon) || req.Lon < -180 || req.Lon > 180:
		return errorf(http.StatusBadRequest, "invalid_field", "lat must be within ±90 and lon within ±180")
	}
	if req.Name == "" {
		req.Name = req.ID
	}
	secret := NewSecret()
	st := store.Station{
		ID: req.ID, Name: req.Name, Slots: req.Slots, Lat: req.Lat, Lon: req.Lon,
		SecretHash: HashToken(secret), CreatedAt: time.Now().UTC(),
	}
	if err := a.store.CreateStation(r.Context(), st); err != nil {
		if errors.Is(err, store.ErrExists) {
			return errorf(http.StatusConflict, "station_exists", "station %q already exists", req.ID)
		}
		return err
	}
	if a.creds != nil {
		a.creds.Invalidate(st.ID)
	}
	if err := a.bridge.StationProvisioned(r.Context(), st.ID); err != nil {
		return err
	}
	a.log.Info("station provisioned", "station", st.ID, "slots", st.Slots)
	writeJSON(w, http.StatusCreated, wire.CreateStationResponse{ID: st.ID, Secret: secret})
	return nil
}

// adminStation is a provisioned station as the admin list shows it.
type adminStation struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Slots     int       `json:"slots"`
	Lat       float64   `json:"lat"`
	Lon       float64   `json:"lon"`
	CreatedAt time.Time `json:"created_at"`
}

func (a *API) adminListStations(w http.ResponseWriter, r *http.Request) error {
	sts, err := a.store.Stations()
	if err != nil {
		return err
	}
	out := make([]adminStation, 0, len(sts))
	for _, s := range sts {
		out = append(out, adminStation{ID: s.ID, Name: s.Name, Slots: s.Slots, Lat: s.Lat, Lon: s.Lon, CreatedAt: s.CreatedAt})
	}
	writeJSON(w, http.StatusOK, map[string]any{"stations": out})
	return nil
}

func (a *API) createUser(w http.ResponseWriter, r *http.Request) error {
	var req wire.CreateUserRequest
	if aerr := decodeBody(w, r, &req); aerr != nil {
		return aerr
	}
	if aerr := checkID("invalid_field", "id", req.ID); aerr != nil {
		return aerr
	}
	token := NewSecret()
	u := store.User{ID: req.ID, TokenHash: HashToken(token), CreatedAt: time.Now().UTC()}
	if err := a.store.CreateUser(r.Context(), u); err != nil {
		if errors.Is(err, store.ErrExists) {
			return errorf(http.StatusConflict, "user_exists", "user %q already exists", req.ID)
		}
		return err
	}
	a.log.Info("user created", "user", u.ID)
	writeJSON(w, http.StatusCreated, wire.CreateUserResponse{ID: u.ID, Token: token})
	return nil
}

type notificationRequest struct {
	UserID string `json:"user_id"`
	wire.Notification
}

func (a *API) sendNotification(w http.ResponseWriter, r *http.Request) error {
	var req notificationRequest
	if aerr := decodeBody(w, r, &req); aerr != nil {
		return aerr
	}
	// The bridge owns the notification's rules (level, text bounds, the
	// user's existence); its errors map to 400 invalid_field and 404
	// user_not_found.
	if err := a.bridge.Notify(r.Context(), req.UserID, req.Notification); err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"status": "sent"})
	return nil
}

type statusRequest struct {
	Status string `json:"status"`
}

func (a *API) setStationStatus(w http.ResponseWriter, r *http.Request) error {
	sid, aerr := pathID(r, "sid", "station id")
	if aerr != nil {
		return aerr
	}
	var req statusRequest
	if aerr := decodeBody(w, r, &req); aerr != nil {
		return aerr
	}
	// The bridge checks the status (400 invalid_field).
	if err := a.bridge.SetOperatorStatus(r.Context(), sid, req.Status); err != nil {
		return err
	}
	v, err := a.bridge.StationView(sid)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}
