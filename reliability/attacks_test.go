package reliability

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/swapbridge/swapbridge/client"
	"github.com/swapbridge/swapbridge/internal/mqtttest"
	"github.com/swapbridge/swapbridge/internal/swapdtest"
	"github.com/swapbridge/swapbridge/server"
	"github.com/swapbridge/swapbridge/wire"
)

// attackLab is one in-process swapd under attack, its log captured at the
// production level (info) so a row can count the log bytes it caused and
// look for its secrets in them.
type attackLab struct {
	*swapdtest.Swapd
	log     *logBuf
	secrets map[string]string
}

func startAttackLab(t *testing.T, mutate func(*server.Config)) *attackLab {
	t.Helper()
	lb := &logBuf{}
	log := slog.New(slog.NewJSONHandler(lb, &slog.HandlerOptions{Level: slog.LevelInfo}))
	p := swapdtest.StartLog(t, log, mutate)
	return &attackLab{Swapd: p, log: lb}
}

// logLen is the number of log bytes written so far.
func (l *attackLab) logLen() int { return l.log.Len() }

// logSince returns the log written since offset n.
func (l *attackLab) logSince(n int) string { return l.log.Since(n) }

// settled returns the fingerprint once it stopped changing: a row that
// changes state may leave work in flight (a publish of a taken-over
// connection still being committed), and the next row must not be blamed
// for it.
func (l *attackLab) settled(t *testing.T) string {
	t.Helper()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	prev := fingerprint(t, l.Swapd)
	for range 100 {
		<-tick.C
		cur := fingerprint(t, l.Swapd)
		if cur == prev {
			return cur
		}
		prev = cur
	}
	t.Fatal("the state kept changing for 10 s after the row")
	return ""
}

// connect logs a station in with MQTT version v; the connection is closed
// at cleanup.
func (l *attackLab) connect(t *testing.T, sid string, v byte) *mqtttest.Conn {
	t.Helper()
	c, code, err := mqtttest.Connect(l.MQTT, sid, l.secrets[sid], v, 15*time.Second)
	if err != nil || code != 0 {
		t.Fatalf("connect %s: reason %#x, %v", sid, code, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// attack is one row of the attacker suite.
type attack struct {
	name string
	// run performs the attack and returns the answer the attacker got,
	// in words; want is the answer a hardened swapd gives.
	run  func(t *testing.T, l *attackLab) string
	want string
	// maxLog bounds the log bytes the row may cause (0: 8 KiB).
	maxLog int
	// changes is set for rows whose purpose is to change state (an
	// operator revoking something, a booking); they check what they
	// changed themselves. Every other row must leave the event log and
	// every station view exactly as they were.
	changes bool
}

// TestAttacks replays, as a table, the probes swapd was attacked with from
// outside: one swapd, real sockets, one row per attack. Each row checks the
// answer the attacker got, that the log stayed small and free of the
// secrets involved, and (but for the operator's own revocations) that
// nothing changed, by reading the state back.
func TestAttacks(t *testing.T) {
	l := startAttackLab(t, func(cfg *server.Config) {
		cfg.Pprof = true             // the ?token= row probes /debug/pprof too
		cfg.WebSocket.MaxReplay = 10 // the lab's log is far shorter than the default bound (10000)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	l.secrets = provision(t, l.Admin, 4, "A-LOG", "A-FOREIGN", "A-STATUS", "A-STUCK", "A-NAT1", "A-NAT2", "A-ACL", "A-CTRL", "A-ROT", "A-DEL", "A-BOOK1", "A-BOOK2", "A-BOOK3")
	for _, sid := range []string{"A-BOOK1", "A-BOOK2", "A-BOOK3"} {
		startAckingStation(t, l.MQTT, sid, l.secrets[sid], "boot-"+sid, 1, 4, true)
		waitAvailable(t, l.Admin, sid, 4)
	}
	rider, err := l.Admin.CreateUser(ctx, "attacker-rider")
	if err != nil {
		t.Fatal(err)
	}
	victim, err := l.Admin.CreateUser(ctx, "victim-rider")
	if err != nil {
		t.Fatal(err)
	}
	wsBase := "ws" + strings.TrimPrefix(l.HTTP, "http")

	rows := []attack{
		{
			name: "a second CONNECT on a live connection carries the secret",
			run: func(t *testing.T, l *attackLab) string {
				c := l.connect(t, "A-LOG", mqtttest.V311)
				if err := c.Write(mqtttest.ConnectPacket("A-LOG", l.secrets["A-LOG"])); err != nil {
					return "write failed: " + err.Error()
				}
				if _, err := c.ReadUntilClosed(); !mqtttest.Closed(err) {
					return "connection kept open"
				}
				return "closed"
			},
			want: "closed",
		},
		{
			name: "a 60 KB publish to a foreign topic, 20 times with reconnects",
			run: func(t *testing.T, l *attackLab) string {
				closed := 0
				for i := range 20 {
					c := l.connect(t, "A-FOREIGN", mqtttest.V311)
					c.Publish(wire.Topic("A-LOG", wire.KindTelemetry), 1, uint16(i+1), []byte(strings.Repeat("x", 60<<10)), false, nil)
					pks, err := c.ReadUntilClosed()
					if mqtttest.Closed(err) && len(pks) == 0 {
						closed++
					}
					c.Close()
				}
				return fmt.Sprintf("closed without PUBACK %d of 20", closed)
			},
			want: "closed without PUBACK 20 of 20",
		},
		{
			name: "a malformed retained status over MQTT 5, 150 times on one connection",
			run: func(t *testing.T, l *attackLab) string {
				c := l.connect(t, "A-STATUS", mqtttest.V5)
				bad := []byte(`{"online":"maybe","boot_id":` + strings.Repeat(`"x`, 20000) + `"}`)
				codes := map[byte]int{}
				for i := range 150 {
					if err := c.Publish(wire.Topic("A-STATUS", wire.KindStatus), 1, uint16(i+1), bad, true, nil); err != nil {
						return "write failed: " + err.Error()
					}
					pk, err := c.Read()
					if err != nil {
						return fmt.Sprintf("after %d: %v", i, err)
					}
					codes[pk.ReasonCode]++
				}
				return fmt.Sprintf("PUBACK codes %v", codes)
			},
			want: "PUBACK codes map[153:150]", // 0x99 payload format invalid
		},
		{
			name: "a retained status is acknowledged with a valid PUBACK code",
			run: func(t *testing.T, l *attackLab) string {
				c := l.connect(t, "A-STATUS", mqtttest.V5)
				st, _ := json.Marshal(wire.Status{Online: true, BootID: "boot-status", TS: time.Now().UTC(), Slots: 4})
				c.Publish(wire.Topic("A-STATUS", wire.KindStatus), 1, 1, st, true, nil)
				pk, err := c.Read()
				if err != nil {
					return err.Error()
				}
				return fmt.Sprintf("PUBACK %#x", pk.ReasonCode)
			},
			want:    "PUBACK 0x0",
			changes: true, // the station goes online
		},
		{
			name: "a client that stops reading holds the station's session; the station reconnects",
			run: func(t *testing.T, l *attackLab) string {
				stuckClient(t, l, "A-STUCK")
				start := time.Now()
				c, code, err := mqtttest.Connect(l.MQTT, "A-STUCK", l.secrets["A-STUCK"], mqtttest.V311, 60*time.Second)
				if err != nil {
					return "no CONNACK: " + err.Error()
				}
				defer c.Close()
				t.Logf("CONNACK behind a client that stopped reading: %.2fs", time.Since(start).Seconds())
				if d := time.Since(start); d > 15*time.Second {
					return fmt.Sprintf("CONNACK %#x after %s", code, d.Round(time.Second))
				}
				return fmt.Sprintf("CONNACK %#x", code)
			},
			want:    "CONNACK 0x0",
			changes: true, // the station went online
			maxLog:  16 << 10,
		},
		{
			name: "30 wrong passwords for a neighbour from the same address; a station with its own secret logs in",
			run: func(t *testing.T, l *attackLab) string {
				refused := 0
				for range 12 {
					c, code, err := mqtttest.Connect(l.MQTT, "A-NAT1", "wrong-secret-0123456789", mqtttest.V311, 15*time.Second)
					if err != nil || code != 0 {
						refused++
					}
					if c != nil {
						c.Close()
					}
				}
				c, code, err := mqtttest.Connect(l.MQTT, "A-NAT2", l.secrets["A-NAT2"], mqtttest.V311, 15*time.Second)
				if err != nil {
					return fmt.Sprintf("neighbour: %v", err)
				}
				c.Close()
				return fmt.Sprintf("wrong refused %d of 12; neighbour CONNACK %#x", refused, code)
			},
			want: "wrong refused 12 of 12; neighbour CONNACK 0x0",
		},
		{
			name: "MQTT 5 publishes refused by the ACL, with 60 KB of user properties each",
			run: func(t *testing.T, l *attackLab) string {
				c := l.connect(t, "A-ACL", mqtttest.V5)
				echoed, answered := 0, 0
				for i := range 20 {
					if err := c.Publish(wire.Topic("A-LOG", wire.KindTelemetry), 1, uint16(i+1), []byte(`{}`), false, mqtttest.UserProperties(60<<10)); err != nil {
						break
					}
					pk, err := c.Read()
					if err != nil {
						break
					}
					answered++
					if len(pk.Properties.User) > 0 {
						echoed++
					}
				}
				return fmt.Sprintf("acks echoing user properties: %d (answered %d)", echoed, min(answered, 1))
			},
			want: "acks echoing user properties: 0 (answered 1)",
		},
		{
			name: "control characters in battery_id and fault",
			run: func(t *testing.T, l *attackLab) string {
				c := l.connect(t, "A-CTRL", mqtttest.V5)
				codes := []string{}
				for i, s := range []wire.Slot{
					{Slot: 1, BatteryID: ptr("\x1b[2J\x1b]0;OWNED\a"), SoC: 90, SoH: 95, TempC: 25, Door: wire.DoorClosed, Locked: true},
					{Slot: 1, BatteryID: ptr("B-1"), SoC: 90, SoH: 95, TempC: 25, Door: wire.DoorClosed, Locked: true, Fault: "over\x00temp\r\n"},
				} {
					tel, _ := json.Marshal(wire.Telemetry{BootID: "boot-ctrl", Seq: uint64(i + 1), TS: time.Now().UTC(), Slots: []wire.Slot{s}})
					c.Publish(wire.Topic("A-CTRL", wire.KindTelemetry), 1, uint16(i+1), tel, false, nil)
					pk, err := c.Read()
					if err != nil {
						return err.Error()
					}
					codes = append(codes, fmt.Sprintf("%#x", pk.ReasonCode))
				}
				return "PUBACK " + strings.Join(codes, ",")
			},
			want: "PUBACK 0x99,0x99",
		},
		{
			name: "the admin token as ?token=, on the API and on /debug/pprof",
			run: func(t *testing.T, l *attackLab) string {
				var got []string
				for _, path := range []string{"/api/admin/stations", "/debug/pprof/"} {
					resp, err := http.Get(l.HTTP + path + "?token=" + testAdminToken)
					if err != nil {
						return err.Error()
					}
					resp.Body.Close()
					got = append(got, fmt.Sprint(resp.StatusCode))
				}
				return strings.Join(got, ",")
			},
			want: "401,401",
		},
		{
			name: "an anonymous ?since=0 asks for the whole retained log",
			run: func(t *testing.T, l *attackLab) string {
				conn, _, err := websocket.DefaultDialer.Dial(wsBase+"/ws/stations/?since=0", nil)
				if err != nil {
					return err.Error()
				}
				defer conn.Close()
				conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				var hello wire.Hello
				if err := conn.ReadJSON(&hello); err != nil {
					return err.Error()
				}
				if hello.Recovered {
					return fmt.Sprintf("replayed all of %d events", hello.Seq)
				}
				return "recovered:false"
			},
			want: "recovered:false",
		},
		{
			name: "battery-id churn: a 64-slot station swaps every battery id in 60 messages",
			run: func(t *testing.T, l *attackLab) string {
				sec := provision(t, l.Admin, 64, "A-FLOOD")
				l.secrets["A-FLOOD"] = sec["A-FLOOD"]
				// A quiet user's notification, from before the flood.
				if err := l.Admin.Notify(ctx, victim.ID, wire.Notification{Title: "before", Message: "the flood", Level: "info"}); err != nil {
					return err.Error()
				}
				c := l.connect(t, "A-FLOOD", mqtttest.V311)
				start := l.Srv.Store().LastSeq()
				for i := range 60 {
					tel := wire.Telemetry{BootID: "boot-flood", Seq: uint64(i + 1), TS: time.Now().UTC(), Full: true}
					for sl := 1; sl <= 64; sl++ {
						tel.Slots = append(tel.Slots, wire.Slot{Slot: sl, BatteryID: ptr(fmt.Sprintf("F-%d-%d", i, sl)), SoC: 50, SoH: 95, TempC: 25, Door: wire.DoorClosed, Locked: true})
					}
					b, _ := json.Marshal(tel)
					c.Publish(wire.Topic("A-FLOOD", wire.KindTelemetry), 1, uint16(i+1), b, false, nil)
					if pk, err := c.Read(); err != nil || pk.ReasonCode != 0 {
						return fmt.Sprintf("message %d: %v reason %#x", i+1, err, pk.ReasonCode)
					}
				}
				written := l.Srv.Store().LastSeq() - start
				t.Logf("events written by 60 churning messages of 64 slots (7,680 without the budget): %d", written)
				var page struct {
					Events []json.RawMessage `json:"events"`
				}
				if err := client.New(l.HTTP, victim.Token).Do(ctx, "GET", "/api/events?since=0&limit=1000", nil, &page); err != nil {
					return err.Error()
				}
				kept := 0
				for _, e := range page.Events {
					if strings.Contains(string(e), `"title":"before"`) {
						kept++
					}
				}
				return fmt.Sprintf("within the budget: %v; the quiet user's notification kept: %d", written <= 400, kept)
			},
			want:    "within the budget: true; the quiet user's notification kept: 1",
			changes: true,
		},
		{
			name: "wrong user tokens, five in a row from one address",
			run: func(t *testing.T, l *attackLab) string {
				var last time.Duration
				codes := []string{}
				for i := range 5 {
					start := time.Now()
					err := client.New(l.HTTP, fmt.Sprintf("guess-%d-0123456789abcdef", i)).Do(ctx, "GET", "/api/bookings", nil, nil)
					last = time.Since(start)
					var ce *client.Error
					if errors.As(err, &ce) {
						codes = append(codes, fmt.Sprint(ce.Status))
					}
				}
				// A lower bound only: a slow machine makes it longer, never shorter.
				return fmt.Sprintf("%s; the fifth held at least 500 ms: %v", strings.Join(codes, ","), last >= 500*time.Millisecond)
			},
			want: "401,401,401,401,401; the fifth held at least 500 ms: true",
		},
		{
			name: "40 concurrent bookings by one rider",
			run: func(t *testing.T, l *attackLab) string {
				rc := client.New(l.HTTP, rider.Token)
				var mu sync.Mutex
				answers := map[string]int{}
				var wg sync.WaitGroup
				for i := range 40 {
					wg.Go(func() {
						_, err := rc.Book(ctx, fmt.Sprintf("A-BOOK%d", i%3+1))
						mu.Lock()
						defer mu.Unlock()
						switch {
						case err == nil:
							answers["201"]++
						case client.IsCode(err, "booking_limit"):
							answers["409 booking_limit"]++
						default:
							answers[err.Error()]++
						}
					})
				}
				wg.Wait()
				var list struct {
					Bookings []wire.Booking `json:"bookings"`
				}
				if err := rc.Do(ctx, "GET", "/api/bookings", nil, &list); err != nil {
					return err.Error()
				}
				active := 0
				for _, b := range list.Bookings {
					switch b.Status {
					case wire.BookingStatusPending, wire.BookingStatusConfirmed, wire.BookingStatusReady:
						active++
					}
				}
				return fmt.Sprintf("%v; active %d", answers, active)
			},
			want:    "map[201:2 409 booking_limit:38]; active 2",
			changes: true,
		},
		{
			name: "a stolen secret after the operator rotates it",
			run: func(t *testing.T, l *attackLab) string {
				thief := l.connect(t, "A-ROT", mqtttest.V311)
				var rot wire.CreateStationResponse
				if err := l.Admin.Do(ctx, "POST", "/api/admin/stations/A-ROT/secret", map[string]string{"grace": "0s"}, &rot); err != nil {
					return "rotate: " + err.Error()
				}
				_, err := thief.ReadUntilClosed()
				live := "live session kept"
				if mqtttest.Closed(err) {
					live = "live session closed"
				}
				c, code, err := mqtttest.Connect(l.MQTT, "A-ROT", l.secrets["A-ROT"], mqtttest.V311, 15*time.Second)
				if err == nil {
					c.Close()
				}
				old := fmt.Sprintf("old secret CONNACK %#x", code)
				c, code, err = mqtttest.Connect(l.MQTT, "A-ROT", rot.Secret, mqtttest.V311, 15*time.Second)
				if err != nil {
					return "new secret: " + err.Error()
				}
				c.Close()
				if leaked(l.logSince(0), rot.Secret) {
					return "new secret in the log"
				}
				return fmt.Sprintf("%s; %s; new secret CONNACK %#x", live, old, code)
			},
			want:    "live session closed; old secret CONNACK 0x5; new secret CONNACK 0x0",
			changes: true,
		},
		{
			name: "a deleted station logs in",
			run: func(t *testing.T, l *attackLab) string {
				live := l.connect(t, "A-DEL", mqtttest.V311)
				if err := l.Admin.Do(ctx, "DELETE", "/api/admin/stations/A-DEL", nil, nil); err != nil {
					return "delete: " + err.Error()
				}
				_, err := live.ReadUntilClosed()
				out := "live session kept"
				if mqtttest.Closed(err) {
					out = "live session closed"
				}
				c, code, err := mqtttest.Connect(l.MQTT, "A-DEL", l.secrets["A-DEL"], mqtttest.V311, 15*time.Second)
				if err == nil {
					c.Close()
				}
				_, err = l.Admin.Station(ctx, "A-DEL")
				var ce *client.Error
				status := 0
				if errors.As(err, &ce) {
					status = ce.Status
				}
				return fmt.Sprintf("%s; CONNACK %#x; GET station: %d", out, code, status)
			},
			want:    "live session closed; CONNACK 0x5; GET station: 404",
			changes: true,
		},
		{
			name: "a revoked user token, on HTTP and on a live WebSocket",
			run: func(t *testing.T, l *attackLab) string {
				ws, _, err := websocket.DefaultDialer.Dial(wsBase+"/ws/notifications/?token="+victim.Token, nil)
				if err != nil {
					return err.Error()
				}
				defer ws.Close()
				ws.SetReadDeadline(time.Now().Add(15 * time.Second))
				var hello wire.Hello
				if err := ws.ReadJSON(&hello); err != nil {
					return err.Error()
				}
				if err := l.Admin.Do(ctx, "DELETE", "/api/admin/users/victim-rider/tokens", nil, nil); err != nil {
					return "revoke: " + err.Error()
				}
				for {
					if _, _, err = ws.ReadMessage(); err != nil {
						break
					}
				}
				wsOut := "WebSocket: " + err.Error()
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					wsOut = fmt.Sprintf("WebSocket closed %d", ce.Code)
				}
				err = client.New(l.HTTP, victim.Token).Do(ctx, "GET", "/api/bookings", nil, nil)
				return fmt.Sprintf("%s; HTTP unauthorized: %v", wsOut, client.IsCode(err, "unauthorized"))
			},
			want:    "WebSocket closed 1008; HTTP unauthorized: true",
			changes: true,
		},
	}

	before := fingerprint(t, l.Swapd)
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			logAt := l.logLen()
			got := row.run(t, l)
			if got != row.want {
				t.Errorf("answer %q, want %q", got, row.want)
			}
			logged := l.logSince(logAt)
			limit := row.maxLog
			if limit == 0 {
				limit = 8 << 10
			}
			t.Logf("log bytes caused: %d", len(logged))
			if len(logged) > limit {
				t.Errorf("the attack caused %d log bytes, more than %d:\n%.2000s", len(logged), limit, logged)
			}
			for sid, secret := range l.secrets {
				if leaked(logged, secret) {
					t.Errorf("the secret of %s reached the log", sid)
				}
			}
			if leaked(logged, testAdminToken) {
				t.Errorf("the admin token reached the log")
			}
			if row.changes {
				before = l.settled(t)
				return
			}
			if after := fingerprint(t, l.Swapd); after != before {
				t.Errorf("state changed:\nbefore %s\nafter  %s", before, after)
				before = after
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// leaked reports whether secret is in the log as text or in any base64
// form (slog writes a []byte, such as a CONNECT's password, as base64).
func leaked(log, secret string) bool {
	if strings.Contains(log, secret) {
		return true
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if strings.Contains(log, enc.EncodeToString([]byte(secret))) {
			return true
		}
	}
	return false
}

// stuckClient logs sid in with MQTT 5, shrinks its receive buffer and
// sends retained statuses with 60 KB of user properties each without ever
// reading: an echo of those properties in the PUBACKs fills its socket, and
// a server writing to it without a deadline blocks.
func stuckClient(t *testing.T, l *attackLab, sid string) *mqtttest.Conn {
	t.Helper()
	stuck := l.connect(t, sid, mqtttest.V5)
	if tc, ok := stuck.NC.(*net.TCPConn); ok {
		tc.SetReadBuffer(4 << 10)
	}
	st, _ := json.Marshal(wire.Status{Online: true, BootID: "boot-stuck", TS: time.Now().UTC(), Slots: 4})
	for i := range 150 {
		stuck.NC.SetWriteDeadline(time.Now().Add(2 * time.Second))
		if err := stuck.Publish(wire.Topic(sid, wire.KindStatus), 1, uint16(i+1), st, true, mqtttest.UserProperties(60<<10)); err != nil {
			break // the server stopped reading: that is its right
		}
	}
	return stuck
}

// TestShutdownWithStuckClients stops swapd while clients holding station
// credentials have stopped reading: Shutdown finishes within swapd's 10 s
// budget whatever the clients do.
func TestShutdownWithStuckClients(t *testing.T) {
	l := startAttackLab(t, nil)
	l.secrets = provision(t, l.Admin, 4, "SD-1", "SD-2", "SD-3")
	for _, sid := range []string{"SD-1", "SD-2", "SD-3"} {
		stuckClient(t, l, sid)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	err := l.Srv.Shutdown(ctx)
	took := time.Since(start)
	t.Logf("shutdown with 3 stuck clients: %.2fs (err %v)", took.Seconds(), err)
	if took > 10*time.Second {
		t.Errorf("shutdown took %s, more than the 10s budget", took.Round(100*time.Millisecond))
	}
}
