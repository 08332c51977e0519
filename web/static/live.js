// LiveChannel follows one WebSocket channel of the contract
// (/ws/stations/, /ws/stations/{sid}/, /ws/notifications/) and resumes
// after a reconnect with ?since= set to the last event handled, or to the
// hello's seq after a snapshot. Duplicate or out-of-order events (seq not
// above the resume point) are dropped, so a consumer sees every event once.

const RESUMED_FOR_MS = 4000;

export class LiveChannel {
  // path: the channel path; opts: {token, onHello, onSnapshot, onEvent,
  // onState}. onState(state) receives "connecting", "live", "resumed" or
  // "reconnecting".
  constructor(path, opts = {}) {
    this.path = path;
    this.token = opts.token || '';
    this.onHello = opts.onHello || (() => {});
    this.onSnapshot = opts.onSnapshot || (() => {});
    this.onEvent = opts.onEvent || (() => {});
    this.onState = opts.onState || (() => {});
    // since, when given, is where the first connection resumes: the seq of
    // the last event the page already has (from GET /api/events).
    this.since = typeof opts.since === 'number' ? opts.since : null;
    this.everLive = false;
    this.ws = null;
    this.attempt = 0;
    this.stopped = false;
    this.retryTimer = 0;
    this.resumedTimer = 0;
    this.state = '';
  }

  start() {
    this.setState('connecting');
    this.connect();
    return this;
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.resumedTimer);
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onclose = null;
      ws.onmessage = null;
      ws.close(1000, 'page left the channel');
    }
  }

  url() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const q = new URLSearchParams();
    if (this.since !== null) q.set('since', String(this.since));
    if (this.token) q.set('token', this.token);
    const qs = q.toString();
    return `${proto}//${location.host}${this.path}${qs ? '?' + qs : ''}`;
  }

  connect() {
    const ws = new WebSocket(this.url());
    this.ws = ws;
    ws.onmessage = (m) => {
      if (this.ws === ws) this.handle(m.data);
    };
    ws.onclose = () => {
      if (this.ws !== ws || this.stopped) return;
      this.ws = null;
      clearTimeout(this.resumedTimer);
      this.setState('reconnecting');
      this.schedule();
    };
  }

  schedule() {
    const base = Math.min(300 * 2 ** this.attempt, 8000);
    this.attempt++;
    const delay = base * (0.7 + Math.random() * 0.6);
    this.retryTimer = setTimeout(() => {
      if (!this.stopped) this.connect();
    }, delay);
  }

  handle(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    if (!msg || typeof msg.type !== 'string') return;
    switch (msg.type) {
      case 'hello':
        this.attempt = 0;
        if (msg.recovered && this.everLive) {
          this.setState('resumed');
          clearTimeout(this.resumedTimer);
          this.resumedTimer = setTimeout(() => {
            if (this.state === 'resumed') this.setState('live');
          }, RESUMED_FOR_MS);
        } else {
          if (!msg.recovered && typeof msg.seq === 'number') this.since = msg.seq;
          this.setState('live');
        }
        this.everLive = true;
        this.onHello(msg);
        return;
      case 'pong':
      case 'error':
        return;
    }
    if (msg.snapshot) {
      this.onSnapshot(msg);
      return;
    }
    if (typeof msg.seq !== 'number') return;
    if (this.since !== null && msg.seq <= this.since) return;
    this.since = msg.seq;
    this.onEvent(msg);
  }

  setState(s) {
    if (this.state === s) return;
    this.state = s;
    this.onState(s);
  }
}
