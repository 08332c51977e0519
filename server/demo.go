package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/swapbridge/swapbridge/client"
	"github.com/swapbridge/swapbridge/stationagent"
	"github.com/swapbridge/swapbridge/stationagent/driver/sim"
	"github.com/swapbridge/swapbridge/web"
	"github.com/swapbridge/swapbridge/wire"
)

// DemoUserID is the id of the demo user swapd --demo creates.
const DemoUserID = "demo-rider"

// DemoSpeed is how many simulated seconds pass per wall second at the demo
// stations: batteries charge within a minute or two and riders come and go
// every few seconds somewhere in the network.
const DemoSpeed = 60

// DemoStation is one simulated station of the demo.
type DemoStation struct {
	ID    string
	Name  string
	Slots int
	Lat   float64
	Lon   float64
}

// demoSites are real places in Berlin where a swap network would put its
// cabinets.
var demoSites = []DemoStation{
	{"ber-alexanderplatz", "Alexanderplatz", 16, 52.52186, 13.41321},
	{"ber-kottbusser-tor", "Kottbusser Tor", 12, 52.49917, 13.41806},
	{"ber-warschauer-str", "Warschauer Straße", 20, 52.50563, 13.44937},
	{"ber-hauptbahnhof", "Hauptbahnhof", 24, 52.52508, 13.36941},
	{"ber-hermannplatz", "Hermannplatz", 10, 52.48677, 13.42465},
	{"ber-savignyplatz", "Savignyplatz", 8, 52.50565, 13.31939},
	{"ber-nollendorfplatz", "Nollendorfplatz", 14, 52.49939, 13.35402},
	{"ber-leopoldplatz", "Leopoldplatz", 12, 52.54636, 13.35932},
	{"ber-potsdamer-platz", "Potsdamer Platz", 18, 52.50935, 13.37632},
	{"ber-ostkreuz", "Ostkreuz", 22, 52.50295, 13.46898},
	{"ber-kollwitzplatz", "Kollwitzplatz", 10, 52.53640, 13.41734},
	{"ber-tempelhofer-feld", "Tempelhofer Feld", 16, 52.47520, 13.40380},
}

// demoStations returns n stations: the Berlin sites, then numbered copies
// of them a few hundred metres away.
func demoStations(n int) []DemoStation {
	out := make([]DemoStation, 0, n)
	for i := 0; i < n; i++ {
		s := demoSites[i%len(demoSites)]
		if round := i / len(demoSites); round > 0 {
			s.ID = fmt.Sprintf("%s-%d", s.ID, round+1)
			s.Name = fmt.Sprintf("%s %d", s.Name, round+1)
			s.Lat += 0.002 * float64(round)
			s.Lon -= 0.003 * float64(round)
			s.Slots = 8 + (s.Slots+4*round)%17
		}
		out = append(out, s)
	}
	return out
}

// Demo is a running swapd --demo: the normal server, one in-process station
// agent per simulated station connected over MQTT to the embedded broker,
// and a demo user. Create it with StartDemo and stop it with Shutdown.
type Demo struct {
	srv       *Server
	log       *slog.Logger
	dir       string
	stations  []DemoStation
	userToken string
	baseURL   string // for this process: http://127.0.0.1:port
	speed     int    // simulated seconds per wall second

	cancel context.CancelFunc
	wg     sync.WaitGroup
	errMu  sync.Mutex
	errs   []error

	shutdownOnce sync.Once
	shutdownErr  error
}

// demoState is what the demo keeps in <data>/demo/demo.json so that a kept
// demo dir (--demo-keep) can reconnect its stations and user.
type demoState struct {
	UserToken string            `json:"user_token"`
	Secrets   map[string]string `json:"station_secrets"`
}

// StartDemo starts the server on cfg's addresses with its data in
// <cfg.DataDir>/demo (wiped first unless cfg.Demo.Keep), mounts the
// dashboard, provisions cfg.Demo.Stations stations (6 when zero) and the
// demo user through the admin API, starts one sim agent per station and
// prints the banner to stdout. It blocks until all of that is done; the
// agents connect in the background. On error everything started is
// stopped again.
func StartDemo(ctx context.Context, cfg Config, log *slog.Logger, stdout io.Writer) (*Demo, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if stdout == nil {
		stdout = io.Discard
	}
	cfg.Demo.Enabled = true
	if cfg.Demo.Stations == 0 {
		cfg.Demo.Stations = 6
	}
	dir := filepath.Join(cfg.DataDir, "demo")
	if !cfg.Demo.Keep {
		if err := checkNotInUse(filepath.Join(dir, "swapd.db")); err != nil {
			return nil, err
		}
		if err := os.RemoveAll(dir); err != nil {
			return nil, fmt.Errorf("demo: wipe %s: %w", dir, err)
		}
	}
	cfg.DataDir = dir
	speed := cfg.Demo.Speed
	if speed == 0 {
		speed = DemoSpeed
	}
	// A booking's hold and its wait for a charge run on the demo's
	// simulated time too (15 simulated minutes are 15 s at ×60), or riders
	// who walk away would hold the demo's batteries for real quarter hours.
	// They stay long enough for the stations' reports to keep up: a hold
	// of 10 s at least, a charge wait of 30 s.
	cfg.Domain.BookingHold = Duration(max(time.Duration(cfg.Domain.BookingHold)/time.Duration(speed), 10*time.Second))
	cfg.Domain.ChargeWait = Duration(max(time.Duration(cfg.Domain.ChargeWait)/time.Duration(speed), 30*time.Second))
	srv, err := New(cfg, log)
	if err != nil {
		return nil, err
	}
	if !web.Mounted(srv.mux) {
		web.Register(srv.mux)
	}
	signIn := &web.DemoSignIn{}
	srv.Handle("GET /ui/config.json", signIn)

	if err := srv.Start(ctx); err != nil {
		return nil, err
	}
	d := &Demo{srv: srv, log: log, dir: dir, stations: demoStations(cfg.Demo.Stations)}
	d.baseURL = "http://" + dialAddr(srv.HTTPAddr())
	fail := func(err error) (*Demo, error) {
		d.Shutdown(context.Background())
		return nil, err
	}

	st, err := d.provision(ctx)
	if err != nil {
		return fail(err)
	}
	signIn.Set(DemoUserID, d.userToken)

	actx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	d.cancel = cancel
	agentLog := slog.New(minLevel{log.Handler().WithAttrs([]slog.Attr{slog.String("part", "demo-agent")}), slog.LevelWarn})
	for i, s := range d.stations {
		a, err := stationagent.New(stationagent.Config{
			Server:        "tcp://" + dialAddr(srv.MQTTAddr()),
			StationID:     s.ID,
			Secret:        st.Secrets[s.ID],
			DataDir:       filepath.Join(dir, "agents", s.ID),
			Driver:        stationagent.DriverSim,
			ControlSocket: "off",
			ReconnectMin:  200 * time.Millisecond,
			ReconnectMax:  5 * time.Second,
			Sim: sim.Config{
				Slots:         s.Slots,
				Seed:          uint64(1000 + 7919*i),
				Speed:         float64(speed),
				FaultRate:     0.02,
				FaultDuration: 10 * time.Minute,
				ReturnEvery:   demoArrival,
				TakeAfter:     4 * time.Minute,
			},
		}, stationagent.WithLogger(agentLog), stationagent.WithVersion("demo-"+Version))
		if err != nil {
			return fail(fmt.Errorf("demo: agent %s: %w", s.ID, err))
		}
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			if err := a.Run(actx); err != nil && !errors.Is(err, context.Canceled) {
				log.Error("demo agent stopped", "station", s.ID, "err", err)
				d.errMu.Lock()
				d.errs = append(d.errs, fmt.Errorf("agent %s: %w", s.ID, err))
				d.errMu.Unlock()
			}
		}()
	}
	riders := make([]string, 0, demoRiders)
	for i := range demoRiders {
		riders = append(riders, demoRiderID(i))
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.runRiders(actx, riders, speed)
	}()
	d.speed = speed
	d.printBanner(stdout)
	return d, nil
}

// provision creates (or, in a kept demo dir, reuses) the stations and the
// demo user through the admin API, and saves their secrets in demo.json.
func (d *Demo) provision(ctx context.Context) (demoState, error) {
	path := filepath.Join(d.dir, "demo.json")
	var st demoState
	if b, err := os.ReadFile(path); err == nil {
		if err := json.Unmarshal(b, &st); err != nil {
			return st, fmt.Errorf("demo: %s is damaged (%v); start without --demo-keep", path, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return st, fmt.Errorf("demo: %w", err)
	}
	if st.Secrets == nil {
		st.Secrets = map[string]string{}
	}
	token, _ := d.srv.AdminToken()
	admin := client.New(d.baseURL, token)
	save := func() error {
		b, _ := json.MarshalIndent(st, "", "  ")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		return nil
	}
	for _, s := range d.stations {
		if st.Secrets[s.ID] != "" {
			continue
		}
		resp, err := admin.CreateStation(ctx, wire.CreateStationRequest{ID: s.ID, Name: s.Name, Slots: s.Slots, Lat: s.Lat, Lon: s.Lon})
		if err != nil {
			if client.IsCode(err, "station_exists") {
				return st, fmt.Errorf("demo: station %s exists but its secret is not in %s; start without --demo-keep", s.ID, path)
			}
			return st, fmt.Errorf("demo: provision station %s: %w", s.ID, err)
		}
		st.Secrets[s.ID] = resp.Secret
		if err := save(); err != nil {
			return st, err
		}
	}
	if st.UserToken == "" {
		u, err := admin.CreateUser(ctx, DemoUserID)
		if err != nil {
			if client.IsCode(err, "user_exists") {
				return st, fmt.Errorf("demo: user %s exists but its token is not in %s; start without --demo-keep", DemoUserID, path)
			}
			return st, fmt.Errorf("demo: create the demo user: %w", err)
		}
		st.UserToken = u.Token
		if err := save(); err != nil {
			return st, err
		}
	}
	// The simulated riders call the bridge directly and need no token:
	// only their users must exist (a kept demo dir already has them).
	for i := range demoRiders {
		id := demoRiderID(i)
		if _, err := admin.CreateUser(ctx, id); err != nil && !client.IsCode(err, "user_exists") {
			return st, fmt.Errorf("demo: create rider %s: %w", id, err)
		}
	}
	d.userToken = st.UserToken
	return st, nil
}

func (d *Demo) printBanner(w io.Writer) {
	httpURL := "http://" + bannerAddr(d.srv.HTTPAddr())
	wsURL := "ws://" + bannerAddr(d.srv.HTTPAddr())
	slots := 0
	for _, s := range d.stations {
		slots += s.Slots
	}
	_, adminPath := d.srv.AdminToken()
	if adminPath == "" {
		adminPath = "(from SWAPD_ADMIN_TOKEN or the config file)"
	}
	fmt.Fprintf(w, "\nswapd demo: %d simulated stations, %d slots, %d simulated riders, time ×%d\n\n", len(d.stations), slots, demoRiders, d.speed)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  Dashboard\t%s/\n", httpURL)
	fmt.Fprintf(tw, "  Signed in as demo user\t%s/#token=%s\n", httpURL, d.userToken)
	fmt.Fprintf(tw, "  WebSocket, all stations\t%s/ws/stations/\n", wsURL)
	fmt.Fprintf(tw, "  WebSocket, one station\t%s/ws/stations/%s/\n", wsURL, d.stations[0].ID)
	fmt.Fprintf(tw, "  WebSocket, notifications\t%s/ws/notifications/?token=%s\n", wsURL, d.userToken)
	fmt.Fprintf(tw, "  HTTP API\t%s/api/stations\n", httpURL)
	fmt.Fprintf(tw, "  MQTT broker\ttcp://%s\n", bannerAddr(d.srv.MQTTAddr()))
	fmt.Fprintf(tw, "  Admin token\t%s\n", adminPath)
	fmt.Fprintf(tw, "  Demo user\t%s, token %s\n", DemoUserID, d.userToken)
	tw.Flush()
	fmt.Fprintf(w, "\nData in %s (wiped at start unless --demo-keep). Ctrl+C stops.\n\n", d.dir)
}

// Server returns the demo's server.
func (d *Demo) Server() *Server { return d.srv }

// HTTPAddr returns the bound HTTP address.
func (d *Demo) HTTPAddr() string { return d.srv.HTTPAddr() }

// MQTTAddr returns the bound MQTT address.
func (d *Demo) MQTTAddr() string { return d.srv.MQTTAddr() }

// URL returns the dashboard's URL as this machine can reach it, e.g.
// http://127.0.0.1:8000/.
func (d *Demo) URL() string { return d.baseURL + "/" }

// UserID returns the demo user's id.
func (d *Demo) UserID() string { return DemoUserID }

// UserToken returns the demo user's token.
func (d *Demo) UserToken() string { return d.userToken }

// Stations returns the simulated stations.
func (d *Demo) Stations() []DemoStation { return append([]DemoStation(nil), d.stations...) }

// Dir returns the demo's data directory.
func (d *Demo) Dir() string { return d.dir }

// Shutdown stops the agents, waits for them, then shuts the server down. It
// is idempotent and returns the agents' failures and the server's.
func (d *Demo) Shutdown(ctx context.Context) error {
	d.shutdownOnce.Do(func() {
		if d.cancel != nil {
			d.cancel()
		}
		d.wg.Wait()
		err := d.srv.Shutdown(ctx)
		d.errMu.Lock()
		d.shutdownErr = errors.Join(append(d.errs, err)...)
		d.errMu.Unlock()
	})
	return d.shutdownErr
}

// RunDemo runs swapd with simulated stations and a demo user until ctx is
// done, then stops the agents and the server within 10 seconds.
func RunDemo(ctx context.Context, cfg Config, log *slog.Logger, stdout io.Writer) error {
	d, err := StartDemo(ctx, cfg, log, stdout)
	if err != nil {
		return err
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return d.Shutdown(sctx)
}

// checkNotInUse fails when another swapd holds the database at path, so a
// second swapd --demo does not wipe the data of a running one.
func checkNotInUse(path string) error {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 200 * time.Millisecond})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return fmt.Errorf("demo data dir %s is in use by another swapd", filepath.Dir(path))
	}
	if err != nil {
		return nil // unreadable: it is wiped anyway
	}
	return db.Close()
}

// dialAddr turns a bound address into one this process can dial: an
// unspecified host (":8000", "[::]:8000") becomes 127.0.0.1.
func dialAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// bannerAddr is dialAddr for people: an unspecified host becomes localhost.
func bannerAddr(addr string) string {
	a := dialAddr(addr)
	if strings.HasPrefix(a, "127.0.0.1:") {
		host, _, _ := net.SplitHostPort(addr)
		if host != "127.0.0.1" {
			return "localhost" + strings.TrimPrefix(a, "127.0.0.1")
		}
	}
	return a
}

// minLevel drops records below min; the demo's agents log only warnings and
// errors, so the server's log stays readable.
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(as), h.min}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.Handler.WithGroup(name), h.min}
}
