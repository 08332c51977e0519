package modbus

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	mb "github.com/simonvetter/modbus"

	"github.com/swapbridge/swapbridge/wire"
)

// cabinet is an in-process Modbus device holding registers and coils.
type cabinet struct {
	mu    sync.Mutex
	regs  [1024]uint16
	coils [1024]bool
}

func (c *cabinet) HandleCoils(req *mb.CoilsRequest) ([]bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if int(req.Addr)+int(req.Quantity) > len(c.coils) {
		return nil, mb.ErrIllegalDataAddress
	}
	if req.IsWrite {
		copy(c.coils[req.Addr:], req.Args)
		return nil, nil
	}
	return append([]bool(nil), c.coils[req.Addr:req.Addr+req.Quantity]...), nil
}

func (c *cabinet) HandleDiscreteInputs(req *mb.DiscreteInputsRequest) ([]bool, error) {
	return nil, mb.ErrIllegalFunction
}

func (c *cabinet) HandleHoldingRegisters(req *mb.HoldingRegistersRequest) ([]uint16, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if int(req.Addr)+int(req.Quantity) > len(c.regs) {
		return nil, mb.ErrIllegalDataAddress
	}
	if req.IsWrite {
		copy(c.regs[req.Addr:], req.Args)
		return nil, nil
	}
	return append([]uint16(nil), c.regs[req.Addr:req.Addr+req.Quantity]...), nil
}

func (c *cabinet) HandleInputRegisters(req *mb.InputRegistersRequest) ([]uint16, error) {
	return nil, mb.ErrIllegalFunction
}

func (c *cabinet) coil(addr int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.coils[addr]
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func startCabinet(t *testing.T) (*cabinet, string) {
	t.Helper()
	cab := &cabinet{}
	addr := freeAddr(t)
	srv, err := mb.NewServer(&mb.ServerConfiguration{URL: "tcp://" + addr, Timeout: 10 * time.Second, MaxClients: 4, Logger: quietLogger()}, cab)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop() })
	return cab, addr
}

func testMap() Map {
	station := uint16(900)
	return Map{
		Slots: 3,
		Registers: Registers{
			Base: 100, Stride: 16,
			BatteryID: Text{Offset: 0, Words: 8},
			SoC:       Field{Offset: 8, Scale: 0.1},
			SoH:       Field{Offset: 9, Scale: 0.1},
			TempC:     Field{Offset: 10, Scale: 0.1, Signed: true},
			VoltageV:  Field{Offset: 11, Scale: 0.01},
			Fault:     Field{Offset: 12},
		},
		Coils:                Coils{Base: 0, Stride: 8, Door: 0, Lock: 1, Indicator: 2, Available: 3, Charging: 4},
		StationAvailableCoil: &station,
		FaultCodes:           map[int]string{3: "overtemp"},
	}
}

func TestReadAndCommand(t *testing.T) {
	cab, addr := startCabinet(t)
	m := testMap()
	// Slot 1: battery B-1234, 87.5 %, 97 %, -3.2 °C, 52.10 V, locked, charging.
	copy(cab.regs[100:], EncodeText("B-1234", 8))
	cab.regs[108], cab.regs[109], cab.regs[110], cab.regs[111] = 875, 970, uint16(0xffe0), 5210
	cab.coils[1], cab.coils[4] = true, true
	// Slot 2: empty, door open, fault 3. Slot 3: unknown fault 9.
	cab.regs[116+12] = 3
	cab.coils[8] = true
	cab.regs[132+12] = 9

	d, err := New(Config{URL: "tcp://" + addr, Map: m, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx := context.Background()
	slots, err := d.ReadSlots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(slots) != 3 {
		t.Fatalf("%d slots", len(slots))
	}
	s := slots[0]
	if s.Battery() != "B-1234" || s.SoC != 87.5 || s.SoH != 97 || s.TempC != -3.2 || s.VoltageV != 52.1 ||
		!s.Locked || !s.Charging || s.Door != wire.DoorClosed || s.Fault != "" {
		t.Errorf("slot 1 = %+v", s)
	}
	if s := slots[1]; s.Occupied() || s.Door != wire.DoorOpen || s.Fault != "overtemp" {
		t.Errorf("slot 2 = %+v", s)
	}
	if s := slots[2]; s.Fault != "fault_9" {
		t.Errorf("slot 3 fault = %q", s.Fault)
	}
	for _, s := range slots {
		if err := s.Validate(3); err != nil {
			t.Error(err)
		}
	}

	if err := d.Unlock(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if cab.coil(1) {
		t.Error("lock coil still set after unlock")
	}
	if err := d.Lock(ctx, 1); err != nil || !cab.coil(1) {
		t.Errorf("lock: %v, coil %v", err, cab.coil(1))
	}
	if err := d.SetIndicator(ctx, 2, true); err != nil || !cab.coil(8+2) {
		t.Errorf("indicator: %v", err)
	}
	if err := d.SetAvailability(ctx, 3, true); err != nil || !cab.coil(16+3) {
		t.Errorf("slot availability: %v", err)
	}
	if err := d.SetAvailability(ctx, 0, true); err != nil || !cab.coil(900) {
		t.Errorf("station availability: %v", err)
	}
	if err := d.Unlock(ctx, 4); err == nil {
		t.Error("unlock of slot 4 of 3 accepted")
	}
}

func TestReconnectsAfterFailure(t *testing.T) {
	addr := freeAddr(t) // nothing listens yet
	d, err := New(Config{URL: "tcp://" + addr, Map: testMap(), Timeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := d.ReadSlots(context.Background()); err == nil {
		t.Fatal("read without a device succeeded")
	}
	cab := &cabinet{}
	srv, err := mb.NewServer(&mb.ServerConfiguration{URL: "tcp://" + addr, Logger: quietLogger()}, cab)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	if _, err := d.ReadSlots(context.Background()); err != nil {
		t.Fatalf("read after the device came up: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
}

func TestMapValidation(t *testing.T) {
	for name, mut := range map[string]func(*Map){
		"no slots":       func(m *Map) { m.Slots = 0 },
		"soc outside":    func(m *Map) { m.Registers.SoC.Offset = 16 },
		"id outside":     func(m *Map) { m.Registers.BatteryID.Words = 20 },
		"coil outside":   func(m *Map) { m.Coils.Lock = 8 },
		"bad type":       func(m *Map) { m.Registers.Type = "eeprom" },
		"address space":  func(m *Map) { m.Slots = 200; m.Registers.Base = 65000 },
		"no reg stride":  func(m *Map) { m.Registers.Stride = 0 },
		"no coil stride": func(m *Map) { m.Coils.Stride = 0 },
	} {
		t.Run(name, func(t *testing.T) {
			m := testMap()
			mut(&m)
			if err := m.Validate(); err == nil {
				t.Error("accepted")
			}
		})
	}
	if err := testMap().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestExampleMapFile(t *testing.T) {
	m, err := LoadMap("../../../configs/modbus-map.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestDecodeText(t *testing.T) {
	for _, s := range []string{"", "B", "B-1", "B-12345678901234"} {
		if got := decodeText(EncodeText(s, 8)); got != s {
			t.Errorf("%q → %q", s, got)
		}
	}
	if got := decodeText([]uint16{0x4142, 0x0a00, 0x4344}); got != "AB" {
		t.Errorf("control bytes and text after NUL: %q", got)
	}
}
