package stationagent

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"
	bolt "go.etcd.io/bbolt"
)

// Check results.
const (
	CheckOK   = "ok"
	CheckFail = "FAIL"
	CheckSkip = "skip"
)

// Check is one doctor finding.
type Check struct {
	Name   string `json:"name"`
	Result string `json:"result"` // ok, FAIL or skip
	Detail string `json:"detail"`
	Hint   string `json:"hint,omitempty"`
	// Server is the server a dns, tcp, tls or credentials check is about,
	// when the config lists several (its Detail starts with it too).
	Server string `json:"server,omitempty"`
}

// MaxClockSkew is the largest clock difference to the server doctor accepts.
const MaxClockSkew = 5 * time.Second

// Doctor checks what a station needs to work: the config, then for every
// configured server the DNS and TCP reach of the broker, TLS and the
// credentials (a real CONNECT, or the running agent's connection), then the
// clock against the server's HTTP Date, the data directory and the driver.
// It blocks for the network checks, each bounded by a few seconds. When an
// agent is running (its control socket answers), doctor asks it instead of
// taking over its MQTT session or hardware: while it is connected, the
// other servers of a list get no CONNECT, since one in the station's name
// would take its session over.
func Doctor(ctx context.Context, cfg Config) []Check {
	var out []Check
	add := func(name, result, detail, hint string) bool {
		out = append(out, Check{Name: name, Result: result, Detail: detail, Hint: hint})
		return result != CheckFail
	}
	if err := cfg.Validate(); err != nil {
		add("config", CheckFail, err.Error(), "fix the YAML file or the STATIONAGENT_* environment")
		return out
	}
	servers := cfg.Servers()
	what := "server " + servers[0]
	if len(servers) > 1 {
		what = "servers " + strings.Join(servers, ", ")
	}
	add("config", CheckOK, fmt.Sprintf("station %s, %s, driver %s, data %s", cfg.StationID, what, cfg.Driver, cfg.DataDir), "")

	// The running agent, if any.
	var running *Status
	if cfg.ControlSocket != "off" {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := NewControlClient(cfg.ControlSocket).Status(cctx)
		cancel()
		if err == nil {
			running = &st
			conn := "not connected (trying " + st.Broker + ")"
			if st.Connected {
				conn = "connected to " + st.Broker
			}
			add("agent", CheckOK, fmt.Sprintf("running, boot %s, %s, outbox %d", st.BootID, conn, st.OutboxDepth), "")
		} else {
			add("agent", CheckSkip, "no agent running on "+cfg.ControlSocket, "start it with: systemctl start stationagent")
		}
	}

	clockHost := ""
	for _, server := range servers {
		checks, host, reach := serverChecks(ctx, cfg, server, len(servers) > 1, running)
		out = append(out, checks...)
		if clockHost == "" && reach {
			clockHost = host
		}
	}
	if clockHost == "" {
		_, hostport, _ := parseServer(servers[0])
		clockHost, _, _ = net.SplitHostPort(hostport)
	}

	out = append(out, clockCheck(ctx, cfg, clockHost))
	out = append(out, dataDirCheck(cfg, running != nil))
	out = append(out, driverCheck(ctx, cfg, running))
	return out
}

// serverChecks are the dns, tcp, tls and credentials checks of one server,
// its host, and whether its broker answered. With several servers, each
// check names its server.
func serverChecks(ctx context.Context, cfg Config, server string, several bool, running *Status) (out []Check, host string, reach bool) {
	add := func(name, result, detail, hint string) bool {
		c := Check{Name: name, Result: result, Detail: detail, Hint: hint}
		if several {
			c.Server = server
			c.Detail = server + ": " + detail
		}
		out = append(out, c)
		return result != CheckFail
	}
	scheme, hostport, _ := parseServer(server)
	host, port, _ := net.SplitHostPort(hostport)
	reach = true
	if net.ParseIP(host) != nil {
		add("dns", CheckSkip, host+" is an IP address", "")
	} else {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		addrs, err := net.DefaultResolver.LookupHost(dctx, host)
		cancel()
		if err != nil {
			reach = add("dns", CheckFail, fmt.Sprintf("resolve %s: %v", host, err), "check /etc/resolv.conf and the cellular link (ip route, mmcli)")
		} else {
			add("dns", CheckOK, fmt.Sprintf("%s → %v", host, addrs), "")
		}
	}

	dial := func() (net.Conn, error) {
		d := net.Dialer{Timeout: 5 * time.Second}
		return d.DialContext(ctx, "tcp", net.JoinHostPort(host, port))
	}
	unreachableHint := "is the server up and port " + port + " open in the firewall?"
	if several {
		unreachableHint += " The agent tries the other servers meanwhile."
	}
	if reach {
		c, err := dial()
		if err != nil {
			reach = add("tcp", CheckFail, fmt.Sprintf("connect %s: %v", hostport, err), unreachableHint)
		} else {
			c.Close()
			add("tcp", CheckOK, "connected to "+hostport, "")
		}
	} else {
		add("tcp", CheckSkip, "no address", "")
	}

	var tlsConf *tls.Config
	switch {
	case scheme != "ssl":
		add("tls", CheckSkip, "server is tcp:// (no TLS)", "use ssl:// outside a private network")
	case !reach:
		add("tls", CheckSkip, "broker unreachable", "")
	default:
		tlsConf, _ = cfg.TLS.build(host)
		c, err := dial()
		if err == nil {
			tc := tls.Client(c, tlsConf)
			tc.SetDeadline(time.Now().Add(5 * time.Second))
			err = tc.HandshakeContext(ctx)
			c.Close()
		}
		if err != nil {
			reach = add("tls", CheckFail, err.Error(), "check tls.ca_file, tls.server_name and the clock")
		} else {
			add("tls", CheckOK, "handshake with "+hostport, "")
		}
	}

	switch {
	case running != nil && running.Connected && running.Broker == server:
		add("credentials", CheckOK, "the running agent is connected as "+cfg.StationID, "")
	case running != nil && running.Connected:
		add("credentials", CheckSkip, "not tried: the running agent is connected to "+running.Broker+
			" and a CONNECT here would take its session over", "stop the agent to check every server's credentials")
	case !reach:
		add("credentials", CheckSkip, "broker unreachable", "")
	default:
		rc, err := probeConnect(ctx, dial, tlsConf, cfg)
		switch {
		case err != nil:
			add("credentials", CheckFail, "CONNECT: "+err.Error(), "the server may not speak MQTT on this port")
		case rc == packets.Accepted:
			add("credentials", CheckOK, "CONNECT accepted for "+cfg.StationID, "")
		default:
			add("credentials", CheckFail, "CONNECT refused: "+packets.ConnackReturnCodes[rc],
				"check station_id and secret; an operator can issue a new secret with: swapctl station rotate "+cfg.StationID)
		}
	}
	return out, host, reach
}

// probeConnect sends one MQTT 3.1.1 CONNECT with the station's credentials
// (persistent session, no Will, no subscription) and returns the CONNACK
// code, then disconnects cleanly. Nothing queued for the station is
// acknowledged, so the broker redelivers it to the agent later.
func probeConnect(ctx context.Context, dial func() (net.Conn, error), tlsConf *tls.Config, cfg Config) (byte, error) {
	c, err := dial()
	if err != nil {
		return 0, err
	}
	if tlsConf != nil {
		c = tls.Client(c, tlsConf)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	cp := packets.NewControlPacket(packets.Connect).(*packets.ConnectPacket)
	cp.ProtocolName = "MQTT"
	cp.ProtocolVersion = 4
	cp.CleanSession = false
	cp.Keepalive = 30
	cp.ClientIdentifier = cfg.StationID
	cp.UsernameFlag, cp.Username = true, cfg.StationID
	cp.PasswordFlag, cp.Password = true, []byte(cfg.Secret)
	if err := cp.Write(c); err != nil {
		return 0, err
	}
	p, err := packets.ReadPacket(bufio.NewReader(c))
	if err != nil {
		return 0, fmt.Errorf("no CONNACK: %w", err)
	}
	ack, ok := p.(*packets.ConnackPacket)
	if !ok {
		return 0, errors.New("the server answered CONNECT with something else than CONNACK")
	}
	if ack.ReturnCode == packets.Accepted {
		_ = packets.NewControlPacket(packets.Disconnect).Write(c)
	}
	return ack.ReturnCode, nil
}

func clockCheck(ctx context.Context, cfg Config, host string) Check {
	u := cfg.HTTPURL
	if u == "" {
		u = "http://" + net.JoinHostPort(host, "8000") + "/healthz"
	}
	c := Check{Name: "clock"}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, u, nil)
	if err != nil {
		c.Result, c.Detail, c.Hint = CheckFail, "http_url: "+err.Error(), "set http_url to the server's HTTP address"
		return c
	}
	t0 := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.Result, c.Detail, c.Hint = CheckFail, "no HTTP answer from "+u, "set http_url to the server's HTTP address, or check the link"
		return c
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	t1 := time.Now()
	server, err := http.ParseTime(resp.Header.Get("Date"))
	if err != nil {
		c.Result, c.Detail = CheckFail, u+" sent no usable Date header"
		return c
	}
	local := t0.Add(t1.Sub(t0) / 2)
	skew := local.Sub(server).Truncate(time.Second)
	// Date has one-second resolution: allow for it.
	if skew > MaxClockSkew+time.Second || skew < -MaxClockSkew-time.Second {
		c.Result, c.Detail, c.Hint = CheckFail, fmt.Sprintf("local clock is %v off the server's", skew), "enable NTP: timedatectl set-ntp true"
		return c
	}
	c.Result, c.Detail = CheckOK, fmt.Sprintf("within %v of the server (%s)", MaxClockSkew, u)
	return c
}

func dataDirCheck(cfg Config, agentRunning bool) Check {
	c := Check{Name: "data dir"}
	fail := func(detail string) Check {
		c.Result, c.Detail, c.Hint = CheckFail, detail, "the data dir must be writable by the agent's user (chown stationagent "+cfg.DataDir+")"
		return c
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fail(err.Error())
	}
	f, err := os.CreateTemp(cfg.DataDir, ".doctor-*")
	if err != nil {
		return fail("not writable: " + err.Error())
	}
	_, err = f.WriteString("ok")
	if err == nil {
		err = f.Sync()
	}
	f.Close()
	os.Remove(f.Name())
	if err != nil {
		return fail("write/fsync: " + err.Error())
	}
	path := filepath.Join(cfg.DataDir, StateFile)
	if agentRunning {
		c.Result, c.Detail = CheckOK, path+" in use by the running agent"
		return c
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		c.Result, c.Detail = CheckOK, "writable; "+StateFile+" will be created on first run"
		return c
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 300 * time.Millisecond})
	if err != nil {
		c.Result, c.Detail, c.Hint = CheckFail, "open "+path+": "+err.Error(), "another process holds it, or it is damaged (move it aside to start afresh; queued telemetry is lost)"
		return c
	}
	defer db.Close()
	st := &state{db: db}
	c.Result, c.Detail = CheckOK, fmt.Sprintf("%s readable, %d messages queued", path, st.outboxDepth())
	return c
}

func driverCheck(ctx context.Context, cfg Config, running *Status) Check {
	c := Check{Name: "driver"}
	if running != nil {
		if running.DriverOK {
			c.Result, c.Detail = CheckOK, fmt.Sprintf("%s: %d slots (from the running agent)", cfg.Driver, running.Slots)
		} else {
			c.Result, c.Detail, c.Hint = CheckFail, cfg.Driver+": "+running.DriverError, "check the cabinet controller's cabling and modbus settings"
		}
		return c
	}
	a, err := New(cfg)
	if err != nil {
		c.Result, c.Detail = CheckFail, err.Error()
		return c
	}
	d, err := a.openDriver()
	if err != nil {
		c.Result, c.Detail = CheckFail, err.Error()
		return c
	}
	defer d.Close()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	slots, err := d.ReadSlots(rctx)
	if err != nil {
		c.Result, c.Detail, c.Hint = CheckFail, err.Error(), "check the cabinet controller's cabling and the modbus url/unit_id"
		return c
	}
	c.Result, c.Detail = CheckOK, fmt.Sprintf("%s: read %d slots", cfg.Driver, len(slots))
	return c
}

// PrintChecks writes one line per check (and a hint line under failures)
// and returns the number of failures.
func PrintChecks(w io.Writer, checks []Check) int {
	fails := 0
	for _, c := range checks {
		fmt.Fprintf(w, "%-4s  %-11s  %s\n", c.Result, c.Name, c.Detail)
		if c.Result == CheckFail {
			fails++
			if c.Hint != "" {
				fmt.Fprintf(w, "      %-11s  hint: %s\n", "", c.Hint)
			}
		}
	}
	return fails
}
