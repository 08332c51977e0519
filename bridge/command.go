package bridge

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/swapbridge/swapbridge/wire"
)

// Commands to stations.
//
// A command is stored (commitlog.KindCommand, key = its id) in the commit
// of the transition that made it, sent after that commit is durable, and
// retried with backoff until the station acknowledges it or its deadline
// passes. Its states:
//
//	queued ──sent──▶ sent
//	  │  ╲            │
//	  │   ╲──acked──▶ acked    (the station said ok)
//	  ╰─────failed──▶ failed   (refused, timed out, or its booking ended)
//
// queued and sent are pending (kept in memory by their station, resent on
// retry and reconnect); acked and failed are settled and final. Every
// transition is written by a commit of the station; settled records are
// purged after Config.CommandKeep.

// cmdState is a command's state. Its text form ("queued", "sent", "acked",
// "failed") is what records hold.
type cmdState uint8

const (
	cmdQueued cmdState = iota + 1
	cmdSent
	cmdAcked
	cmdFailed
)

var cmdStateNames = [...]string{cmdQueued: "queued", cmdSent: "sent", cmdAcked: "acked", cmdFailed: "failed"}

func (s cmdState) String() string {
	if int(s) < len(cmdStateNames) && cmdStateNames[s] != "" {
		return cmdStateNames[s]
	}
	return fmt.Sprintf("cmdState(%d)", uint8(s))
}

func (s cmdState) MarshalText() ([]byte, error) {
	if int(s) >= len(cmdStateNames) || cmdStateNames[s] == "" {
		return nil, fmt.Errorf("bridge: command state %d", uint8(s))
	}
	return []byte(cmdStateNames[s]), nil
}

func (s *cmdState) UnmarshalText(b []byte) error {
	for i, n := range cmdStateNames {
		if n != "" && n == string(b) {
			*s = cmdState(i)
			return nil
		}
	}
	return fmt.Errorf("bridge: unknown command state %q", b)
}

// errCommandState: a transition the command's state does not allow.
var errCommandState = errors.New("bridge: command state does not allow this")

// command is a command to a station and its lifecycle.
type command struct {
	Cmd       wire.Command `json:"cmd"`
	StationID string       `json:"sid"`
	State     cmdState     `json:"state"`
	Attempts  int          `json:"n,omitempty"`
	Created   time.Time    `json:"created"`
	Deadline  time.Time    `json:"deadline"`
	Error     string       `json:"err,omitempty"`
	// NextAt is the next retry (memory only).
	NextAt time.Time `json:"-"`
}

// newCommand is a queued command of station sid created at now.
func newCommand(cmd wire.Command, sid string, now time.Time, retry, timeout time.Duration) *command {
	return &command{Cmd: cmd, StationID: sid, State: cmdQueued, Attempts: 1, Created: now,
		Deadline: now.Add(timeout), NextAt: now.Add(retry)}
}

func (c *command) pending() bool { return c.State == cmdQueued || c.State == cmdSent }

// to returns the command in state next (with the error text of a failure),
// or errCommandState if its state does not allow it: only a queued command
// becomes sent; only a pending one becomes acked or failed.
func (c *command) to(next cmdState, errText string) (*command, error) {
	ok := false
	switch next {
	case cmdSent:
		ok = c.State == cmdQueued
	case cmdAcked, cmdFailed:
		ok = c.pending()
	}
	if !ok {
		return nil, fmt.Errorf("%w: %s %s → %s", errCommandState, c.Cmd.ID, c.State, next)
	}
	n := *c
	n.State = next
	if next == cmdFailed {
		n.Error = errText
	}
	return &n, nil
}

// resent records one more delivery attempt and schedules the next.
func (c *command) resent(now time.Time, backoff func(attempts int) time.Duration) {
	c.Attempts++
	c.NextAt = now.Add(backoff(c.Attempts))
}

// payload is the command as sent to the station.
func (c *command) payload() ([]byte, error) { return json.Marshal(&c.Cmd) }

func decodeCommand(raw []byte) (*command, error) {
	var c command
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, err
	}
	return &c, nil
}
