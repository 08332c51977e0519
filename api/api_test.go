package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/swapbridge/swapbridge/api"
	"github.com/swapbridge/swapbridge/client"
	"github.com/swapbridge/swapbridge/internal/swapdtest"
	"github.com/swapbridge/swapbridge/wire"
)

// adminToken is the test servers' admin token.
const adminToken = swapdtest.AdminToken

type answer struct {
	status int
	body   map[string]any
	raw    string
}

func call(t *testing.T, method, url, token, body string) answer {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, url, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, raw: string(b)}
	json.Unmarshal(b, &a.body)
	if resp.StatusCode >= 400 {
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Errorf("%s %s: error with content type %q", method, url, ct)
		}
		e, _ := a.body["error"].(map[string]any)
		if e == nil || e["code"] == "" || e["message"] == "" {
			t.Errorf("%s %s: error body not in the contract's shape: %s", method, url, b)
		}
	}
	if resp.Header.Get("X-Request-Id") == "" && strings.Contains(url, "/api/") {
		t.Errorf("%s %s: no X-Request-Id", method, url)
	}
	return a
}

func code(a answer) string {
	e, _ := a.body["error"].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

func TestBadInputChangesNothing(t *testing.T) {
	base := swapdtest.Start(t, nil).HTTP
	ctx := context.Background()
	adm := client.New(base, adminToken)
	if _, err := adm.CreateStation(ctx, wire.CreateStationRequest{ID: "st-1", Slots: 8}); err != nil {
		t.Fatal(err)
	}
	u, err := adm.CreateUser(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	big := `{"id":"x","name":"` + strings.Repeat("a", 70<<10) + `","slots":4}`
	cases := []struct {
		name, method, path, token, body string
		status                          int
		code                            string
	}{
		{"admin without token", "POST", "/api/admin/stations", "", `{"id":"s2","slots":4}`, 401, "unauthorized"},
		{"admin wrong token", "POST", "/api/admin/stations", "nope", `{"id":"s2","slots":4}`, 401, "unauthorized"},
		{"user token is not admin", "POST", "/api/admin/users", u.Token, `{"id":"eve"}`, 401, "unauthorized"},
		{"admin token as ?token=", "POST", "/api/admin/users?token=" + adminToken, "", `{"id":"eve"}`, 401, "unauthorized"},
		{"admin token as ?token= on events", "GET", "/api/events?token=" + adminToken, "", ``, 401, "unauthorized"},
		{"malformed json", "POST", "/api/admin/stations", adminToken, `{"id":`, 400, "invalid_json"},
		{"not an object", "POST", "/api/admin/stations", adminToken, `[1,2]`, 400, "invalid_json"},
		{"wrong type", "POST", "/api/admin/stations", adminToken, `{"id":"s2","slots":"four"}`, 400, "invalid_field"},
		{"bad station id", "POST", "/api/admin/stations", adminToken, `{"id":"../etc","slots":4}`, 400, "invalid_field"},
		{"reserved station id", "POST", "/api/admin/stations", adminToken, `{"id":"inline","slots":4}`, 400, "invalid_field"},
		{"zero slots", "POST", "/api/admin/stations", adminToken, `{"id":"s2","slots":0}`, 400, "invalid_field"},
		{"control characters in a name", "POST", "/api/admin/stations", adminToken, `{"id":"s2","slots":4,"name":"\u001b[2J\u001b]0;OWNED\u0007"}`, 400, "invalid_field"},
		{"negative slots", "POST", "/api/admin/stations", adminToken, `{"id":"s2","slots":-3}`, 400, "invalid_field"},
		{"huge slots", "POST", "/api/admin/stations", adminToken, `{"id":"s2","slots":1e12}`, 400, "invalid_field"},
		{"bad lat", "POST", "/api/admin/stations", adminToken, `{"id":"s2","slots":4,"lat":91}`, 400, "invalid_field"},
		{"oversize body", "POST", "/api/admin/stations", adminToken, big, 413, "body_too_large"},
		{"duplicate station", "POST", "/api/admin/stations", adminToken, `{"id":"st-1","slots":4}`, 409, "station_exists"},
		{"duplicate user", "POST", "/api/admin/users", adminToken, `{"id":"bob"}`, 409, "user_exists"},
		{"empty body", "POST", "/api/admin/users", adminToken, ``, 400, "invalid_json"},
		{"booking without token", "POST", "/api/bookings", "", `{"station_id":"st-1"}`, 401, "unauthorized"},
		{"booking bad token", "POST", "/api/bookings", "forged", `{"station_id":"st-1"}`, 401, "unauthorized"},
		{"booking unknown station", "POST", "/api/bookings", u.Token, `{"station_id":"nope"}`, 404, "station_not_found"},
		{"booking bad station id", "POST", "/api/bookings", u.Token, `{"station_id":"a b"}`, 400, "invalid_field"},
		{"booking offline station", "POST", "/api/bookings", u.Token, `{"station_id":"st-1"}`, 409, "no_battery_available"},
		{"unknown booking", "GET", "/api/bookings/b-nope", u.Token, ``, 404, "booking_not_found"},
		{"cancel unknown booking", "POST", "/api/bookings/b-nope/cancel", u.Token, ``, 404, "booking_not_found"},
		{"unknown station view", "GET", "/api/stations/nope", "", ``, 404, "station_not_found"},
		{"notify unknown user", "POST", "/api/admin/notifications", adminToken, `{"user_id":"ghost","title":"t"}`, 404, "user_not_found"},
		{"notify bad level", "POST", "/api/admin/notifications", adminToken, `{"user_id":"bob","title":"t","level":"loud"}`, 400, "invalid_field"},
		{"status bad value", "POST", "/api/admin/stations/st-1/status", adminToken, `{"status":"faulted"}`, 400, "invalid_field"},
		{"status unknown station", "POST", "/api/admin/stations/nope/status", adminToken, `{"status":"maintenance"}`, 404, "station_not_found"},
		{"events bad since", "GET", "/api/events?since=-1", "", ``, 400, "invalid_since"},
		{"events bad limit", "GET", "/api/events?limit=100000", "", ``, 400, "invalid_limit"},
		{"events unknown station", "GET", "/api/events?station_id=nope", "", ``, 404, "station_not_found"},
		{"unknown endpoint", "GET", "/api/nothing", "", ``, 404, "not_found"},
		{"wrong method", "DELETE", "/api/stations", "", ``, 405, "method_not_allowed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := call(t, tc.method, base+tc.path, tc.token, tc.body)
			if a.status != tc.status || code(a) != tc.code {
				t.Errorf("got %d %q, want %d %q: %s", a.status, code(a), tc.status, tc.code, a.raw)
			}
		})
	}
	// Nothing changed: one station, its inventory untouched, no events
	// beyond the provisioning ones, no bookings.
	sts, err := client.New(base, "").Stations(ctx)
	if err != nil || len(sts) != 1 || sts[0].ID != "st-1" {
		t.Fatalf("stations after bad input: %+v %v", sts, err)
	}
	bs := call(t, "GET", base+"/api/bookings", u.Token, "")
	if l, _ := bs.body["bookings"].([]any); bs.status != 200 || len(l) != 0 {
		t.Errorf("bookings after bad input: %s", bs.raw)
	}
}

func TestHealthAndMetrics(t *testing.T) {
	base := swapdtest.Start(t, nil).HTTP
	if a := call(t, "GET", base+"/healthz", "", ""); a.status != 200 {
		t.Errorf("healthz %d", a.status)
	}
	if a := call(t, "GET", base+"/readyz", "", ""); a.status != 200 {
		t.Errorf("readyz %d %s", a.status, a.raw)
	}
	a := call(t, "GET", base+"/metrics", "", "")
	if a.status != 200 || !strings.Contains(a.raw, "swapd_http_request_duration_seconds") {
		t.Errorf("metrics missing the HTTP histogram: %d", a.status)
	}
}

func TestSecretsAreShownOnceAndWork(t *testing.T) {
	base := swapdtest.Start(t, nil).HTTP
	ctx := context.Background()
	adm := client.New(base, adminToken)
	u, err := adm.CreateUser(ctx, "carol")
	if err != nil {
		t.Fatal(err)
	}
	if len(u.Token) < 40 {
		t.Errorf("token too short: %q", u.Token)
	}
	a := call(t, "GET", base+"/api/bookings", u.Token, "")
	if a.status != 200 {
		t.Errorf("the new token must work: %d %s", a.status, a.raw)
	}
	// ?token= works as well as the header.
	a = call(t, "GET", base+"/api/bookings?token="+u.Token, "", "")
	if a.status != 200 {
		t.Errorf("?token= must work: %d", a.status)
	}
	list := call(t, "GET", base+"/api/admin/stations", adminToken, "")
	if strings.Contains(list.raw, "secret") {
		t.Errorf("the admin list must not show secrets: %s", list.raw)
	}
}

// TestOpenAPICoversEveryRoute keeps docs/openapi.yaml true: every route the
// API registers is documented with its method, and nothing else is.
func TestOpenAPICoversEveryRoute(t *testing.T) {
	b, err := os.ReadFile("../docs/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		OpenAPI string                    `yaml:"openapi"`
		Paths   map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.NewDecoder(bytes.NewReader(b)).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.1") {
		t.Errorf("openapi version %q, want 3.1.x", doc.OpenAPI)
	}
	var documented []string
	for p, ops := range doc.Paths {
		for m := range ops {
			switch m {
			case "get", "post", "put", "delete", "patch":
				documented = append(documented, strings.ToUpper(m)+" "+p)
			}
		}
	}
	a, err := api.New(api.Config{AdminToken: adminToken}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	registered := a.Routes()
	sort.Strings(documented)
	sort.Strings(registered)
	if strings.Join(documented, "\n") != strings.Join(registered, "\n") {
		t.Errorf("docs/openapi.yaml and the routes differ:\ndocumented:\n%s\nregistered:\n%s",
			strings.Join(documented, "\n"), strings.Join(registered, "\n"))
	}
}
