package stationagent

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/swapbridge/swapbridge/internal/yamlkeys"
	"github.com/swapbridge/swapbridge/stationagent/driver/modbus"
	"github.com/swapbridge/swapbridge/stationagent/driver/sim"
	"github.com/swapbridge/swapbridge/wire"
)

// ErrConfig is wrapped by every configuration error (LoadConfig, Validate,
// New), so callers can tell a bad config from a runtime failure.
var ErrConfig = errors.New("config")

// Driver names accepted in Config.Driver.
const (
	DriverSim    = "sim"
	DriverModbus = "modbus"
)

// Defaults applied by Config.withDefaults for zero fields.
const (
	DefaultDataDir          = "./data"
	DefaultSnapshotInterval = 60 * time.Second
	DefaultPollInterval     = time.Second
	DefaultOutboxLimit      = 1000
	DefaultReconnectMin     = time.Second
	DefaultReconnectMax     = time.Minute
	DefaultKeepAlive        = 30 * time.Second
	DefaultConnectTimeout   = 10 * time.Second
	DefaultCommandHistory   = 10000
	DefaultCommandRetention = 7 * 24 * time.Hour
)

// Config is the agent's configuration, read from YAML (LoadConfig) and the
// STATIONAGENT_* environment. Zero values mean the documented default.
type Config struct {
	// Server is the broker URL: tcp://host:port or ssl://host:port. For a
	// cluster it holds several, comma-separated (in YAML also a sequence):
	// the agent uses one at a time and moves to the next when it cannot
	// connect or loses the link. Servers splits it.
	Server string `yaml:"server"`
	// StationID is the MQTT client id and username.
	StationID string `yaml:"station_id"`
	// Secret is the MQTT password returned once at provisioning.
	Secret string `yaml:"secret"`
	// DataDir holds the agent's bbolt file and control socket. Default ./data.
	DataDir string `yaml:"data_dir"`
	// Driver is "sim" or "modbus". Required.
	Driver string `yaml:"driver"`
	// Sim configures the sim driver.
	Sim sim.Config `yaml:"sim"`
	// Modbus configures the modbus driver.
	Modbus modbus.Config `yaml:"modbus"`
	// TLS configures ssl:// servers.
	TLS TLSConfig `yaml:"tls"`

	// SnapshotInterval is the period of full telemetry messages (heartbeat).
	// Default 60s.
	SnapshotInterval time.Duration `yaml:"snapshot_interval"`
	// PollInterval is how often the driver is read for changes. Default 1s.
	PollInterval time.Duration `yaml:"poll_interval"`
	// OutboxLimit is the number of queued messages above which queued
	// telemetry is compacted into one full snapshot. Default 1000.
	OutboxLimit int `yaml:"outbox_limit"`
	// ReconnectMin and ReconnectMax bound the jittered exponential backoff
	// between connection attempts. Defaults 1s and 60s.
	ReconnectMin time.Duration `yaml:"reconnect_min"`
	ReconnectMax time.Duration `yaml:"reconnect_max"`
	// KeepAlive is the MQTT keep-alive. Default 30s.
	KeepAlive time.Duration `yaml:"keepalive"`
	// ConnectTimeout bounds one connection attempt. Default 10s.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// CommandHistory and CommandRetention bound the table of executed command
	// ids: the newest CommandHistory ids not older than CommandRetention are
	// kept. Defaults 10000 and 7 days.
	CommandHistory   int           `yaml:"command_history"`
	CommandRetention time.Duration `yaml:"command_retention"`
	// ControlSocket is the unix socket of the local control endpoint used by
	// the status, slots and unlock subcommands. Default <data_dir>/control.sock;
	// "off" disables it.
	ControlSocket string `yaml:"control_socket"`
	// HTTPURL is the server's HTTP address, used by doctor for the clock
	// check. Default http://<server host>:8000/healthz.
	HTTPURL string `yaml:"http_url"`
	// LogLevel is debug, info, warn or error. Default info.
	LogLevel string `yaml:"log_level"`
}

// TLSConfig configures the connection to an ssl:// server.
type TLSConfig struct {
	// CAFile is a PEM bundle of trusted CAs; empty uses the system pool.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are an optional client certificate.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName overrides the name checked in the server certificate.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify disables certificate checks (never in production).
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// LoadConfig reads the YAML file at path, applies the STATIONAGENT_*
// environment, fills defaults and validates. An empty path reads no file.
// Every error wraps ErrConfig and is one line.
func LoadConfig(path string) (Config, error) {
	cfg, err := ReadConfig(path, os.LookupEnv)
	if err != nil {
		return cfg, err
	}
	return cfg, cfg.Validate()
}

// ReadConfig reads the YAML file at path (none when path is empty), applies
// the environment seen through lookup and fills defaults, without
// validating. The technician subcommands use it, as they need only the data
// directory.
func ReadConfig(path string, lookup func(string) (string, bool)) (Config, error) {
	var cfg Config
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return cfg, fmt.Errorf("%w: config file %s does not exist", ErrConfig, path)
			}
			return cfg, fmt.Errorf("%w: read %s: %v", ErrConfig, path, err)
		}
		list, seqLine, err := serverSequence(b)
		if err != nil {
			return cfg, fmt.Errorf("%w: %s: %v", ErrConfig, path, err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
			if err = withoutServerSequence(err, seqLine); err != nil {
				return cfg, fmt.Errorf("%w: %s: %s", ErrConfig, path, yamlkeys.Describe(err, reflect.TypeFor[Config]()))
			}
		}
		if seqLine > 0 {
			cfg.Server = list
		}
		if cfg.Modbus.MapFile != "" && !filepath.IsAbs(cfg.Modbus.MapFile) {
			cfg.Modbus.MapFile = filepath.Join(filepath.Dir(path), cfg.Modbus.MapFile)
		}
	}
	if err := cfg.applyEnv(lookup); err != nil {
		return cfg, err
	}
	cfg.withDefaults()
	return cfg, nil
}

// serverSequence finds a top-level `server:` written as a YAML sequence
// and returns its items joined with commas and the sequence's line (0 when
// server is not a sequence). Errors in the rest of the file are left to the
// full decode.
func serverSequence(b []byte) (list string, line int, err error) {
	var probe struct {
		Server yaml.Node `yaml:"server"`
	}
	if yaml.Unmarshal(b, &probe) != nil || probe.Server.Kind != yaml.SequenceNode {
		return "", 0, nil
	}
	items := make([]string, 0, len(probe.Server.Content))
	for _, n := range probe.Server.Content {
		if n.Kind != yaml.ScalarNode {
			return "", 0, fmt.Errorf("line %d: each item of server is one URL", n.Line)
		}
		items = append(items, n.Value)
	}
	return strings.Join(items, ","), probe.Server.Line, nil
}

// withoutServerSequence drops, from a decode error, yaml.v3's complaint
// that the server sequence at line does not fit Config.Server (a string):
// serverSequence has read it. It returns nil when nothing else is wrong.
func withoutServerSequence(err error, line int) error {
	var te *yaml.TypeError
	if line == 0 || !errors.As(err, &te) {
		return err
	}
	drop := fmt.Sprintf("line %d: cannot unmarshal !!seq into string", line)
	rest := make([]string, 0, len(te.Errors))
	for _, e := range te.Errors {
		if e != drop {
			rest = append(rest, e)
		}
	}
	if len(rest) == 0 {
		return nil
	}
	return &yaml.TypeError{Errors: rest}
}

// Servers returns the broker URLs of Server, in order, without the spaces
// around the commas. An empty Server gives none.
func (c Config) Servers() []string {
	if strings.TrimSpace(c.Server) == "" {
		return nil
	}
	parts := strings.Split(c.Server, ",")
	for i, p := range parts {
		parts[i] = strings.TrimSpace(p)
	}
	return parts
}

func (c *Config) applyEnv(lookup func(string) (string, bool)) error {
	if lookup == nil {
		return nil
	}
	str := func(name string, dst *string) {
		if v, ok := lookup(name); ok && v != "" {
			*dst = v
		}
	}
	str("STATIONAGENT_SERVER", &c.Server)
	str("STATIONAGENT_STATION_ID", &c.StationID)
	str("STATIONAGENT_SECRET", &c.Secret)
	str("STATIONAGENT_DATA_DIR", &c.DataDir)
	str("STATIONAGENT_DRIVER", &c.Driver)
	str("STATIONAGENT_LOG_LEVEL", &c.LogLevel)
	if v, ok := lookup("STATIONAGENT_SIM_SLOTS"); ok && v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("%w: STATIONAGENT_SIM_SLOTS=%q is not a number", ErrConfig, v)
		}
		c.Sim.Slots = n
	}
	return nil
}

func (c *Config) withDefaults() {
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	if c.SnapshotInterval == 0 {
		c.SnapshotInterval = DefaultSnapshotInterval
	}
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.OutboxLimit == 0 {
		c.OutboxLimit = DefaultOutboxLimit
	}
	if c.ReconnectMin == 0 {
		c.ReconnectMin = DefaultReconnectMin
	}
	if c.ReconnectMax == 0 {
		c.ReconnectMax = DefaultReconnectMax
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = DefaultKeepAlive
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.CommandHistory == 0 {
		c.CommandHistory = DefaultCommandHistory
	}
	if c.CommandRetention == 0 {
		c.CommandRetention = DefaultCommandRetention
	}
	if c.ControlSocket == "" {
		c.ControlSocket = filepath.Join(c.DataDir, "control.sock")
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
}

// Validate checks the configuration (after defaults) and returns the first
// problem as one clear error wrapping ErrConfig.
func (c *Config) Validate() error { return c.validate(true) }

// validate checks everything, and the driver section when checkDriver.
func (c *Config) validate(checkDriver bool) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...)
	}
	servers := c.Servers()
	if len(servers) == 0 {
		return bad("server is required (tcp://host:port or ssl://host:port, several comma-separated for a cluster; env STATIONAGENT_SERVER)")
	}
	seen := make(map[string]bool, len(servers))
	for i, s := range servers {
		if s == "" {
			return bad("server list %q: entry %d is empty", c.Server, i+1)
		}
		if _, _, err := parseServer(s); err != nil {
			return bad("%v", err)
		}
		if seen[s] {
			return bad("server %q is listed twice", s)
		}
		seen[s] = true
	}
	if err := wire.CheckID("station id", c.StationID); err != nil {
		return bad("%v (env STATIONAGENT_STATION_ID)", err)
	}
	if c.Secret == "" {
		return bad("secret is required (env STATIONAGENT_SECRET)")
	}
	if c.DataDir == "" {
		return bad("data_dir is required")
	}
	switch {
	case !checkDriver:
	case c.Driver == DriverSim:
		if err := c.Sim.Validate(); err != nil {
			return bad("sim: %v", err)
		}
	case c.Driver == DriverModbus:
		if err := c.Modbus.Validate(); err != nil {
			return bad("modbus: %v", err)
		}
	case c.Driver == "":
		return bad("driver is required (sim or modbus; env STATIONAGENT_DRIVER)")
	default:
		return bad("unknown driver %q (want sim or modbus)", c.Driver)
	}
	if c.SnapshotInterval < 0 || c.PollInterval < 0 || c.ReconnectMin < 0 || c.ReconnectMax < c.ReconnectMin ||
		c.KeepAlive < 0 || c.ConnectTimeout < 0 || c.CommandRetention < 0 {
		return bad("intervals must be positive and reconnect_max ≥ reconnect_min")
	}
	if c.OutboxLimit < 2 {
		return bad("outbox_limit must be at least 2")
	}
	if c.CommandHistory < 1 {
		return bad("command_history must be at least 1")
	}
	if _, err := ParseLevel(c.LogLevel); err != nil {
		return bad("%v", err)
	}
	if c.ControlSocket != "off" && len(c.ControlSocket) > 100 {
		return bad("control socket path %q is longer than a unix socket allows; set control_socket", c.ControlSocket)
	}
	if _, err := c.TLS.build(""); err != nil {
		return bad("tls: %v", err)
	}
	return nil
}

// parseServer splits one server URL, tcp://host:port or ssl://host:port.
func parseServer(s string) (scheme, hostport string, err error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", "", fmt.Errorf("server %q is not a URL", s)
	}
	switch u.Scheme {
	case "tcp", "mqtt":
		scheme = "tcp"
	case "ssl", "tls", "mqtts":
		scheme = "ssl"
	default:
		return "", "", fmt.Errorf("server %q: scheme must be tcp:// or ssl://", s)
	}
	if u.Hostname() == "" || u.Port() == "" {
		return "", "", fmt.Errorf("server %q: want %s://host:port", s, u.Scheme)
	}
	return scheme, u.Host, nil
}

// build returns the tls.Config for a server name (nil error, nil config
// when nothing is configured and serverName is empty).
func (t TLSConfig) build(serverName string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName, InsecureSkipVerify: t.InsecureSkipVerify}
	if t.ServerName != "" {
		tc.ServerName = t.ServerName
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s holds no PEM certificate", t.CAFile)
		}
		tc.RootCAs = pool
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return nil, errors.New("cert_file and key_file go together")
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %v", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
