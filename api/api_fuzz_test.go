package api_test

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/swapbridge/swapbridge/internal/swapdtest"
	"github.com/swapbridge/swapbridge/wire"
)

// FuzzHTTPBodies sends arbitrary bodies and path ids to every JSON endpoint
// of a real server (real store and bridge): the answer is never a 5xx and
// every error has the contract's shape.
func FuzzHTTPBodies(f *testing.F) {
	h := swapdtest.Start(f, nil).Srv.Handler()
	do := func(method, path, token string, body []byte) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, "http://swapd"+path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w
	}
	if w := do("POST", "/api/admin/stations", adminToken, []byte(`{"id":"F1","name":"F","slots":4}`)); w.Code != 201 {
		f.Fatalf("provision: %d %s", w.Code, w.Body)
	}
	w := do("POST", "/api/admin/users", adminToken, []byte(`{"id":"fuzz-user"}`))
	var u wire.CreateUserResponse
	if w.Code != 201 || json.Unmarshal(w.Body.Bytes(), &u) != nil {
		f.Fatalf("user: %d %s", w.Code, w.Body)
	}
	routes := []struct{ method, path string }{
		{"POST", "/api/bookings"},
		{"POST", "/api/admin/stations"},
		{"POST", "/api/admin/users"},
		{"POST", "/api/admin/notifications"},
		{"POST", "/api/admin/stations/{id}/status"},
		{"POST", "/api/bookings/{id}/cancel"},
		{"POST", "/api/bookings/{id}/collect"},
		{"GET", "/api/bookings/{id}"},
		{"GET", "/api/stations/{id}"},
		{"GET", "/api/events?since={id}&limit={id}&station_id={id}"},
	}
	for _, s := range []string{
		`{"station_id":"F1"}`, `{"id":"S2","name":"x","slots":12,"lat":1.5,"lon":2}`, `{"id":"u2"}`,
		`{"user_id":"fuzz-user","title":"t","message":"m","level":"info"}`, `{"status":"maintenance"}`,
		`{"station_id":5}`, `{"slots":-1,"id":"x"}`, `{"slots":1e309}`, `{"id":"` + strings.Repeat("a", 70) + `"}`,
		`{`, `[]`, `null`, `"x"`, `{"station_id":"F1","x":1}`, `{"station_id":"F1"}{"station_id":"F1"}`, "",
	} {
		for r := range routes {
			f.Add(uint8(r), uint8(r%3), "F1", []byte(s))
		}
	}
	f.Add(uint8(8), uint8(0), "../../etc/passwd", []byte(nil))
	f.Add(uint8(9), uint8(0), "18446744073709551616", []byte(nil))
	f.Fuzz(func(t *testing.T, r, tok uint8, id string, body []byte) {
		rt := routes[int(r)%len(routes)]
		token := []string{"", adminToken, u.Token}[int(tok)%3]
		if strings.HasPrefix(rt.path, "/api/admin") {
			token = adminToken
		} else if tok%3 == 1 {
			token = u.Token
		}
		path := strings.ReplaceAll(rt.path, "{id}", urlSafe(id))
		w := do(rt.method, path, token, body)
		if w.Code >= 500 {
			t.Fatalf("%s %s %q: %d %s", rt.method, path, body, w.Code, w.Body)
		}
		if w.Code >= 400 {
			var eb wire.ErrorBody
			if err := json.Unmarshal(w.Body.Bytes(), &eb); err != nil || eb.Error.Code == "" || eb.Error.Message == "" {
				t.Fatalf("%s %s: error body %q not in the contract's shape", rt.method, path, w.Body)
			}
			if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Fatalf("%s %s: content type %q", rt.method, path, ct)
			}
		}
	})
}

// urlSafe percent-encodes id for a path segment or query value.
func urlSafe(id string) string {
	var b strings.Builder
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' {
			b.WriteByte(c)
		} else {
			b.WriteString("%" + strings.ToUpper(string("0123456789abcdef"[c>>4])+string("0123456789abcdef"[c&15])))
		}
	}
	return b.String()
}
