// The gpucloud dashboard. It reads the API with the user's bearer token:
// the watch streams (/v1/watch/jobs, /v1/watch/nodes) keep jobs and nodes
// live, GET /v1/fabric gives the switch tree, and queues, tenants, the
// cluster summary and events are polled. EventSource cannot send an
// Authorization header, so the streams are read with fetch.
//
// ?demo=N draws a made-up N-GPU fleet without a server (&churn=1 keeps
// jobs starting and ending); window.gpucloud exposes hooks for the browser
// test (bench, hit-test check, hostlist check).

import { expandHostlist, parseGPUList } from './hostlist.js';
import * as fabric from './fabric.js';
import { Heatmap, C, DIM, cssColour } from './heatmap.js';

const $ = (sel) => document.querySelector(sel);
const params = new URLSearchParams(location.search);
const DEMO = Number(params.get('demo') || 0);
const TOKEN_KEY = 'gpucloud.token';

// ---------- state ----------

const S = {
  token: '',
  who: null, // {role, tenant}
  fabricDoc: null, // GET /v1/fabric, or null when the server has none
  fabricSource: '',
  F: null, // the Fabric drawn
  nodes: new Map(), // name -> api.Node
  jobs: new Map(), // id -> api.Job
  queues: [],
  tenants: [],
  cluster: null,
  events: [],
  skew: 0, // server clock minus ours, ms
  mode: 'tenant',
  selected: '', // job id highlighted
  conn: { jobs: 'connecting', nodes: 'connecting' },
};

// Per-node and per-GPU arrays, rebuilt with the fabric.
let nodePhase, nodeFlags, nodeAlloc, gpuBad, gpuSlot, blockOfNode;
// Running jobs drawn on the map: id -> {key, slot, gpus: Int32Array, nodes: Int32Array, missing}
const placed = new Map();
const slotJob = ['']; // slot 0 is "no job"
let slotTenantHue = new Uint8Array(64), slotJobHue = new Uint8Array(64);
const freeSlots = [];

const PHASE_UNREG = 0, PHASE_READY = 1, PHASE_DOWN = 2;
const FLAG_CORDON = 1, FLAG_DRAIN = 2;

let heatmap;
let dirtyMap = false, dirtyOverlay = false, dirtyTables = false;

function hash(s) {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) { h ^= s.charCodeAt(i); h = Math.imul(h, 16777619); }
  return h >>> 0;
}
const hueOf = (s) => C.HUE + (hash(s) % C.NHUES);

// Tenants get distinct colours in the order they were created (so a new
// tenant does not repaint the others); a tenant the page has not listed
// yet falls back to a hash.
let tenantHues = new Map();
const tenantHue = (t) => tenantHues.get(t) ?? hueOf(t);
const jobHue = (j) => (S.mode === 'job' ? hueOf(j.metadata.id) : tenantHue(j.metadata.tenant || ''));

function setTenants(items) {
  S.tenants = items;
  const sorted = [...items].sort((a, b) => (a.metadata.createdAt || '').localeCompare(b.metadata.createdAt || '') || a.metadata.name.localeCompare(b.metadata.name));
  const next = new Map(sorted.map((t, i) => [t.metadata.name, C.HUE + (i % C.NHUES)]));
  if ([...next].join() === [...tenantHues].join()) return;
  tenantHues = next;
  for (let slot = 1; slot < slotJob.length; slot++) {
    const j = slotJob[slot] && S.jobs.get(slotJob[slot]);
    if (j) slotTenantHue[slot] = tenantHue(j.metadata.tenant || '');
  }
  renderLegend();
  dirtyMap = true;
}

// ---------- fabric ----------

function extraNodes() {
  const out = [];
  for (const n of S.nodes.values()) {
    out.push({ name: n.metadata.name, leaf: n.status.leaf, gpus: n.status.gpus || ((n.status.inventory || {}).gpus || []).length });
  }
  return out;
}

function rebuildFabric() {
  let F;
  if (DEMO) F = fabric.demo(DEMO);
  else if (S.fabricDoc) F = fabric.fromDocument(S.fabricDoc, extraNodes());
  else F = fabric.fromNodes(extraNodes(), S.cluster && S.cluster.fabric);
  S.F = F;
  nodePhase = new Uint8Array(F.numNodes);
  nodeFlags = new Uint8Array(F.numNodes);
  nodeAlloc = new Uint16Array(F.numNodes);
  gpuBad = new Uint8Array(F.numGPUs);
  gpuSlot = new Int32Array(F.numGPUs);
  blockOfNode = new Int32Array(F.numNodes);
  for (let n = 0; n < F.numNodes; n++) blockOfNode[n] = F.leaves[F.nodeLeaf[n]].block;
  for (const n of S.nodes.values()) applyNode(n);
  const running = [...placed.keys()];
  for (const id of running) unplace(id);
  for (const id of running) if (S.jobs.has(id)) placeJob(S.jobs.get(id));
  heatmap.setFabric(F);
  $('#fabric-name').textContent = F.name;
  $('#fabric-name').title = S.fabricSource === 'nodes'
    ? 'the server does not serve GET /v1/fabric: nodes are grouped by the leaf they registered under, blocks are unknown'
    : S.fabricSource === 'demo' ? 'made up in the browser' : 'GET /v1/fabric';
  dirtyMap = dirtyOverlay = dirtyTables = true;
}

let rebuildTimer = 0;
const missedOnce = new Set();
// needRebuild is called when a node or a placement names a node the
// drawn fabric lacks: fetch the fabric again (debounced) and redraw. A
// placement's node that is neither in the fabric nor registered asks only
// once, or every rebuild would ask for the next.
function needRebuild(placementNode) {
  if (placementNode !== undefined) {
    if (missedOnce.has(placementNode)) return;
    missedOnce.add(placementNode);
  }
  if (rebuildTimer || DEMO) return;
  rebuildTimer = setTimeout(async () => {
    await loadFabric();
    rebuildTimer = 0;
    rebuildFabric();
  }, 500);
}

async function loadFabric() {
  try {
    const resp = await api('/v1/fabric');
    const doc = await resp.json();
    S.fabricDoc = doc && doc.spec && (doc.spec.domains || []).length > 0 ? doc : null;
  } catch (e) {
    S.fabricDoc = null; // older servers: group registered nodes by leaf
  }
  S.fabricSource = S.fabricDoc ? 'api' : 'nodes';
}

// ---------- nodes and jobs ----------

function applyNode(n) {
  const F = S.F;
  const i = F.nodeIndex.get(n.metadata.name);
  if (i === undefined) { needRebuild(); return; }
  const st = n.status || {}, spec = n.spec || {};
  nodePhase[i] = st.phase === 'Ready' ? PHASE_READY : PHASE_DOWN;
  nodeFlags[i] = (spec.cordoned ? FLAG_CORDON : 0) | (spec.draining ? FLAG_DRAIN : 0);
  nodeAlloc[i] = st.gpusAllocated || 0;
  const g0 = F.gpuStart[i], ng = F.nodeGPUs(i);
  gpuBad.fill(0, g0, g0 + ng);
  for (const g of st.unhealthy || []) if (g >= 0 && g < ng) gpuBad[g0 + g] = 1;
}

function forgetNode(name) {
  const i = S.F.nodeIndex.get(name);
  if (i === undefined) return;
  nodePhase[i] = PHASE_UNREG;
  nodeFlags[i] = 0;
  nodeAlloc[i] = 0;
  gpuBad.fill(0, S.F.gpuStart[i], S.F.gpuStart[i + 1]);
  needRebuild(); // a node the fabric file does not list leaves the map
}

function allocSlot(j) {
  const slot = freeSlots.length > 0 ? freeSlots.pop() : slotJob.length;
  slotJob[slot] = j.metadata.id;
  if (slot >= slotTenantHue.length) {
    const grow = (a) => { const b = new Uint8Array(a.length * 2); b.set(a); return b; };
    slotTenantHue = grow(slotTenantHue);
    slotJobHue = grow(slotJobHue);
  }
  slotTenantHue[slot] = tenantHue(j.metadata.tenant || '');
  slotJobHue[slot] = hueOf(j.metadata.id);
  return slot;
}

function unplace(id) {
  const p = placed.get(id);
  if (!p) return;
  for (const g of p.gpus) if (gpuSlot[g] === p.slot) gpuSlot[g] = 0;
  slotJob[p.slot] = '';
  freeSlots.push(p.slot);
  placed.delete(id);
  dirtyMap = true;
}

function placeJob(j) {
  const id = j.metadata.id, pl = j.status && j.status.placement;
  if (!pl || j.status.phase !== 'Running') { unplace(id); return; }
  const key = JSON.stringify(pl.groups);
  if (placed.has(id) && placed.get(id).key === key) return;
  unplace(id);
  const F = S.F, gpus = [], nodes = [];
  let missing = 0;
  try {
    for (const grp of pl.groups || []) {
      const idx = parseGPUList(grp.gpus);
      for (const name of expandHostlist(grp.hosts)) {
        const n = F.nodeIndex.get(name);
        if (n === undefined) { missing++; needRebuild(name); continue; }
        nodes.push(n);
        const ng = F.nodeGPUs(n);
        for (const g of idx) if (g < ng) gpus.push(F.gpuStart[n] + g);
      }
    }
  } catch (e) {
    console.warn(`job ${id}: placement: ${e.message}`);
  }
  const slot = allocSlot(j);
  const ga = Int32Array.from(gpus);
  for (const g of ga) gpuSlot[g] = slot;
  placed.set(id, { key, slot, gpus: ga, nodes: Int32Array.from(nodes), missing });
  dirtyMap = true;
}

let jobsVersion = 0;
function applyJob(type, j) {
  const id = j.metadata.id;
  jobsVersion++;
  if (type === 'DELETED') {
    S.jobs.delete(id);
    unplace(id);
    if (S.selected === id) select('');
  } else {
    S.jobs.set(id, j);
    placeJob(j);
    if (S.selected === id) { heatmap.selected = selectedNodes(); dirtyOverlay = true; }
  }
  dirtyTables = true;
}

// ---------- colours ----------

// computeColours fills heatmap.colour (one palette index per GPU) from the
// node and job arrays in one pass, and counts use per block.
function computeColours() {
  const F = S.F, col = heatmap.colour, mode = S.mode;
  const sel = S.selected && placed.has(S.selected) ? placed.get(S.selected).slot : 0;
  const tenantView = !S.who || S.who.role !== 'admin';
  const hues = mode === 'job' ? slotJobHue : slotTenantHue;
  const nb = F.blocks.length;
  const bUsed = new Int32Array(nb), bTotal = new Int32Array(nb), bDown = new Int32Array(nb);
  for (let n = 0; n < F.numNodes; n++) {
    const ph = nodePhase[n], fl = nodeFlags[n], g0 = F.gpuStart[n], g1 = F.gpuStart[n + 1], b = blockOfNode[n];
    bTotal[b] += g1 - g0;
    if (ph === PHASE_DOWN) bDown[b]++;
    let other = 0;
    if (tenantView && nodeAlloc[n] > 0) {
      other = nodeAlloc[n];
      for (let i = g0; i < g1; i++) if (gpuSlot[i] !== 0) other--;
    }
    for (let i = g0; i < g1; i++) {
      const slot = gpuSlot[i];
      let c;
      if (slot !== 0) bUsed[b]++;
      if (ph === PHASE_UNREG) c = C.UNREG;
      else if (ph === PHASE_DOWN) c = C.DOWN;
      else if (gpuBad[i]) c = C.BAD;
      else if (mode === 'health' && fl & FLAG_DRAIN) c = C.DRAIN;
      else if (mode === 'health' && fl & FLAG_CORDON) c = C.CORDON;
      else if (slot !== 0) c = mode === 'health' ? C.BUSY : hues[slot];
      else if (other > 0) { other--; bUsed[b]++; c = C.OTHER; }
      else if (fl & FLAG_DRAIN) c = C.DRAIN;
      else if (fl & FLAG_CORDON) c = C.CORDON;
      else c = mode === 'health' ? C.HFREE : C.FREE;
      if (sel !== 0 && slot !== sel) c += DIM;
      col[i] = c;
    }
  }
  const texts = [];
  for (let b = 0; b < nb; b++) {
    const pct = bTotal[b] ? Math.round((100 * bUsed[b]) / bTotal[b]) : 0;
    texts.push(`${pct}% in use${bDown[b] ? ` · ${fmtInt(bDown[b])} down` : ''}`);
  }
  const changed = texts.join('|') !== heatmap.blockText.join('|');
  heatmap.setBlockText(texts);
  return changed;
}

function redrawMap() {
  if (computeColours()) dirtyOverlay = true;
  heatmap.paint();
}

function selectedNodes() {
  const p = placed.get(S.selected);
  return p ? p.nodes : null;
}

function select(id) {
  S.selected = S.selected === id ? '' : id;
  heatmap.selected = S.selected ? selectedNodes() : null;
  dirtyMap = dirtyOverlay = dirtyTables = true;
}

// ---------- the frame loop ----------

let lastTables = 0;
function frame(now) {
  if (S.F) {
    if (dirtyMap) { dirtyMap = false; redrawMap(); }
    if (dirtyOverlay) { dirtyOverlay = false; heatmap.drawOverlay(); }
    // Tables are DOM: at most four times a second, and each second for the
    // waiting times.
    if ((dirtyTables && now - lastTables > 250) || now - lastTables > 1000) {
      dirtyTables = false;
      lastTables = now;
      renderTables();
    }
  }
  requestAnimationFrame(frame);
}

// ---------- API ----------

class HTTPError extends Error {
  constructor(status, msg) { super(msg); this.status = status; }
}

async function api(path, opts = {}) {
  const resp = await fetch(path, {
    ...opts,
    cache: 'no-store',
    headers: { Authorization: `Bearer ${S.token}`, Accept: 'application/json', ...(opts.headers || {}) },
  });
  const date = resp.headers.get('Date');
  if (date) S.skew = Date.parse(date) - Date.now();
  if (!resp.ok) {
    let msg = `${resp.status} ${resp.statusText}`;
    try { msg = (await resp.json()).error || msg; } catch (e) { /* not JSON */ }
    if (resp.status === 401) showLogin(msg);
    throw new HTTPError(resp.status, `${path}: ${msg}`);
  }
  return resp;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// readSSE calls onMessage(event, data) for each server-sent event of body.
async function readSSE(body, onMessage, onChunk) {
  const reader = body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    onChunk();
    buf += dec.decode(value, { stream: true });
    if (buf.includes('\r')) buf = buf.replace(/\r\n?/g, '\n');
    let pos = 0, end;
    while ((end = buf.indexOf('\n\n', pos)) >= 0) {
      const block = buf.slice(pos, end);
      pos = end + 2;
      let event = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (line === '' || line[0] === ':') continue;
        const c = line.indexOf(':');
        const field = c < 0 ? line : line.slice(0, c);
        let v = c < 0 ? '' : line.slice(c + 1);
        if (v[0] === ' ') v = v.slice(1);
        if (field === 'event') event = v;
        else if (field === 'data') data.push(v);
      }
      if (data.length > 0) onMessage(event, data.join('\n'));
    }
    buf = buf.slice(pos);
  }
}

// watch keeps one stream open, reconnecting with backoff. Every connection
// starts with the whole collection (ADDED events); once the stream goes
// quiet after that snapshot, objects it did not mention are dropped, so a
// reconnect also catches deletions missed while away.
async function watch(name, path, collection, apply) {
  let backoff = 500;
  for (;;) {
    try {
      const resp = await api(path);
      setConn(name, 'live');
      backoff = 500;
      const seen = new Set();
      let last = performance.now(), swept = false;
      const sweep = () => {
        if (swept) return;
        swept = true;
        clearInterval(sweeper);
        for (const [key, obj] of [...collection.entries()]) if (!seen.has(key)) apply('DELETED', obj);
      };
      // The end of the snapshot: a "synced" event if the server sends one,
      // else the first lull.
      const sweeper = setInterval(() => { if (performance.now() - last >= 300) sweep(); }, 100);
      try {
        await readSSE(resp.body, (event, data) => {
          if (event === 'synced') { sweep(); return; }
          const ev = JSON.parse(data);
          if (!swept && ev.object && ev.object.metadata) seen.add(ev.object.metadata.id || ev.object.metadata.name);
          apply(ev.type, ev.object);
        }, () => { last = performance.now(); });
      } finally {
        clearInterval(sweeper);
      }
    } catch (e) {
      if (e instanceof HTTPError && e.status === 401) { setConn(name, 'unauthorized'); return; }
      console.warn(`watch ${path}: ${e.message}`);
    }
    setConn(name, 'reconnecting');
    await sleep(backoff);
    backoff = Math.min(backoff * 2, 5000);
  }
}

function setConn(name, st) {
  S.conn[name] = st;
  const vals = Object.values(S.conn);
  const el = $('#conn');
  const live = vals.every((v) => v === 'live');
  el.textContent = live ? 'live' : vals.includes('unauthorized') ? 'signed out' : vals.includes('reconnecting') ? 'reconnecting…' : 'connecting…';
  el.className = live ? 'conn live' : 'conn down';
}

async function poll() {
  for (let i = 0; ; i++) {
    const jobs = [api('/v1/cluster').then((r) => r.json()).then((v) => { S.cluster = v; return reconcileNodes(); })];
    if (i % 3 === 0) {
      jobs.push(
        api('/v1/queues').then((r) => r.json()).then((v) => { S.queues = v.items || []; }),
        api('/v1/tenants').then((r) => r.json()).then((v) => setTenants(v.items || [])),
        api('/v1/events').then((r) => r.json()).then((v) => { S.events = (v.items || []).slice(-40).reverse(); }));
    }
    await Promise.allSettled(jobs);
    dirtyTables = true;
    await sleep(2000);
  }
}

// reconcileNodes lists the nodes again when the server counts a different
// number of live nodes than the page: the nodes stream reports changes of
// a node's record, but a lease that expires (Ready to Down) or comes back
// changes no record, and neither does a job starting or ending.
async function reconcileNodes() {
  if (!S.cluster || S.conn.nodes !== 'live') return;
  let up = 0;
  for (const n of S.nodes.values()) if (n.status.phase === 'Ready') up++;
  // A tenant sees only its own jobs; the other tenants' GPUs come from the
  // nodes' counts, which the stream does not send as they change either.
  let alloc = S.cluster.gpusAllocated;
  if (S.who && S.who.role !== 'admin') { alloc = 0; for (const n of S.nodes.values()) alloc += n.status.gpusAllocated || 0; }
  if (up === S.cluster.nodesUp && S.nodes.size === S.cluster.nodes && alloc === S.cluster.gpusAllocated) return;
  const list = await api('/v1/nodes').then((r) => r.json());
  for (const n of list.items || []) {
    const old = S.nodes.get(n.metadata.name);
    if (old && (old.metadata.resourceVersion || 0) > (n.metadata.resourceVersion || 0)) continue;
    S.nodes.set(n.metadata.name, n);
    applyNode(n);
  }
  dirtyMap = dirtyTables = true;
}

// ---------- sign-in ----------

function showLogin(msg) {
  const dlg = $('#login');
  $('#login-error').textContent = msg || '';
  if (!dlg.open) dlg.showModal();
}

async function start() {
  const who = await api('/v1/whoami').then((r) => r.json());
  S.who = who;
  renderLegend();
  $('#who').textContent = who.role === 'admin' ? 'admin' : `${who.role}${who.tenant ? ' · ' + who.tenant : ''}`;
  // Tenants first, so that tenants' colours are right from the first paint.
  await Promise.allSettled([loadFabric(), api('/v1/tenants').then((r) => r.json()).then((v) => setTenants(v.items || [])),
    api('/v1/cluster').then((r) => r.json()).then((v) => { S.cluster = v; })]);
  rebuildFabric();
  watch('nodes', '/v1/watch/nodes', S.nodes, (type, n) => {
    if (type === 'DELETED') { S.nodes.delete(n.metadata.name); forgetNode(n.metadata.name); }
    else { S.nodes.set(n.metadata.name, n); applyNode(n); }
    dirtyMap = dirtyTables = true;
  });
  watch('jobs', '/v1/watch/jobs', S.jobs, applyJob);
  poll();
}

function setupLogin() {
  $('#login-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const tok = $('#token').value.trim();
    if (!tok) return;
    S.token = tok;
    try {
      await api('/v1/whoami');
    } catch (err) {
      $('#login-error').textContent = err.message;
      return;
    }
    localStorage.setItem(TOKEN_KEY, tok);
    $('#login').close();
    location.reload();
  });
  $('#logout').addEventListener('click', () => {
    localStorage.removeItem(TOKEN_KEY);
    location.reload();
  });
}

// ---------- tables ----------

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'on') for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    else if (k === 'style') Object.assign(el.style, v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const kid of kids.flat()) if (kid !== null && kid !== undefined && kid !== false) el.append(kid instanceof Node ? kid : String(kid));
  return el;
}

const fmtInt = (n) => Number(n || 0).toLocaleString('en-US');
const plural = (n, one, many) => `${fmtInt(n)} ${n === 1 ? one : many || one + 's'}`;

// gpusInUse counts a node's GPUs in use: those of the jobs the page sees,
// or, for a tenant (who sees only its own jobs), the server's count when
// it is higher.
function gpusInUse(n) {
  const i = S.F ? S.F.nodeIndex.get(n.metadata.name) : undefined;
  let used = 0;
  if (i !== undefined) for (let g = S.F.gpuStart[i]; g < S.F.gpuStart[i + 1]; g++) if (gpuSlot[g]) used++;
  if (S.who && S.who.role !== 'admin') used = Math.max(used, n.status.gpusAllocated || 0);
  return used;
}
const now = () => Date.now() + S.skew;

function dur(ms) {
  if (!(ms >= 0)) ms = 0;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, '0')}s`;
  const hr = Math.floor(m / 60);
  if (hr < 48) return `${hr}h ${String(m % 60).padStart(2, '0')}m`;
  return `${Math.floor(hr / 24)}d ${hr % 24}h`;
}
const since = (t) => (t ? dur(now() - Date.parse(t)) : '');
const jobName = (j) => j.metadata.name || j.metadata.id;
const jobGPUs = (j) => (j.status.placement ? j.status.placement.gpus : (j.spec.replicas || 0) * (j.spec.gpusPerReplica || 0));

function swatch(c) { return h('span', { class: 'sw', style: { background: c } }); }

function table(el, head, rows, more) {
  const body = rows.length > 0 ? rows : [h('tr', { class: 'empty' }, h('td', { colspan: head.length }, 'none'))];
  const t = h('table', {}, h('thead', {}, h('tr', {}, head.map((x) => h('th', {}, x)))), h('tbody', {}, body));
  el.replaceChildren(t, more ? h('div', { class: 'more' }, more) : '');
}

function tenantQueue(j) {
  const t = j.metadata.tenant || '', q = j.spec.queue || 'default';
  return h('td', { title: `tenant ${t}, queue ${q}` }, t === q ? t : `${t} · ${q}`);
}

function jobCell(j) {
  const colour = cssColour(jobHue(j));
  return h('td', { class: 'job', title: j.metadata.id }, swatch(colour), jobName(j));
}

const LIMIT = 100;

// jobLists sorts the jobs into the tables' order, again only after a job
// changed (the tables are redrawn every second for the clocks).
let lists = null;
function jobLists() {
  if (lists && lists.version === jobsVersion) return lists;
  const pending = [], running = [], done = [];
  for (const j of S.jobs.values()) {
    const ph = j.status.phase;
    if (ph === 'Running') running.push(j);
    else if (ph === 'Succeeded' || ph === 'Failed' || ph === 'Cancelled') done.push(j);
    else pending.push(j);
  }
  pending.sort((a, b) => (a.status.submittedAt || '').localeCompare(b.status.submittedAt || ''));
  running.sort((a, b) => (b.status.startedAt || '').localeCompare(a.status.startedAt || ''));
  done.sort((a, b) => (b.status.finishedAt || '').localeCompare(a.status.finishedAt || ''));
  lists = { version: jobsVersion, pending, running, done: done.slice(0, 12) };
  return lists;
}

function renderTables() {
  const { pending, running, done } = jobLists();

  $('#queue-count').textContent = pending.length ? `${fmtInt(pending.length)} · ${fmtInt(pending.reduce((s, j) => s + jobGPUs(j), 0))} GPUs` : '';
  table($('#queue'), ['#', 'job', 'tenant · queue', 'GPUs', 'prio', 'waiting', 'reason'],
    pending.slice(0, LIMIT).map((j, i) => h('tr', { 'data-job': j.metadata.id, 'data-phase': 'Pending' },
      h('td', { class: 'num' }, i + 1), jobCell(j), tenantQueue(j),
      h('td', { class: 'num' }, fmtInt(jobGPUs(j))), h('td', { class: 'num' }, j.spec.priority || 0),
      h('td', { class: 'num' }, since(j.status.submittedAt)), h('td', { class: 'reason' }, j.status.reason || '—'))),
    pending.length > LIMIT ? `${fmtInt(pending.length - LIMIT)} more waiting` : '');

  $('#running-count').textContent = running.length ? `${fmtInt(running.length)} · ${fmtInt(running.reduce((s, j) => s + jobGPUs(j), 0))} GPUs` : '';
  table($('#running'), ['job', 'tenant', 'GPUs', 'nodes', 'leaves', 'running', 'restarts'],
    running.slice(0, LIMIT).map((j) => {
      const p = j.status.placement || {};
      return h('tr', {
        'data-job': j.metadata.id, 'data-phase': 'Running',
        class: `pick${S.selected === j.metadata.id ? ' selected' : ''}`,
        title: 'show its placement on the map', on: { click: () => select(j.metadata.id) },
      },
      jobCell(j), h('td', {}, j.metadata.tenant), h('td', { class: 'num' }, fmtInt(jobGPUs(j))),
      h('td', { class: 'num' }, fmtInt(p.nodes)),
      h('td', { class: 'num', title: 'leaf switches spanned / fewest that could hold the gang' }, p.minLeaves ? `${p.leaves} / ${p.minLeaves}` : (p.leaves ?? '')),
      h('td', { class: 'num' }, since(j.status.startedAt)), h('td', { class: 'num' }, j.status.restarts || 0));
    }),
    running.length > LIMIT ? `${fmtInt(running.length - LIMIT)} more running` : '');

  table($('#recent'), ['job', 'tenant', 'phase', 'ran', 'finished', 'detail'],
    done.map((j) => h('tr', { 'data-job': j.metadata.id, 'data-phase': j.status.phase },
      jobCell(j), h('td', {}, j.metadata.tenant), h('td', {}, h('span', { class: `phase ${j.status.phase}` }, j.status.phase)),
      h('td', { class: 'num' }, j.status.startedAt && j.status.finishedAt ? dur(Date.parse(j.status.finishedAt) - Date.parse(j.status.startedAt)) : ''),
      h('td', { class: 'num' }, j.status.finishedAt ? `${since(j.status.finishedAt)} ago` : ''),
      h('td', { class: 'reason' }, j.status.reason || (j.status.exitCode ? `exit ${j.status.exitCode}` : '')))));

  renderUsage(running, pending);
  renderNodes();
  renderSummary(running, pending);
  renderEvents();
  renderSelection();
}

function bar(used, quota) {
  if (!(quota > 0)) return h('td', { class: 'bar' }, h('span', { class: 'q' }, used > 0 ? 'no quota' : ''));
  const pct = Math.min(100, (100 * used) / quota);
  return h('td', { class: 'bar', title: `${fmtInt(used)} of ${fmtInt(quota)} GPUs` },
    h('span', { class: 'track' }, h('span', { class: used > quota ? 'fill over' : 'fill', style: { width: `${pct}%` } })),
    h('span', { class: 'q' }, `${Math.round((100 * used) / quota)}%`));
}

function renderUsage(running, pending) {
  const total = S.F ? S.F.numGPUs : 0;
  // Quota of a queue; a quotaRemainder queue gets what the other top-level
  // queues leave.
  const top = S.queues.filter((q) => !q.spec.parent);
  const quotaOf = (q) => q.spec.quotaRemainder
    ? Math.max(0, (S.cluster ? S.cluster.gpus : total) - top.filter((o) => o !== q).reduce((s, o) => s + (o.spec.quota || 0), 0))
    : q.spec.quota || 0;
  const usedQ = new Map(), usedT = new Map(), pendT = new Map(), runT = new Map();
  const parent = new Map(S.queues.map((q) => [q.metadata.name, q.spec.parent || '']));
  for (const j of running) {
    const g = jobGPUs(j);
    for (let q = j.spec.queue || 'default', hops = 0; q && hops < 16; q = parent.get(q), hops++) usedQ.set(q, (usedQ.get(q) || 0) + g);
    usedT.set(j.metadata.tenant, (usedT.get(j.metadata.tenant) || 0) + g);
    runT.set(j.metadata.tenant, (runT.get(j.metadata.tenant) || 0) + 1);
  }
  for (const j of pending) pendT.set(j.metadata.tenant, (pendT.get(j.metadata.tenant) || 0) + jobGPUs(j));
  // A tenant's quota: the queues reserved to it alone.
  const quotaT = new Map();
  for (const q of S.queues) {
    const ts = q.spec.tenants || [];
    if (ts.length === 1) quotaT.set(ts[0], (quotaT.get(ts[0]) || 0) + quotaOf(q));
  }
  const tenants = new Set([...S.tenants.map((t) => t.metadata.name), ...usedT.keys(), ...pendT.keys()]);
  table($('#tenants'), ['tenant', 'running', 'GPUs', 'waiting', 'quota', 'use of quota'],
    [...tenants].sort().map((t) => h('tr', { 'data-tenant': t },
      h('td', { class: 'job' }, swatch(cssColour(tenantHue(t))), t), h('td', { class: 'num' }, runT.get(t) || 0),
      h('td', { class: 'num' }, fmtInt(usedT.get(t) || 0)), h('td', { class: 'num' }, fmtInt(pendT.get(t) || 0)),
      h('td', { class: 'num', title: quotaT.has(t) ? 'sum of the queues reserved to this tenant' : 'no queue is reserved to this tenant: it shares' }, quotaT.has(t) ? fmtInt(quotaT.get(t)) : 'shared'),
      bar(usedT.get(t) || 0, quotaT.get(t)))));
  table($('#queues'), ['queue', 'tenants', 'GPUs', 'quota', 'borrow', 'use of quota'],
    S.queues.map((q) => h('tr', {},
      h('td', {}, q.spec.parent ? `${q.spec.parent} / ${q.metadata.name}` : q.metadata.name),
      h('td', { class: 'reason' }, (q.spec.tenants || []).join(', ') || 'all'),
      h('td', { class: 'num' }, fmtInt(usedQ.get(q.metadata.name) || 0)),
      h('td', { class: 'num', title: q.spec.quotaRemainder ? 'what the other queues leave' : '' }, fmtInt(quotaOf(q)) + (q.spec.quotaRemainder ? '*' : '')),
      h('td', { class: 'num' }, q.spec.borrowingLimit === undefined || q.spec.borrowingLimit === null ? '∞' : fmtInt(q.spec.borrowingLimit)),
      bar(usedQ.get(q.metadata.name) || 0, quotaOf(q)))));
}

// simulated nodes (label gpucloud.io/simulated=true, as `gpucloud up
// --preset` registers them) have stand-in GPUs.
function simulated(n) {
  return ((n.metadata && n.metadata.labels) || {})['gpucloud.io/simulated'] === 'true';
}

function nodeProblems(n) {
  const out = [];
  if (n.status.phase !== 'Ready') out.push('down');
  if (n.spec && n.spec.draining) out.push('draining');
  else if (n.spec && n.spec.cordoned) out.push('cordoned');
  if ((n.status.unhealthy || []).length) out.push(`GPU ${n.status.unhealthy.join(',')} unhealthy`);
  return out;
}

function renderNodes() {
  const F = S.F;
  let ready = 0, down = 0, cordoned = 0, bad = 0;
  const rows = [];
  const all = [...S.nodes.values()];
  for (const n of all) {
    const p = nodeProblems(n);
    if (n.status.phase === 'Ready') ready++; else down++;
    if (n.spec && (n.spec.cordoned || n.spec.draining)) cordoned++;
    if ((n.status.unhealthy || []).length) bad++;
    if (p.length || all.length <= 48) rows.push([p.length ? 0 : 1, n, p]);
  }
  rows.sort((a, b) => a[0] - b[0] || a[1].metadata.name.localeCompare(b[1].metadata.name, 'en', { numeric: true }));
  const unreg = F ? F.numNodes - all.filter((n) => F.nodeIndex.has(n.metadata.name)).length : 0;
  $('#node-summary').replaceChildren(
    h('span', { class: 'chip ok' }, `${fmtInt(ready)} ready`),
    h('span', { class: down ? 'chip bad' : 'chip' }, `${fmtInt(down)} down`),
    h('span', { class: cordoned ? 'chip warn' : 'chip' }, `${fmtInt(cordoned)} cordoned`),
    h('span', { class: bad ? 'chip bad' : 'chip' }, `${fmtInt(bad)} with failed GPUs`),
    unreg > 0 ? h('span', { class: 'chip', title: 'in the fabric, no agent registered' }, `${fmtInt(unreg)} not registered`) : '');
  table($('#nodes'), ['node', 'leaf', 'state', 'GPUs used', 'reason'],
    rows.slice(0, LIMIT).map(([, n, p]) => h('tr', { 'data-node': n.metadata.name },
      h('td', {}, n.metadata.name, simulated(n) ? h('span', { class: 'dim', title: 'gpucloud.io/simulated: stand-in GPUs, ranks run elsewhere' }, ' simulated') : ''), h('td', {}, n.status.leaf || ''),
      h('td', {}, h('span', { class: p.length ? 'phase Failed' : 'phase Succeeded' }, p.length ? p.join(', ') : 'ready')),
      h('td', { class: 'num' }, `${gpusInUse(n)} / ${n.status.gpus || 0}`),
      h('td', { class: 'reason' }, n.status.reason || ''))),
    rows.length > LIMIT ? `${fmtInt(rows.length - LIMIT)} more` : all.length > 48 ? `healthy nodes are not listed (${fmtInt(all.length)} nodes)` : '');
}

function renderSummary(running, pending) {
  const F = S.F;
  const ready = [...S.nodes.values()].filter((n) => n.status.phase === 'Ready').length;
  const total = F ? F.numGPUs : 0;
  let used = 0;
  for (const j of running) used += jobGPUs(j);
  if (S.cluster && S.who && S.who.role !== 'admin') used = S.cluster.gpusAllocated;
  $('#sum-nodes').textContent = `${fmtInt(ready)} / ${fmtInt(F ? F.numNodes : 0)}`;
  $('#sum-gpus').textContent = `${fmtInt(used)} / ${fmtInt(total)}`;
  $('#sum-util').textContent = total ? `${Math.round((100 * used) / total)}%` : '—';
  $('#sum-running').textContent = fmtInt(running.length);
  $('#sum-pending').textContent = fmtInt(pending.length);
}

function renderEvents() {
  $('#events').replaceChildren(...(S.events.length ? S.events.map((e) => h('li', { class: e.type === 'Warning' ? 'warn' : '' },
    h('time', {}, new Date(e.time).toLocaleTimeString('en-GB')), ' ', h('b', {}, e.reason), ' ',
    h('span', { class: 'kind' }, `${e.kind} ${e.name}`), e.message ? ` — ${e.message}` : '')) : [h('li', { class: 'empty' }, 'none')]));
}

function renderSelection() {
  const el = $('#selection');
  const j = S.jobs.get(S.selected);
  if (!j || !placed.has(S.selected)) { el.hidden = true; return; }
  const p = j.status.placement || {};
  el.hidden = false;
  el.replaceChildren(swatch(cssColour(jobHue(j))),
    h('b', {}, jobName(j)), ` · ${j.metadata.tenant} · ${fmtInt(p.gpus)} GPUs on ${plural(p.nodes, 'node')}, ${plural(p.leaves, 'leaf', 'leaves')}` +
    (p.minLeaves ? ` (fewest possible ${p.minLeaves})` : '') + (p.leafNames ? ` · ${p.leafNames}` : ''),
    h('button', { type: 'button', on: { click: () => select('') } }, 'clear'));
}

function renderLegend() {
  const items = S.mode === 'health'
    ? [[C.HFREE, 'free'], [C.BUSY, 'in use'], [C.CORDON, 'cordoned'], [C.DRAIN, 'draining'], [C.BAD, 'failed GPU'], [C.DOWN, 'node down'], [C.UNREG, 'not registered']]
    : [[C.FREE, 'free'], ...(S.who && S.who.role !== 'admin' ? [[C.OTHER, 'other tenants']] : []), [C.CORDON, 'cordoned'], [C.DRAIN, 'draining'], [C.BAD, 'failed GPU'], [C.DOWN, 'node down'], [C.UNREG, 'not registered']];
  const el = $('#legend');
  el.replaceChildren(...items.map(([c, t]) => h('span', {}, swatch(cssColour(c)), t)),
    S.mode === 'health' ? '' : h('span', { class: 'hint' }, S.mode === 'tenant' ? 'colours: tenants (see usage)' : 'colours: one per job'));
}

// ---------- the map's interaction ----------

function setupMap() {
  heatmap = new Heatmap($('#map-wrap'), $('#map'), $('#map-overlay'), $('#map-hover'));
  const tip = $('#tooltip');
  const canvas = $('#map-overlay');
  let lastNode = -2;
  canvas.addEventListener('mousemove', (e) => {
    const r = canvas.getBoundingClientRect();
    const hit = heatmap.hitTest(e.clientX - r.left, e.clientY - r.top);
    if (hit.node !== lastNode) { heatmap.showHover(hit.node); lastNode = hit.node; }
    if (hit.leaf < 0 && hit.block < 0) { tip.hidden = true; return; }
    tip.replaceChildren(...describe(hit));
    tip.hidden = false;
    const x = Math.min(e.clientX + 14, window.innerWidth - tip.offsetWidth - 8);
    const y = Math.min(e.clientY + 14, window.innerHeight - tip.offsetHeight - 8);
    tip.style.left = `${x}px`;
    tip.style.top = `${y}px`;
  });
  canvas.addEventListener('mouseleave', () => { tip.hidden = true; heatmap.showHover(-1); lastNode = -2; });
  canvas.addEventListener('click', (e) => {
    const r = canvas.getBoundingClientRect();
    const hit = heatmap.hitTest(e.clientX - r.left, e.clientY - r.top);
    const slot = hit.gpu >= 0 ? gpuSlot[hit.gpu] : 0;
    select(slot ? slotJob[slot] : '');
  });
  $('#mode').addEventListener('change', (e) => {
    S.mode = e.target.value;
    renderLegend();
    dirtyMap = dirtyTables = true;
  });
  const zoom = (z) => { heatmap.zoom = z; heatmap.relayout(); dirtyMap = dirtyOverlay = true; };
  $('#zoom-in').addEventListener('click', () => zoom(Math.min(24, (heatmap.zoom || heatmap.g.c / heatmap.g.d) + 1)));
  $('#zoom-out').addEventListener('click', () => zoom(Math.max(1, (heatmap.zoom || heatmap.g.c / heatmap.g.d) - 1)));
  $('#zoom-fit').addEventListener('click', () => zoom(0));
  let resizeTimer = 0;
  new ResizeObserver(() => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { if (S.F) { heatmap.relayout(); dirtyMap = dirtyOverlay = true; } }, 100);
  }).observe($('#map-wrap'));
  document.addEventListener('keydown', (e) => { if (e.key === 'Escape') select(''); });
}

function describe(hit) {
  const F = S.F;
  if (hit.leaf < 0) {
    const b = F.blocks[hit.block];
    const n0 = F.leaves[b.leafStart].nodeStart, last = F.leaves[b.leafStart + b.leafCount - 1];
    const n1 = last.nodeStart + last.nodeCount;
    let up = 0, used = 0;
    for (let n = n0; n < n1; n++) if (nodePhase[n] === PHASE_READY) up++;
    for (let i = F.gpuStart[n0]; i < F.gpuStart[n1]; i++) if (gpuSlot[i]) used++;
    return [h('b', {}, b.name), h('div', {}, `${plural(b.leafCount, 'leaf', 'leaves')} · ${fmtInt(up)}/${fmtInt(n1 - n0)} nodes ready · ${fmtInt(used)}/${fmtInt(F.gpuStart[n1] - F.gpuStart[n0])} GPUs in use`)];
  }
  const leaf = F.leaves[hit.leaf];
  const out = [];
  if (hit.node < 0) {
    let up = 0, used = 0, gpus = 0;
    for (let n = leaf.nodeStart; n < leaf.nodeStart + leaf.nodeCount; n++) {
      if (nodePhase[n] === PHASE_READY) up++;
      for (let i = F.gpuStart[n]; i < F.gpuStart[n + 1]; i++) { gpus++; if (gpuSlot[i]) used++; }
    }
    out.push(h('b', {}, leaf.name), h('div', { class: 'dim' }, `leaf switch in ${F.blocks[leaf.block].name}`), h('div', {}, `${up}/${leaf.nodeCount} nodes ready · ${used}/${gpus} GPUs in use`));
    return out;
  }
  const name = F.nodeNames[hit.node];
  const n = S.nodes.get(name);
  out.push(h('b', {}, name), hit.gpu >= 0 ? ` GPU ${hit.gpu - F.gpuStart[hit.node]}` : '');
  out.push(h('div', { class: 'dim' }, `${leaf.name} in ${F.blocks[leaf.block].name}`, n && simulated(n) ? ' · simulated' : ''));
  if (!n) out.push(h('div', { class: 'dim' }, 'no agent registered'));
  else {
    const p = nodeProblems(n);
    out.push(h('div', {}, p.length ? p.join(', ') : 'ready', ` · ${gpusInUse(n)}/${n.status.gpus || 0} GPUs in use`));
    if (n.status.reason) out.push(h('div', { class: 'dim' }, n.status.reason));
  }
  if (hit.gpu >= 0 && gpuSlot[hit.gpu]) {
    const j = S.jobs.get(slotJob[gpuSlot[hit.gpu]]);
    if (j) out.push(h('div', {}, swatch(cssColour(jobHue(j))), `${jobName(j)} · ${j.metadata.tenant} · ${fmtInt(jobGPUs(j))} GPUs`));
  }
  return out;
}

// ---------- demo ----------

function rng(seed) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// demoState makes nodes, queues and jobs for the demo fleet: about 85%
// of the GPUs busy with gangs of many sizes from six tenants, a few nodes
// down, cordoned or with a failed GPU, and a queue of waiting gangs.
function demoState(F) {
  const rand = rng(42);
  const tenants = ['openmind', 'llm-core', 'vision', 'speech', 'research', 'inference'];
  const t0 = Date.now();
  const iso = (ms) => new Date(ms).toISOString();
  S.who = { role: 'admin' };
  setTenants(tenants.map((t) => ({ metadata: { name: t } })));
  S.queues = tenants.map((t, i) => ({ metadata: { name: t }, spec: { quota: Math.floor((F.numGPUs * [0.3, 0.25, 0.15, 0.1, 0.1, 0.1][i]) / 8) * 8, tenants: [t], weight: 1 } }));
  for (let i = 0; i < F.numNodes; i++) {
    const r = rand();
    const node = {
      metadata: { name: F.nodeNames[i] },
      spec: { cordoned: r < 0.006, draining: r < 0.002 },
      status: { phase: r > 0.997 ? 'Down' : 'Ready', leaf: F.leaves[F.nodeLeaf[i]].name, gpus: F.nodeGPUs(i), unhealthy: rand() < 0.003 ? [Math.floor(rand() * 8)] : [] },
    };
    if (node.status.phase === 'Down') node.status.reason = 'lease expired';
    if (node.spec.cordoned) node.status.reason = 'health check: XID 79';
    S.nodes.set(node.metadata.name, node);
    applyNode(node);
  }
  const sizes = [[1, 0.25], [2, 0.1], [4, 0.1], [8, 0.2], [16, 0.1], [64, 0.1], [256, 0.08], [1024, 0.05], [4096, 0.02]];
  const pick = () => { let r = rand(); for (const [s, p] of sizes) { if ((r -= p) <= 0) return s; } return 8; };
  let n = 0, k = 0;
  const width = F.nodeNames[0].length - 5;
  const hostlist = (a, b) => (a === b ? F.nodeNames[a] : `ndv5-[${String(a).padStart(width, '0')}-${String(b).padStart(width, '0')}]`);
  while (n < F.numNodes) {
    const size = pick();
    const tenant = tenants[Math.floor(rand() * tenants.length)];
    const id = `demo-${String(k++).padStart(6, '0')}`;
    if (rand() < 0.15) { n += Math.max(1, size / 8); continue; } // free
    let groups, nodes;
    if (size < 8) {
      groups = [{ hosts: F.nodeNames[n], gpus: `0-${size - 1}` }];
      nodes = 1;
      n++;
    } else {
      nodes = Math.min(size / 8, F.numNodes - n);
      groups = [{ hosts: hostlist(n, n + nodes - 1), gpus: '0-7' }];
      n += nodes;
    }
    const leaves = Math.ceil(nodes / 32);
    const started = t0 - rand() * 36e5 * 8;
    applyJob('ADDED', {
      metadata: { id, name: `${tenant}-${size >= 256 ? 'pretrain' : size >= 8 ? 'finetune' : 'eval'}-${k}`, tenant },
      spec: { queue: tenant, replicas: Math.max(1, size / 8), gpusPerReplica: Math.min(8, size) },
      status: { phase: 'Running', submittedAt: iso(started - 6e4), startedAt: iso(started), placement: { groups, nodes, gpus: size, replicas: 1, leaves, minLeaves: leaves } },
    });
  }
  const reasons = ['needs 4096 GPUs within one block; 1,208 free in the best', 'queue over quota and nothing to borrow',
    'waiting for 512 GPUs in one leaf group; 96 free', 'behind higher-priority gangs (fair share)', 'preemption backoff (12s)'];
  for (let i = 0; i < 40; i++) {
    const size = [8, 64, 256, 1024, 4096][Math.floor(rand() * 5)];
    const tenant = tenants[Math.floor(rand() * tenants.length)];
    applyJob('ADDED', {
      metadata: { id: `demo-p${i}`, name: `${tenant}-queued-${i}`, tenant },
      spec: { queue: tenant, replicas: size / 8, gpusPerReplica: 8, priority: Math.floor(rand() * 3) },
      status: { phase: 'Pending', submittedAt: iso(t0 - rand() * 36e5 * 2), reason: reasons[Math.floor(rand() * reasons.length)] },
    });
  }
  S.events = [{ time: iso(t0), type: 'Normal', reason: 'Demo', kind: 'Cluster', name: F.name, message: `${F.numGPUs} GPUs made up in the browser; no server` }];
  for (const c of Object.keys(S.conn)) setConn(c, 'live');
  $('#who').textContent = 'demo';
}

// churn ends a running job and starts a queued one each tick, to show the
// map repainting only what changed.
function churn() {
  const rand = rng(7);
  setInterval(() => {
    const running = [...placed.keys()];
    if (running.length === 0) return;
    const id = running[Math.floor(rand() * running.length)];
    const j = S.jobs.get(id);
    const fin = { ...j, status: { ...j.status, phase: 'Succeeded', finishedAt: new Date().toISOString(), placement: j.status.placement } };
    applyJob('MODIFIED', fin);
    setTimeout(() => applyJob('MODIFIED', { ...j, metadata: { ...j.metadata, id: j.metadata.id + 'r' }, status: { ...j.status, startedAt: new Date().toISOString() } }), 120);
  }, 250);
}

// ---------- hooks for the browser test ----------

function median(xs) { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; }

window.gpucloud = {
  // bench times full repaints of the whole fleet: the colour pass over
  // every GPU, then writing every cell and putting the image (read back one
  // pixel so the canvas has really taken it).
  bench(reps = 15, zoom = 0) {
    if (zoom !== heatmap.zoom) { heatmap.zoom = zoom; heatmap.relayout(); }
    const colourMs = [], paintMs = [], frameMs = [];
    const probe = () => heatmap.ctx.getImageData(0, 0, 1, 1);
    for (let i = 0; i < reps; i++) {
      const t0 = performance.now();
      computeColours();
      const t1 = performance.now();
      heatmap.repaintAll();
      probe();
      const t2 = performance.now();
      colourMs.push(t1 - t0);
      paintMs.push(t2 - t1);
      frameMs.push(t2 - t0);
    }
    // A small change: one job ends; only its cells are written.
    const ids = [...placed.keys()];
    const j = S.jobs.get(ids[ids.length >> 1]);
    const t3 = performance.now();
    unplace(j.metadata.id);
    computeColours();
    const cells = heatmap.paint();
    probe();
    const changeMs = performance.now() - t3;
    placeJob(j);
    redrawMap();
    // Twenty jobs end across the whole fleet in one frame.
    const spread = [];
    for (let k = 0; k < 20; k++) spread.push(S.jobs.get(ids[Math.floor((k * ids.length) / 20)]));
    const t4 = performance.now();
    for (const x of spread) unplace(x.metadata.id);
    computeColours();
    const spreadCells = heatmap.paint();
    probe();
    const spreadMs = performance.now() - t4;
    for (const x of spread) placeJob(x);
    redrawMap();
    return {
      spreadMs, spreadCells,
      gpus: S.F.numGPUs, nodes: S.F.numNodes, leaves: S.F.leaves.length, blocks: S.F.blocks.length,
      cellPx: heatmap.g.c, canvas: [heatmap.g.W, heatmap.g.H], layoutMs: heatmap.layoutMs,
      colourMs: median(colourMs), paintMs: median(paintMs), frameMs: median(frameMs), frameMaxMs: Math.max(...frameMs),
      changeMs, changeCells: cells, reps,
    };
  },
  // checkHitTest maps the centre of every GPU's cell back through the hit
  // test and counts disagreements.
  checkHitTest() {
    let bad = 0;
    const t0 = performance.now();
    for (let i = 0; i < S.F.numGPUs; i++) {
      const c = heatmap.cellCentre(i);
      if (heatmap.hitTest(c.x, c.y).gpu !== i) bad++;
    }
    return { gpus: S.F.numGPUs, mismatches: bad, perHitUs: ((performance.now() - t0) * 1000) / S.F.numGPUs };
  },
  expandHostlist(expr) {
    try { return { names: expandHostlist(expr) }; } catch (e) { return { error: e.message }; }
  },
  // gpuColour tells how a node's GPU is drawn (palette index) and the job
  // on it.
  gpu(node, index) {
    const n = S.F.nodeIndex.get(node);
    if (n === undefined) return null;
    const i = S.F.gpuStart[n] + index;
    return { colour: heatmap.colour[i], job: slotJob[gpuSlot[i]] || '', centre: heatmap.cellCentre(i) };
  },
  select,
  summary() {
    return { gpus: S.F ? S.F.numGPUs : 0, nodes: S.nodes.size, jobs: S.jobs.size, placed: placed.size, conn: { ...S.conn }, fabric: S.fabricSource };
  },
};

// ---------- boot ----------

function boot() {
  setupMap();
  setupLogin();
  renderLegend();
  requestAnimationFrame(frame);
  if (DEMO > 0) {
    S.fabricSource = 'demo';
    rebuildFabric();
    demoState(S.F);
    if (params.get('churn')) churn();
    document.body.dataset.ready = 'true';
    return;
  }
  // A token in the fragment (#token=...) is taken once and removed from
  // the address bar; fragments never reach the server. A fragment given to
  // the open page does not reload it, so that is watched for too.
  const takeToken = () => {
    const tok = new URLSearchParams(location.hash.slice(1)).get('token');
    if (!tok) return false;
    localStorage.setItem(TOKEN_KEY, tok);
    history.replaceState(null, '', location.pathname + location.search);
    return true;
  };
  takeToken();
  window.addEventListener('hashchange', () => { if (takeToken()) location.reload(); });
  S.token = localStorage.getItem(TOKEN_KEY) || '';
  if (!S.token) { showLogin(''); return; }
  start().then(() => { document.body.dataset.ready = 'true'; }, (e) => {
    if (!(e instanceof HTTPError && e.status === 401)) showLogin(e.message);
  });
}

boot();
