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

// connLoop keeps one MQTT session up until ctx is done, moving through the
// configured servers (see rotation) with jittered exponential backoff
// between rounds. Each session uses a fresh paho client with AutoReconnect
// off and one broker, so the outbox is the only source of retransmissions
// and the agent always knows which server it is on.
//
// paho's own list (AddBroker several times) is not used: every Connect
// starts again at the first broker, it reports only the last broker's error
// (a refusal by one is hidden behind a network error of the next), it does
// not say which broker it reached, and one Connect over N dead brokers
// blocks for up to N connect timeouts without looking at ctx.
//
// While every server refuses the station's credentials, the agent says once
// what to check and retries slowly (every ReconnectMax, jittered), since
// only a changed secret or a provisioned station can end the refusal.
func (a *Agent) connLoop(ctx context.Context) {
	rot := newRotation(a.cfg.Servers(), a.cfg.ReconnectMin, a.cfg.ReconnectMax)
	hinted := false
	for {
		server := rot.current()
		a.setServer(server)
		wasUp, err := a.session(ctx, server)
		if ctx.Err() != nil {
			return
		}
		if wasUp {
			hinted = false
		}
		d, wait, allRefused := rot.after(wasUp, err)
		a.setConn(false, err)
		if !wait {
			a.log.Warn("mqtt connect failed, trying the next server", "server", server, "err", err, "next", rot.current())
			continue
		}
		if allRefused && !hinted {
			hinted = true
			a.log.Error("mqtt credentials refused", "err", err,
				"hint", credentialsHint, "station_id", a.cfg.StationID, "server", a.cfg.Server, "retry_every", a.cfg.ReconnectMax)
		}
		a.log.Warn("mqtt disconnected", "server", server, "err", err, "next", rot.current(), "retry_in", d.Round(time.Millisecond))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// rotation decides which server the agent tries next and how long it
// waits first. After a lost link it waits the first backoff step and tries
// the next server. After a failed connect it tries the next server at once,
// until every server failed in a row (a round): then it waits, one backoff
// step longer each round, or ReconnectMax (jittered) when every server of
// the round refused the credentials. With one server every failure ends a
// round. The outbox, command history and reservations know nothing of
// servers: a switch is a reconnect like any other.
type rotation struct {
	servers  []string
	min, max time.Duration
	i        int // index of the server to try next
	attempt  int // backoff steps since the last session that was up
	failed   int // failed connects in the current round
	refused  int // of which the server refused the credentials
}

func newRotation(servers []string, min, max time.Duration) *rotation {
	return &rotation{servers: servers, min: min, max: max}
}

// current is the server to try next.
func (r *rotation) current() string { return r.servers[r.i] }

// after records the outcome of a session with current() and moves to the
// next server. wait is false when that server is to be tried at once;
// otherwise d is the delay first, and allRefused says the round ended
// because every server refused the credentials.
func (r *rotation) after(wasUp bool, err error) (d time.Duration, wait, allRefused bool) {
	r.i = (r.i + 1) % len(r.servers)
	if wasUp {
		r.attempt, r.failed, r.refused = 1, 0, 0
		return backoff(r.min, r.max, r.attempt), true, false
	}
	r.failed++
	if credentialsRefused(err) {
		r.refused++
	}
	if r.failed < len(r.servers) {
		return 0, false, false
	}
	allRefused = r.refused == r.failed
	r.failed, r.refused = 0, 0
	if allRefused {
		return backoff(r.max, r.max, 1), true, true
	}
	r.attempt++
	return backoff(r.min, r.max, r.attempt), true, false
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

// setServer records the server the agent is connecting to or on.
func (a *Agent) setServer(server string) {
	a.mu.Lock()
	a.info.Broker = server
	a.mu.Unlock()
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

// clientOptions are the paho options of one session with server.
func (a *Agent) clientOptions(server string, lost func(error)) (*paho.ClientOptions, error) {
	scheme, hostport, err := parseServer(server)
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

// session runs one MQTT connection with server: connect, subscribe,
// retained status, then send the outbox until the connection is lost or ctx
// is done. wasUp reports whether the connection was established.
func (a *Agent) session(ctx context.Context, server string) (wasUp bool, err error) {
	lost := make(chan struct{})
	var lostOnce sync.Once
	var lostErr error
	opts, err := a.clientOptions(server, func(err error) {
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
		return false, fmt.Errorf("connect %s: %w", server, err)
	}
	a.log.Info("mqtt connected", "server", server, "boot_id", a.bootID)
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
