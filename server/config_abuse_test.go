package server

import (
	"io"
	"testing"
)

// The per-user booking limit, the per-station event budget and the
// per-station retention cap have defaults, YAML keys and environment names.
func TestConfigBookingAndEventLimits(t *testing.T) {
	def := Defaults()
	if def.Domain.MaxActiveBookings != 2 || def.Events.StationRate != 10 || def.Events.StationBurst != 200 || def.Events.RetentionStationEvents != 50_000 {
		t.Errorf("defaults: max_active_bookings %d, station_rate %v, station_burst %d, retention_station_events %d",
			def.Domain.MaxActiveBookings, def.Events.StationRate, def.Events.StationBurst, def.Events.RetentionStationEvents)
	}
	f := NewFlags("swapd", io.Discard)
	if err := f.Parse(nil); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(f, envMap(map[string]string{
		"SWAPD_MAX_ACTIVE_BOOKINGS":             "-1",
		"SWAPD_EVENTS_STATION_RATE":             "2.5",
		"SWAPD_EVENTS_STATION_BURST":            "50",
		"SWAPD_EVENTS_RETENTION_STATION_EVENTS": "1000",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Domain.MaxActiveBookings != -1 || cfg.Events.StationRate != 2.5 || cfg.Events.StationBurst != 50 || cfg.Events.RetentionStationEvents != 1000 {
		t.Errorf("from the environment: %+v %+v", cfg.Domain, cfg.Events)
	}
	if _, err := Load(f, envMap(map[string]string{"SWAPD_MAX_ACTIVE_BOOKINGS": "two"})); err == nil {
		t.Error("SWAPD_MAX_ACTIVE_BOOKINGS=two accepted")
	}
}
