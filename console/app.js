// cube's web console: one page over cube-api's REST API (same origin) and, for a sandbox's terminal and
// files, the sandbox's own envd through cube-proxy (the E2B envd protocol: Connect RPC with JSON, /files).
// No framework: the DOM is built with h(), never from HTML strings, so nothing a sandbox's metadata or a
// file name holds can run as markup.

const KEY_STORE = 'cube.apiKey'; // sessionStorage: the key lives as long as this browser tab
const REFRESH_MS = 3000;

let config = { sandboxUrl: ':3001', terminal: false };
let apiKey = sessionStorage.getItem(KEY_STORE) || '';
// what the current page runs (timers, streams), stopped when the page changes
let pageCleanups = [];

// ---------- small DOM helpers ----------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const $ = (sel) => document.querySelector(sel);

function notice(message, kind = 'error') {
  const n = $('#notice');
  if (!message) {
    n.hidden = true;
    n.textContent = '';
    return;
  }
  n.className = kind === 'info' ? 'info' : '';
  n.textContent = message;
  n.hidden = false;
}

function announce(message) {
  $('#status').textContent = message;
}

function onCleanup(fn) {
  pageCleanups.push(fn);
}

function every(ms, fn) {
  let stopped = false;
  let timer;
  const tick = async () => {
    if (stopped) return;
    try {
      await fn();
    } catch (e) {
      if (!stopped) reportError(e);
    }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  tick();
  onCleanup(() => {
    stopped = true;
    clearTimeout(timer);
  });
}

// "5 min": how long ago iso was (or, with sign -1, how long until it comes)
function ago(iso, sign = 1) {
  if (!iso) return '';
  const s = Math.max(0, Math.round((sign * (Date.now() - new Date(iso).getTime())) / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d`;
}

function mb(bytes) {
  return `${(bytes / (1024 * 1024)).toFixed(bytes < 10 * 1024 * 1024 ? 1 : 0)} MB`;
}

// ---------- the REST API (same origin) ----------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// A JSON answer, or an ApiError whose message is the server's own words.
async function api(path, { method = 'GET', body, key = apiKey } = {}) {
  let r;
  try {
    r = await fetch(path, {
      method,
      headers: { 'X-API-KEY': key, ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}) },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
  } catch (e) {
    throw new ApiError(0, `cube-api did not answer (${e.message}): is it running?`);
  }
  const text = await r.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!r.ok) {
    const why = (data && data.message) || text || r.statusText;
    throw new ApiError(r.status, `${method} ${path.split('?')[0]}: ${why} (HTTP ${r.status})`);
  }
  return data;
}

function reportError(e) {
  if (e instanceof ApiError && e.status === 401) {
    signOut('The API key was not accepted any more (it may have been revoked): sign in again.');
    return;
  }
  notice(e.message || String(e));
}

// ---------- a sandbox's envd, through cube-proxy (E2B_SANDBOX_URL) ----------

function sandboxBase() {
  const u = config.sandboxUrl || '';
  return u.startsWith(':') ? `${location.protocol}//${location.hostname}${u}` : u.replace(/\/$/, '');
}

function envdHeaders(sbx, extra = {}) {
  const hd = { 'E2b-Sandbox-Id': sbx.sandboxID, 'E2b-Sandbox-Port': '49983', ...extra };
  if (sbx.envdAccessToken) hd['X-Access-Token'] = sbx.envdAccessToken;
  return hd;
}

async function envdError(r) {
  const text = await r.text();
  try {
    const j = JSON.parse(text);
    return new Error(`sandbox: ${j.message || text} (${j.code || r.status})`);
  } catch {
    return new Error(`sandbox: ${text || r.statusText} (HTTP ${r.status})`);
  }
}

// A unary Connect call with the JSON codec.
async function envdCall(sbx, method, body) {
  let r;
  try {
    r = await fetch(`${sandboxBase()}/${method}`, {
      method: 'POST',
      headers: envdHeaders(sbx, { 'Content-Type': 'application/json', 'Connect-Protocol-Version': '1' }),
      body: JSON.stringify(body),
    });
  } catch (e) {
    throw new Error(`cube-proxy at ${sandboxBase()} did not answer (${e.message})`);
  }
  if (!r.ok) throw await envdError(r);
  return r.json();
}

// A server-streaming Connect call: each message goes to onMessage; resolves when the stream ends.
async function envdStream(sbx, method, body, onMessage, signal) {
  const json = new TextEncoder().encode(JSON.stringify(body));
  const frame = new Uint8Array(5 + json.length);
  new DataView(frame.buffer).setUint32(1, json.length);
  frame.set(json, 5);
  const r = await fetch(`${sandboxBase()}/${method}`, {
    method: 'POST',
    headers: envdHeaders(sbx, {
      'Content-Type': 'application/connect+json',
      'Connect-Protocol-Version': '1',
      'Keepalive-Ping-Interval': '50',
    }),
    body: frame,
    signal,
  });
  if (!r.ok) throw await envdError(r);
  const reader = r.body.getReader();
  let buf = new Uint8Array(0);
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    const joined = new Uint8Array(buf.length + value.length);
    joined.set(buf);
    joined.set(value, buf.length);
    buf = joined;
    while (buf.length >= 5) {
      const len = new DataView(buf.buffer, buf.byteOffset).getUint32(1);
      if (buf.length < 5 + len) break;
      const flags = buf[0];
      const msg = JSON.parse(new TextDecoder().decode(buf.subarray(5, 5 + len)) || '{}');
      buf = buf.slice(5 + len);
      if (flags & 2) {
        if (msg.error) throw new Error(`sandbox: ${msg.error.message} (${msg.error.code})`);
        return;
      }
      onMessage(msg);
    }
  }
}

function b64encode(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

function b64decode(text) {
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

// ---------- sign-in ----------

async function signIn(key) {
  // any authenticated call tells whether the key is good
  await api('/v2/sandboxes?limit=1', { key });
  apiKey = key;
  sessionStorage.setItem(KEY_STORE, key);
}

function signOut(message) {
  apiKey = '';
  sessionStorage.removeItem(KEY_STORE);
  stopPage();
  notice('');
  location.hash = '#/signin';
  showSignIn(message);
}

function showSignIn(message) {
  $('#nav').hidden = true;
  $('#signout').hidden = true;
  $('#view').replaceChildren();
  $('#signin').hidden = false;
  const err = $('#signin-error');
  err.hidden = !message;
  err.textContent = message || '';
  $('#apikey').focus();
}

// ---------- routing ----------

function stopPage() {
  for (const fn of pageCleanups.splice(0)) {
    try {
      fn();
    } catch {}
  }
}

async function route() {
  stopPage();
  notice('');
  if (!apiKey) return showSignIn();
  $('#signin').hidden = true;
  $('#nav').hidden = false;
  $('#signout').hidden = false;
  const [, section = 'sandboxes', arg] = (location.hash || '#/sandboxes').split('/');
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.dataset.section === section) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const view = $('#view');
  view.replaceChildren();
  const pages = { sandboxes: arg ? sandboxPage : sandboxesPage, templates: templatesPage, volumes: volumesPage, nodes: nodesPage, keys: keysPage };
  const page = pages[section];
  if (!page) {
    view.append(h('h1', {}, 'Not found'), h('p', {}, 'No such page. ', h('a', { href: '#/sandboxes' }, 'Sandboxes')));
    return;
  }
  try {
    await page(view, arg && decodeURIComponent(arg));
  } catch (e) {
    reportError(e);
  }
}

// ---------- sandboxes ----------

function stateTag(state) {
  return h('span', { class: `tag state-${state}` }, state);
}

function metadataTags(md) {
  return Object.entries(md || {}).map(([k, v]) => h('span', { class: 'tag mono' }, `${k}=${v}`));
}

async function sandboxAction(id, action) {
  if (action === 'kill') await api(`/sandboxes/${id}`, { method: 'DELETE' });
  else if (action === 'pause') await api(`/sandboxes/${id}/pause`, { method: 'POST' });
  else if (action === 'resume') await api(`/sandboxes/${id}/resume`, { method: 'POST', body: {} });
  announce(`${action}: ${id} done`);
}

async function sandboxesPage(view) {
  const selected = new Set();
  const filter = h('input', { id: 'filter', type: 'search', placeholder: 'id, template or key=value' });
  const stateSel = h('select', { id: 'state-filter' },
    h('option', { value: '' }, 'all'), h('option', { value: 'running' }, 'running'), h('option', { value: 'paused' }, 'paused'));
  const bulk = h('button', { type: 'button', class: 'danger', disabled: true, onclick: bulkKill }, 'Kill selected');
  const count = h('span', { class: 'muted' });
  const body = h('tbody');
  const table = h('table', { 'aria-label': 'Sandboxes' },
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Select')),
      ...['Sandbox', 'Template', 'State', 'Node', 'CPU · memory · disk', 'Age', 'Ends in', 'Metadata'].map((t) => h('th', { scope: 'col' }, t)),
      h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Actions')))),
    body);
  view.append(
    h('h1', {}, 'Sandboxes'),
    h('div', { class: 'toolbar' },
      h('label', { for: 'filter' }, 'Search'), filter,
      h('label', { for: 'state-filter' }, 'State'), stateSel,
      h('span', { class: 'grow' }), count, bulk),
    table);

  let rows = [];
  let usage = {}; // sandbox id -> its latest SandboxMetric (running ones)
  let shown = '';
  function render() {
    const q = filter.value.trim().toLowerCase();
    const st = stateSel.value;
    const list = rows.filter((s) => (!st || s.state === st) && (!q || [s.sandboxID, s.templateID, s.nodeID || '',
      ...Object.entries(s.metadata || {}).map(([k, v]) => `${k}=${v}`)].some((t) => t.toLowerCase().includes(q))));
    for (const id of [...selected]) if (!rows.some((s) => s.sandboxID === id)) selected.delete(id);
    bulk.disabled = selected.size === 0;
    bulk.textContent = selected.size ? `Kill selected (${selected.size})` : 'Kill selected';
    count.textContent = `${list.length} of ${rows.length}`;
    const key = JSON.stringify([list, [...selected], list.map((s) => usage[s.sandboxID])]) + Math.floor(Date.now() / 30000);
    if (key === shown) return; // unchanged: keep the DOM (and the keyboard focus) as it is
    shown = key;
    const focused = document.activeElement && document.activeElement.dataset.focusKey;
    body.replaceChildren(...list.map((s) => h('tr', { 'data-sandbox': s.sandboxID },
      h('td', {}, h('input', {
        type: 'checkbox', 'aria-label': `Select ${s.sandboxID}`, 'data-focus-key': `sel-${s.sandboxID}`,
        checked: selected.has(s.sandboxID),
        onchange: (ev) => { ev.target.checked ? selected.add(s.sandboxID) : selected.delete(s.sandboxID); render(); },
      })),
      h('td', { class: 'id' }, h('a', { href: `#/sandboxes/${s.sandboxID}`, 'data-focus-key': `open-${s.sandboxID}` }, s.sandboxID)),
      h('td', {}, s.templateID),
      h('td', {}, stateTag(s.state)),
      h('td', {}, s.nodeID || ''),
      h('td', {}, usage[s.sandboxID]
        ? `${usage[s.sandboxID].cpuUsedPct.toFixed(1)} % of ${s.cpuCount} vCPU · ${mb(usage[s.sandboxID].memUsed)} of ${s.memoryMB} MB · disk ${mb(usage[s.sandboxID].diskUsed)}`
        : `${s.cpuCount} vCPU · ${s.memoryMB} MB · disk ${s.diskSizeMB} MB`),
      h('td', {}, ago(s.startedAt)),
      h('td', {}, ago(s.endAt, -1)),
      h('td', {}, metadataTags(s.metadata)),
      h('td', { class: 'actions' },
        s.state === 'running'
          ? h('button', { type: 'button', 'data-focus-key': `pause-${s.sandboxID}`, onclick: () => act(s.sandboxID, 'pause') }, 'Pause')
          : h('button', { type: 'button', 'data-focus-key': `resume-${s.sandboxID}`, onclick: () => act(s.sandboxID, 'resume') }, 'Resume'),
        h('button', { type: 'button', class: 'danger', 'data-focus-key': `kill-${s.sandboxID}`, onclick: () => act(s.sandboxID, 'kill') }, 'Kill')))));
    if (!list.length) body.append(h('tr', {}, h('td', { colspan: 10, class: 'empty' }, rows.length ? 'No sandbox matches.' : 'No sandboxes. Create one with the E2B SDK (Sandbox.create()).')));
    if (focused) document.querySelector(`[data-focus-key="${CSS.escape(focused)}"]`)?.focus();
  }
  async function load() {
    rows = (await api('/v2/sandboxes?limit=1000')) || [];
    rows.sort((a, b) => (a.startedAt < b.startedAt ? 1 : -1));
    // live usage of the newest 100 running ones, in one call
    const running = rows.filter((s) => s.state === 'running').slice(0, 100).map((s) => s.sandboxID);
    usage = running.length ? ((await api(`/sandboxes/metrics?sandbox_ids=${running.join(',')}`)) || {}).sandboxes || {} : {};
    render();
  }
  async function act(id, action) {
    if (action === 'kill' && !confirm(`Kill sandbox ${id}? Its files and processes are lost.`)) return;
    try {
      await sandboxAction(id, action);
      await load();
    } catch (e) {
      reportError(e);
    }
  }
  async function bulkKill() {
    const ids = [...selected];
    if (!ids.length || !confirm(`Kill ${ids.length} sandbox(es)? Their files and processes are lost.`)) return;
    const results = await Promise.allSettled(ids.map((id) => sandboxAction(id, 'kill')));
    const failed = results.filter((r) => r.status === 'rejected');
    selected.clear();
    if (failed.length) notice(`${failed.length} of ${ids.length} kills failed: ${failed[0].reason.message}`);
    else announce(`killed ${ids.length} sandbox(es)`);
    await load();
  }
  filter.addEventListener('input', render);
  stateSel.addEventListener('change', render);
  every(REFRESH_MS, load);
}

// ---------- one sandbox ----------

async function sandboxPage(view, id) {
  let sbx = await api(`/sandboxes/${encodeURIComponent(id)}`);
  const facts = h('dl', { class: 'facts' });
  const actions = h('div', { class: 'toolbar' });
  const timeoutIn = h('input', { id: 'timeout-s', type: 'number', min: 1, max: 86400, value: 300, style: 'width:7em' });
  const title = h('h1', {}, 'Sandbox ', h('span', { class: 'mono' }, id));
  view.append(
    h('p', {}, h('a', { href: '#/sandboxes' }, '← Sandboxes')),
    title, facts, actions,
    h('div', { class: 'panels' },
      terminalPanel(() => sbx),
      filesPanel(() => sbx),
      metricsPanel(id),
      snapshotsPanel(id, () => refresh()),
      logsPanel(id),
      h('section', { class: 'panel wide', 'aria-labelledby': 'net-title' },
        h('h2', { id: 'net-title' }, 'Network policy'),
        h('pre', { id: 'network', class: 'logs' }))));

  function renderInfo() {
    facts.replaceChildren(
      h('dt', {}, 'State'), h('dd', { id: 'sandbox-state' }, stateTag(sbx.state)),
      h('dt', {}, 'Template'), h('dd', {}, sbx.templateID),
      h('dt', {}, 'Resources'), h('dd', {}, `${sbx.cpuCount} vCPU, ${sbx.memoryMB} MB memory, ${sbx.diskSizeMB} MB disk`),
      h('dt', {}, 'Started'), h('dd', {}, `${new Date(sbx.startedAt).toLocaleString()} (${ago(sbx.startedAt)} ago)`),
      h('dt', {}, 'Ends'), h('dd', {}, sbx.endAt ? new Date(sbx.endAt).toLocaleString() : ''),
      h('dt', {}, 'On timeout'), h('dd', {}, sbx.lifecycle ? `${sbx.lifecycle.onTimeout}${sbx.lifecycle.autoResume ? ', resumes on a request' : ''}` : ''),
      h('dt', {}, 'Metadata'), h('dd', {}, metadataTags(sbx.metadata)));
    $('#network').textContent = JSON.stringify({ allowInternetAccess: sbx.allowInternetAccess, ...(sbx.network || {}) }, null, 2);
    const running = sbx.state === 'running';
    actions.replaceChildren(
      running
        ? h('button', { type: 'button', id: 'pause', onclick: () => act('pause') }, 'Pause')
        : h('button', { type: 'button', id: 'resume', onclick: () => act('resume') }, 'Resume'),
      h('label', { for: 'timeout-s' }, 'Timeout (s)'), timeoutIn,
      h('button', { type: 'button', onclick: setTimeoutS }, 'Set timeout'),
      h('button', { type: 'button', id: 'fork', disabled: !running, onclick: fork }, 'Fork'),
      h('span', { class: 'grow' }),
      h('button', { type: 'button', id: 'kill', class: 'danger', onclick: () => act('kill') }, 'Kill'));
  }
  async function refresh() {
    try {
      sbx = await api(`/sandboxes/${encodeURIComponent(id)}`);
    } catch (e) {
      if (e.status === 404) {
        stopPage();
        view.replaceChildren(h('h1', {}, 'Sandbox ', h('span', { class: 'mono' }, id)),
          h('p', { id: 'gone' }, 'This sandbox is gone (killed or timed out). ', h('a', { href: '#/sandboxes' }, 'Back to the sandboxes')));
        return;
      }
      throw e;
    }
    const focusedId = document.activeElement && document.activeElement.id;
    renderInfo();
    if (focusedId && ['pause', 'resume'].includes(focusedId)) (document.getElementById('pause') || document.getElementById('resume'))?.focus();
  }
  async function act(action) {
    if (action === 'kill' && !confirm(`Kill sandbox ${id}? Its files and processes are lost.`)) return;
    try {
      await sandboxAction(id, action);
      await refresh();
    } catch (e) {
      reportError(e);
    }
  }
  async function setTimeoutS() {
    try {
      await api(`/sandboxes/${id}/timeout`, { method: 'POST', body: { timeout: Number(timeoutIn.value) } });
      announce('timeout set');
      await refresh();
    } catch (e) {
      reportError(e);
    }
  }
  async function fork() {
    try {
      const out = await api(`/sandboxes/${id}/fork`, { method: 'POST', body: { count: 1 } });
      const made = out && out[0];
      if (made && made.sandbox) {
        notice(`Forked: ${made.sandbox.sandboxID}`, 'info');
        location.hash = `#/sandboxes/${made.sandbox.sandboxID}`;
      } else {
        notice(`Fork failed: ${made && made.error ? made.error.message : 'no answer'}`);
      }
    } catch (e) {
      reportError(e);
    }
  }
  renderInfo();
  every(REFRESH_MS, refresh);
}

function terminalPanel(getSbx) {
  const holder = h('div', { id: 'terminal', hidden: true });
  const state = h('span', { id: 'terminal-state', class: 'muted' });
  const open = h('button', { type: 'button', id: 'open-terminal', onclick: start }, 'Open terminal');
  const panel = h('section', { class: 'panel wide', 'aria-labelledby': 'term-title' },
    h('h2', { id: 'term-title' }, 'Terminal'),
    h('div', { class: 'toolbar' }, open, state), holder);
  if (!config.terminal) {
    open.disabled = true;
    state.textContent = 'This cube-api was built without xterm.js: run npm ci in console/ and rebuild (deploy/cube up does both).';
  }
  let abort = null;
  let pid = null;
  onCleanup(() => stop());
  function stop() {
    if (pid !== null) envdCall(getSbx(), 'process.Process/SendSignal', { process: { pid }, signal: 'SIGNAL_SIGKILL' }).catch(() => {});
    pid = null;
    if (abort) abort.abort();
    abort = null;
  }
  async function start() {
    const sbx = getSbx();
    if (sbx.state !== 'running') return notice('Resume the sandbox to open a terminal.');
    await loadXterm();
    open.disabled = true;
    holder.hidden = false;
    holder.replaceChildren();
    const term = new window.Terminal({ convertEol: false, cursorBlink: true, fontSize: 14, scrollback: 5000 });
    const fit = new window.FitAddon.FitAddon();
    term.loadAddon(fit);
    term.open(holder);
    fit.fit();
    term.focus();
    abort = new AbortController();
    // keystrokes go in order, one request after the other
    let inputChain = Promise.resolve();
    const enc = new TextEncoder();
    term.onData((d) => {
      if (pid === null) return;
      const bytes = enc.encode(d);
      inputChain = inputChain.then(() =>
        envdCall(sbx, 'process.Process/SendInput', { process: { pid }, input: { pty: b64encode(bytes) } })).catch((e) => notice(e.message));
    });
    term.onResize(({ cols, rows }) => {
      if (pid !== null) envdCall(sbx, 'process.Process/Update', { process: { pid }, pty: { size: { cols, rows } } }).catch(() => {});
    });
    const onWinResize = () => fit.fit();
    window.addEventListener('resize', onWinResize);
    onCleanup(() => { window.removeEventListener('resize', onWinResize); term.dispose(); });
    state.textContent = 'connecting…';
    try {
      await envdStream(sbx, 'process.Process/Start', {
        process: { cmd: '/bin/bash', args: ['-i', '-l'], envs: { TERM: 'xterm-256color', LANG: 'C.UTF-8' } },
        pty: { size: { cols: term.cols, rows: term.rows } },
      }, (msg) => {
        const ev = msg.event || {};
        if (ev.start) {
          pid = ev.start.pid;
          state.textContent = `bash, pid ${pid}`;
        } else if (ev.data && ev.data.pty) {
          term.write(b64decode(ev.data.pty));
        } else if (ev.end) {
          pid = null;
          state.textContent = `ended: ${ev.end.status || ev.end.exitCode || 'exited'}`;
        }
      }, abort.signal);
    } catch (e) {
      if (e.name !== 'AbortError') notice(`Terminal: ${e.message}`);
    }
    pid = null;
    open.disabled = false;
    open.textContent = 'Open a new terminal';
    if (!state.textContent.startsWith('ended')) state.textContent = 'closed';
  }
  return panel;
}

let xtermLoading = null;
function loadXterm() {
  if (window.Terminal && window.FitAddon) return Promise.resolve();
  const load = (tag, attrs) => new Promise((resolve, reject) => {
    const el = h(tag, { ...attrs, onload: resolve, onerror: () => reject(new Error(`could not load ${attrs.src || attrs.href}`)) });
    document.head.append(el);
  });
  xtermLoading ||= Promise.all([
    load('link', { rel: 'stylesheet', href: 'vendor/xterm.css' }),
    load('script', { src: 'vendor/xterm.js' }).then(() => load('script', { src: 'vendor/addon-fit.js' })),
  ]);
  return xtermLoading;
}

function filesPanel(getSbx) {
  let dir = '/home/user';
  const pathIn = h('input', { id: 'files-path', value: dir, spellcheck: 'false', style: 'flex:1' });
  const list = h('tbody');
  const upload = h('input', { id: 'upload', type: 'file', multiple: true });
  const panel = h('section', { class: 'panel', 'aria-labelledby': 'files-title' },
    h('h2', { id: 'files-title' }, 'Files'),
    h('form', { class: 'toolbar', onsubmit: (ev) => { ev.preventDefault(); go(pathIn.value); } },
      h('label', { for: 'files-path' }, 'Folder'), pathIn, h('button', { type: 'submit' }, 'Open'),
      h('button', { type: 'button', onclick: () => go(dir.replace(/\/[^/]+\/?$/, '') || '/') }, 'Up')),
    h('div', { class: 'toolbar' }, h('label', { for: 'upload' }, 'Upload to this folder'), upload),
    h('table', { 'aria-label': 'Files' },
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Name'), h('th', { scope: 'col' }, 'Size'), h('th', { scope: 'col' }, 'Modified'))),
      list));
  upload.addEventListener('change', async () => {
    const sbx = getSbx();
    for (const f of upload.files) {
      const target = `${dir.replace(/\/$/, '')}/${f.name}`;
      const form = new FormData();
      form.append('file', f, target);
      try {
        const r = await fetch(`${sandboxBase()}/files?path=${encodeURIComponent(target)}`, {
          method: 'POST', headers: envdHeaders(sbx), body: form,
        });
        if (!r.ok) throw await envdError(r);
        announce(`uploaded ${target}`);
        notice(`Uploaded ${target} (${f.size} bytes)`, 'info');
      } catch (e) {
        notice(`Upload of ${f.name} failed: ${e.message}`);
      }
    }
    upload.value = '';
    go(dir);
  });
  async function download(entry) {
    try {
      const r = await fetch(`${sandboxBase()}/files?path=${encodeURIComponent(entry.path)}`, { headers: envdHeaders(getSbx()) });
      if (!r.ok) throw await envdError(r);
      const url = URL.createObjectURL(await r.blob());
      const a = h('a', { href: url, download: entry.name });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (e) {
      notice(`Download of ${entry.path} failed: ${e.message}`);
    }
  }
  async function go(path) {
    const sbx = getSbx();
    if (sbx.state !== 'running') {
      list.replaceChildren(h('tr', {}, h('td', { colspan: 3, class: 'empty' }, 'Resume the sandbox to browse its files.')));
      return;
    }
    try {
      const out = await envdCall(sbx, 'filesystem.Filesystem/ListDir', { path, depth: 1 });
      dir = path;
      pathIn.value = path;
      const entries = (out.entries || []).sort((a, b) => (a.type === b.type ? a.name.localeCompare(b.name) : a.type === 'FILE_TYPE_DIRECTORY' ? -1 : 1));
      list.replaceChildren(...entries.map((e) => h('tr', { 'data-file': e.name },
        h('td', { class: 'mono' }, e.type === 'FILE_TYPE_DIRECTORY'
          ? h('button', { type: 'button', class: 'quiet', onclick: () => go(e.path) }, `${e.name}/`)
          : h('button', { type: 'button', class: 'quiet', title: 'Download', onclick: () => download(e) }, e.name)),
        h('td', {}, e.type === 'FILE_TYPE_DIRECTORY' ? '' : `${Number(e.size || 0)} B`),
        h('td', {}, e.modifiedTime ? new Date(e.modifiedTime).toLocaleString() : ''))));
      if (!entries.length) list.append(h('tr', {}, h('td', { colspan: 3, class: 'empty' }, 'Empty folder.')));
    } catch (e) {
      notice(`Listing ${path}: ${e.message}`);
    }
  }
  setTimeout(() => go(dir), 0);
  return panel;
}

function metricsPanel(id) {
  const series = { cpu: [], mem: [], disk: [] };
  const charts = {};
  const since = h('p', { class: 'muted' });
  const mk = (key, label) => {
    const line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
    const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
    svg.setAttribute('viewBox', '0 0 100 100');
    svg.setAttribute('preserveAspectRatio', 'none');
    svg.setAttribute('role', 'img');
    svg.append(line);
    const cap = h('figcaption', {}, label);
    charts[key] = { line, svg, cap, label };
    return h('figure', { class: 'chart' }, cap, svg);
  };
  const panel = h('section', { class: 'panel', 'aria-labelledby': 'metrics-title' },
    h('h2', { id: 'metrics-title' }, 'CPU, memory and disk'),
    since,
    h('div', { class: 'charts' }, mk('cpu', 'CPU %'), mk('mem', 'Memory'), mk('disk', 'Disk')));
  function draw(key, max, text) {
    const pts = series[key].length === 1 ? [series[key][0], series[key][0]] : series[key];
    const c = charts[key];
    c.line.setAttribute('points', pts.map((v, i) => `${pts.length < 2 ? 0 : (i * 100) / (pts.length - 1)},${100 - (100 * v) / (max || 1)}`).join(' '));
    c.cap.textContent = `${c.label}: ${text}`;
    c.svg.setAttribute('aria-label', `${c.label}: ${text}`);
  }
  every(REFRESH_MS * 2, async () => {
    let m;
    try {
      m = await api(`/sandboxes/${id}/metrics`); // its life: every 5 s, coarser as it ages; the last is now
    } catch (e) {
      if (e.status === 404 || e.status === 409) return;
      throw e;
    }
    if (!m || !m.length) return;
    const s = m[m.length - 1];
    series.cpu = m.map((x) => x.cpuUsedPct);
    series.mem = m.map((x) => x.memUsed);
    series.disk = m.map((x) => x.diskUsed);
    draw('cpu', Math.max(100, ...series.cpu), `${s.cpuUsedPct.toFixed(1)} % (100 % = one of ${s.cpuCount} vCPU)`);
    draw('mem', s.memTotal, `${mb(s.memUsed)} of ${mb(s.memTotal)}`);
    draw('disk', s.diskTotal, `${mb(s.diskUsed)} of ${mb(s.diskTotal)}`);
    since.textContent = `Over its life since ${new Date(m[0].timestamp).toLocaleTimeString()}: ${m.length} samples (every 5 s, coarser as it ages).`;
  });
  return panel;
}

// Its snapshots (files, as this backend keeps them): take one, or roll the sandbox back to one in place (same
// id, address, token; its processes start again).
function snapshotsPanel(id, onRolledBack) {
  const list = h('div', { id: 'snapshots' });
  const take = h('button', { type: 'button', id: 'take-snapshot', onclick: snapshot }, 'Take snapshot');
  const panel = h('section', { class: 'panel', 'aria-labelledby': 'snap-title' },
    h('h2', { id: 'snap-title' }, 'Snapshots'),
    h('p', { class: 'muted' }, 'A snapshot keeps the files. Rolling back restores them in place and starts the processes again.'),
    h('div', { class: 'toolbar' }, take), list);
  let shown = '';
  async function load() {
    let snaps;
    try {
      snaps = await api(`/snapshots?sandboxID=${encodeURIComponent(id)}&limit=100`);
    } catch (e) {
      if (e.status === 404) return;
      throw e;
    }
    const key = JSON.stringify(snaps);
    if (key === shown) return;
    shown = key;
    list.replaceChildren(tableOf('Snapshots', ['Snapshot', 'Taken', ''], snaps.map((x) =>
      h('tr', { 'data-snapshot': x.snapshotID },
        h('td', { class: 'mono' }, x.snapshotID),
        h('td', {}, x.createdAt ? `${ago(x.createdAt)} ago` : ''),
        h('td', {}, h('button', { type: 'button', class: 'rollback', onclick: () => rollback(x.snapshotID) }, 'Roll back')))),
      'No snapshots yet.'));
  }
  async function snapshot() {
    take.disabled = true;
    try {
      const out = await api(`/sandboxes/${id}/snapshots`, { method: 'POST', body: {} });
      notice(`Snapshot taken: ${out.snapshotID}`, 'info');
      await load();
    } catch (e) {
      reportError(e);
    } finally {
      take.disabled = false;
    }
  }
  async function rollback(snap) {
    if (!confirm(`Roll sandbox ${id} back to ${snap}? Files written since are lost and its processes start again.`)) return;
    try {
      await api(`/sandboxes/${id}/rollback`, { method: 'POST', body: { snapshotID: snap } });
      notice(`Rolled back to ${snap}`, 'info');
      await onRolledBack();
    } catch (e) {
      reportError(e);
    }
  }
  every(REFRESH_MS, load);
  return panel;
}

function logsPanel(id) {
  const pre = h('pre', { id: 'logs', class: 'logs', tabindex: 0, 'aria-label': 'Sandbox logs' });
  const panel = h('section', { class: 'panel', 'aria-labelledby': 'logs-title' }, h('h2', { id: 'logs-title' }, 'Logs'), pre);
  let last = '';
  every(REFRESH_MS, async () => {
    let out;
    try {
      out = await api(`/v2/sandboxes/${id}/logs`);
    } catch (e) {
      if (e.status === 404) return;
      throw e;
    }
    const lines = (out.logs || []).map((l) => `${l.timestamp} ${l.level.padEnd(5)} ${l.message}${l.fields && Object.keys(l.fields).length ? ' ' + Object.entries(l.fields).map(([k, v]) => `${k}=${v}`).join(' ') : ''}`);
    const text = lines.join('\n') || 'No logs yet.';
    if (text === last) return;
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.textContent = last = text;
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  });
  return panel;
}

// ---------- templates, volumes, nodes, keys ----------

function tableOf(label, headers, rows, empty) {
  return h('table', { 'aria-label': label },
    h('thead', {}, h('tr', {}, headers.map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: headers.length, class: 'empty' }, empty))));
}

async function templatesPage(view) {
  const holder = h('div');
  const detail = h('section', { id: 'template-detail', 'aria-live': 'polite' });
  view.append(h('h1', {}, 'Templates'),
    h('p', { class: 'muted' }, 'Templates the nodes hold, with their ready pools. New templates: ',
      h('code', {}, "Template.build(t, 'name')"), ' with the E2B SDK, or ',
      h('code', {}, 'cubemastercli tpl create-from-image NAME IMAGE'), '.'),
    holder, detail);
  every(REFRESH_MS * 2, async () => {
    const list = (await api('/templates')) || [];
    holder.replaceChildren(tableOf('Templates', ['Template', 'Status', 'Nodes', 'Pool (ready / target)', 'Sandbox size'],
      list.map((t) => h('tr', {},
        h('td', { class: 'id' }, h('button', { type: 'button', class: 'link', onclick: () => showTemplate(t.templateID) }, t.templateID)),
        h('td', {}, h('span', { class: 'tag status-ready' }, t.buildStatus)),
        h('td', {}, t.nodes),
        h('td', {}, `${t.poolReady} / ${t.poolTarget}`),
        h('td', {}, `${t.cpuCount} vCPU, ${t.memoryMB} MB, ${t.diskSizeMB} MB disk`))),
      'No template on any node.'));
  });
  // one template: its tags, its builds (newest first) and a build's log
  async function showTemplate(id) {
    const name = id.split(':')[0];
    try {
      const [tpl, tags] = await Promise.all([api(`/templates/${encodeURIComponent(name)}`),
        api(`/templates/${encodeURIComponent(name)}/tags`).catch(() => [])]);
      const log = h('pre', { class: 'log', id: 'build-log' });
      detail.replaceChildren(h('h2', {}, `Template ${name}`),
        h('p', {}, 'Tags: ', (tags || []).length ? (tags || []).map((t) => h('span', { class: 'tag' }, `${t.tag} → ${t.buildID}`)) : 'none'),
        tableOf(`Builds of ${name}`, ['Build', 'Status', 'Created', 'Tags', ''],
          (tpl.builds || []).map((b) => h('tr', {},
            h('td', { class: 'id' }, b.buildID),
            h('td', {}, h('span', { class: `tag status-${b.status}` }, b.status)),
            h('td', {}, new Date(b.createdAt).toLocaleString()),
            h('td', {}, (b.tags || []).join(', ')),
            h('td', { class: 'actions' }, h('button', { type: 'button', onclick: () => showLog(b.buildID, log) }, 'Log')))),
          'No build through the API: this template was made on the node.'),
        log);
    } catch (e) {
      reportError(e);
    }
    async function showLog(build, log) {
      try {
        const st = await api(`/templates/${encodeURIComponent(name)}/builds/${encodeURIComponent(build)}/status?logsOffset=0`);
        const lines = (st.logEntries || []).map((e) => `${e.timestamp ? new Date(e.timestamp).toLocaleTimeString() : ''} ${e.level} ${e.message}`);
        log.textContent = lines.length ? lines.join('\n') : (st.logs || []).join('\n') || `(no log kept for ${build})`;
        if (st.reason && st.reason.message) log.textContent += `\nerror: ${st.reason.message}`;
      } catch (e) {
        reportError(e);
      }
    }
  }
}

async function volumesPage(view) {
  const holder = h('div');
  const name = h('input', { id: 'volume-name', required: true, pattern: '[A-Za-z0-9_\\-]+', placeholder: 'name' });
  const form = h('form', { class: 'toolbar', onsubmit: create },
    h('label', { for: 'volume-name' }, 'New volume'), name, h('button', { type: 'submit', class: 'primary' }, 'Create'));
  view.append(h('h1', {}, 'Volumes'), form, holder);
  async function load() {
    const list = (await api('/volumes')) || [];
    holder.replaceChildren(tableOf('Volumes', ['Volume', 'Name', ''],
      list.map((v) => h('tr', {},
        h('td', { class: 'id' }, v.volumeID), h('td', {}, v.name),
        h('td', { class: 'actions' }, h('button', { type: 'button', class: 'danger', onclick: () => remove(v) }, 'Delete')))),
      'No volumes. Sandboxes mount them with volumeMounts.'));
  }
  async function create(ev) {
    ev.preventDefault();
    try {
      await api('/volumes', { method: 'POST', body: { name: name.value } });
      name.value = '';
      await load();
    } catch (e) {
      reportError(e);
    }
  }
  async function remove(v) {
    if (!confirm(`Delete volume ${v.name}? Its files are lost.`)) return;
    try {
      await api(`/volumes/${v.volumeID}`, { method: 'DELETE' });
      await load();
    } catch (e) {
      reportError(e);
    }
  }
  await load();
}

async function nodesPage(view) {
  const holder = h('div');
  view.append(h('h1', {}, 'Nodes'), holder);
  every(REFRESH_MS, async () => {
    const list = (await api('/nodes')) || [];
    holder.replaceChildren(tableOf('Nodes', ['Node', 'Status', 'Backend', 'Sandboxes', 'Load (1 min)', 'Memory available', 'Left for sandboxes', 'Last heartbeat', 'Pools (ready / target)'],
      list.map((n) => h('tr', {},
        h('td', { class: 'id' }, n.nodeID),
        h('td', {}, h('span', { class: `tag status-${n.status}` }, n.status)),
        h('td', {}, n.backend),
        h('td', {}, n.sandboxCount),
        h('td', {}, n.cpuCount ? `${n.load1.toFixed(2)} on ${n.cpuCount} CPU` : 'not reported'),
        h('td', {}, n.memoryMB ? `${(n.memoryAvailableMB / 1024).toFixed(1)} of ${(n.memoryMB / 1024).toFixed(1)} GB` : 'not reported'),
        // beyond what the node keeps for itself: creates of a template that may use more are refused there
        h('td', {}, n.memoryLeftMB === undefined ? 'not reported'
          : `${Math.max(0, n.memoryLeftMB / 1024).toFixed(1)} GB memory, ${Math.max(0, n.diskLeftMB / 1024).toFixed(0)} GB disk`),
        h('td', {}, `${(n.lastSeenMsAgo / 1000).toFixed(1)} s ago`),
        h('td', {}, n.pools.map((p) => h('span', { class: 'tag' }, `${p.templateID} ${p.ready} / ${p.target}`))))),
      'No node has registered.'));
  });
}

async function keysPage(view) {
  const holder = h('div');
  const created = h('div', { id: 'created-key', 'aria-live': 'polite' });
  const name = h('input', { id: 'key-name', required: true, maxlength: 64, placeholder: 'name' });
  // the most sandboxes the key may hold at once; empty: no limit
  const limit = h('input', { id: 'key-limit', type: 'number', min: 1, max: 1000000, placeholder: 'no limit' });
  view.append(h('h1', {}, 'API keys'),
    h('form', { class: 'toolbar', onsubmit: create },
      h('label', { for: 'key-name' }, 'New key'), name,
      h('label', { for: 'key-limit' }, 'Sandbox limit'), limit,
      h('button', { type: 'submit', class: 'primary' }, 'Create')),
    created, holder);
  const held = (k) => (k.maxSandboxes ? `${k.sandboxes} of ${k.maxSandboxes}` : `${k.sandboxes}, no limit`);
  async function load() {
    const list = (await api('/api-keys')) || [];
    holder.replaceChildren(tableOf('API keys', ['Key', 'Name', 'Sandboxes', 'Created', ''],
      list.map((k) => h('tr', {},
        h('td', { class: 'id' }, k.id, k.current ? h('span', { class: 'tag' }, 'this browser') : null),
        h('td', {}, k.name),
        h('td', {}, held(k)),
        h('td', {}, new Date(k.createdAt).toLocaleString()),
        h('td', { class: 'actions' },
          h('button', { type: 'button', onclick: () => setLimit(k) }, 'Set limit'),
          h('button', { type: 'button', class: 'danger', onclick: () => revoke(k) }, 'Revoke')))),
      'No keys.'));
  }
  async function setLimit(k) {
    const v = prompt(`The most sandboxes key ${k.name} (${k.id}) may hold at once (0: no limit). Lowering it ends none.`, k.maxSandboxes || 0);
    if (v === null) return;
    try {
      await api(`/api-keys/${k.id}`, { method: 'PATCH', body: { maxSandboxes: Number(v.trim()) } });
      await load();
    } catch (e) {
      reportError(e);
    }
  }
  async function create(ev) {
    ev.preventDefault();
    try {
      const body = { name: name.value };
      if (limit.value !== '') body.maxSandboxes = Number(limit.value);
      const k = await api('/api-keys', { method: 'POST', body });
      name.value = '';
      limit.value = '';
      created.replaceChildren(h('p', {}, `Key "${k.name}" created. Copy it now: it is stored hashed and cannot be shown again.`),
        h('p', { class: 'secret mono', id: 'new-key' }, k.key),
        h('button', { type: 'button', onclick: () => navigator.clipboard.writeText(k.key).then(() => announce('copied')) }, 'Copy'));
      await load();
    } catch (e) {
      reportError(e);
    }
  }
  async function revoke(k) {
    const mine = k.current ? ' This is the key this browser signed in with: the console signs out.' : '';
    if (!confirm(`Revoke key ${k.name} (${k.id})? Programs using it stop working.${mine}`)) return;
    try {
      await api(`/api-keys/${k.id}`, { method: 'DELETE' });
      if (k.current) return signOut('You revoked the key this browser used.');
      await load();
    } catch (e) {
      reportError(e);
    }
  }
  await load();
}

// ---------- start ----------

async function main() {
  try {
    const r = await fetch('config.json');
    if (r.ok) config = await r.json();
  } catch {}
  $('#signin-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const key = $('#apikey').value.trim();
    const err = $('#signin-error');
    err.hidden = true;
    try {
      await signIn(key);
      $('#apikey').value = '';
      if (!location.hash || location.hash === '#/signin') location.hash = '#/sandboxes';
      else route();
      $('#main').focus();
    } catch (e) {
      err.textContent = e.status === 401
        ? 'That API key was not accepted. Use the E2B_API_KEY that deploy/cube up printed, or create one with cubemastercli key create.'
        : e.message;
      err.hidden = false;
      $('#apikey').focus();
    }
  });
  $('#signout').addEventListener('click', () => signOut());
  window.addEventListener('hashchange', route);
  route();
}

main();
