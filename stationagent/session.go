package stationagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/swapbridge/swapbridge/wire"
)

// sendWindow is the number of outbox messages published but not yet
// acknowledged at any time.
const sendWindow = 32

var errConnLost = errors.New("connection lost")

// connLoop keeps one MQTT session up until ctx is done, with jittered
// exponential backoff between attempts. Each session uses a fresh paho
// client with AutoReconnect off, so the outbox is the only source of
// retransmissions.
//
// While the server refuses the station's credentials, the agent says once
// what to check and retries slowly (every ReconnectMax, jittered), since
// only a changed secret or a provisioned station can end the refusal.
func (a *Agent) connLoop(ctx context.Context) {
	attempt := 0
	hinted := false
	for {
		wasUp, err := a.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if wasUp {
			attempt = 0
			hinted = false
		}
		attempt++
		d := backoff(a.cfg.ReconnectMin, a.cfg.ReconnectMax, attempt)
		if credentialsRefused(err) {
			d = backoff(a.cfg.ReconnectMax, a.cfg.ReconnectMax, 1)
			if !hinted {
				hinted = true
				a.log.Error("mqtt credentials refused", "err", err,
					"hint", credentialsHint, "station_id", a.cfg.StationID, "server", a.cfg.Server, "retry_every", a.cfg.ReconnectMax)
			}
		}
		a.setConn(false, err)
		a.log.Warn("mqtt disconnected", "err", err, "retry_in", d.Round(time.Millisecond))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// credentialsHint says what to check when the server refuses a station's
// CONNECT.
const credentialsHint = "check that station_id is the id the station was provisioned with (it is the MQTT client id and username), " +
	"that secret is the one printed by swapctl station add or by the latest swapctl station rotate, " +
	"and that server is this network's swapd; retrying every reconnect_max until then"

// credentialsRefused reports whether a connect failed because the server
// refused the station's client id, username or password.
func credentialsRefused(err error) bool {
	return errors.Is(err, packets.ErrorRefusedNotAuthorised) ||
		errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword) ||
		errors.Is(err, packets.ErrorRefusedIDRejected)
}

// backoff is an exponential delay (min·2^(attempt-1), at most max) with
// "equal jitter": half fixed, half random, so a fleet that lost the broker at
// the same moment spreads its reconnects.
func backoff(min, max time.Duration, attempt int) time.Duration {
	d := min
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + rand.N(half+1)
}

func (a *Agent) setConn(up bool, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.info.Connected = up
	if up {
		a.info.ConnectedSince = a.now()
		a.info.Connects++
	} else {
		a.info.ConnectedSince = time.Time{}
	}
	if err != nil {
		a.info.LastError = err.Error()
	}
}

func (a *Agent) statusPayload(online bool) []byte {
	s := wire.Status{Online: online, BootID: a.bootID}
	if online {
		s.TS = a.now().UTC()
		s.AgentVersion = a.version
		a.mu.Lock()
		s.Slots = a.info.Slots
		a.mu.Unlock()
	}
	b, _ := json.Marshal(s)
	return b
}

func (a *Agent) clientOptions(lost func(error)) (*paho.ClientOptions, error) {
	scheme, hostport, err := parseServer(a.cfg.Server)
	if err != nil {
		return nil, err
	}
	sid := a.cfg.StationID
	o := paho.NewClientOptions().
		AddBroker(scheme+"://"+hostport).
		SetClientID(sid).
		SetUsername(sid).
		SetPassword(a.cfg.Secret).
		SetProtocolVersion(4).
		SetCleanSession(false).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetResumeSubs(false).
		SetStore(paho.NewMemoryStore()).
		SetKeepAlive(a.cfg.KeepAlive).
		SetPingTimeout(10*time.Second).
		SetConnectTimeout(a.cfg.ConnectTimeout).
		SetWriteTimeout(10*time.Second).
		SetOrderMatters(true). // the handler never blocks; commands keep their order
		SetAutoAckDisabled(true).
		SetBinaryWill(wire.Topic(sid, wire.KindStatus), a.statusPayload(false), 1, true).
		SetConnectionLostHandler(func(_ paho.Client, err error) { lost(err) })
	if scheme == "ssl" {
		host := hostport
		if h, _, err := net.SplitHostPort(hostport); err == nil {
			host = h
		}
		tc, err := a.cfg.TLS.build(host)
		if err != nil {
			return nil, err
		}
		o.SetTLSConfig(tc)
	}
	cmdTopic := wire.Topic(sid, wire.KindCmd)
	o.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
		if m.Topic() != cmdTopic {
			m.Ack()
			return
		}
		// Never block paho: hand off to the main loop. When the queue is
		// full the message stays unacknowledged and the broker redelivers
		// it with the session.
		select {
		case a.inbox <- m:
		default:
			a.log.Warn("command queue full, command left for redelivery", "msg_id", m.MessageID())
		}
	})
	return o, nil
}

// session runs one MQTT connection: connect, subscribe, retained status,
// then send the outbox until the connection is lost or ctx is done. wasUp
// reports whether the connection was established.
func (a *Agent) session(ctx context.Context) (wasUp bool, err error) {
	lost := make(chan struct{})
	var lostOnce sync.Once
	var lostErr error
	opts, err := a.clientOptions(func(err error) {
		lostOnce.Do(func() { lostErr = err; close(lost) })
	})
	if err != nil {
		return false, err
	}
	c := paho.NewClient(opts)
	tok := c.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		c.Disconnect(0)
		return false, ctx.Err()
	}
	if err := tok.Error(); err != nil {
		return false, fmt.Errorf("connect %s: %w", a.cfg.Server, err)
	}
	a.log.Info("mqtt connected", "server", a.cfg.Server, "boot_id", a.bootID)
	defer func() {
		select {
		case <-lost:
		default:
			c.Disconnect(250)
		}
	}()
	wait := func(ctx context.Context, t paho.Token, what string) error {
		timer := time.NewTimer(a.cfg.ConnectTimeout)
		defer timer.Stop()
		select {
		case <-t.Done():
			if err := t.Error(); err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			return nil
		case <-lost:
			return fmt.Errorf("%s: %w: %v", what, errConnLost, lostErr)
		case <-timer.C:
			return fmt.Errorf("%s: timed out", what)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	sid := a.cfg.StationID
	st := c.Subscribe(wire.Topic(sid, wire.KindCmd), 1, nil)
	if err := wait(ctx, st, "subscribe"); err != nil {
		return true, err
	}
	if st, ok := st.(*paho.SubscribeToken); ok {
		for _, qos := range st.Result() {
			if qos == 0x80 {
				return true, errors.New("subscribe: refused by the broker")
			}
		}
	}
	if err := wait(ctx, c.Publish(wire.Topic(sid, wire.KindStatus), 1, true, a.statusPayload(true)), "publish status"); err != nil {
		return true, err
	}
	a.setConn(true, nil)
	select {
	case a.connected <- struct{}{}:
	default:
	}
	err = a.sendOutbox(ctx, c, lost)
	if ctx.Err() != nil {
		// Clean shutdown: say goodbye, since a clean DISCONNECT suppresses the Will.
		bye, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		_ = wait(bye, c.Publish(wire.Topic(sid, wire.KindStatus), 1, true, a.statusPayload(false)), "publish offline status")
		cancel()
		return true, nil
	}
	if errors.Is(err, errConnLost) && lostErr != nil {
		err = fmt.Errorf("%w: %v", errConnLost, lostErr)
	}
	return true, err
}

type pending struct {
	rec outboxRec
	tok paho.Token
}

// sendOutbox publishes outbox records in key order, at most sendWindow
// unacknowledged, and deletes each record when its PUBACK arrives. It starts
// from the oldest record on every connection, so anything not acknowledged
// before a disconnect is sent again (same bytes, so the same boot_id and
// seq always carry the same content).
func (a *Agent) sendOutbox(ctx context.Context, c paho.Client, lost <-chan struct{}) error {
	inflight := make(chan pending, sendWindow)
	ackErr := make(chan error, 1)
	done := make(chan struct{})
	var wg sync.WaitGroup
	defer func() {
		close(done)
		wg.Wait()
	}()
	wg.Go(func() { a.ackLoop(inflight, lost, done, ackErr) })

	sid := a.cfg.StationID
	var cursor uint64
	for {
		recs, err := a.st.outboxAfter(cursor, sendWindow)
		if err != nil {
			return fmt.Errorf("outbox read: %w", err)
		}
		for _, r := range recs {
			topic := wire.Topic(sid, wire.KindTelemetry)
			if r.kind == recAck {
				topic = wire.Topic(sid, wire.KindAck)
			}
			tok := c.Publish(topic, 1, false, r.payload)
			select {
			case inflight <- pending{rec: r, tok: tok}:
			case <-lost:
				return errConnLost
			case <-ctx.Done():
				return ctx.Err()
			case err := <-ackErr:
				return err
			}
			cursor = r.key
			if r.kind == recTelemetry {
				a.mu.Lock()
				a.info.LastSeqSent = r.seq
				a.mu.Unlock()
			}
		}
		if len(recs) == sendWindow {
			continue
		}
		select {
		case <-a.wake:
		case <-lost:
			return errConnLost
		case <-ctx.Done():
			return ctx.Err()
		case err := <-ackErr:
			return err
		}
	}
}

// pubackTimeout bounds the wait for one PUBACK; a link that swallows
// messages without answering is dropped and rebuilt.
const pubackTimeout = 30 * time.Second

// ackLoop waits for the PUBACKs of published records in order and deletes
// the acknowledged records, batching those already complete into one
// transaction.
func (a *Agent) ackLoop(inflight chan pending, lost, done <-chan struct{}, ackErr chan<- error) {
	report := func(err error) {
		select {
		case ackErr <- err:
		default:
		}
	}
	timer := time.NewTimer(pubackTimeout)
	defer timer.Stop()
	for {
		var p pending
		select {
		case p = <-inflight:
		case <-done:
			return
		}
		timer.Reset(pubackTimeout)
		select {
		case <-p.tok.Done():
		case <-lost:
			return
		case <-done:
			return
		case <-timer.C:
			report(fmt.Errorf("no PUBACK within %v", pubackTimeout))
			return
		}
		batch := []pending{p}
		for more := true; more && len(batch) < sendWindow; {
			select {
			case q := <-inflight:
				batch = append(batch, q)
				select {
				case <-q.tok.Done():
				default:
					more = false
				}
			default:
				more = false
			}
		}
		// The last one may not be complete yet: keep it for the next round.
		var carry *pending
		if last := batch[len(batch)-1]; len(batch) > 1 && !isDone(last.tok) {
			carry = &last
			batch = batch[:len(batch)-1]
		}
		keys := make([]uint64, 0, len(batch))
		var acked uint64
		var failed error
		for _, b := range batch {
			if err := b.tok.Error(); err != nil {
				failed = fmt.Errorf("publish: %w", err)
				break
			}
			keys = append(keys, b.rec.key)
			if b.rec.kind == recTelemetry {
				acked = b.rec.seq
			}
		}
		if len(keys) > 0 {
			if err := a.st.deleteOutbox(keys...); err != nil {
				a.log.Error("outbox delete", "err", err)
			}
			if acked > 0 {
				a.mu.Lock()
				a.info.LastSeqAcked = acked
				a.mu.Unlock()
			}
		}
		if failed != nil {
			report(failed)
			return
		}
		if carry != nil {
			// Put it back at the front: wait for it before anything newer.
			if !a.waitOne(*carry, lost, done, timer, report) {
				return
			}
		}
	}
}

func isDone(t paho.Token) bool {
	select {
	case <-t.Done():
		return true
	default:
		return false
	}
}

// waitOne waits for one record's PUBACK and deletes it; false ends the loop.
func (a *Agent) waitOne(p pending, lost, done <-chan struct{}, timer *time.Timer, report func(error)) bool {
	timer.Reset(pubackTimeout)
	select {
	case <-p.tok.Done():
	case <-lost:
		return false
	case <-done:
		return false
	case <-timer.C:
		report(fmt.Errorf("no PUBACK within %v", pubackTimeout))
		return false
	}
	if err := p.tok.Error(); err != nil {
		report(fmt.Errorf("publish: %w", err))
		return false
	}
	if err := a.st.deleteOutbox(p.rec.key); err != nil {
		a.log.Error("outbox delete", "err", err)
	}
	if p.rec.kind == recTelemetry {
		a.mu.Lock()
		a.info.LastSeqAcked = p.rec.seq
		a.mu.Unlock()
	}
	return true
}
