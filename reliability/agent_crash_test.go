package reliability

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/swapbridge/swapbridge/bridge"
	"github.com/swapbridge/swapbridge/internal/testwait"
	"github.com/swapbridge/swapbridge/stationagent"
	"github.com/swapbridge/swapbridge/wire"
)

// agentProc is the test binary re-executed as a station agent.
type agentProc struct {
	cmd    *exec.Cmd
	exited chan struct{}
	out    *logBuf
}

func startAgentProc(t *testing.T, server, sid, secret, dataDir, execLog string, slots int) *agentProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		helperEnv+"=agent",
		execLogEnv+"="+execLog,
		"STATIONAGENT_SERVER=tcp://"+server,
		"STATIONAGENT_STATION_ID="+sid,
		"STATIONAGENT_SECRET="+secret,
		"STATIONAGENT_DATA_DIR="+dataDir,
		"STATIONAGENT_DRIVER=sim",
		fmt.Sprintf("STATIONAGENT_SIM_SLOTS=%d", slots),
	)
	p := &agentProc{cmd: cmd, exited: make(chan struct{}), out: &logBuf{}}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(p.kill)
	return p
}

func (p *agentProc) kill() {
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// execCounts reads the helper's log of executed hardware actions.
func execCounts(t *testing.T, path string) map[string]int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l != "" {
			out[l]++
		}
	}
	return out
}

// outboxTelemetry reads the killed agent's state file and returns the
// highest telemetry seq per boot and the number of acks still queued.
func outboxTelemetry(t *testing.T, dataDir string) (maxSeq map[string]uint64, tel, acks int) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dataDir, stationagent.StateFile), 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	maxSeq = map[string]uint64{}
	err = db.View(func(tx *bolt.Tx) error {
		for e := range tx.Check() {
			return fmt.Errorf("agent state file inconsistent: %w", e)
		}
		b := tx.Bucket([]byte("outbox"))
		if b == nil {
			return fmt.Errorf("no outbox bucket")
		}
		return b.ForEach(func(k, v []byte) error {
			if len(v) < 9 {
				return nil
			}
			var m struct {
				BootID string  `json:"boot_id"`
				Seq    uint64  `json:"seq"`
				ID     *string `json:"id"`
			}
			if json.Unmarshal(v[9:], &m) != nil {
				return fmt.Errorf("undecodable outbox record %x", k)
			}
			if m.ID != nil {
				acks++
			} else {
				tel++
				maxSeq[m.BootID] = max(maxSeq[m.BootID], m.Seq)
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return maxSeq, tel, acks
}

// TestAgentCrashMidOutbox SIGKILLs a station agent process while the
// server holds back every PUBACK, so its outbox holds telemetry and the
// acks of commands it executed. After a restart on the same data dir every
// queued telemetry seq of the killed boot reaches the server (nothing lost
// within a boot), redelivered commands are answered without running again,
// and each unlock ran exactly once on the hardware.
func TestAgentCrashMidOutbox(t *testing.T) {
	const (
		sid    = "AC-1"
		secret = "ac-secret-1"
		slots  = 6
	)
	s := newStack(t, bridge.Config{TickInterval: time.Hour})
	s.provision(t, sid, secret, slots)
	dataDir := t.TempDir()
	execLog := filepath.Join(t.TempDir(), "exec.log")
	p1 := startAgentProc(t, s.brk.Addr(), sid, secret, dataDir, execLog, slots)

	var boot1 string
	testwait.For(t, 30*time.Second, "the first agent's telemetry", func() bool {
		s.rec.mu.Lock()
		defer s.rec.mu.Unlock()
		for b, m := range s.rec.tel {
			if len(m) >= 3 {
				boot1 = b
				return true
			}
		}
		return false
	})

	send := func(c wire.Command) {
		t.Helper()
		b, _ := json.Marshal(c)
		if err := s.brk.SendToStation(sid, b); err != nil {
			t.Fatal(err)
		}
	}
	reserve := func(slot int) wire.Command {
		return wire.Command{ID: fmt.Sprintf("c-r%d", slot), Action: wire.ActionReserve, Slot: slot, BookingID: fmt.Sprintf("bk-%d", slot)}
	}
	unlock := func(slot int) wire.Command {
		return wire.Command{ID: fmt.Sprintf("c-u%d", slot), Action: wire.ActionUnlock, Slot: slot, BookingID: fmt.Sprintf("bk-%d", slot)}
	}

	// Hold back every PUBACK: from now on the outbox only grows.
	open := s.rec.setGate()
	defer open()
	for slot := 1; slot <= 4; slot++ {
		send(reserve(slot))
	}
	testwait.For(t, 20*time.Second, "four reserves executed", func() bool {
		c := execCounts(t, execLog)
		return c["reserve 1"]+c["reserve 2"]+c["reserve 3"]+c["reserve 4"] == 4
	})
	send(unlock(1))
	send(unlock(2))
	testwait.For(t, 20*time.Second, "two unlocks executed", func() bool {
		c := execCounts(t, execLog)
		return c["unlock 1"] == 1 && c["unlock 2"] == 1
	})
	p1.kill()

	queued, queuedTel, queuedAcks := outboxTelemetry(t, dataDir)
	if queuedAcks == 0 || queued[boot1] == 0 {
		t.Fatalf("the killed agent's outbox holds %d acks and telemetry up to seq %d of its boot; the test wants both non-empty", queuedAcks, queued[boot1])
	}
	open()

	// The bridge would retry unacknowledged commands: redeliver them all,
	// plus one new unlock.
	p2 := startAgentProc(t, s.brk.Addr(), sid, secret, dataDir, execLog, slots)
	for slot := 1; slot <= 4; slot++ {
		send(reserve(slot))
	}
	send(unlock(1))
	send(unlock(2))
	send(unlock(3))
	ids := []string{"c-r1", "c-r2", "c-r3", "c-r4", "c-u1", "c-u2", "c-u3"}
	if !testwait.Until(30*time.Second, func() bool {
		for _, id := range ids {
			if s.rec.ackCount(id) == 0 {
				return false
			}
		}
		return true
	}) {
		var missing []string
		for _, id := range ids {
			if s.rec.ackCount(id) == 0 {
				missing = append(missing, id)
			}
		}
		t.Fatalf("no ack within 30s for %v; actions %v; agent output:\n%s", missing, execCounts(t, execLog), p2.out.String())
	}
	testwait.For(t, 30*time.Second, "every queued telemetry of the killed boot", func() bool {
		max, _ := s.rec.seqs(boot1)
		return max >= queued[boot1]
	})
	max, missing := s.rec.seqs(boot1)
	if len(missing) > 0 {
		t.Errorf("boot %s: seqs %v were never delivered", boot1, missing)
	}

	c := execCounts(t, execLog)
	for slot := 1; slot <= 3; slot++ {
		if n := c[fmt.Sprintf("unlock %d", slot)]; n != 1 {
			t.Errorf("slot %d unlocked %d times, want exactly once", slot, n)
		}
	}
	// A reserve's indicator is switched on when it runs and again when a
	// restarted agent restores the reservations it still holds (slots 3
	// and 4 here, and slot 2 if its unlock was cut short by the kill); a
	// redelivered reserve never runs again.
	for slot := 1; slot <= 4; slot++ {
		if n := c[fmt.Sprintf("reserve %d", slot)]; n < 1 || n > 2 {
			t.Errorf("slot %d: reserve indicator set %d times, want once plus at most one restore", slot, n)
		}
	}
	// The agents logged at debug level; the station secret is not in it.
	for i, p := range []*agentProc{p1, p2} {
		if out := p.out.String(); strings.Contains(out, secret) || !strings.Contains(out, "level=DEBUG") && !strings.Contains(out, "level=INFO") {
			t.Errorf("agent %d: the log is empty or contains the station secret", i+1)
		}
	}
	s.rec.mu.Lock()
	boots := len(s.rec.tel)
	s.rec.mu.Unlock()
	t.Logf("agent crash: killed with %d telemetry (up to seq %d) and %d acks in the outbox; boot %s delivered up to seq %d, %d missing; %d boots seen; actions %v",
		queuedTel, queued[boot1], queuedAcks, boot1, max, len(missing), boots, c)
}
