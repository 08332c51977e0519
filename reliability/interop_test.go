package reliability

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/swapbridge/swapbridge/client"
	"github.com/swapbridge/swapbridge/internal/testwait"
	"github.com/swapbridge/swapbridge/wire"
)

// TestMosquittoClientsAgainstSwapd plays a station with Debian's
// mosquitto_pub and mosquitto_sub against a real swapd process: its
// telemetry is stored, a booking's reserve command reaches mosquitto_sub
// on the station's own cmd topic, its ack confirms the booking; other
// stations' topics and a wrong password are refused. (Our agent against
// the Mosquitto broker is stationagent's TestAgainstMosquitto.)
func TestMosquittoClientsAgainstSwapd(t *testing.T) {
	t.Parallel() // waits on timers and reconnects more than it computes
	pub, err := exec.LookPath("mosquitto_pub")
	if err != nil {
		t.Skip("mosquitto_pub not installed (apt-get install mosquitto-clients)")
	}
	sub, err := exec.LookPath("mosquitto_sub")
	if err != nil {
		t.Skip("mosquitto_sub not installed (apt-get install mosquitto-clients)")
	}
	p := startSwapd(t, t.TempDir())
	secrets := provision(t, p.admin(), 2, "MQ-1", "MQ-2")
	host, port, _ := net.SplitHostPort(p.mqtt)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	as := func(sid, pass string) []string {
		return []string{"-h", host, "-p", port, "-i", sid, "-u", sid, "-P", pass}
	}
	run := func(bin string, args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		return string(out), err
	}
	telemetry := func(seq int) string {
		return fmt.Sprintf(`{"boot_id":"mq-boot","seq":%d,"ts":"%s","full":true,"slots":[`+
			`{"slot":1,"battery_id":"B-MQ-1","soc":96,"soh":99,"temp_c":25,"voltage_v":53,"charging":false,"door":"closed","locked":true,"fault":""},`+
			`{"slot":2,"battery_id":null,"soc":0,"soh":0,"temp_c":25,"voltage_v":0,"charging":false,"door":"closed","locked":true,"fault":""}]}`,
			seq, time.Now().UTC().Format(time.RFC3339))
	}

	// Status and telemetry on its own topics, both MQTT versions.
	for i, v := range []string{"mqttv311", "mqttv5"} {
		status := `{"online":true,"boot_id":"mq-boot","ts":"` + time.Now().UTC().Format(time.RFC3339) + `","slots":2}`
		if out, err := run(pub, append(as("MQ-1", secrets["MQ-1"]), "-V", v, "-q", "1", "-r", "-t", wire.Topic("MQ-1", wire.KindStatus), "-m", status)...); err != nil {
			t.Fatalf("%s status: %v %s", v, err, out)
		}
		if out, err := run(pub, append(as("MQ-1", secrets["MQ-1"]), "-V", v, "-q", "1", "-t", wire.Topic("MQ-1", wire.KindTelemetry), "-m", telemetry(i+1))...); err != nil {
			t.Fatalf("%s telemetry: %v %s", v, err, out)
		}
	}
	waitAvailable(t, p.admin(), "MQ-1", 1)

	// Refused: another station's topic (3.1.1 closes, 5 says not
	// authorized), a subscription to another station's cmd, a wrong
	// password.
	lastSeq := func() uint64 {
		var ev struct {
			Events []struct {
				Seq uint64 `json:"seq"`
			} `json:"events"`
		}
		p.admin().Do(ctx, "GET", "/api/events?since=0&limit=1000", nil, &ev)
		if len(ev.Events) == 0 {
			return 0
		}
		return ev.Events[len(ev.Events)-1].Seq
	}
	before := lastSeq()
	out, err := run(pub, append(as("MQ-1", secrets["MQ-1"]), "-V", "mqttv311", "-q", "1", "-t", wire.Topic("MQ-2", wire.KindTelemetry), "-m", telemetry(1))...)
	if err == nil {
		t.Errorf("3.1.1 publish to MQ-2's telemetry succeeded: %s", out)
	}
	out, _ = run(pub, append(as("MQ-1", secrets["MQ-1"]), "-V", "mqttv5", "-q", "1", "-t", wire.Topic("MQ-2", wire.KindTelemetry), "-m", telemetry(1))...)
	if !strings.Contains(out, "Not authorized") {
		t.Errorf("5 publish to MQ-2's telemetry: %q, want not authorized", out)
	}
	out, _ = run(sub, append(as("MQ-1", secrets["MQ-1"]), "-V", "mqttv311", "-t", wire.Topic("MQ-2", wire.KindCmd), "-C", "1", "-W", "3")...)
	if !strings.Contains(strings.ToLower(out), "denied") {
		t.Errorf("subscribe to MQ-2's cmd: %q, want denied", out)
	}
	out, err = run(pub, append(as("MQ-1", "wrong-password"), "-q", "1", "-t", wire.Topic("MQ-1", wire.KindTelemetry), "-m", telemetry(9))...)
	if err == nil || !strings.Contains(strings.ToLower(out), "not authorised") && !strings.Contains(strings.ToLower(out), "not authorized") {
		t.Errorf("wrong password: err %v output %q, want a refusal", err, out)
	}
	if v, _ := p.admin().Station(ctx, "MQ-2"); v.Online || lastSeq() != before {
		t.Errorf("refused input changed something: MQ-2 online=%v, last seq %d → %d", v.Online, before, lastSeq())
	}

	// A booking's reserve arrives on mosquitto_sub; mosquitto_pub acks it.
	u, err := p.admin().CreateUser(ctx, "mq-rider")
	if err != nil {
		t.Fatal(err)
	}
	cmdOut := make(chan string, 1)
	subCmd := exec.CommandContext(ctx, sub, append(as("MQ-1", secrets["MQ-1"]), "-V", "mqttv311", "-q", "1", "-t", wire.Topic("MQ-1", wire.KindCmd), "-C", "1", "-W", "20")...)
	subOut := &logBuf{}
	subCmd.Stdout, subCmd.Stderr = subOut, subOut
	if err := subCmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { subCmd.Wait(); cmdOut <- subOut.String() }()
	user := client.New(p.http, u.Token)
	// The subscription is in place once the broker reports the
	// station connected again (mosquitto_sub's CONNECT replaced the old
	// session); book until the command is seen.
	var bk wire.Booking
	testwait.For(t, 20*time.Second, "a booking at MQ-1", func() bool {
		bk, err = user.Book(ctx, "MQ-1")
		return err == nil
	})
	var cmd wire.Command
	select {
	case s := <-cmdOut:
		line := strings.TrimSpace(s)
		if err := json.Unmarshal([]byte(line), &cmd); err != nil || cmd.Action != wire.ActionReserve || cmd.BookingID != bk.ID || cmd.Slot != 1 {
			t.Fatalf("mosquitto_sub got %q; want the reserve of booking %s on slot 1", line, bk.ID)
		}
	case <-ctx.Done():
		t.Fatal("no command reached mosquitto_sub")
	}
	ack := `{"id":"` + cmd.ID + `","ok":true,"error":""}`
	if out, err := run(pub, append(as("MQ-1", secrets["MQ-1"]), "-q", "1", "-t", wire.Topic("MQ-1", wire.KindAck), "-m", ack)...); err != nil {
		t.Fatalf("ack: %v %s", err, out)
	}
	waitStatus(t, user, bk.ID, wire.BookingStatusReady)
}
