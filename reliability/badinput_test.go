package reliability

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"

	"github.com/swapbridge/swapbridge/client"
	"github.com/swapbridge/swapbridge/internal/swapdtest"
	"github.com/swapbridge/swapbridge/server"
	"github.com/swapbridge/swapbridge/wire"
)

// fingerprint is what must not change after bad input: the event log's
// last seq and every station's view.
func fingerprint(t *testing.T, p *swapdtest.Swapd) string {
	t.Helper()
	views, err := p.Srv.Bridge().StationViews()
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range views {
		if views[i], err = p.Srv.Bridge().StationView(v.ID); err != nil { // with its slots
			t.Fatal(err)
		}
	}
	b, _ := json.Marshal(views)
	return fmt.Sprintf("last_seq=%d %s", p.Srv.Store().LastSeq(), b)
}

// mqttOutcome is what happened to one MQTT attempt.
type mqttOutcome struct {
	connErr  error // CONNECT refused
	pubErr   error // publish not acknowledged
	subCodes []byte
	closed   bool // the server closed the connection
}

// tryMQTT connects as (clientID, user, pass) with MQTT 3.1.1 and runs fn.
func tryMQTT(t *testing.T, addr, clientID, user, pass string, will func(*paho.ClientOptions), fn func(c paho.Client, o *mqttOutcome)) mqttOutcome {
	t.Helper()
	var out mqttOutcome
	lost := make(chan struct{})
	o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(clientID).SetUsername(user).SetPassword(pass).
		SetProtocolVersion(4).SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(5 * time.Second).SetWriteTimeout(5 * time.Second).
		SetConnectionLostHandler(func(paho.Client, error) { close(lost) })
	if will != nil {
		will(o)
	}
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatal("connect timed out")
	}
	if out.connErr = tok.Error(); out.connErr != nil {
		return out
	}
	defer c.Disconnect(0)
	if fn != nil {
		fn(c, &out)
	}
	select {
	case <-lost:
		out.closed = true
	default:
	}
	return out
}

// publishWait publishes at QoS 1 and reports whether a PUBACK came, or
// the connection was closed instead.
func publishWait(c paho.Client, topic string, payload []byte) error {
	tok := c.Publish(topic, 1, false, payload)
	if !tok.WaitTimeout(5 * time.Second) {
		return errNoAck
	}
	if err := tok.Error(); err != nil {
		return err
	}
	if !c.IsConnectionOpen() {
		return errNoAck
	}
	return nil
}

var errNoAck = &noAckError{}

type noAckError struct{}

func (*noAckError) Error() string { return "not acknowledged: the server closed the connection" }

// TestBadInputChangesNothing sends malformed, out-of-range, oversize,
// spoofed and unauthenticated input over MQTT, WebSocket and HTTP (with
// credentials of one protocol tried on another). Each is refused with a
// clear signal and leaves the event log and every station view unchanged.
func TestBadInputChangesNothing(t *testing.T) {
	t.Parallel() // mostly waits on the listeners' deadlines
	// The login limiter would slow down (and, past 10, block) this test's
	// many refused CONNECTs from one address; it has its own tests.
	p := swapdtest.Start(t, func(c *server.Config) { c.Limits.MQTTAuthFailures = -1 })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	secrets := provision(t, p.Admin, 4, "S1", "S2")
	u1, err := p.Admin.CreateUser(ctx, "rider-1")
	if err != nil {
		t.Fatal(err)
	}
	u2, err := p.Admin.CreateUser(ctx, "rider-2")
	if err != nil {
		t.Fatal(err)
	}
	// S1 is online with four swappable batteries; rider-2 holds a booking.
	s1 := startAckingStation(t, p.MQTT, "S1", secrets["S1"], "boot-1", 1, 4, true)
	waitAvailable(t, p.Admin, "S1", 4)
	bk, err := client.New(p.HTTP, u2.Token).Book(ctx, "S1")
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, client.New(p.HTTP, u2.Token), bk.ID, wire.BookingStatusReady)
	s1.close()

	tel := func(seq uint64, slot int, soc float64) []byte {
		b := "B-new"
		t := wire.Telemetry{BootID: "boot-1", Seq: seq, TS: time.Now().UTC(), Slots: []wire.Slot{{Slot: slot, BatteryID: &b, SoC: soc, SoH: 95, TempC: 25, Door: wire.DoorClosed, Locked: true}}}
		out, _ := json.Marshal(t)
		return out
	}
	s1tel := wire.Topic("S1", wire.KindTelemetry)
	good := func(c paho.Client, o *mqttOutcome) {}
	pub := func(topic string, payload []byte) func(paho.Client, *mqttOutcome) {
		return func(c paho.Client, o *mqttOutcome) { o.pubErr = publishWait(c, topic, payload) }
	}
	type mqttCase struct {
		name           string
		id, user, pass string
		will           func(*paho.ClientOptions)
		fn             func(paho.Client, *mqttOutcome)
		want           string // "refused", "noack", "dropped", "subfail"
	}
	s1p := secrets["S1"]
	cases := []mqttCase{
		{"malformed JSON", "S1", "S1", s1p, nil, pub(s1tel, []byte(`{"boot_id":"boot-1","seq":`)), "dropped"},
		{"wrong types", "S1", "S1", s1p, nil, pub(s1tel, []byte(`{"boot_id":"boot-1","seq":"two","slots":"all"}`)), "dropped"},
		{"huge seq", "S1", "S1", s1p, nil, pub(s1tel, []byte(`{"boot_id":"boot-1","seq":1e30,"slots":[]}`)), "dropped"},
		{"huge soc", "S1", "S1", s1p, nil, pub(s1tel, bytes.Replace(tel(50, 1, 1), []byte(`"soc":1`), []byte(`"soc":1e308`), 1)), "dropped"},
		{"negative slot", "S1", "S1", s1p, nil, pub(s1tel, tel(50, -1, 50)), "dropped"},
		{"slot beyond the station", "S1", "S1", s1p, nil, pub(s1tel, tel(50, 5, 50)), "dropped"},
		{"not an object", "S1", "S1", s1p, nil, pub(s1tel, []byte(`[1,2,3]`)), "dropped"},
		{"invalid UTF-8", "S1", "S1", s1p, nil, pub(s1tel, []byte("\xff\xfe\xfd")), "dropped"},
		{"oversize payload", "S1", "S1", s1p, nil, pub(s1tel, bytes.Repeat([]byte("x"), wire.MaxPayload+1)), "noack"},
		{"spoofed telemetry of S2", "S1", "S1", s1p, nil, pub(wire.Topic("S2", wire.KindTelemetry), tel(1, 1, 50)), "noack"},
		{"publish to own cmd", "S1", "S1", s1p, nil, pub(wire.Topic("S1", wire.KindCmd), []byte(`{"id":"x","action":"unlock","slot":1}`)), "noack"},
		{"publish outside the tree", "S1", "S1", s1p, nil, pub("swap/v1/admin", []byte(`{}`)), "noack"},
		{"bad status", "S1", "S1", s1p, nil, pub(wire.Topic("S1", wire.KindStatus), []byte(`{"online":true}`)), "dropped"},
		{"bad ack", "S1", "S1", s1p, nil, pub(wire.Topic("S1", wire.KindAck), []byte(`{"ok":"yes"}`)), "dropped"},
		{"subscribe to S2's cmd", "S1", "S1", s1p, nil, func(c paho.Client, o *mqttOutcome) {
			tok := c.Subscribe(wire.Topic("S2", wire.KindCmd), 1, nil)
			tok.WaitTimeout(5 * time.Second)
			o.subCodes = []byte{tok.(*paho.SubscribeToken).Result()[wire.Topic("S2", wire.KindCmd)]}
		}, "subfail"},
		{"subscribe to everything", "S1", "S1", s1p, nil, func(c paho.Client, o *mqttOutcome) {
			tok := c.Subscribe("#", 1, nil)
			tok.WaitTimeout(5 * time.Second)
			o.subCodes = []byte{tok.(*paho.SubscribeToken).Result()["#"]}
		}, "subfail"},
		{"wrong secret", "S1", "S1", "not-the-secret", nil, good, "refused"},
		{"S2's secret for S1", "S1", "S1", secrets["S2"], nil, good, "refused"},
		{"unknown station", "S9", "S9", s1p, nil, good, "refused"},
		{"client id differs from username", "S2", "S1", s1p, nil, good, "refused"},
		{"empty password", "S1", "S1", "", nil, good, "refused"},
		{"invalid station id", "S 1", "S 1", s1p, nil, good, "refused"},
		{"admin token as station secret", "S1", "S1", testAdminToken, nil, good, "refused"},
		{"user token as station secret", "S1", "S1", u1.Token, nil, good, "refused"},
		{"Will on S2's topic", "S1", "S1", s1p, func(o *paho.ClientOptions) {
			o.SetWill(wire.Topic("S2", wire.KindStatus), `{"online":false,"boot_id":"x"}`, 1, true)
		}, good, "refused"},
	}
	before := fingerprint(t, p)
	for _, tc := range cases {
		t.Run("mqtt/"+tc.name, func(t *testing.T) {
			out := tryMQTT(t, p.MQTT, tc.id, tc.user, tc.pass, tc.will, tc.fn)
			switch tc.want {
			case "refused":
				if out.connErr == nil || !strings.Contains(strings.ToLower(out.connErr.Error()), "not authorized") {
					t.Errorf("CONNECT: err %v, want a refusal (not authorized)", out.connErr)
				}
			case "noack":
				if out.connErr != nil {
					t.Fatalf("connect: %v", out.connErr)
				}
				if out.pubErr == nil {
					t.Errorf("publish was acknowledged; want no PUBACK and a closed connection")
				}
			case "dropped":
				// A payload that can never be applied is acknowledged and
				// dropped; the station stays connected (withholding the
				// PUBACK would make it resend the same bytes forever).
				if out.connErr != nil {
					t.Fatalf("connect: %v", out.connErr)
				}
				if out.pubErr != nil || out.closed {
					t.Errorf("publish: err %v, closed %v; want a PUBACK and an open connection", out.pubErr, out.closed)
				}
			case "subfail":
				if out.connErr != nil {
					t.Fatalf("connect: %v", out.connErr)
				}
				if len(out.subCodes) != 1 || out.subCodes[0] < 0x80 {
					t.Errorf("SUBACK codes %v, want failure 0x80", out.subCodes)
				}
			}
			if got := fingerprint(t, p); got != before {
				t.Errorf("state changed:\nbefore %s\nafter  %s", before, got)
			}
		})
	}

	// WebSocket: refused before the upgrade with the right status.
	wsBase := "ws" + strings.TrimPrefix(p.HTTP, "http")
	for _, c := range []struct {
		name, path string
		header     http.Header
		status     int
	}{
		{"unknown station", "/ws/stations/NOPE/", nil, http.StatusNotFound},
		{"invalid station id", "/ws/stations/-x/", nil, 0},
		{"notifications without token", "/ws/notifications/", nil, http.StatusUnauthorized},
		{"notifications with a bad token", "/ws/notifications/?token=nope", nil, http.StatusUnauthorized},
		{"notifications with the admin token", "/ws/notifications/", http.Header{"Authorization": {"Bearer " + testAdminToken}}, http.StatusUnauthorized},
		{"notifications with a station secret", "/ws/notifications/?token=" + secrets["S1"], nil, http.StatusUnauthorized},
		{"garbage since", "/ws/stations/?since=abc", nil, http.StatusBadRequest},
		{"foreign origin", "/ws/stations/", http.Header{"Origin": {"https://evil.example"}}, http.StatusForbidden},
	} {
		t.Run("ws/"+c.name, func(t *testing.T) {
			conn, resp, err := websocket.DefaultDialer.Dial(wsBase+c.path, c.header)
			if err == nil {
				conn.Close()
				t.Fatalf("upgrade succeeded; want a refusal")
			}
			if resp == nil {
				t.Fatalf("no HTTP answer: %v", err)
			}
			if c.status != 0 && resp.StatusCode != c.status {
				t.Errorf("status %d, want %d", resp.StatusCode, c.status)
			}
			if resp.StatusCode < 400 || resp.StatusCode >= 500 {
				t.Errorf("status %d, want a 4xx", resp.StatusCode)
			}
			if got := fingerprint(t, p); got != before {
				t.Errorf("state changed")
			}
		})
	}

	// WebSocket: garbage frames get an error message; the connection stays
	// up and still answers a ping.
	t.Run("ws/garbage frames", func(t *testing.T) {
		conn, _, err := websocket.DefaultDialer.Dial(wsBase+"/ws/notifications/?token="+u1.Token, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		var hello map[string]any
		if err := conn.ReadJSON(&hello); err != nil || hello["type"] != wire.TypeHello {
			t.Fatalf("hello: %v %v", hello, err)
		}
		for _, m := range []string{`not json`, `{"type":"subscribe","channel":"user:rider-2"}`, `{"type":42}`, `[]`, `{"type":"ping"`, strings.Repeat("[", 5000), `{"type":"` + strings.Repeat("x", 3000) + `"}`} {
			if err := conn.WriteMessage(websocket.TextMessage, []byte(m)); err != nil {
				t.Fatal(err)
			}
			var e wire.ErrorMsg
			if err := conn.ReadJSON(&e); err != nil {
				t.Fatalf("after %.30q: %v", m, err)
			}
			if e.Type != wire.TypeError || e.Code == "" || e.Message == "" {
				t.Errorf("after %.30q: got %+v, want an error message", m, e)
			}
		}
		for _, m := range [][]byte{{0x00, 0xff, 0x10}, []byte(`{"type":"ping"}`)} {
			if err := conn.WriteMessage(websocket.BinaryMessage, m); err != nil {
				t.Fatal(err)
			}
			var e wire.ErrorMsg
			if err := conn.ReadJSON(&e); err != nil {
				t.Fatalf("after a binary frame: %v", err)
			}
			if e.Type != wire.TypeError || e.Code == "" {
				t.Errorf("binary frame %x: got %+v, want an error message", m, e)
			}
		}
		conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"ping"}`))
		var pong wire.Pong
		if err := conn.ReadJSON(&pong); err != nil || pong.Type != wire.TypePong {
			t.Errorf("ping after garbage: %+v %v", pong, err)
		}
		if got := fingerprint(t, p); got != before {
			t.Errorf("state changed")
		}
	})

	// WebSocket: a message far over the read limit closes the socket with
	// 1009 (message too big) instead of being buffered.
	t.Run("ws/oversize frame", func(t *testing.T) {
		conn, _, err := websocket.DefaultDialer.Dial(wsBase+"/ws/stations/", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		conn.WriteMessage(websocket.TextMessage, bytes.Repeat([]byte("x"), 1<<20))
		for {
			if _, _, err = conn.ReadMessage(); err != nil {
				break
			}
		}
		if !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
			t.Errorf("after a 1 MiB message: %v, want close 1009", err)
		}
		if got := fingerprint(t, p); got != before {
			t.Errorf("state changed")
		}
	})

	// Raw garbage on both listeners: each connection is closed by the
	// server, at once or when the CONNECT deadline (10s) or the HTTP header
	// deadline (5s) passes for a sender that stops mid-way; the server keeps
	// serving (checked at the end of this test).
	t.Run("raw garbage", func(t *testing.T) {
		httpAddr := strings.TrimPrefix(p.HTTP, "http://")
		cases := []struct {
			name, addr string
			data       []byte
		}{
			{"mqtt: not MQTT", p.MQTT, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")},
			{"mqtt: CONNECT with a huge remaining length", p.MQTT, []byte{0x10, 0xff, 0xff, 0xff, 0x7f}},
			{"mqtt: truncated CONNECT", p.MQTT, []byte{0x10, 0x0c, 0x00, 0x04, 'M', 'Q'}},
			{"mqtt: PUBLISH before CONNECT", p.MQTT, []byte{0x32, 0x05, 0x00, 0x01, 'a', 0x00, 0x01}},
			{"mqtt: bad protocol name", p.MQTT, []byte{0x10, 0x0c, 0x00, 0x04, 'M', 'Q', 'X', 'X', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x00}},
			{"http: binary", httpAddr, []byte{0x16, 0x03, 0x01, 0x00, 0xff, 0x01}},
			{"http: header bomb", httpAddr, append([]byte("GET /api/stations HTTP/1.1\r\nX: "), bytes.Repeat([]byte("a"), 64<<10)...)},
		}
		errs := make([]error, len(cases))
		var wg sync.WaitGroup
		for i, c := range cases {
			wg.Go(func() {
				conn, err := net.DialTimeout("tcp", c.addr, 5*time.Second)
				if err != nil {
					errs[i] = err
					return
				}
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(20 * time.Second))
				conn.Write(c.data)
				_, errs[i] = io.Copy(io.Discard, conn) // until the server closes it
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("%s: the server did not close the connection: %v", cases[i].name, err)
			}
		}
		if got := fingerprint(t, p); got != before {
			t.Errorf("state changed")
		}
	})

	// HTTP, across protocols: credentials of one kind are worth nothing
	// elsewhere; someone else's or an unknown booking is not found.
	t.Run("http/cross-protocol", func(t *testing.T) {
		for _, c := range []struct {
			name, token, method, path string
			status                    int
		}{
			{"station secret as admin token", secrets["S1"], "POST", "/api/admin/users", 401},
			{"station secret as user token", secrets["S1"], "POST", "/api/bookings", 401},
			{"user token on admin API", u1.Token, "POST", "/api/admin/users", 401},
			{"admin token as user token", testAdminToken, "POST", "/api/bookings", 401},
			{"foreign booking", u1.Token, "GET", "/api/bookings/" + bk.ID, 404},
			{"cancel a foreign booking", u1.Token, "POST", "/api/bookings/" + bk.ID + "/cancel", 404},
			{"collect a foreign booking", u1.Token, "POST", "/api/bookings/" + bk.ID + "/collect", 404},
			{"unknown booking", u2.Token, "POST", "/api/bookings/b-does-not-exist/cancel", 404},
			{"revoked-looking token", u2.Token + "x", "GET", "/api/bookings", 401},
		} {
			body := `{"id":"evil","station_id":"S1"}`
			req, _ := http.NewRequest(c.method, p.HTTP+c.path, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+c.token)
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var eb wire.ErrorBody
			json.NewDecoder(resp.Body).Decode(&eb)
			resp.Body.Close()
			if resp.StatusCode != c.status || eb.Error.Code == "" {
				t.Errorf("%s: %d %+v, want %d with an error body", c.name, resp.StatusCode, eb, c.status)
			}
			if got := fingerprint(t, p); got != before {
				t.Errorf("%s: state changed", c.name)
			}
		}
	})

	// The server still works for the real station after all of it.
	ok := tryMQTT(t, p.MQTT, "S1", "S1", s1p, nil, pub(s1tel, tel(2, 1, 50)))
	if ok.connErr != nil || ok.pubErr != nil {
		t.Errorf("a good telemetry after the bad input: %v %v", ok.connErr, ok.pubErr)
	}
}
