package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"strings"
	"text/tabwriter"
)

// Report is the result of one run, printed as a table or written as JSON.
type Report struct {
	Scenario string  `json:"scenario"`
	Target   string  `json:"target"`
	Machine  Machine `json:"machine"`
	Params   Params  `json:"params"`

	Setup SetupResult  `json:"setup"`
	Steps []StepResult `json:"steps,omitempty"`
	// LastGoodRate is the highest ramp step that held (msg/s).
	LastGoodRate float64 `json:"last_good_rate,omitempty"`
	// Fanout is the fanout scenario's last good step.
	Fanout *FanoutResult `json:"fanout,omitempty"`
	Storm  *StormResult  `json:"storm,omitempty"`
	Rush   *RushResult   `json:"rush,omitempty"`
	Memory *Memory       `json:"server_memory,omitempty"`
	Server *ProcStat     `json:"server_proc,omitempty"`

	Commands     map[string]uint64 `json:"commands_acked,omitempty"`
	Errors       uint64            `json:"errors"`
	ErrorSamples []string          `json:"error_samples,omitempty"`
	// Failures lists what makes the run fail: errors or delivered <
	// expected (never timing).
	Failures []string `json:"failures,omitempty"`
	// Parts holds the smoke scenario's sub-runs.
	Parts []*Report `json:"parts,omitempty"`
}

// OK reports whether the run had no errors and delivered what was expected.
func (r *Report) OK() bool { return len(r.Failures) == 0 }

// Machine describes where the run took place.
type Machine struct {
	CPUs      int     `json:"cpus"`
	CPUModel  string  `json:"cpu_model"`
	MemoryMB  int64   `json:"memory_mb"`
	GoVersion string  `json:"go_version"`
	Load1     float64 `json:"load1_at_start"`
}

// Params are the run's parameters.
type Params struct {
	Stations    int     `json:"stations"`
	Slots       int     `json:"slots"`
	Rate        float64 `json:"rate,omitempty"`
	DurationS   float64 `json:"duration_s,omitempty"`
	WS          int     `json:"ws_clients"`
	WSAll       int     `json:"ws_all_stations"`
	Users       int     `json:"users,omitempty"`
	BookingRate float64 `json:"booking_rate,omitempty"`
	StormWindow float64 `json:"storm_window_s,omitempty"`
	Window      int     `json:"publish_window"`
}

// SetupResult is the provisioning and connection phase.
type SetupResult struct {
	ProvisionS float64 `json:"provision_s"`
	ConnectS   float64 `json:"connect_s"`
	WSConnectS float64 `json:"ws_connect_s"`
}

// StepResult is one measured telemetry phase (steady: one; ramp: one per
// rate).
type StepResult struct {
	Rate      float64 `json:"offered_rate"`
	DurationS float64 `json:"duration_s"`
	Sent      uint64  `json:"sent"`
	Throttled uint64  `json:"throttled"`
	Acked     uint64  `json:"acked"`
	// AckRate is acknowledged (persisted) telemetry per second over the
	// sending window.
	AckRate   float64 `json:"acked_per_s"`
	Expected  uint64  `json:"expected_frames"`
	Delivered uint64  `json:"delivered_frames"`
	Unmatched uint64  `json:"unmatched_frames"`
	// Latency is publish (the telemetry's ts) → WebSocket frame (for the
	// baseline: → the inline subscriber's consumer).
	Latency    Latency `json:"publish_to_frame"`
	AckLatency Latency `json:"publish_to_puback"`
	// CPUSeconds is the server's CPU time during the step (embedded: this
	// whole process).
	CPUSeconds float64 `json:"server_cpu_s,omitempty"`
	// FramesPerS is the frames delivered per second of the step's sending
	// window; CPUPerMFrames is CPUSeconds per million of them.
	FramesPerS    float64 `json:"frames_per_s"`
	CPUPerMFrames float64 `json:"server_cpu_s_per_million_frames,omitempty"`
	Errors        uint64  `json:"errors"`
	Good          bool    `json:"good"`
	Why           string  `json:"why,omitempty"`
}

// FanoutResult is the fanout scenario's outcome: its last good step.
type FanoutResult struct {
	Sockets       int     `json:"sockets"`
	Rate          float64 `json:"events_per_s"`
	FramesPerS    float64 `json:"frames_per_s"`
	CPUPerMFrames float64 `json:"server_cpu_s_per_million_frames,omitempty"`
	P99           float64 `json:"p99_ms"`
}

// StormResult is the storm scenario's outcome.
type StormResult struct {
	Stations    int     `json:"stations"`
	Reconnected int     `json:"reconnected"`
	Retries     int     `json:"retries"`
	WindowS     float64 `json:"window_s"`
	TookS       float64 `json:"took_s"`
	// Reconnect is from a station's scheduled reconnect to the PUBACK of its
	// full telemetry (processed and stored).
	Reconnect  Latency `json:"reconnect_to_snapshot_acked"`
	HTTP       Latency `json:"http_get_station"`
	HTTPList   Latency `json:"http_list_stations"`
	HTTPErrors uint64  `json:"http_errors"`
	CPUSeconds float64 `json:"server_cpu_s,omitempty"`
	Frames     uint64  `json:"ws_frames"`
}

// RushResult is the rush scenario's outcome.
type RushResult struct {
	Requested   uint64  `json:"requested"`
	Created     uint64  `json:"created"`
	NoBattery   uint64  `json:"no_battery"`
	Confirmed   uint64  `json:"confirmed"`
	Ready       uint64  `json:"ready"`
	Cancelled   uint64  `json:"cancelled"`
	DurationS   float64 `json:"duration_s"`
	ConfirmedPS float64 `json:"confirmed_per_s"`
	// Confirm and ReadyLat run from the POST to the user's booking_confirmed
	// and booking_ready frames; HTTP is the POST /api/bookings round trip.
	Confirm    Latency `json:"book_to_confirmed"`
	ReadyLat   Latency `json:"book_to_ready"`
	HTTP       Latency `json:"http_book"`
	CPUSeconds float64 `json:"server_cpu_s,omitempty"`
}

// Memory is the server's resident memory (VmRSS) as stations and sockets
// connect (after provisioning), and the growth per station and per socket
// of its anonymous part (heap and stacks, without the mapped database).
type Memory struct {
	BaseKB         int64   `json:"before_stations_kb"`
	StationsKB     int64   `json:"after_stations_kb"`
	WSKB           int64   `json:"after_ws_kb"`
	PeakKB         int64   `json:"peak_kb"`
	PerStationKB   float64 `json:"per_station_kb"`
	PerWSClientKB  float64 `json:"per_ws_client_kb"`
	IncludesClient bool    `json:"includes_bench_clients"`
	// Heap…: growth of the server's Go heap and stacks in use (from its
	// /metrics), per station and per socket; 0 when not available.
	HeapPerStationKB  float64 `json:"heap_per_station_kb,omitempty"`
	HeapPerWSClientKB float64 `json:"heap_per_ws_client_kb,omitempty"`
	// Live…: the same growth measured right after a garbage collection
	// forced through the server's /debug/pprof/heap?gc=1 (swapd with
	// pprof: true): live heap objects plus stacks in use. 0 when the
	// endpoint is not available.
	LivePerStationKB  float64 `json:"live_per_station_kb,omitempty"`
	LivePerWSClientKB float64 `json:"live_per_ws_client_kb,omitempty"`
}

func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			m.MemoryMB = kb / 1024
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Sscanf(string(b), "%f", &m.Load1)
	}
	return m
}

// WriteJSON writes reports as indented JSON (one object, or an array for
// --compare).
func WriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func lat(l Latency) string {
	if l.Count == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f / %.2f / %.2f / %.2f", l.P50, l.P90, l.P99, l.Max)
}

// Print writes the report as a table.
func (r *Report) Print(w io.Writer) {
	for _, p := range r.Parts {
		p.Print(w)
		fmt.Fprintln(w)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k string, f string, a ...any) { fmt.Fprintf(tw, "  %s\t%s\n", k, fmt.Sprintf(f, a...)) }
	fmt.Fprintf(tw, "swapbench %s against %s\n", r.Scenario, r.Target)
	m := r.Machine
	row("machine", "%d CPUs, %s, %d MB, %s, load %.2f at start", m.CPUs, m.CPUModel, m.MemoryMB, m.GoVersion, m.Load1)
	p := r.Params
	row("stations", "%d × %d slots, %d WebSocket clients (%d all-stations), window %d", p.Stations, p.Slots, p.WS, p.WSAll, p.Window)
	row("setup", "provision %.1fs, connect %.1fs, websockets %.1fs", r.Setup.ProvisionS, r.Setup.ConnectS, r.Setup.WSConnectS)
	for _, s := range r.Steps {
		verdict := "good"
		if !s.Good {
			verdict = "NOT GOOD: " + s.Why
		}
		row("telemetry", "offered %.0f/s for %.0fs: sent %d, throttled %d, acked %d = %.0f msg/s (%s)", s.Rate, s.DurationS, s.Sent, s.Throttled, s.Acked, s.AckRate, verdict)
		row("  frames", "delivered %d / expected %d, unmatched %d; %.0f frames/s", s.Delivered, s.Expected, s.Unmatched, s.FramesPerS)
		row("  publish→frame ms", "p50/p90/p99/max %s (n=%d)", lat(s.Latency), s.Latency.Count)
		row("  publish→PUBACK ms", "p50/p90/p99/max %s", lat(s.AckLatency))
		if s.CPUSeconds > 0 {
			row("  server CPU", "%.1f s (%.0f%% of one core), %.2f s per million frames", s.CPUSeconds, 100*s.CPUSeconds/s.DurationS, s.CPUPerMFrames)
		}
	}
	if r.LastGoodRate > 0 || r.Scenario == Ramp || r.Scenario == Fanout {
		row("last good rate", "%.0f msg/s", r.LastGoodRate)
	}
	if f := r.Fanout; f != nil {
		row("fan-out", "%.0f frames/s to %d all-stations sockets at %.0f events/s (p99 %.1f ms); server CPU %.2f s per million frames", f.FramesPerS, f.Sockets, f.Rate, f.P99, f.CPUPerMFrames)
	}
	if s := r.Storm; s != nil {
		row("storm", "%d/%d stations reconnected with snapshot acked in %.1fs (window %.0fs), %d retries", s.Reconnected, s.Stations, s.TookS, s.WindowS, s.Retries)
		row("  reconnect→acked ms", "p50/p90/p99/max %s", lat(s.Reconnect))
		row("  GET station ms", "p50/p90/p99/max %s (n=%d, errors %d)", lat(s.HTTP), s.HTTP.Count, s.HTTPErrors)
		row("  GET stations ms", "p50/p90/p99/max %s (n=%d)", lat(s.HTTPList), s.HTTPList.Count)
		if s.CPUSeconds > 0 {
			row("  server CPU", "%.1f s", s.CPUSeconds)
		}
	}
	if b := r.Rush; b != nil {
		row("bookings", "requested %d, created %d, no battery %d, confirmed %d, ready %d, cancelled %d", b.Requested, b.Created, b.NoBattery, b.Confirmed, b.Ready, b.Cancelled)
		row("  confirmed", "%.0f per second over %.0fs", b.ConfirmedPS, b.DurationS)
		row("  book→confirmed ms", "p50/p90/p99/max %s", lat(b.Confirm))
		row("  book→ready ms", "p50/p90/p99/max %s", lat(b.ReadyLat))
		row("  POST booking ms", "p50/p90/p99/max %s", lat(b.HTTP))
		if b.CPUSeconds > 0 {
			row("  server CPU", "%.1f s", b.CPUSeconds)
		}
	}
	if mm := r.Memory; mm != nil {
		note := ""
		if mm.IncludesClient {
			note = " (embedded: includes the bench's own clients)"
		}
		row("server memory", "RSS %d → %d KB with stations → %d KB with websockets; peak %d KB%s", mm.BaseKB, mm.StationsKB, mm.WSKB, mm.PeakKB, note)
		row("  per station", "%.1f KB; per WebSocket client %.1f KB (anonymous RSS growth)", mm.PerStationKB, mm.PerWSClientKB)
		if mm.HeapPerStationKB != 0 || mm.HeapPerWSClientKB != 0 {
			row("  Go heap+stacks", "%.1f KB per station; %.1f KB per WebSocket client (in use, with garbage)", mm.HeapPerStationKB, mm.HeapPerWSClientKB)
		}
		if mm.LivePerStationKB != 0 || mm.LivePerWSClientKB != 0 {
			row("  live after GC", "%.1f KB per station; %.1f KB per WebSocket client (live heap + stacks)", mm.LivePerStationKB, mm.LivePerWSClientKB)
		}
	}
	if len(r.Commands) > 0 {
		keys := make([]string, 0, len(r.Commands))
		for k := range r.Commands {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var parts []string
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s %d", k, r.Commands[k]))
		}
		row("commands", "%s", strings.Join(parts, ", "))
	}
	row("errors", "%d", r.Errors)
	for _, e := range r.ErrorSamples {
		row("", "%s", e)
	}
	if r.OK() {
		row("result", "OK")
	} else {
		row("result", "FAILED: %s", strings.Join(r.Failures, "; "))
	}
	tw.Flush()
}

// PrintCompare prints ours against the baseline's figures of the same
// scenario.
func PrintCompare(w io.Writer, ours, base *Report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "ours / baseline (%s)\t%s\t%s\tratio\n", ours.Scenario, ours.Target, base.Target)
	cmp := func(k string, a, b float64, unit string) {
		r := "-"
		if b > 0 {
			r = fmt.Sprintf("%.2f", a/b)
		}
		fmt.Fprintf(tw, "  %s\t%.2f %s\t%.2f %s\t%s\n", k, a, unit, b, unit, r)
	}
	if ours.Scenario == Ramp {
		cmp("last good rate", ours.LastGoodRate, base.LastGoodRate, "msg/s")
	}
	n := min(len(ours.Steps), len(base.Steps))
	if n > 0 {
		o, b := ours.Steps[n-1], base.Steps[n-1]
		if ours.Scenario == Ramp {
			o, b = bestStep(ours.Steps), bestStep(base.Steps)
		}
		cmp("acked rate", o.AckRate, b.AckRate, "msg/s")
		cmp("p50 publish→frame", o.Latency.P50, b.Latency.P50, "ms")
		cmp("p99 publish→frame", o.Latency.P99, b.Latency.P99, "ms")
		cmp("p99 publish→PUBACK", o.AckLatency.P99, b.AckLatency.P99, "ms")
		if o.Acked > 0 && b.Acked > 0 {
			cmp("CPU per 1000 msgs", 1000*o.CPUSeconds/float64(o.Acked), 1000*b.CPUSeconds/float64(b.Acked), "s")
		}
	}
	if ours.Storm != nil && base.Storm != nil {
		cmp("storm took", ours.Storm.TookS, base.Storm.TookS, "s")
		cmp("storm p99 reconnect", ours.Storm.Reconnect.P99, base.Storm.Reconnect.P99, "ms")
	}
	// Memory growth is only meaningful over many connections.
	if ours.Memory != nil && base.Memory != nil && ours.Params.Stations >= 1000 && base.Params.Stations >= 1000 {
		cmp("memory per station", ours.Memory.PerStationKB, base.Memory.PerStationKB, "KB")
	}
	tw.Flush()
}

// bestStep is the good step with the highest acknowledged rate (or the last
// step when none was good).
func bestStep(steps []StepResult) StepResult {
	best := steps[len(steps)-1]
	found := false
	for _, s := range steps {
		if s.Good && (!found || s.AckRate > best.AckRate) {
			best, found = s, true
		}
	}
	return best
}
