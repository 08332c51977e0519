// Package client is a small Go client for swapd's HTTP API, used by swapctl
// and swapbench. Every call blocks until the server answers or ctx is done.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/swapbridge/swapbridge/wire"
)

// Client calls one swapd. Token is the bearer token sent with every request
// (the admin token for admin calls, a user token for bookings).
type Client struct {
	BaseURL string
	Token   string
	HTTP    *http.Client
}

// New returns a client for the server at base (e.g. http://localhost:8000).
func New(base, token string) *Client {
	return &Client{BaseURL: strings.TrimRight(base, "/"), Token: token, HTTP: &http.Client{Timeout: 30 * time.Second}}
}

// Error is an error answer from the server.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("server answered %d", e.Status)
	}
	return fmt.Sprintf("%s (%d %s)", e.Message, e.Status, e.Code)
}

// IsCode reports whether err is an *Error with the code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// Do sends a request with an optional JSON body and decodes the JSON answer
// into out (when non-nil).
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var eb wire.ErrorBody
		if json.Unmarshal(data, &eb) == nil && eb.Error.Code != "" {
			return &Error{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message}
		}
		return &Error{Status: resp.StatusCode, Message: strings.TrimSpace(string(data))}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decode %s %s: %w", method, path, err)
		}
	}
	return nil
}

// CreateStation provisions a station; the secret in the answer is shown only
// once.
func (c *Client) CreateStation(ctx context.Context, req wire.CreateStationRequest) (wire.CreateStationResponse, error) {
	var out wire.CreateStationResponse
	err := c.Do(ctx, http.MethodPost, "/api/admin/stations", req, &out)
	return out, err
}

// CreateUser creates a user; the token in the answer is shown only once.
func (c *Client) CreateUser(ctx context.Context, id string) (wire.CreateUserResponse, error) {
	var out wire.CreateUserResponse
	err := c.Do(ctx, http.MethodPost, "/api/admin/users", wire.CreateUserRequest{ID: id}, &out)
	return out, err
}

// Stations lists the stations with their inventory.
func (c *Client) Stations(ctx context.Context) ([]wire.StationView, error) {
	var out struct {
		Stations []wire.StationView `json:"stations"`
	}
	err := c.Do(ctx, http.MethodGet, "/api/stations", nil, &out)
	return out.Stations, err
}

// Station returns one station with its slots.
func (c *Client) Station(ctx context.Context, id string) (wire.StationView, error) {
	var out wire.StationView
	err := c.Do(ctx, http.MethodGet, "/api/stations/"+url.PathEscape(id), nil, &out)
	return out, err
}

// Book books the best battery at the station for the token's user.
func (c *Client) Book(ctx context.Context, stationID string) (wire.Booking, error) {
	var out wire.Booking
	err := c.Do(ctx, http.MethodPost, "/api/bookings", map[string]string{"station_id": stationID}, &out)
	return out, err
}

// Booking returns one of the token user's bookings.
func (c *Client) Booking(ctx context.Context, id string) (wire.Booking, error) {
	var out wire.Booking
	err := c.Do(ctx, http.MethodGet, "/api/bookings/"+url.PathEscape(id), nil, &out)
	return out, err
}

// Cancel cancels a booking.
func (c *Client) Cancel(ctx context.Context, id string) (wire.Booking, error) {
	var out wire.Booking
	err := c.Do(ctx, http.MethodPost, "/api/bookings/"+url.PathEscape(id)+"/cancel", nil, &out)
	return out, err
}

// Collect unlocks a booked battery's slot.
func (c *Client) Collect(ctx context.Context, id string) (wire.Booking, error) {
	var out wire.Booking
	err := c.Do(ctx, http.MethodPost, "/api/bookings/"+url.PathEscape(id)+"/collect", nil, &out)
	return out, err
}

// Notify sends a notification to a user (admin).
func (c *Client) Notify(ctx context.Context, userID string, n wire.Notification) error {
	body := map[string]string{"user_id": userID, "title": n.Title, "message": n.Message, "level": n.Level}
	return c.Do(ctx, http.MethodPost, "/api/admin/notifications", body, nil)
}

// SetStationStatus sets a station's operator status, "maintenance" or
// "online" (admin).
func (c *Client) SetStationStatus(ctx context.Context, stationID, status string) (wire.StationView, error) {
	var out wire.StationView
	err := c.Do(ctx, http.MethodPost, "/api/admin/stations/"+url.PathEscape(stationID)+"/status", map[string]string{"status": status}, &out)
	return out, err
}

// RotateStationSecret gives a station a new secret (admin); the old one
// keeps working for grace ("" or "0s": refused at once, and a session
// logged in with it is closed). The new secret is shown only once.
func (c *Client) RotateStationSecret(ctx context.Context, stationID, grace string) (wire.CreateStationResponse, error) {
	var out wire.CreateStationResponse
	err := c.Do(ctx, http.MethodPost, "/api/admin/stations/"+url.PathEscape(stationID)+"/secret", wire.RotateSecretRequest{Grace: grace}, &out)
	return out, err
}

// DeleteStation deletes a station (admin): its session is closed, its
// active bookings fail, its past events stay.
func (c *Client) DeleteStation(ctx context.Context, stationID string) error {
	return c.Do(ctx, http.MethodDelete, "/api/admin/stations/"+url.PathEscape(stationID), nil, nil)
}

// AddUserToken gives a user one more token (admin); it is shown only once.
func (c *Client) AddUserToken(ctx context.Context, userID string) (wire.UserTokenResponse, error) {
	var out wire.UserTokenResponse
	err := c.Do(ctx, http.MethodPost, "/api/admin/users/"+url.PathEscape(userID)+"/tokens", nil, &out)
	return out, err
}

// RevokeUserTokens revokes every token of a user and closes its WebSockets
// (admin).
func (c *Client) RevokeUserTokens(ctx context.Context, userID string) error {
	return c.Do(ctx, http.MethodDelete, "/api/admin/users/"+url.PathEscape(userID)+"/tokens", nil, nil)
}

// DeleteUser deletes a user (admin): tokens revoked, WebSockets closed,
// active bookings cancelled.
func (c *Client) DeleteUser(ctx context.Context, userID string) error {
	return c.Do(ctx, http.MethodDelete, "/api/admin/users/"+url.PathEscape(userID), nil, nil)
}
