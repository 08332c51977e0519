// The swapbridge dashboard: station grid, station detail, live event feed,
// bookings and notifications for a signed-in user.
import { api, ApiError } from './api.js';
import { LiveChannel } from './live.js';

const FEED_MAX = 150;
const NOTIF_MAX = 50;
const TOKEN_KEY = 'swapbridge.token';

const $ = (id) => document.getElementById(id);

// h builds an element: h('div', {class: 'x', 'aria-label': 'y'}, child, 'text').
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const state = {
  config: { demo: false },
  stations: new Map(), // id → {view, card}
  token: '',
  userId: '',
  bookings: [],
  selected: '',
  detailChannel: null,
  stationsChannel: null,
  userChannel: null,
  channelStates: new Map(),
};

// The dashboard object is a small window into the page for people (and
// tests) looking at it from the console.
const dashboard = {
  seqs: [], // seq of every station event the feed handled, in order
  notificationSeqs: [],
  connHistory: [],
  startSeq: null, // seqs lists every station event after this one
};
window.dashboard = dashboard;

// ---- formatting ----------------------------------------------------------

function ago(ts) {
  if (!ts) return 'never';
  const t = typeof ts === 'string' ? Date.parse(ts) : ts;
  if (!Number.isFinite(t)) return 'never';
  const s = Math.max(0, Math.round((Date.now() - t) / 1000));
  if (s < 5) return 'just now';
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(t).toLocaleDateString();
}

function clock(ts) {
  const d = new Date(ts || Date.now());
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

function stationName(id) {
  const s = state.stations.get(id);
  return s && s.view.name ? s.view.name : id;
}

function pct(v) {
  return `${Math.round(Number(v) || 0)}%`;
}

// ---- errors --------------------------------------------------------------

let errorTimer = 0;
function showError(msg) {
  const el = $('error-banner');
  el.textContent = msg;
  el.hidden = false;
  clearTimeout(errorTimer);
  errorTimer = setTimeout(() => (el.hidden = true), 7000);
}

// ---- connection indicator -------------------------------------------------

const CONN_TEXT = {
  connecting: 'Connecting…',
  live: 'Live',
  resumed: 'Resumed · no events missed',
  reconnecting: 'Reconnecting…',
};

function channelState(name, s) {
  state.channelStates.set(name, s);
  renderConn();
}

function renderConn() {
  const all = [...state.channelStates.values()];
  let s = 'live';
  if (all.includes('reconnecting')) s = 'reconnecting';
  else if (all.includes('connecting') || all.length === 0) s = 'connecting';
  else if (all.includes('resumed')) s = 'resumed';
  const el = $('conn');
  if (el.dataset.state === s) return;
  el.dataset.state = s;
  $('conn-text').textContent = CONN_TEXT[s];
  el.setAttribute('aria-label', 'Connection: ' + CONN_TEXT[s]);
  dashboard.connHistory.push(s);
  trim(dashboard.connHistory, 400);
}

// ---- station grid --------------------------------------------------------

const KINDS = [
  ['available', 'available_batteries', 'Ready'],
  ['booked', 'booked_batteries', 'Booked'],
  ['charging', 'charging_batteries', 'Charging'],
  ['unavailable', 'unavailable_batteries', 'Unavailable'],
  ['empty', 'empty_slots', 'Empty'],
  ['faulted', 'faulted_slots', 'Fault'],
];

function statusOf(view) {
  if (view.status) return view.status;
  return view.online ? 'online' : 'offline';
}

function makeCard(view) {
  const id = view.id;
  const name = h('div', { class: 'st-name' });
  const sid = h('div', { class: 'st-id', text: id });
  const badge = h('span', { class: 'badge' });
  const bar = h('div', { class: 'stackbar', role: 'img' });
  const barParts = {};
  for (const [k] of KINDS) {
    if (k === 'empty') continue;
    barParts[k] = h('span', { class: k });
    bar.append(barParts[k]);
  }
  const nums = {};
  const counts = h('dl', { class: 'counts' });
  for (const [k, , label] of KINDS) {
    nums[k] = h('dd', { 'data-count': k, text: '0' });
    counts.append(h('div', { class: k }, h('dt', { text: label }), nums[k]));
  }
  const seen = h('span', { class: 'st-seen' });
  const details = h('button', {
    type: 'button', class: 'btn btn-sm btn-ghost', 'aria-label': `Show the slots of ${view.name || id}`,
    onclick: () => (location.hash = '#/stations/' + encodeURIComponent(id)),
  }, 'Details');
  const book = h('button', {
    type: 'button', class: 'btn btn-sm btn-primary', 'data-action': 'book',
    'aria-label': `Book a battery at ${view.name || id}`, hidden: !state.token,
    onclick: () => bookAt(id, book),
  }, 'Book');
  const li = h('li', { class: 'station', 'data-station': id, 'aria-label': view.name || id },
    h('div', { class: 'st-head' }, h('div', {}, name, sid), badge),
    bar, counts,
    h('div', { class: 'st-foot' }, seen, h('div', { class: 'st-actions' }, details, book)));
  return { li, name, badge, bar, barParts, nums, seen, book, flashTimer: 0 };
}

function upsertStation(view, { counts = true } = {}) {
  let s = state.stations.get(view.id);
  if (!s) {
    const none = $('no-stations');
    if (none) none.remove();
    s = { view: { ...view }, card: makeCard(view) };
    state.stations.set(view.id, s);
    const grid = $('station-grid');
    const after = [...grid.children].find((li) => li.dataset.station > view.id);
    grid.insertBefore(s.card.li, after || null);
  } else {
    const keep = counts ? {} : countsOf(s.view);
    s.view = { ...s.view, ...view, ...keep };
  }
  renderCard(s, false);
  renderTotals();
  return s;
}

function countsOf(v) {
  const out = {};
  for (const [, f] of KINDS) out[f] = v[f];
  out.total_slots = v.total_slots;
  return out;
}

function renderCard(s, flash) {
  const v = s.view;
  const c = s.card;
  const st = statusOf(v);
  c.name.textContent = v.name || v.id;
  c.li.dataset.status = st;
  c.badge.className = 'badge ' + st;
  c.badge.textContent = st;
  const total = v.total_slots || 0;
  for (const [k, f] of KINDS) {
    const n = Number(v[f]) || 0;
    const el = c.nums[k];
    if (el.textContent !== String(n)) {
      el.textContent = String(n);
      if (flash) {
        el.classList.remove('bump');
        void el.offsetWidth;
        el.classList.add('bump');
      }
    }
    if (c.barParts[k]) c.barParts[k].style.width = total ? `${(100 * n) / total}%` : '0';
  }
  c.bar.setAttribute('aria-label',
    `${v.available_batteries || 0} ready, ${v.booked_batteries || 0} booked, ${v.charging_batteries || 0} charging, ` +
    `${v.unavailable_batteries || 0} unavailable (station ${st}), ` +
    `${v.empty_slots || 0} empty, ${v.faulted_slots || 0} faulted of ${total} slots`);
  c.seen.textContent = st === 'online' ? `seen ${ago(v.last_seen)}` : `last seen ${ago(v.last_seen)}`;
  c.book.hidden = !state.token;
  if (flash) {
    c.li.classList.add('flash');
    clearTimeout(c.flashTimer);
    c.flashTimer = setTimeout(() => c.li.classList.remove('flash'), 900);
  }
}

// ---- network map ------------------------------------------------------------

const SVG = 'http://www.w3.org/2000/svg';
const MAP_W = 800, MAP_H = 260, MAP_PAD = 34;

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(c);
  return el;
}

function pinClass(v) {
  const st = statusOf(v);
  if (st !== 'online') return st;
  return (Number(v.available_batteries) || 0) > 0 ? 'ready' : 'charging';
}

let mapKey = '';
let mapPins = new Map();
function renderMap() {
  const box = $('netmap');
  const views = [...state.stations.values()].map((s) => s.view)
    .filter((v) => Number.isFinite(v.lat) && Number.isFinite(v.lon) && !(v.lat === 0 && v.lon === 0));
  $('netmap-box').hidden = views.length === 0;
  const key = views.map((v) => `${v.id}@${v.lat},${v.lon}`).sort().join('|');
  if (key !== mapKey) {
    mapKey = key;
    mapPins = new Map();
    // An equirectangular projection around the stations' centre.
    const lat0 = views.reduce((a, v) => a + v.lat, 0) / (views.length || 1);
    const kx = Math.cos((lat0 * Math.PI) / 180);
    const xs = views.map((v) => v.lon * kx), ys = views.map((v) => -v.lat);
    const minX = Math.min(...xs), maxX = Math.max(...xs), minY = Math.min(...ys), maxY = Math.max(...ys);
    const scale = Math.min((MAP_W - 2 * MAP_PAD - 120) / Math.max(maxX - minX, 1e-6), (MAP_H - 2 * MAP_PAD) / Math.max(maxY - minY, 1e-6));
    const offX = (MAP_W - (maxX - minX) * scale) / 2 - 40, offY = (MAP_H - (maxY - minY) * scale) / 2;
    const lines = [];
    for (let x = 40; x < MAP_W; x += 80) lines.push(svg('line', { class: 'grid-line', x1: x, y1: 0, x2: x, y2: MAP_H }));
    for (let y = 30; y < MAP_H; y += 80) lines.push(svg('line', { class: 'grid-line', x1: 0, y1: y, x2: MAP_W, y2: y }));
    const pts = views.map((v, i) => [offX + (xs[i] - minX) * scale, offY + (ys[i] - minY) * scale]);
    const pins = views.map((v, i) => {
      const [x, y] = pts[i];
      const r = 6 + Math.min(6, (Number(v.total_slots) || 8) / 4);
      // Labels go right of the pin unless a neighbour sits there.
      const crowded = pts.some(([px, py], j) => j !== i && px > x && px - x < 150 && Math.abs(py - y) < 34);
      const lx = crowded ? x - r - 6 : x + r + 6;
      const anchor = crowded ? 'end' : 'start';
      const name = svg('text', { x: lx, y: y + 1, 'text-anchor': anchor });
      const sub = svg('text', { class: 'sub', x: lx, y: y + 15, 'text-anchor': anchor });
      const g = svg('g', { class: 'pin', 'data-station': v.id },
        svg('circle', { class: 'halo', cx: x, cy: y, r: r + 5 }),
        svg('circle', { class: 'dot', cx: x, cy: y, r }), name, sub);
      g.addEventListener('click', () => (location.hash = '#/stations/' + encodeURIComponent(v.id)));
      mapPins.set(v.id, { g, name, sub });
      return g;
    });
    box.replaceChildren(...lines, ...pins);
  }
  for (const v of views) {
    const p = mapPins.get(v.id);
    if (!p) continue;
    p.g.setAttribute('class', 'pin ' + pinClass(v));
    p.name.textContent = v.name || v.id;
    p.sub.textContent = statusOf(v) === 'online' ? `${v.available_batteries || 0} ready · ${v.charging_batteries || 0} charging` : statusOf(v);
  }
  box.setAttribute('aria-label', `Map of ${views.length} stations: ` +
    views.map((v) => `${v.name || v.id} ${statusOf(v)}, ${v.available_batteries || 0} ready`).join('; '));
}

let mapTimer = 0;
function scheduleMap() {
  if (mapTimer) return;
  mapTimer = requestAnimationFrame(() => {
    mapTimer = 0;
    renderMap();
  });
}

function renderTotals() {
  scheduleMap();
  let online = 0, ready = 0, slots = 0;
  for (const { view } of state.stations.values()) {
    if (statusOf(view) === 'online') online++;
    ready += Number(view.available_batteries) || 0;
    slots += Number(view.total_slots) || 0;
  }
  const el = $('totals');
  el.replaceChildren(
    h('strong', { text: String(state.stations.size) }), ' stations · ',
    h('strong', { text: String(online) }), ' online · ',
    h('strong', { text: String(ready) }), ` batteries ready of ${slots} slots`);
}

async function loadStations({ counts = true } = {}) {
  const data = await api('/api/stations');
  for (const v of data.stations || []) upsertStation(v, { counts });
}

const pendingStationFetch = new Set();
function fetchUnknownStation(id) {
  if (pendingStationFetch.has(id)) return;
  pendingStationFetch.add(id);
  api('/api/stations/' + encodeURIComponent(id))
    .then((v) => upsertStation(v))
    .catch(() => {})
    .finally(() => pendingStationFetch.delete(id));
}

// ---- events ---------------------------------------------------------------

function applyStationEvent(ev, flash) {
  const id = ev.station_id;
  if (!id) return;
  const s = state.stations.get(id);
  if (!s) {
    fetchUnknownStation(id);
    return;
  }
  if (ev.type === 'inventory_update') {
    Object.assign(s.view, countsOf(ev));
    if (!s.view.last_seen || ev.ts > s.view.last_seen) s.view.last_seen = ev.ts;
  } else if (ev.type === 'station_status') {
    s.view.status = ev.status;
    s.view.online = ev.status !== 'offline';
    if (ev.last_seen) s.view.last_seen = ev.last_seen;
  } else {
    return;
  }
  renderCard(s, flash);
  renderTotals();
}

const FEED_KIND = {
  inventory_update: ['inventory', 'Inventory'],
  battery_booked: ['booked', 'Booked'],
  battery_collected: ['collected', 'Collected'],
  battery_added: ['added', 'Battery in'],
  battery_removed: ['removed', 'Battery removed'],
  station_status: ['status', 'Status'],
};

function describe(ev) {
  const where = stationName(ev.station_id);
  switch (ev.type) {
    case 'inventory_update':
      return `${where}: ${ev.available_batteries} ready, ${ev.charging_batteries} charging, ${ev.empty_slots} empty`;
    case 'battery_booked':
      return `${where}: ${ev.battery_id} in slot ${ev.slot} reserved`;
    case 'battery_collected':
      return `${where}: ${ev.battery_id} taken from slot ${ev.slot}`;
    case 'battery_added':
      return `${where}: ${ev.battery_id} returned to slot ${ev.slot} at ${pct(ev.soc)}`;
    case 'battery_removed':
      return `${where}: ${ev.battery_id} left slot ${ev.slot} without a booking`;
    case 'station_status':
      return `${where} is ${ev.status}`;
    default:
      return where;
  }
}

// trim keeps a record list from growing without bound on a page left open
// for days; it returns the entries removed.
function trim(list, max) {
  return list.length > max ? list.splice(0, list.length - max / 2) : [];
}

function addFeed(ev) {
  dashboard.seqs.push(ev.seq);
  const dropped = trim(dashboard.seqs, 20000);
  if (dropped.length) dashboard.startSeq = dropped[dropped.length - 1];
  const [kind, label] = FEED_KIND[ev.type] || ['other', ev.type];
  const li = h('li', { class: 'k-' + kind, 'data-seq': ev.seq, 'data-type': ev.type },
    h('span', { class: 'ev-type', text: label }),
    h('span', { class: 'ev-seq', text: '#' + ev.seq }),
    h('time', { class: 'ev-time', datetime: ev.ts, text: clock(ev.ts) }),
    h('span', { class: 'ev-text', text: describe(ev) }));
  const feed = $('feed');
  feed.prepend(li);
  while (feed.children.length > FEED_MAX) feed.lastElementChild.remove();
}

// recentEvents reads the newest events of the log (up to limit): the
// user's own with a token, else every station's. It returns them with the
// seq they follow and the seq to resume the WebSocket from.
async function recentEvents(limit, token = '') {
  const head = await api('/api/events?limit=1', { token });
  let since = Math.max(0, (head.last_seq || 0) - limit);
  const page = await api(`/api/events?since=${since}&limit=${Math.min(limit, 1000)}`, { token });
  const events = (page.events || []).filter((e) => e && typeof e.seq === 'number');
  if (page.gap && events.length) since = events[0].seq - 1;
  return { since, events, resume: page.next_since };
}

function startStations(history) {
  let resume;
  if (history) {
    dashboard.startSeq = history.since;
    for (const ev of history.events) addFeed(ev);
    resume = history.resume;
  }
  state.stationsChannel = new LiveChannel('/ws/stations/', {
    since: resume,
    onState: (s) => channelState('stations', s),
    onHello: (hello) => {
      if (dashboard.startSeq === null) dashboard.startSeq = hello.seq;
      if (!hello.recovered) loadStations({ counts: false }).catch(() => {});
    },
    onSnapshot: (ev) => applyStationEvent(ev, false),
    onEvent: (ev) => {
      applyStationEvent(ev, true);
      addFeed(ev);
      // Collections and releases of my bookings arrive on station channels.
      if (ev.booking_id && state.bookings.some((b) => b.id === ev.booking_id)) refreshBookings();
    },
  }).start();
}

// ---- station detail -------------------------------------------------------

let detailTimer = 0;
let detailLast = 0;
let detailSeq = 0;
function scheduleDetail() {
  if (detailTimer) return;
  const wait = Math.max(0, 600 - (Date.now() - detailLast));
  detailTimer = setTimeout(() => {
    detailTimer = 0;
    detailLast = Date.now();
    loadDetail();
  }, wait);
}

async function loadDetail() {
  const id = state.selected;
  if (!id) return;
  const my = ++detailSeq;
  try {
    const v = await api('/api/stations/' + encodeURIComponent(id));
    if (my !== detailSeq || state.selected !== id) return;
    renderDetail(v);
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) {
      $('detail').replaceChildren(h('p', { class: 'placeholder', text: `No station ${id}.` }));
    }
  }
}

// slotState is a slot's state as the counts name it; stationStatus is its
// station's (a battery of a station offline or in maintenance is
// unavailable, whatever its charge).
function slotState(sl, stationStatus) {
  if (!sl.battery_id) return 'empty';
  if (sl.fault) return 'faulted';
  if (sl.reserved) return 'reserved';
  if (stationStatus === 'offline' || stationStatus === 'maintenance') return 'unavailable';
  if (sl.swappable) return 'available';
  return 'charging';
}

function renderSlot(sl, stationStatus) {
  const st = slotState(sl, stationStatus);
  const label = `Slot ${sl.slot}`;
  const tags = h('div', { class: 'tags' });
  const mine = sl.booking_id && state.bookings.some((b) => b.id === sl.booking_id);
  if (sl.reserved) tags.append(h('span', { class: 'tag reserved', text: mine ? 'your booking' : 'reserved' }));
  if (sl.fault) tags.append(h('span', { class: 'tag fault', text: 'fault: ' + sl.fault }));
  if (st === 'unavailable') tags.append(h('span', { class: 'tag', text: stationStatus === 'maintenance' ? 'unavailable: station in maintenance' : 'unavailable: station offline' }));
  else if (sl.swappable) tags.append(h('span', { class: 'tag ready', text: 'ready to swap' }));
  else if (sl.charging) tags.append(h('span', { class: 'tag', text: 'charging' }));
  if (sl.door === 'open') tags.append(h('span', { class: 'tag open', text: 'door open' }));
  const doorLock = `${sl.door || '?'} · ${sl.locked ? 'locked' : 'unlocked'}`;
  if (!sl.battery_id) {
    return h('li', { class: 'slot', 'data-state': st, 'data-slot': sl.slot, 'aria-label': `${label}: empty` },
      h('div', { class: 'slot-top' }, h('span', { class: 'slot-no', text: label })),
      h('div', { class: 'empty-slot', text: 'empty' }),
      h('dl', { class: 'slot-meta' }, h('div', { class: 'wide' }, h('dt', { text: 'Door ' }), h('dd', { text: doorLock }))),
      tags);
  }
  const soc = Math.max(0, Math.min(100, Number(sl.soc) || 0));
  const lvl = soc >= 80 ? 'hi' : soc >= 40 ? 'mid' : 'lo';
  return h('li', { class: 'slot', 'data-state': st, 'data-slot': sl.slot,
    'aria-label': `${label}: battery ${sl.battery_id}, ${Math.round(soc)} percent, ${st}` },
  h('div', { class: 'slot-top' }, h('span', { class: 'slot-no', text: label }), h('span', { class: 'slot-bat', text: sl.battery_id })),
  h('div', { class: 'soc' },
    h('div', { class: 'soc-bar', role: 'progressbar', 'aria-label': `State of charge, slot ${sl.slot}`,
      'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': Math.round(soc) },
    h('span', { class: lvl })),
    h('span', { class: 'soc-val', text: pct(soc) })),
  h('dl', { class: 'slot-meta' },
    h('div', {}, h('dt', { text: 'SoH ' }), h('dd', { text: pct(sl.soh) })),
    h('div', {}, h('dt', { text: 'Temp ' }), h('dd', { text: `${(Number(sl.temp_c) || 0).toFixed(1)}\u00a0°C` })),
    h('div', { class: 'wide' }, h('dt', { text: 'Door ' }), h('dd', { text: doorLock }))),
  tags);
}

function renderDetail(v) {
  const st = statusOf(v);
  const book = h('button', {
    type: 'button', class: 'btn btn-primary', 'data-action': 'book',
    'aria-label': `Book a battery at ${v.name || v.id}`, hidden: !state.token,
    onclick: () => bookAt(v.id, book),
  }, 'Book a battery');
  const slots = h('ul', { class: 'slots', 'aria-label': `Slots of ${v.name || v.id}` },
    (v.slots || []).map((sl) => renderSlot(sl, st)));
  $('detail').replaceChildren(
    h('div', { class: 'detail-head' },
      h('div', {},
        h('h1', { text: v.name || v.id }),
        h('p', {}, h('span', { class: 'st-id', text: v.id }), ` · ${Number(v.lat).toFixed(4)}, ${Number(v.lon).toFixed(4)} · seen ${ago(v.last_seen)}`)),
      h('div', { class: 'st-actions' }, h('span', { class: 'badge ' + st, text: st }), book)),
    h('dl', { class: 'counts' }, KINDS.map(([k, f, label]) =>
      h('div', { class: k }, h('dt', { text: label }), h('dd', { text: String(v[f] || 0) })))),
    slots);
  // SoC bar widths are set after creation: the page's CSP allows no inline styles in markup.
  slots.querySelectorAll('.soc-bar').forEach((bar) => {
    bar.firstElementChild.style.width = bar.getAttribute('aria-valuenow') + '%';
  });
  if (state.stations.has(v.id)) {
    const { slots: _slots, ...counts } = v;
    upsertStation(counts);
  }
}

function showDetail(id) {
  state.selected = id;
  $('grid-view').hidden = true;
  $('detail-view').hidden = false;
  $('detail').replaceChildren(h('p', { class: 'placeholder', text: 'Loading slots…' }));
  if (state.detailChannel) state.detailChannel.stop();
  state.detailChannel = new LiveChannel('/ws/stations/' + encodeURIComponent(id) + '/', {
    onState: (s) => channelState('detail', s),
    onHello: () => scheduleDetail(),
    onEvent: () => scheduleDetail(),
  }).start();
  loadDetail();
  $('back').focus({ preventScroll: true, focusVisible: false });
}

function showGrid() {
  state.selected = '';
  if (state.detailChannel) {
    state.detailChannel.stop();
    state.detailChannel = null;
    state.channelStates.delete('detail');
    renderConn();
  }
  $('detail-view').hidden = true;
  $('grid-view').hidden = false;
}

function route() {
  const m = location.hash.match(/^#\/stations\/([^/]+)$/);
  if (m) showDetail(decodeURIComponent(m[1]));
  else showGrid();
}

// ---- user: sign-in, bookings, notifications -------------------------------

async function signIn(token, { quiet = false } = {}) {
  token = token.trim();
  if (!token) return;
  let data;
  try {
    data = await api('/api/bookings', { token });
  } catch (e) {
    if (!quiet) showError(e.status === 401 ? 'That token is not valid.' : e.message);
    if (e.status === 401) localStorage.removeItem(TOKEN_KEY);
    return;
  }
  state.token = token;
  localStorage.setItem(TOKEN_KEY, token);
  state.bookings = data.bookings || [];
  if (state.bookings.length) setUser(state.bookings[0].user_id);
  $('signin').hidden = true;
  $('signed-in').hidden = false;
  $('bookings-panel').hidden = false;
  $('notifications-panel').hidden = false;
  $('token-input').value = '';
  renderBookings();
  for (const s of state.stations.values()) renderCard(s, false);
  if (state.selected) loadDetail();
  if (state.userChannel) state.userChannel.stop();
  $('notifications').replaceChildren();
  let resume;
  try {
    const past = await recentEvents(5000, token);
    for (const ev of past.events.slice(-20)) addNotification(ev);
    resume = past.resume;
  } catch {
    resume = undefined;
  }
  if (state.token !== token) return;
  state.userChannel = new LiveChannel('/ws/notifications/', {
    token,
    since: resume,
    onState: (s) => channelState('user', s),
    onHello: (hello) => {
      if (typeof hello.channel === 'string' && hello.channel.startsWith('user:')) setUser(hello.channel.slice(5));
      refreshBookings();
    },
    onEvent: (ev) => {
      addNotification(ev);
      refreshBookings();
    },
  }).start();
}

function setUser(id) {
  state.userId = id;
  $('user-id').textContent = id;
}

function signOut() {
  if (state.userChannel) state.userChannel.stop();
  state.userChannel = null;
  state.channelStates.delete('user');
  renderConn();
  state.token = '';
  state.bookings = [];
  localStorage.removeItem(TOKEN_KEY);
  $('signin').hidden = false;
  $('signed-in').hidden = true;
  $('bookings-panel').hidden = true;
  $('notifications-panel').hidden = true;
  $('notifications').replaceChildren();
  for (const s of state.stations.values()) renderCard(s, false);
  if (state.selected) loadDetail();
}

let bookingsTimer = 0;
function refreshBookings() {
  clearTimeout(bookingsTimer);
  bookingsTimer = setTimeout(async () => {
    if (!state.token) return;
    try {
      const data = await api('/api/bookings', { token: state.token });
      state.bookings = data.bookings || [];
      renderBookings();
    } catch (e) {
      if (e.status === 401) signOut();
    }
  }, 250);
}

const ACTIVE = new Set(['pending', 'confirmed', 'ready']);

function renderBookings() {
  const list = $('bookings');
  const active = state.bookings.filter((b) => ACTIVE.has(b.status));
  const past = state.bookings.filter((b) => !ACTIVE.has(b.status)).slice(0, 3);
  if (!active.length && !past.length) {
    list.replaceChildren(h('li', { class: 'placeholder', text: 'No bookings yet. Press Book on a station.' }));
    return;
  }
  list.replaceChildren(...[...active, ...past].map((b) => {
    const where = stationName(b.station_id);
    const live = ACTIVE.has(b.status);
    const cancel = h('button', {
      type: 'button', class: 'btn btn-sm btn-danger', 'data-action': 'cancel',
      'aria-label': `Cancel booking ${b.id} at ${where}`, onclick: () => bookingOp(b.id, 'cancel', cancel),
    }, 'Cancel');
    const collect = h('button', {
      type: 'button', class: 'btn btn-sm btn-primary', 'data-action': 'collect',
      'aria-label': `Collect battery ${b.battery_id} at ${where}`, disabled: b.status !== 'ready',
      title: b.status === 'ready' ? 'Unlock the slot' : 'Available once the battery is ready',
      onclick: () => bookingOp(b.id, 'collect', collect),
    }, 'Collect');
    return h('li', { 'data-booking': b.id, 'data-status': b.status, class: live ? '' : 'muted' },
      h('div', { class: 'b-head' }, h('strong', { text: where }), h('span', { class: 'status-pill ' + b.status, text: b.status })),
      h('div', { class: 'muted', text: `Slot ${b.slot} · ${b.battery_id}` +
        (b.expires_at && live ? ` · hold until ${clock(b.expires_at)}` : '') }),
      live ? h('div', { class: 'b-actions' }, collect, cancel) : null);
  }));
}

async function bookAt(stationId, btn) {
  if (!state.token) return;
  btn.disabled = true;
  try {
    const b = await api('/api/bookings', { method: 'POST', token: state.token, body: { station_id: stationId } });
    state.bookings = [b, ...state.bookings.filter((x) => x.id !== b.id)];
    renderBookings();
  } catch (e) {
    showError(e.code === 'no_battery_available' ? `No battery can be booked at ${stationName(stationId)} right now.` : e.message);
  } finally {
    btn.disabled = false;
  }
}

async function bookingOp(id, op, btn) {
  btn.disabled = true;
  try {
    await api(`/api/bookings/${encodeURIComponent(id)}/${op}`, { method: 'POST', token: state.token });
  } catch (e) {
    showError(e.message);
  } finally {
    refreshBookings();
  }
}

function notificationText(ev) {
  const where = stationName(ev.station_id);
  switch (ev.type) {
    case 'booking_confirmed':
      return ['Booking confirmed', `${ev.battery_id} in slot ${ev.slot} at ${where} is held for you.`, 'info'];
    case 'booking_ready':
      return ['Battery ready', `${ev.battery_id} at ${where} is charged to ${pct(ev.soc)}. Collect it from slot ${ev.slot}.`, 'success'];
    case 'notification':
      return [ev.title || 'Notice', ev.message || '', ev.level || 'info'];
    default:
      return [ev.type, '', 'info'];
  }
}

function addNotification(ev) {
  dashboard.notificationSeqs.push(ev.seq);
  trim(dashboard.notificationSeqs, 2000);
  const [title, message, level] = notificationText(ev);
  const li = h('li', { class: 'level-' + level, 'data-seq': ev.seq, 'data-type': ev.type },
    h('time', { class: 'n-time', datetime: ev.ts, text: clock(ev.ts) }),
    h('div', { class: 'n-title', text: title }),
    h('div', { text: message }));
  const list = $('notifications');
  list.prepend(li);
  while (list.children.length > NOTIF_MAX) list.lastElementChild.remove();
  const badge = $('notif-count');
  badge.textContent = String(list.children.length);
  badge.hidden = false;
}

// ---- start ----------------------------------------------------------------

function takeTokenFromHash() {
  const m = location.hash.match(/^#token=([^&]+)/);
  if (!m) return '';
  history.replaceState(null, '', location.pathname + location.search);
  return decodeURIComponent(m[1]);
}

async function main() {
  const hashToken = takeTokenFromHash();
  $('signin').addEventListener('submit', (e) => {
    e.preventDefault();
    signIn($('token-input').value);
  });
  $('signout').addEventListener('click', signOut);
  $('back').addEventListener('click', () => (location.hash = ''));
  window.addEventListener('hashchange', route);
  renderConn();

  try {
    state.config = await api('/ui/config.json');
  } catch {
    state.config = { demo: false };
  }
  if (state.config.demo && state.config.demo_token) {
    const btn = $('demo-signin');
    btn.hidden = false;
    btn.setAttribute('aria-label', `Sign in as the demo user ${state.config.demo_user}`);
    btn.addEventListener('click', () => signIn(state.config.demo_token));
  }

  // The recent events first, then the stations (which already reflect
  // them), then the live channel from the last event read: nothing is
  // missed and counts never step back.
  let history = null;
  try {
    history = await recentEvents(60);
  } catch {
    history = null;
  }
  try {
    await loadStations();
  } catch (e) {
    showError('Could not load the stations: ' + e.message);
  }
  if (state.stations.size === 0) {
    $('station-grid').append(h('li', { class: 'placeholder', id: 'no-stations', text: 'No stations yet.' }));
  }
  startStations(history);
  route();

  const token = hashToken || localStorage.getItem(TOKEN_KEY) || '';
  if (token) signIn(token, { quiet: !hashToken });

  setInterval(() => {
    for (const s of state.stations.values()) renderCard(s, false);
  }, 5000);
  setInterval(() => loadStations({ counts: false }).catch(() => {}), 30000);
}

main();
