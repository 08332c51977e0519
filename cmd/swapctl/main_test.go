package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"github.com/swapbridge/swapbridge/client"
	"github.com/swapbridge/swapbridge/internal/swapdtest"
	"github.com/swapbridge/swapbridge/server"
	"github.com/swapbridge/swapbridge/wire"
)

// startServer starts swapd with a generated admin token and returns its
// base URL and the token's file.
func startServer(t *testing.T) (base, tokenFile string) {
	t.Helper()
	s := swapdtest.Start(t, func(c *server.Config) { c.AdminToken = "" })
	return s.HTTP, s.TokenFile
}

func swapctl(t *testing.T, env map[string]string, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, func(k string) string { return env[k] }, &out, &errOut)
	return out.String() + errOut.String(), err
}

func TestStationAddListUserAdd(t *testing.T) {
	base, tokenFile := startServer(t)
	env := map[string]string{"SWAPCTL_SERVER": base}

	out, err := swapctl(t, env, "--token-file", tokenFile, "station", "add", "st-9", "--slots", "12", "--name", "Main St", "--lat", "52.5", "--lon", "13.4")
	if err != nil {
		t.Fatalf("station add: %v\n%s", err, out)
	}
	if !strings.Contains(out, "secret: ") {
		t.Errorf("station add must print the secret once:\n%s", out)
	}

	out, err = swapctl(t, env, "station", "list")
	if err != nil {
		t.Fatalf("station list: %v\n%s", err, out)
	}
	if !strings.Contains(out, "st-9") || !strings.Contains(out, "Main St") || !strings.Contains(out, "AVAIL") {
		t.Errorf("station list table:\n%s", out)
	}

	out, err = swapctl(t, env, "station", "list", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var list []map[string]any
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 1 || list[0]["total_slots"] != float64(12) {
		t.Errorf("station list --json: %v\n%s", err, out)
	}

	tok, _ := os.ReadFile(tokenFile)
	env["SWAPCTL_TOKEN"] = strings.TrimSpace(string(tok))
	out, err = swapctl(t, env, "user", "add", "dana", "--json")
	if err != nil {
		t.Fatalf("user add: %v\n%s", err, out)
	}
	var u map[string]string
	if json.Unmarshal([]byte(out), &u) != nil || u["id"] != "dana" || u["token"] == "" {
		t.Errorf("user add --json: %s", out)
	}
}

func TestErrorsAreClear(t *testing.T) {
	base, _ := startServer(t)
	env := map[string]string{"SWAPCTL_SERVER": base}
	missing := filepath.Join(t.TempDir(), "none")
	if out, err := swapctl(t, env, "--token-file", missing, "user", "add", "x"); err == nil || !strings.Contains(err.Error(), "no admin token") {
		t.Errorf("without a token: %v %s", err, out)
	}
	if _, err := swapctl(t, env, "--token", "wrong", "user", "add", "x"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("with a wrong token: %v", err)
	}
	if _, err := swapctl(t, env, "station", "add", "s1"); err == nil || !strings.Contains(err.Error(), "--slots") {
		t.Errorf("missing --slots: %v", err)
	}
	if _, err := swapctl(t, env, "frobnicate"); err == nil {
		t.Error("unknown command must fail")
	}
}

// adminEnv returns the environment for swapctl against base with the admin
// token of tokenFile.
func adminEnv(t *testing.T, base, tokenFile string) map[string]string {
	t.Helper()
	tok, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]string{"SWAPCTL_SERVER": base, "SWAPCTL_TOKEN": strings.TrimSpace(string(tok))}
}

// field returns the value after "name: " in swapctl's output.
func field(t *testing.T, out, name string) string {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, name+": "); ok {
			return v
		}
	}
	t.Fatalf("no %s in:\n%s", name, out)
	return ""
}

func TestStationRotateAndRm(t *testing.T) {
	base, tokenFile := startServer(t)
	env := adminEnv(t, base, tokenFile)
	out, err := swapctl(t, env, "station", "add", "st-1", "--slots", "4")
	if err != nil {
		t.Fatalf("station add: %v\n%s", err, out)
	}
	first := field(t, out, "secret")

	out, err = swapctl(t, env, "station", "rotate", "st-1")
	if err != nil {
		t.Fatalf("station rotate: %v\n%s", err, out)
	}
	second := field(t, out, "secret")
	if second == first || len(second) < 32 || !strings.Contains(out, "refused from now on") {
		t.Errorf("station rotate:\n%s", out)
	}
	out, err = swapctl(t, env, "station", "rotate", "st-1", "--grace", "1h")
	if err != nil || field(t, out, "secret") == second || !strings.Contains(out, "keeps working for 1h0m0s") {
		t.Errorf("station rotate --grace 1h: %v\n%s", err, out)
	}
	var res map[string]string
	out, err = swapctl(t, env, "--json", "station", "rotate", "st-1", "--grace", "30m")
	if err != nil || json.Unmarshal([]byte(out), &res) != nil || res["id"] != "st-1" || res["secret"] == "" {
		t.Errorf("station rotate --json: %v\n%s", err, out)
	}
	for _, args := range [][]string{
		{"station", "rotate", "st-1", "--grace", "-1h"},
		{"station", "rotate", "st-1", "--grace", "soon"},
		{"station", "rotate"},
	} {
		if out, err := swapctl(t, env, args...); !errors.Is(err, errUsage) {
			t.Errorf("%v: %v, want a usage error\n%s", args, err, out)
		}
	}
	if _, err := swapctl(t, env, "station", "rotate", "nope"); err == nil || !strings.Contains(err.Error(), "station_not_found") {
		t.Errorf("rotate an unknown station: %v", err)
	}

	out, err = swapctl(t, env, "station", "rm", "st-1")
	if err != nil || !strings.Contains(out, "station st-1 deleted") {
		t.Fatalf("station rm: %v\n%s", err, out)
	}
	if _, err := swapctl(t, env, "station", "show", "st-1"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("show a deleted station: %v", err)
	}
	if out, _ := swapctl(t, env, "station", "list"); strings.Contains(out, "st-1") {
		t.Errorf("a deleted station is listed:\n%s", out)
	}
	if _, err := swapctl(t, env, "station", "rm", "st-1"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("rm twice: %v", err)
	}
}

func TestUserTokenCommands(t *testing.T) {
	base, tokenFile := startServer(t)
	env := adminEnv(t, base, tokenFile)
	out, err := swapctl(t, env, "user", "add", "dana")
	if err != nil {
		t.Fatal(err)
	}
	first := field(t, out, "token")
	out, err = swapctl(t, env, "user", "token", "add", "dana")
	if err != nil || !strings.Contains(out, "(tk-") {
		t.Fatalf("user token add: %v\n%s", err, out)
	}
	second := field(t, out, "token")
	works := func(tok string) bool {
		t.Helper()
		err := client.New(base, tok).Do(context.Background(), "GET", "/api/bookings", nil, nil)
		if err != nil && !client.IsCode(err, "unauthorized") {
			t.Fatal(err)
		}
		return err == nil
	}
	if !works(first) || !works(second) {
		t.Fatal("the user's tokens do not work")
	}
	if out, err := swapctl(t, env, "user", "token", "revoke", "dana"); err != nil || !strings.Contains(out, "revoked") {
		t.Fatalf("user token revoke: %v\n%s", err, out)
	}
	if works(first) || works(second) {
		t.Fatal("a revoked token still works")
	}
	var res map[string]string
	out, err = swapctl(t, env, "--json", "user", "token", "add", "dana")
	if err != nil || json.Unmarshal([]byte(out), &res) != nil || res["user_id"] != "dana" || !works(res["token"]) {
		t.Fatalf("user token add --json: %v\n%s", err, out)
	}
	if out, err := swapctl(t, env, "user", "rm", "dana"); err != nil || !strings.Contains(out, "user dana deleted") {
		t.Fatalf("user rm: %v\n%s", err, out)
	}
	if works(res["token"]) {
		t.Fatal("the token of a deleted user still works")
	}
	for _, args := range [][]string{{"user", "rm", "dana"}, {"user", "token", "add", "dana"}, {"user", "token", "revoke", "dana"}} {
		if _, err := swapctl(t, env, args...); err == nil || !strings.Contains(err.Error(), "user_not_found") {
			t.Errorf("%v on a deleted user: %v", args, err)
		}
	}
	for _, args := range [][]string{{"user", "token"}, {"user", "token", "add"}, {"user", "rm"}, {"user", "token", "frob", "dana"}} {
		if _, err := swapctl(t, env, args...); !errors.Is(err, errUsage) {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
}

// station show prints each slot's number in the SLOT column.
func TestStationShowSlotColumn(t *testing.T) {
	base, tokenFile := startServer(t)
	env := adminEnv(t, base, tokenFile)
	if out, err := swapctl(t, env, "station", "add", "st-1", "--slots", "3"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	out, err := swapctl(t, env, "station", "show", "st-1")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	rows := lines[len(lines)-3:]
	for i, row := range rows {
		if f := strings.Fields(row); len(f) == 0 || f[0] != strconv.Itoa(i+1) {
			t.Errorf("row %d: %q, want slot %d first", i, row, i+1)
		}
	}
	if strings.Contains(out, "{") || strings.Contains(out, "0x") {
		t.Errorf("a struct or pointer in the table:\n%s", out)
	}
}

// Text from the server never reaches the terminal raw: control characters
// and escape sequences in a station's name or a battery id are escaped.
func TestTablesEscapeControlCharacters(t *testing.T) {
	const hostile = "\x1b[2J\x1b]0;OWNED\a"
	bat := hostile
	view := wire.StationView{ID: "st-x", Name: "evil\x1b[31m", Status: "online", Slots: []wire.SlotView{
		{Slot: wire.Slot{Slot: 1, BatteryID: &bat, SoC: 95, Door: "closed", Locked: true, Fault: "over\theat"}},
		{Slot: wire.Slot{Slot: 2, Door: "closed"}},
	}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/api/stations/st-x":
			json.NewEncoder(w).Encode(view)
		case "/api/stations":
			json.NewEncoder(w).Encode(map[string]any{"stations": []wire.StationView{view}})
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	env := map[string]string{"SWAPCTL_SERVER": srv.URL}
	for _, args := range [][]string{{"station", "show", "st-x"}, {"station", "list"}} {
		out, err := swapctl(t, env, args...)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		for _, r := range out {
			if r != '\n' && !unicode.IsPrint(r) {
				t.Fatalf("%v printed %U raw:\n%q", args, r, out)
			}
		}
		if !strings.Contains(out, `"evil\x1b[31m"`) {
			t.Errorf("%v: the name is not escaped:\n%s", args, out)
		}
		if args[1] == "show" {
			if !strings.Contains(out, `"\x1b[2J\x1b]0;OWNED\a"`) || !strings.Contains(out, `"over\theat"`) {
				t.Errorf("the battery id or fault is not escaped:\n%s", out)
			}
			if !strings.Contains(out, "\n1 ") || !strings.Contains(out, "\n2 ") {
				t.Errorf("slot numbers missing:\n%s", out)
			}
		}
	}
	if got := esc("B-1234"); got != "B-1234" {
		t.Errorf("esc of a plain id: %q", got)
	}
	if got := esc("Café Nord"); got != "Café Nord" {
		t.Errorf("esc of printable UTF-8: %q", got)
	}
	if got := esc("\u009b2J"); got != `"\u009b2J"` {
		t.Errorf("esc of a C1 control: %q", got)
	}
	if got := esc("bad\xffutf8"); got != `"bad\xffutf8"` {
		t.Errorf("esc of invalid UTF-8: %q", got)
	}
}
