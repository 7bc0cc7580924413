// dialkv console: draws the cluster from this node's JSON API and
// /metrics every REFRESH_MS. Plain browser JavaScript, no dependencies.
// Everything from the server (keys are user data) goes into the page as
// text nodes, never as HTML.
'use strict';

const REFRESH_MS = 2000;
const TOKEN_KEY = 'dialkv-console-token';

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || '',
  // The previous /metrics sample, for rates: {clock, t: ms, series: Map}.
  prev: null,
};

// ---- DOM helpers ----

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function $(id) { return document.getElementById(id); }

function fillBody(table, rows) {
  const body = $(table).tBodies[0];
  body.replaceChildren(...rows);
}

function showError(id, err) {
  const p = $(id);
  if (!err) {
    p.hidden = true;
    p.textContent = '';
    return;
  }
  p.hidden = false;
  p.textContent = describe(err);
}

function describe(err) {
  if (err.status) {
    return `${err.status} ${err.reason || ''}: ${err.message}`;
  }
  return `cannot reach the node: ${err.message}`;
}

// ---- formatting ----

const utf8 = new TextDecoder('utf-8', { fatal: true });

// key renders a protojson bytes field (standard base64) as text when it is
// printable UTF-8, else as hex.
function key(b64, edge) {
  if (!b64) return edge;
  let bytes;
  try {
    bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  } catch {
    return '?';
  }
  try {
    const s = utf8.decode(bytes);
    if (!/[\u0000-\u001f\u007f]/.test(s)) return JSON.stringify(s);
  } catch {
    // not UTF-8: hex below
  }
  return '0x' + Array.from(bytes, (x) => x.toString(16).padStart(2, '0')).join('');
}

function num(v) {
  const n = Number(v || 0);
  return n.toLocaleString('en-US');
}

function bytes(v) {
  let n = Number(v || 0);
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return (i === 0 ? n : n.toFixed(1)) + ' ' + units[i];
}

function rate(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return '–';
  if (v === 0) return '0';
  return v < 10 ? v.toFixed(2) : v.toFixed(0);
}

function ms(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return '–';
  return v < 10 ? v.toFixed(2) + ' ms' : v.toFixed(0) + ' ms';
}

// ---- the API ----

class APIError extends Error {
  constructor(status, reason, message) {
    super(message);
    this.status = status;
    this.reason = reason;
  }
}

async function call(path, init) {
  const headers = Object.assign({}, (init && init.headers) || {});
  if (state.token) headers.Authorization = 'Bearer ' + state.token;
  const resp = await fetch(path, Object.assign({ cache: 'no-store' }, init, { headers }));
  const text = await resp.text();
  if (!resp.ok) {
    let body = {};
    try {
      body = JSON.parse(text);
    } catch {
      // not the API's JSON error: keep the status line
    }
    throw new APIError(resp.status, body.reason || resp.headers.get('X-Dialkv-Reason') || '',
      body.error || resp.statusText || 'request failed');
  }
  return text;
}

async function getJSON(path) {
  return JSON.parse(await call(path));
}

// ---- /metrics ----

// parseMetrics reads Prometheus text into a Map from "name{labels}" to
// {name, labels, value}.
function parseMetrics(text) {
  const series = new Map();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const l of (m[3] || '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
    }
    series.set(m[1] + '{' + (m[3] || '') + '}', { name: m[1], labels, value: Number(m[4]) });
  }
  return series;
}

// delta is a counter's increase since the previous sample (a counter that
// went down restarted from zero).
function delta(cur, prev, id) {
  const c = cur.get(id);
  if (!c || !prev) return 0;
  const p = prev.get(id);
  if (!p || c.value < p.value) return c.value;
  return c.value - p.value;
}

function select(series, name) {
  const out = [];
  for (const [id, s] of series) if (s.name === name) out.push([id, s]);
  return out;
}

// renderMetrics draws the rates between this sample and the previous one.
// now is the node's uptime when it answered the status taken alongside
// (clock "node"): the node's clock measures the interval the counters
// moved in, whatever the browser's timers did (a background tab, or a
// headless browser's virtual time). Without a status, the browser's clock.
function renderMetrics(series, clock, now) {
  const prev = state.prev && state.prev.clock === clock && now > state.prev.t ? state.prev : null;
  const dt = prev ? (now - prev.t) / 1000 : 0;
  const ps = prev ? prev.series : null;
  const per = (d) => (dt > 0 ? d / dt : null);

  // Reads by level, and the staleness histogram, by level when it carries
  // a level label, else over every weaker level.
  const levels = new Map();
  const level = (name) => {
    if (!levels.has(name)) levels.set(name, { reads: null, sum: 0, count: 0, buckets: [] });
    return levels.get(name);
  };
  const order = ['linearizable', 'bounded', 'session', 'stale'];
  for (const name of order) level(name).reads = per(0);
  for (const [id, s] of select(series, 'dialkv_reads_total')) {
    level(s.labels.level || '?').reads = per(delta(series, ps, id));
  }
  for (const [id, s] of select(series, 'dialkv_read_staleness_ms_sum')) {
    level(s.labels.level || 'weaker levels, together').sum = delta(series, ps, id);
  }
  for (const [id, s] of select(series, 'dialkv_read_staleness_ms_count')) {
    level(s.labels.level || 'weaker levels, together').count = delta(series, ps, id);
  }
  for (const [id, s] of select(series, 'dialkv_read_staleness_ms_bucket')) {
    level(s.labels.level || 'weaker levels, together').buckets.push({ le: s.labels.le === '+Inf' ? Infinity : Number(s.labels.le), n: delta(series, ps, id) });
  }
  const names = [...levels.keys()].sort((a, b) => {
    const ia = order.indexOf(a), ib = order.indexOf(b);
    return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
  });
  fillBody('levels', names.map((name) => {
    const l = levels.get(name);
    const mean = prev && l.count > 0 ? l.sum / l.count : null;
    // Linearizable reads are never stale; the weaker levels' staleness is
    // the bound each answer carried.
    const fresh = name === 'linearizable';
    return el('tr', { 'data-level': name },
      el('td', {}, name),
      el('td', { class: 'num' }, rate(l.reads)),
      el('td', { class: 'num' }, fresh ? '0 (leader)' : ms(mean)),
      el('td', { class: 'num' }, fresh ? '' : p99(l.buckets, l.count)));
  }));
  const refused = select(series, 'dialkv_bounded_reads_refused_total')[0];
  $('refused').textContent = refused
    ? `Bounded and session reads refused as too stale: ${rate(per(delta(series, ps, refused[0])))}/s (${num(refused[1].value)} since start).`
    : '';

  // Requests by method: the rate, the rate of answers other than OK, and
  // the mean latency over the interval.
  const methods = new Map();
  const method = (name) => {
    if (!methods.has(name)) methods.set(name, { n: 0, errors: 0, sum: 0, count: 0, total: 0 });
    return methods.get(name);
  };
  for (const [id, s] of select(series, 'dialkv_requests_total')) {
    const m = method(s.labels.method || '?');
    const d = delta(series, ps, id);
    m.n += d;
    m.total += s.value;
    if (s.labels.code !== 'OK') m.errors += d;
  }
  for (const [id, s] of select(series, 'dialkv_request_duration_seconds_sum')) {
    method(s.labels.method || '?').sum += delta(series, ps, id);
  }
  for (const [id, s] of select(series, 'dialkv_request_duration_seconds_count')) {
    method(s.labels.method || '?').count += delta(series, ps, id);
  }
  const rows = [...methods.entries()].sort((a, b) => b[1].n - a[1].n || b[1].total - a[1].total || a[0].localeCompare(b[0]));
  fillBody('requests', rows.map(([name, m]) => el('tr', { 'data-method': name },
    el('td', {}, name),
    el('td', { class: 'num' }, rate(per(m.n))),
    el('td', { class: m.errors > 0 ? 'num lag-warn' : 'num' }, rate(per(m.errors))),
    el('td', { class: 'num' }, prev && m.count > 0 ? ms((m.sum / m.count) * 1000) : '–'))));
  if (!prev) {
    $('requests').tBodies[0].append(el('tr', {}, el('td', { colspan: 4, class: 'muted' }, 'rates appear after the next refresh')));
  }
  state.prev = { clock, t: now, series };
}

// p99 is the upper bound of the histogram bucket holding the 99th
// percentile of the interval's observations.
function p99(buckets, count) {
  if (!count) return '–';
  const sorted = buckets.slice().sort((a, b) => a.le - b.le);
  for (const b of sorted) {
    if (b.n >= 0.99 * count) return Number.isFinite(b.le) ? '≤ ' + b.le + ' ms' : '> ' + sorted[sorted.length - 2].le + ' ms';
  }
  return '–';
}

// ---- the cluster ----

// merge joins the routing table, this node's status and the member list
// into what the page draws.
function merge(ranges, status, members) {
  const here = status ? status.node : null;
  const local = new Map();
  for (const r of (here && here.ranges) || []) local.set(String(r.id), r);
  const reach = new Map();
  for (const m of (members && members.members) || []) reach.set(m.id, m);

  const rs = ((ranges && ranges.ranges) || []).map((d) => {
    const l = local.get(String(d.id));
    // This node's Raft knows the leader better than the table's hint.
    const leader = (l && l.leader) || d.leader || '';
    return { id: String(d.id), start: d.start, end: d.end, replicas: d.replicas || [], leader, local: l };
  });
  // The routing table lists user ranges only: this node's other ranges
  // (the meta range, which holds the table) go first, and all of its
  // ranges when the table could not be read.
  const listed = new Set(rs.map((r) => r.id));
  const extra = [];
  for (const l of local.values()) {
    if (listed.has(String(l.id))) continue;
    extra.push({ id: String(l.id), start: l.start, end: l.end, replicas: l.replicas || [], leader: l.leader || '', local: l, meta: !!ranges });
  }
  rs.unshift(...extra.sort((a, b) => Number(a.id) - Number(b.id)));

  const nodes = new Map();
  const node = (id) => {
    if (!nodes.has(id)) nodes.set(id, { id, leaders: 0, replicas: 0 });
    return nodes.get(id);
  };
  for (const n of (ranges && ranges.nodes) || []) Object.assign(node(n.id), n);
  for (const m of reach.values()) {
    const n = node(m.id);
    for (const k of ['grpc_addr', 'http_addr', 'raft_addr']) if (!n[k]) n[k] = m[k];
    n.reachable = m.reachable;
  }
  for (const r of rs) {
    for (const id of r.replicas) node(id).replicas++;
    if (r.leader) node(r.leader).leaders++;
  }
  return { here, rs, nodes: [...nodes.values()].sort((a, b) => a.id.localeCompare(b.id, 'en', { numeric: true })) };
}

function renderNodes(view) {
  fillBody('nodes', view.nodes.map((n) => {
    let st = n.state || 'member';
    if (n.reachable === false && st !== 'removed') st = 'unreachable';
    const self = view.here && view.here.id === n.id;
    return el('tr', { 'data-node': n.id },
      el('td', {}, el('b', {}, n.id), self ? el('span', { class: 'muted' }, ' (this node)') : null),
      el('td', { class: 'state-' + st }, st),
      el('td', {}, el('code', {}, n.grpc_addr || '')),
      el('td', {}, el('code', {}, n.http_addr || '')),
      el('td', {}, el('code', {}, n.raft_addr || '')),
      el('td', {}, n.locality || ''),
      el('td', { class: 'num', 'data-leaders': n.leaders }, n.leaders),
      el('td', { class: 'num', 'data-replicas': n.replicas }, n.replicas));
  }));
}

function chips(r, here) {
  return r.replicas.map((id) => {
    let cls = 'chip';
    if (id === r.leader) cls += ' leader';
    if (here && id === here.id) cls += ' here';
    return el('span', { class: cls, title: id === r.leader ? 'leader' : 'replica' }, id);
  });
}

function renderRanges(view) {
  const here = view.here;
  $('keyspace').replaceChildren(...view.rs.filter((r) => !r.meta).map((r) => {
    const asleep = r.local && r.local.state === 'Hibernating';
    let cls = 'segment';
    if (asleep) cls += ' asleep';
    if (!r.leader) cls += ' noleader';
    return el('div', { class: cls, 'data-range': r.id, 'data-leader': r.leader, title: `range ${r.id}: ${key(r.start, '−∞')} .. ${key(r.end, '+∞')}` },
      el('div', { class: 'rid' }, 'r' + r.id, asleep ? el('span', { class: 'zz', title: 'asleep on this node' }, 'zZ') : null),
      el('div', { class: 'bounds key' }, key(r.start, '−∞'), ' .. ', key(r.end, '+∞')),
      el('div', { class: 'chips' }, r.leader ? chips(r, here) : [el('span', { class: 'chip noleader' }, '?'), chips(r, here)]));
  }));

  fillBody('ranges', view.rs.map((r) => {
    const l = r.local;
    const lag = l ? Math.max(0, Number(l.commit_index) - Number(l.applied_index)) : null;
    const lagClass = lag === null ? 'num' : lag > 1000 ? 'num lag-bad' : lag > 10 ? 'num lag-warn' : 'num';
    const asleep = l && l.state === 'Hibernating';
    return el('tr', { 'data-range': r.id, 'data-leader': r.leader },
      el('td', {}, el('b', {}, 'r' + r.id)),
      r.meta ? el('td', { class: 'muted' }, 'meta range: the routing table') : el('td', { class: 'key' }, key(r.start, '−∞'), ' .. ', key(r.end, '+∞')),
      el('td', { class: r.leader ? 'leader-cell' : 'error' }, r.leader || 'none'),
      el('td', {}, chips(r, here)),
      el('td', {}, l ? [l.state === 'Hibernating' ? 'asleep' : l.state, asleep ? el('span', { class: 'zz' }, 'zZ') : null] : el('span', { class: 'muted' }, 'not here')),
      el('td', { class: 'num' }, l ? num(l.term) : ''),
      el('td', { class: 'num' }, l ? num(l.commit_index) : ''),
      el('td', { class: 'num' }, l ? num(l.applied_index) : ''),
      el('td', { class: lagClass }, lag === null ? '' : num(lag)),
      el('td', { class: 'num' }, l ? num(l.keys) : ''),
      el('td', { class: 'num' }, l ? bytes(l.size_bytes) : ''));
  }));
}

// ---- auth ----

function needAuth(err) {
  const box = $('auth');
  if (!err) {
    box.hidden = true;
    return;
  }
  box.hidden = false;
  $('auth-message').textContent = state.token
    ? `The node refused this console's token: ${err.status} ${err.reason}: ${err.message}. Sign in again.`
    : `Auth is on: the node answered ${err.status} ${err.reason}: ${err.message}. Sign in to see the cluster (the status panels need the root role).`;
}

async function signIn(ev) {
  ev.preventDefault();
  $('auth-error').textContent = '';
  try {
    state.token = '';
    const body = JSON.stringify({ user: $('auth-user').value, password: $('auth-password').value });
    const resp = JSON.parse(await call('/v1/auth/authenticate', { method: 'POST', body, headers: { 'Content-Type': 'application/json' } }));
    state.token = resp.token || '';
    sessionStorage.setItem(TOKEN_KEY, state.token);
    $('auth-password').value = '';
    refresh();
  } catch (err) {
    $('auth-error').textContent = describe(err);
  }
}

function signOut() {
  state.token = '';
  sessionStorage.removeItem(TOKEN_KEY);
  refresh();
}

// ---- the loop ----

async function refresh() {
  const [ranges, status, members, metrics] = await Promise.allSettled([
    getJSON('/v1/cluster/ranges'),
    getJSON('/v1/cluster/status'),
    getJSON('/v1/cluster/members'),
    call('/metrics'),
  ]);
  const val = (p) => (p.status === 'fulfilled' ? p.value : null);
  const errs = [ranges, status, members].filter((p) => p.status === 'rejected').map((p) => p.reason);
  needAuth(errs.find((e) => e.status === 401));
  $('sign-out').hidden = !state.token;

  const st = val(status);
  const view = merge(val(ranges), st, val(members));
  showError('nodes-error', members.status === 'rejected' ? members.reason : null);
  showError('ranges-error', ranges.status === 'rejected' ? ranges.reason : status.status === 'rejected' ? status.reason : null);
  renderNodes(view);
  renderRanges(view);
  if (metrics.status === 'fulfilled') {
    showError('metrics-error', null);
    if (st && st.node && st.node.uptime_ms) renderMetrics(parseMetrics(metrics.value), 'node', Number(st.node.uptime_ms));
    else renderMetrics(parseMetrics(metrics.value), 'browser', Date.now());
  } else {
    showError('metrics-error', metrics.reason);
  }

  $('cluster').textContent = st && st.cluster_id ? 'cluster ' + st.cluster_id : '';
  $('served-by').textContent = view.here
    ? `served by ${view.here.id} (${view.here.http_addr}, ${view.here.version}), ${view.rs.filter((r) => !r.meta).length} ranges, ${view.nodes.length} nodes`
    : '';
  const now = new Date();
  $('refresh').textContent = (errs.length ? 'partly refreshed ' : 'refreshed ') + now.toLocaleTimeString('en-GB');
  $('refresh').className = errs.length ? 'error' : 'muted';
}

// loop refreshes every REFRESH_MS for as long as the page is open; a
// refresh that throws is shown and the next one still runs.
async function loop() {
  try {
    await refresh();
  } catch (err) {
    $('refresh').textContent = 'refresh failed: ' + err.message;
    $('refresh').className = 'error';
  }
  setTimeout(loop, REFRESH_MS);
}

$('auth-form').addEventListener('submit', signIn);
$('sign-out').addEventListener('click', signOut);
loop();
