package server

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/swapbridge/swapbridge/api"
)

// Config is swapd's whole configuration. Sources, lowest precedence first:
// defaults, the YAML file (--config), the environment (SWAPD_…), flags.
// configs/swapd.example.yaml documents every key.
type Config struct {
	DataDir  string `yaml:"data_dir"`  // SWAPD_DATA_DIR, --data-dir; default ./data
	MQTTAddr string `yaml:"mqtt_addr"` // SWAPD_MQTT_ADDR, --mqtt-addr; default :1883
	HTTPAddr string `yaml:"http_addr"` // SWAPD_HTTP_ADDR, --http-addr; default :8000
	// AdminToken guards the admin API (SWAPD_ADMIN_TOKEN), at least 32
	// characters (api.MinAdminTokenLen); it is accepted only in the
	// Authorization header. Empty: generated on first start into
	// <data>/admin.token (mode 0600).
	AdminToken string `yaml:"admin_token"`

	MQTTTLS TLSConfig `yaml:"mqtt_tls"`

	LogLevel  string `yaml:"log_level"`  // debug|info|warn|error; SWAPD_LOG_LEVEL, --log-level
	LogFormat string `yaml:"log_format"` // text|json|auto (auto: text on a terminal)

	Domain    DomainConfig    `yaml:"domain"`
	Events    EventsConfig    `yaml:"events"`
	WebSocket WebSocketConfig `yaml:"websocket"`
	HTTP      HTTPConfig      `yaml:"http"`
	Limits    LimitsConfig    `yaml:"limits"`

	Demo DemoConfig `yaml:"demo"`

	// Pprof serves Go's runtime profiles (net/http/pprof) under
	// /debug/pprof/, to admin-token holders only (SWAPD_PPROF=true;
	// default false).
	Pprof bool `yaml:"pprof"`
}

// TLSConfig enables the MQTT TLS listener when Addr is set.
type TLSConfig struct {
	Addr     string `yaml:"addr"`      // SWAPD_MQTT_TLS_ADDR, e.g. :8883
	CertFile string `yaml:"cert_file"` // SWAPD_MQTT_TLS_CERT
	KeyFile  string `yaml:"key_file"`  // SWAPD_MQTT_TLS_KEY
}

// DomainConfig holds the domain rules' thresholds.
type DomainConfig struct {
	ReadySoC         float64  `yaml:"ready_soc"`         // SWAPD_READY_SOC; default 90
	HealthFloor      float64  `yaml:"health_floor"`      // SWAPD_HEALTH_FLOOR; default 70
	HeatLimit        float64  `yaml:"heat_limit"`        // SWAPD_HEAT_LIMIT; default 50
	BookingHold      Duration `yaml:"booking_hold"`      // SWAPD_BOOKING_HOLD; default 15m
	SnapshotInterval Duration `yaml:"snapshot_interval"` // SWAPD_SNAPSHOT_INTERVAL; default 60s (offline after 3×)
	// ChargeWait bounds how long a booking waits for its battery to become
	// swappable before it expires (SWAPD_CHARGE_WAIT; default 1h).
	ChargeWait Duration `yaml:"charge_wait"`
	// OfflineFail is how long a station may stay offline before its active
	// bookings fail (SWAPD_OFFLINE_FAIL; default 10m).
	OfflineFail Duration `yaml:"offline_fail"`
	// CommandRetry is the first retry delay of an unacknowledged station
	// command, doubling per attempt (SWAPD_COMMAND_RETRY; default 2s).
	CommandRetry Duration `yaml:"command_retry"`
	// CommandTimeout is how long a command is retried before it fails; a
	// reserve that times out fails its booking (SWAPD_COMMAND_TIMEOUT;
	// default 2m).
	CommandTimeout Duration `yaml:"command_timeout"`
	// MaxActiveBookings is how many pending, confirmed or ready bookings
	// one user may hold at once, over all stations; one more is refused
	// with 409 booking_limit (SWAPD_MAX_ACTIVE_BOOKINGS; default 2; 0: the
	// default; negative: no limit).
	MaxActiveBookings int `yaml:"max_active_bookings"`
}

// EventsConfig is the event log's retention.
type EventsConfig struct {
	RetentionAge    Duration `yaml:"retention_age"`    // SWAPD_EVENTS_RETENTION_AGE; default 168h
	RetentionEvents int      `yaml:"retention_events"` // SWAPD_EVENTS_RETENTION_EVENTS; default 1000000
	// RetentionStationEvents bounds each station's own events (station
	// channel, not its users' events), applied before RetentionEvents: a
	// station over it loses its own oldest events, so one station cannot
	// flush the log (SWAPD_EVENTS_RETENTION_STATION_EVENTS; default 50000;
	// 0: the default; negative: off).
	RetentionStationEvents int `yaml:"retention_station_events"`
	// StationRate is each station's sustained budget of per-battery events
	// (battery_added, battery_removed without a booking) and
	// inventory_update events per second; beyond it per-battery events are
	// coalesced into inventory_update, published at most once a second
	// (SWAPD_EVENTS_STATION_RATE; default 10; 0: the default; negative:
	// off). StationBurst is how many it may make at once
	// (SWAPD_EVENTS_STATION_BURST; default 200).
	StationRate  float64 `yaml:"station_rate"`
	StationBurst int     `yaml:"station_burst"`
}

// WebSocketConfig configures the WebSocket endpoints.
type WebSocketConfig struct {
	AllowedOrigins      []string `yaml:"allowed_origins"`       // default: same origin and localhost
	RequireStationToken bool     `yaml:"require_station_token"` // station channels need a user token
	MaxConnsPerUser     int      `yaml:"max_conns_per_user"`
	MaxConnsPerIP       int      `yaml:"max_conns_per_ip"`
	// MaxReplay bounds how many seqs behind the newest event a station
	// channel may resume with ?since=; further back it gets
	// recovered:false and a snapshot (SWAPD_WS_MAX_REPLAY; 0: the
	// default, 10000; negative: unbounded). See realtime.Config.MaxReplay.
	MaxReplay int `yaml:"max_replay"`
}

// HTTPConfig configures the HTTP API.
type HTTPConfig struct {
	CORSOrigins []string `yaml:"cors_origins"` // SWAPD_CORS_ORIGINS (comma-separated)
}

// LimitsConfig bounds what clients may do (see docs/RELIABILITY.md).
type LimitsConfig struct {
	// MQTTMaxClients bounds concurrent MQTT connections
	// (SWAPD_MQTT_MAX_CLIENTS; default 10000).
	MQTTMaxClients int `yaml:"mqtt_max_clients"`
	// HTTPRate is the sustained HTTP requests per second of one client
	// address, WebSocket upgrades included (SWAPD_HTTP_RATE_LIMIT; default
	// 100; negative turns the limit off). Over it: 429 with Retry-After.
	HTTPRate float64 `yaml:"http_rate"`
	// HTTPBurst is how many requests one address may make at once
	// (SWAPD_HTTP_RATE_BURST; default 400).
	HTTPBurst int `yaml:"http_burst"`
	// MQTTPublishRate is each station's sustained publishes per second;
	// faster publishes wait their turn (SWAPD_MQTT_PUBLISH_RATE; default 50;
	// negative turns the limit off). MQTTPublishBurst is how many it may
	// send at once (SWAPD_MQTT_PUBLISH_BURST; default 200).
	MQTTPublishRate  float64 `yaml:"mqtt_publish_rate"`
	MQTTPublishBurst int     `yaml:"mqtt_publish_burst"`
	// MQTTAuthFailures failed CONNECTs of one client id from one address
	// within a minute block that client id from that address for
	// MQTTAuthBlock; other stations behind the same address are not
	// affected (SWAPD_MQTT_AUTH_FAILURES, default 10, negative turns it
	// off; SWAPD_MQTT_AUTH_BLOCK, default 5m). MQTTAuthHostFailures failed
	// CONNECTs from one address within a minute, whatever the ids, slow
	// every further failure from it to 1 s for MQTTAuthBlock; correct
	// credentials are not affected (SWAPD_MQTT_AUTH_HOST_FAILURES, default
	// 100, negative turns it off).
	MQTTAuthFailures     int      `yaml:"mqtt_auth_failures"`
	MQTTAuthBlock        Duration `yaml:"mqtt_auth_block"`
	MQTTAuthHostFailures int      `yaml:"mqtt_auth_host_failures"`
	// MQTTWriteTimeout bounds every write to an MQTT client: a client that
	// does not read for this long is disconnected (SWAPD_MQTT_WRITE_TIMEOUT;
	// default 10s).
	MQTTWriteTimeout Duration `yaml:"mqtt_write_timeout"`
	// MQTTPipeline is how many QoS 1 publishes of one station are
	// processed at once: the broker reads on while earlier ones are being
	// committed and acknowledges each in order once it is durable
	// (SWAPD_MQTT_PIPELINE; 0: the default, 64; negative: 1, each publish
	// acknowledged before the next is read).
	MQTTPipeline int `yaml:"mqtt_pipeline"`
}

// DemoConfig configures --demo.
type DemoConfig struct {
	Enabled  bool `yaml:"enabled"`  // --demo
	Stations int  `yaml:"stations"` // default 6
	Keep     bool `yaml:"keep"`     // keep the demo data dir between runs (--demo-keep)
	// Speed is simulated seconds per wall second at the demo's stations
	// and riders; 0 → DemoSpeed (60: an hour per minute).
	Speed int `yaml:"speed"`
}

// Duration is a time.Duration read from YAML and the environment as a Go
// duration string ("15m", "90s").
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration like 15m or 90s", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Defaults returns the configuration with every default filled in.
func Defaults() Config {
	return Config{
		DataDir:   "./data",
		MQTTAddr:  ":1883",
		HTTPAddr:  ":8000",
		LogLevel:  "info",
		LogFormat: "auto",
		Domain: DomainConfig{
			ReadySoC: 90, HealthFloor: 70, HeatLimit: 50,
			BookingHold:      Duration(15 * time.Minute),
			SnapshotInterval: Duration(60 * time.Second),
			ChargeWait:       Duration(time.Hour),
			OfflineFail:      Duration(10 * time.Minute),
			CommandRetry:     Duration(2 * time.Second),
			CommandTimeout:   Duration(2 * time.Minute),

			MaxActiveBookings: 2,
		},
		Events: EventsConfig{
			RetentionAge: Duration(7 * 24 * time.Hour), RetentionEvents: 1_000_000, RetentionStationEvents: 50_000,
			StationRate: 10, StationBurst: 200,
		},
		Limits: LimitsConfig{
			MQTTMaxClients: 10000, HTTPRate: 100, HTTPBurst: 400,
			MQTTPublishRate: 50, MQTTPublishBurst: 200, MQTTAuthFailures: 10, MQTTAuthBlock: Duration(5 * time.Minute),
			MQTTAuthHostFailures: 100, MQTTWriteTimeout: Duration(10 * time.Second),
		},
		Demo: DemoConfig{Stations: 6},
	}
}

// LoadFile merges the YAML file at path into cfg. Unknown keys are errors,
// so a typo does not silently fall back to a default.
func LoadFile(cfg *Config, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config %s: %s", path, describeYAMLError(err))
	}
	return nil
}

// ApplyEnv merges the SWAPD_… variables from getenv into cfg.
func ApplyEnv(cfg *Config, getenv func(string) string) error {
	str := func(name string, dst *string) {
		if v := getenv(name); v != "" {
			*dst = v
		}
	}
	var errs []error
	num := func(name string, dst *float64) {
		if v := getenv(name); v != "" {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s=%q is not a number", name, v))
				return
			}
			*dst = f
		}
	}
	integer := func(name string, dst *int) {
		if v := getenv(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s=%q is not an integer", name, v))
				return
			}
			*dst = n
		}
	}
	dur := func(name string, dst *Duration) {
		if v := getenv(name); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s=%q is not a duration like 15m or 90s", name, v))
				return
			}
			*dst = Duration(d)
		}
	}
	if v := getenv("SWAPD_PPROF"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("SWAPD_PPROF=%q is not true or false", v))
		}
		cfg.Pprof = b
	}
	str("SWAPD_DATA_DIR", &cfg.DataDir)
	str("SWAPD_MQTT_ADDR", &cfg.MQTTAddr)
	str("SWAPD_HTTP_ADDR", &cfg.HTTPAddr)
	str("SWAPD_ADMIN_TOKEN", &cfg.AdminToken)
	str("SWAPD_LOG_LEVEL", &cfg.LogLevel)
	str("SWAPD_LOG_FORMAT", &cfg.LogFormat)
	str("SWAPD_MQTT_TLS_ADDR", &cfg.MQTTTLS.Addr)
	str("SWAPD_MQTT_TLS_CERT", &cfg.MQTTTLS.CertFile)
	str("SWAPD_MQTT_TLS_KEY", &cfg.MQTTTLS.KeyFile)
	num("SWAPD_READY_SOC", &cfg.Domain.ReadySoC)
	num("SWAPD_HEALTH_FLOOR", &cfg.Domain.HealthFloor)
	num("SWAPD_HEAT_LIMIT", &cfg.Domain.HeatLimit)
	dur("SWAPD_BOOKING_HOLD", &cfg.Domain.BookingHold)
	dur("SWAPD_SNAPSHOT_INTERVAL", &cfg.Domain.SnapshotInterval)
	dur("SWAPD_CHARGE_WAIT", &cfg.Domain.ChargeWait)
	dur("SWAPD_OFFLINE_FAIL", &cfg.Domain.OfflineFail)
	dur("SWAPD_COMMAND_RETRY", &cfg.Domain.CommandRetry)
	dur("SWAPD_COMMAND_TIMEOUT", &cfg.Domain.CommandTimeout)
	integer("SWAPD_MAX_ACTIVE_BOOKINGS", &cfg.Domain.MaxActiveBookings)
	dur("SWAPD_EVENTS_RETENTION_AGE", &cfg.Events.RetentionAge)
	integer("SWAPD_EVENTS_RETENTION_EVENTS", &cfg.Events.RetentionEvents)
	integer("SWAPD_EVENTS_RETENTION_STATION_EVENTS", &cfg.Events.RetentionStationEvents)
	num("SWAPD_EVENTS_STATION_RATE", &cfg.Events.StationRate)
	integer("SWAPD_EVENTS_STATION_BURST", &cfg.Events.StationBurst)
	integer("SWAPD_MQTT_MAX_CLIENTS", &cfg.Limits.MQTTMaxClients)
	num("SWAPD_HTTP_RATE_LIMIT", &cfg.Limits.HTTPRate)
	integer("SWAPD_HTTP_RATE_BURST", &cfg.Limits.HTTPBurst)
	num("SWAPD_MQTT_PUBLISH_RATE", &cfg.Limits.MQTTPublishRate)
	integer("SWAPD_MQTT_PUBLISH_BURST", &cfg.Limits.MQTTPublishBurst)
	integer("SWAPD_MQTT_AUTH_FAILURES", &cfg.Limits.MQTTAuthFailures)
	dur("SWAPD_MQTT_AUTH_BLOCK", &cfg.Limits.MQTTAuthBlock)
	integer("SWAPD_MQTT_AUTH_HOST_FAILURES", &cfg.Limits.MQTTAuthHostFailures)
	dur("SWAPD_MQTT_WRITE_TIMEOUT", &cfg.Limits.MQTTWriteTimeout)
	integer("SWAPD_MQTT_PIPELINE", &cfg.Limits.MQTTPipeline)
	integer("SWAPD_WS_MAX_REPLAY", &cfg.WebSocket.MaxReplay)
	if v := getenv("SWAPD_CORS_ORIGINS"); v != "" {
		cfg.HTTP.CORSOrigins = splitList(v)
	}
	if v := getenv("SWAPD_WS_ALLOWED_ORIGINS"); v != "" {
		cfg.WebSocket.AllowedOrigins = splitList(v)
	}
	return joinErrors("environment", errs)
}

func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// Flags are the command-line overrides; a flag that was not given leaves
// the value from the file or environment alone.
type Flags struct {
	fs         *flag.FlagSet
	ConfigFile string
	dataDir    string
	mqttAddr   string
	httpAddr   string
	logLevel   string
	demo       bool
	demoKeep   bool
	stations   int
}

// NewFlags defines swapd's flags on a new FlagSet named name.
func NewFlags(name string, out io.Writer) *Flags {
	f := &Flags{fs: flag.NewFlagSet(name, flag.ContinueOnError)}
	f.fs.SetOutput(out)
	f.fs.StringVar(&f.ConfigFile, "config", "", "YAML config `file` (see configs/swapd.example.yaml)")
	f.fs.StringVar(&f.dataDir, "data-dir", "", "data `dir` (env SWAPD_DATA_DIR; default ./data)")
	f.fs.StringVar(&f.mqttAddr, "mqtt-addr", "", "MQTT listen `host:port` (env SWAPD_MQTT_ADDR; default :1883)")
	f.fs.StringVar(&f.httpAddr, "http-addr", "", "HTTP listen `host:port` (env SWAPD_HTTP_ADDR; default :8000)")
	f.fs.StringVar(&f.logLevel, "log-level", "", "debug, info, warn or error (env SWAPD_LOG_LEVEL; default info)")
	f.fs.BoolVar(&f.demo, "demo", false, "also run simulated stations and a demo user")
	f.fs.BoolVar(&f.demoKeep, "demo-keep", false, "with --demo: keep the demo data dir from the previous run")
	f.fs.IntVar(&f.stations, "demo-stations", 0, "with --demo: how many simulated stations (default 6)")
	return f
}

// Parse parses args.
func (f *Flags) Parse(args []string) error { return f.fs.Parse(args) }

// Args returns the arguments left after the flags.
func (f *Flags) Args() []string { return f.fs.Args() }

// Apply merges the flags that were set into cfg.
func (f *Flags) Apply(cfg *Config) {
	f.fs.Visit(func(fl *flag.Flag) {
		switch fl.Name {
		case "data-dir":
			cfg.DataDir = f.dataDir
		case "mqtt-addr":
			cfg.MQTTAddr = f.mqttAddr
		case "http-addr":
			cfg.HTTPAddr = f.httpAddr
		case "log-level":
			cfg.LogLevel = f.logLevel
		case "demo":
			cfg.Demo.Enabled = f.demo
		case "demo-keep":
			cfg.Demo.Keep = f.demoKeep
		case "demo-stations":
			cfg.Demo.Stations = f.stations
		}
	})
}

// Load builds the configuration from defaults, the file named by --config,
// the environment and the flags, then validates it.
func Load(f *Flags, getenv func(string) string) (Config, error) {
	cfg := Defaults()
	if f.ConfigFile != "" {
		if err := LoadFile(&cfg, f.ConfigFile); err != nil {
			return cfg, err
		}
	}
	if err := ApplyEnv(&cfg, getenv); err != nil {
		return cfg, err
	}
	f.Apply(&cfg)
	return cfg, cfg.Validate()
}

// Validate checks the configuration and says what is wrong.
func (c *Config) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("data_dir must not be empty"))
	}
	if c.HTTPAddr == "" {
		errs = append(errs, errors.New("http_addr must not be empty"))
	}
	if c.MQTTAddr == "" {
		errs = append(errs, errors.New("mqtt_addr must not be empty"))
	}
	if c.AdminToken != "" {
		if err := api.CheckAdminToken(c.AdminToken); err != nil {
			errs = append(errs, fmt.Errorf("%w (SWAPD_ADMIN_TOKEN or admin_token)", err))
		}
	}
	if (c.MQTTTLS.Addr != "") && (c.MQTTTLS.CertFile == "" || c.MQTTTLS.KeyFile == "") {
		errs = append(errs, errors.New("mqtt_tls.addr needs mqtt_tls.cert_file and mqtt_tls.key_file"))
	}
	switch strings.ToLower(c.LogLevel) {
	case "debug", "info", "warn", "warning", "error":
	default:
		errs = append(errs, fmt.Errorf("log_level %q: use debug, info, warn or error", c.LogLevel))
	}
	switch c.LogFormat {
	case "auto", "text", "json", "":
	default:
		errs = append(errs, fmt.Errorf("log_format %q: use auto, text or json", c.LogFormat))
	}
	d := c.Domain
	if d.ReadySoC <= 0 || d.ReadySoC > 100 || d.HealthFloor < 0 || d.HealthFloor > 100 {
		errs = append(errs, errors.New("domain.ready_soc must be in (0,100] and domain.health_floor in [0,100]"))
	}
	if d.BookingHold <= 0 || d.SnapshotInterval <= 0 {
		errs = append(errs, errors.New("domain.booking_hold and domain.snapshot_interval must be positive"))
	}
	if d.ChargeWait < 0 || d.OfflineFail < 0 || d.CommandRetry < 0 || d.CommandTimeout < 0 {
		errs = append(errs, errors.New("domain.charge_wait, offline_fail, command_retry and command_timeout must not be negative (0: default)"))
	}
	if l := c.Limits; l.MQTTMaxClients < 0 || l.HTTPBurst < 0 || l.MQTTPublishBurst < 0 || l.MQTTAuthBlock < 0 || l.MQTTWriteTimeout < 0 {
		errs = append(errs, errors.New("limits.mqtt_max_clients, http_burst, mqtt_publish_burst, mqtt_auth_block and mqtt_write_timeout must not be negative (0: default)"))
	}
	if c.Demo.Enabled && (c.Demo.Stations < 1 || c.Demo.Stations > 200) {
		errs = append(errs, errors.New("demo.stations must be from 1 to 200"))
	}
	if c.Demo.Speed < 0 || c.Demo.Speed > 3600 {
		errs = append(errs, errors.New("demo.speed must be from 0 (the default, 60) to 3600"))
	}
	return joinErrors("config", errs)
}

// joinErrors makes one line of several errors, so a process that cannot
// start says why on one line.
func joinErrors(prefix string, errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return fmt.Errorf("%s: %s", prefix, strings.Join(msgs, "; "))
}
