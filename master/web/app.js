// taskq dashboard: one page, hash routes, a 1 s poll of /api/v1/status and
// /api/v1/history, and actions as POST /api/v1/ops/NAME with the CSRF token
// (docs/http.md). Everything is built with DOM calls and textContent: no
// markup from data, no inline script or style (the CSP forbids both).
'use strict';

const POLL_MS = 1000;
const PAGES = ['overview', 'queues', 'workers', 'tasks', 'dead', 'failed'];
const state = {
  session: null, status: null, points: [], lastT: 0, charts: null,
  rendered: {}, listAfter: null, listQuery: null, lastOk: 0, setIds: {dead: [], failed: []},
};

// ---- small helpers -----------------------------------------------------

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined) continue;
    e.appendChild(typeof kid === 'object' ? kid : document.createTextNode(String(kid)));
  }
  return e;
}

function $(id) { return document.getElementById(id); }

function fmtNum(n) {
  if (n === null || n === undefined) return '–';
  return Number(n).toLocaleString('en-US');
}

function fmtAge(ms) {
  if (ms === null || ms === undefined) return '–';
  const s = ms / 1000;
  if (s < 1) return ms.toFixed(0) + ' ms';
  if (s < 120) return s.toFixed(1) + ' s';
  if (s < 7200) return (s / 60).toFixed(1) + ' min';
  if (s < 172800) return (s / 3600).toFixed(1) + ' h';
  return (s / 86400).toFixed(1) + ' d';
}

function fmtTime(ms) {
  if (!ms) return '–';
  return new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

function fmtBytes(n) {
  if (n < 1024) return n + ' B';
  if (n < 1048576) return (n / 1024).toFixed(1) + ' KiB';
  if (n < 1073741824) return (n / 1048576).toFixed(1) + ' MiB';
  return (n / 1073741824).toFixed(2) + ' GiB';
}

// A table: cols = [[title, className]], rows = [[cells...]] (strings or nodes),
// rowAttrs(i) = attributes of row i.
function table(id, cols, rows, rowAttrs) {
  const head = el('tr', {}, cols.map(([t, c]) => el('th', {class: c}, t)));
  const body = rows.map((r, i) => el('tr', rowAttrs ? rowAttrs(i) : {},
    r.map((cell, k) => el('td', {class: cols[k][1]}, cell))));
  if (!rows.length)
    body.push(el('tr', {}, el('td', {colspan: String(cols.length), class: 'note'}, 'none')));
  return el('table', {id}, el('thead', {}, head), el('tbody', {}, body));
}

// Replace the children of box with node, only when key (the data shown)
// changed: a poll that brings nothing new leaves the DOM (and a click in
// progress) alone.
function put(boxId, key, node) {
  if (state.rendered[boxId] === key) return;
  state.rendered[boxId] = key;
  const box = $(boxId);
  box.replaceChildren(node);
}

let flashTimer = null;
function flash(msg, isError) {
  const f = $('flash');
  f.textContent = msg;
  f.className = 'flash' + (isError ? ' error' : '');
  clearTimeout(flashTimer);
  flashTimer = setTimeout(() => f.classList.add('hidden'), isError ? 8000 : 4000);
}

// ---- the API -----------------------------------------------------------

async function getJSON(path) {
  const r = await fetch(path, {credentials: 'same-origin', cache: 'no-store'});
  const j = await r.json().catch(() => ({ok: false, error: 'HTTP ' + r.status}));
  if (!r.ok || j.ok === false) throw new Error(j.error || ('HTTP ' + r.status));
  return j;
}

async function readOp(name, args) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(args || {}))
    if (v !== undefined && v !== null && v !== '') q.set(k, v);
  return getJSON('/api/v1/ops/' + name + (q.toString() ? '?' + q : ''));
}

async function action(name, body) {
  const r = await fetch('/api/v1/ops/' + name, {
    method: 'POST', credentials: 'same-origin', cache: 'no-store',
    headers: {'Content-Type': 'application/json', 'X-CSRF-Token': state.session.csrf},
    body: JSON.stringify(body || {}),
  });
  const j = await r.json().catch(() => ({ok: false, error: 'HTTP ' + r.status}));
  if (!r.ok || j.ok === false) throw new Error(j.error || ('HTTP ' + r.status));
  return j;
}

// An action button: runs fn, then flashes its outcome and refreshes.
function actButton(label, cls, fn, confirmText) {
  const disabled = state.session && state.session.role !== 'admin';
  return el('button', {
    class: cls, disabled, title: disabled ? 'needs the admin role' : null,
    onclick: async (ev) => {
      ev.preventDefault();
      if (confirmText && !window.confirm(confirmText)) return;
      try {
        const msg = await fn();
        flash(msg || (label + ': done'), false);
      } catch (e) {
        flash(label + ': ' + e.message, true);
      }
      state.rendered = {};
      poll();
      refreshSets();
    },
  }, label);
}

// ---- pages ---------------------------------------------------------------

function currentPage() {
  const h = (location.hash || '#overview').slice(1).split('/')[0];
  return PAGES.includes(h) ? h : 'overview';
}

function showPage() {
  const page = currentPage();
  for (const p of PAGES) {
    $('page-' + p).classList.toggle('hidden', p !== page);
    $('nav-' + p).classList.toggle('active', p === page);
  }
  const parts = location.hash.slice(1).split('/');
  if (page === 'tasks' && parts[1]) showTask(parts[1]);
  state.rendered = {};
  render();
  refreshSets();
}

function cards(s) {
  const t = s.totals || {};
  const nw = s.workers_total || 0;
  const items = [
    ['queued', t.queued], ['running', t.running], ['delayed', t.delayed],
    ['done (since start)', t.done], ['failed (since start)', t.failed], ['dead now', t.dead],
    ['workers', nw], ['clients', s.clients],
    ['submitted/s', s.rates ? s.rates.submitted_per_s.toFixed(1) : '–'],
    ['done/s', s.rates ? s.rates.done_per_s.toFixed(1) : '–'],
  ];
  return el('div', {class: 'cards'}, items.map(([k, v]) =>
    el('div', {class: 'card', 'data-card': k}, el('div', {class: 'v'}, typeof v === 'string' ? v : fmtNum(v)),
      el('div', {class: 'k'}, k))));
}

function queueRows(s, withActions) {
  return (s.queues || []).map(q => {
    const row = [q.name, fmtNum(q.queued), fmtNum(q.delayed), fmtNum(q.running), fmtNum(q.done),
      fmtNum(q.failed), fmtNum(q.dead), fmtNum(q.cancelled), fmtAge(q.oldest_age_ms),
      q.paused ? el('span', {class: 'paused'}, 'paused') : 'active'];
    if (withActions)
      row.push(el('span', {},
        q.paused
          ? actButton('Resume', 'act-resume', async () => { await action('resume', {queue: q.name}); return 'queue ' + q.name + ' resumed'; })
          : actButton('Pause', 'act-pause', async () => { await action('pause', {queue: q.name}); return 'queue ' + q.name + ' paused'; }),
        ' ',
        actButton('Empty', 'act-empty danger', async () => {
          let n = 0, r;
          do { // at most 10000 a request: ask again while more
            r = await action('queue_empty', {queue: q.name});
            n += r.cancelled;
          } while (r.more && r.cancelled > 0);
          return 'queue ' + q.name + ': ' + fmtNum(n) + ' queued tasks cancelled';
        }, 'Cancel every queued task of ' + q.name + '?')));
    return row;
  });
}

const QCOLS = [['Queue'], ['Queued', 'num'], ['Delayed', 'num'], ['Running', 'num'], ['Done', 'num'],
  ['Failed', 'num'], ['Dead', 'num'], ['Cancelled', 'num'], ['Oldest', 'num'], ['State']];

function workerRows(s, withActions) {
  return (s.workers || []).map(w => {
    const running = Array.isArray(w.running) ? w.running.join(' ') : (w.running_ids || []).join(' ');
    const row = [w.name, w.id, w.address, fmtNum(w.slots), fmtNum(w.busy),
      el('span', {class: 'ids'}, running || (w.busy ? '' : '–')),
      (w.functions || []).join(', ') || 'any',
      el('span', {class: 'state-' + w.state}, w.state), fmtNum(w.done), fmtAge(w.idle_ms) + ' ago'];
    if (withActions)
      row.push(el('span', {},
        actButton('Quiet', 'act-quiet', async () => { const r = await action('quiet', {worker: w.id}); return 'quieted ' + r.workers.map(x => x.name).join(', '); }),
        ' ',
        actButton('Stop', 'act-stop danger', async () => { const r = await action('stop', {worker: w.id}); return 'stopping ' + r.workers.map(x => x.name).join(', '); },
          'Stop worker ' + w.name + ' (it finishes its running tasks and exits)?')));
    return row;
  });
}

const WCOLS = [['Name'], ['Id'], ['Address'], ['Slots', 'num'], ['Busy', 'num'], ['Running tasks', 'ids'],
  ['Functions'], ['State'], ['Done', 'num'], ['Last seen']];

function render() {
  const s = state.status;
  if (!s) return;
  const page = currentPage();
  const key = JSON.stringify([s.queues, s.workers, s.totals, s.journal, s.rates, state.session && state.session.role]);
  if (page === 'overview') {
    put('cards', JSON.stringify([s.totals, s.rates, s.workers_total, s.clients]), cards(s));
    put('ov-queues', JSON.stringify(s.queues), table('ov-queues-table', QCOLS, queueRows(s, false),
      i => ({'data-queue': s.queues[i].name})));
    put('ov-workers', JSON.stringify(s.workers), table('ov-workers-table', WCOLS, workerRows(s, false),
      i => ({'data-worker': s.workers[i].name})));
    const j = s.journal || {};
    put('ov-journal', JSON.stringify(j), table('journal-table', [['Fsync'], ['On disk', 'num'], ['Live', 'num'], ['Compactions', 'num'], ['State']],
      [[j.fsync, fmtBytes(j.bytes || 0), fmtBytes(j.live_bytes || 0), fmtNum(j.compactions),
        j.error ? el('span', {class: 'paused'}, 'write failing: ' + j.error + ' (submits refused)') : 'ok']]));
    drawCharts();
  } else if (page === 'queues') {
    put('queues', key, table('queues-table', QCOLS.concat([['Actions']]), queueRows(s, true),
      i => ({'data-queue': s.queues[i].name})));
    const fns = s.functions || [];
    const unserved = fns.filter(f => f.unserved);
    put('warnings', JSON.stringify(fns), el('div', {},
      unserved.map(f => el('p', {class: 'warn', 'data-unserved': f.name},
        fmtNum(f.queued) + ' tasks wait for function ' + f.name + ', which no connected worker serves')),
      el('h2', {}, 'Functions'),
      table('functions-table', [['Function'], ['Queued', 'num'], ['Running', 'num'], ['Workers', 'num'], ['']],
        fns.map(f => [f.name, fmtNum(f.queued), fmtNum(f.running), fmtNum(f.workers),
          f.unserved ? el('span', {class: 'warn'}, 'no worker serves it') : '']),
        i => ({'data-fn': fns[i].name}))));
  } else if (page === 'workers') {
    put('workers', key, table('workers-table', WCOLS.concat([['Actions']]), workerRows(s, true),
      i => ({'data-worker': s.workers[i].name})));
  }
  $('footer').textContent = 'taskq-master ' + (s.master ? s.master.version : '') + ' · ' +
    (s.master ? s.master.endpoint : '') + ' · up ' + fmtAge(s.master ? s.master.uptime_ms : 0) +
    (s.queues_truncated ? ' · showing ' + s.queues.length + ' of ' + s.queues_total + ' queues' : '');
}

// ---- charts ----------------------------------------------------------------

function makeCharts() {
  if (typeof window.Chart !== 'function') {
    $('nochart').classList.remove('hidden');
    return null;
  }
  const common = {
    animation: false, responsive: true, maintainAspectRatio: false, parsing: false,
    interaction: {mode: 'nearest', intersect: false},
    scales: {x: {type: 'linear', ticks: {callback: v => new Date(v * 1000).toISOString().slice(11, 19), maxTicksLimit: 7}},
      y: {beginAtZero: true}},
    plugins: {legend: {position: 'bottom'}},
    elements: {point: {radius: 0}, line: {borderWidth: 1.5}},
  };
  const ds = (label, color) => ({label, data: [], borderColor: color, backgroundColor: color});
  const rates = new window.Chart($('chart-rates'), {type: 'line', options: common,
    data: {datasets: [ds('submitted', '#2563eb'), ds('done', '#15803d'), ds('failed', '#b91c1c')]}});
  const wait = new window.Chart($('chart-wait'), {type: 'line', options: common,
    data: {datasets: [ds('mean wait (ms)', '#b45309')]}});
  return {rates, wait};
}

function drawCharts() {
  if (!state.charts) return;
  const pts = state.points;
  const r = state.charts.rates.data.datasets;
  r[0].data = pts.map(p => ({x: p[0], y: p[1]}));
  r[1].data = pts.map(p => ({x: p[0], y: p[2]}));
  r[2].data = pts.map(p => ({x: p[0], y: p[3]}));
  state.charts.wait.data.datasets[0].data = pts.filter(p => p[4] !== null).map(p => ({x: p[0], y: p[4]}));
  state.charts.rates.update('none');
  state.charts.wait.update('none');
}

// ---- tasks -----------------------------------------------------------------

function taskLink(id) {
  return el('a', {class: 'tid', href: '#tasks/' + id, 'data-task': String(id)}, String(id));
}

// One value of the show view as text: times in UTC, the worker as
// "name (id, connected)", other objects as JSON.
function kvText(k, v) {
  if (k === 'worker' && v && typeof v === 'object')
    return (v.name || '?') + ' (' + (v.id || '?') + (v.connected ? ', connected' : ', gone') + ')';
  if (v !== null && typeof v === 'object')
    return JSON.stringify(v);
  if (k.endsWith('_ms') && typeof v === 'number' && v > 1e12)
    return fmtTime(v) + ' (' + v + ')';
  return v === null ? '-' : String(v);
}

function kvTable(id, obj) {
  const rows = Object.entries(obj).filter(([k]) => k !== 'ok').map(([k, v]) =>
    el('tr', {'data-field': k}, el('th', {}, k),
      el('td', {class: k === 'error' || k === 'result' || k === 'payload' ? 'err' : ''},
        kvText(k, v))));
  return el('table', {id, class: 'kv'}, el('tbody', {}, rows));
}

async function showTask(id) {
  const view = $('task-view');
  if (!/^\d+$/.test(String(id).trim())) {
    view.replaceChildren(el('p', {class: 'warn'}, 'a task id is a number'));
    return;
  }
  $('task-id').value = id;
  try {
    const r = await readOp('show', {ids: String(id).trim()});
    const t = (r.tasks || [])[0] || {};
    if (t.state === 'unknown') {
      view.replaceChildren(el('p', {class: 'warn'}, 'task ' + id + ': unknown (never submitted, or its result expired)'));
      return;
    }
    const box = el('div', {}, el('h3', {}, 'Task ' + id), kvTable('task-detail', t));
    const st = t.state;
    if (st === 'dead' || st === 'failed')
      box.appendChild(el('div', {class: 'actions'},
        actButton('Retry', 'act-retry', async () => { await action('retry', {ids: [Number(id)]}); showTask(id); return 'task ' + id + ' queued again'; }), ' ',
        actButton('Purge', 'act-purge danger', async () => { await action('purge', {ids: [Number(id)]}); return 'task ' + id + ' purged'; }, 'Purge task ' + id + '?')));
    view.replaceChildren(box);
  } catch (e) {
    view.replaceChildren(el('p', {class: 'warn'}, 'task ' + id + ': ' + e.message));
  }
}

async function listTasks(after) {
  const q = {queue: $('list-queue').value.trim(), state: $('list-state').value,
    fn: $('list-fn').value.trim(), limit: 50, after: after || ''};
  try {
    const r = await readOp('list', q);
    const tasks = r.tasks || [];
    const cols = [['Id'], ['Queue'], ['Function'], ['State'], ['Priority', 'num'], ['Attempts', 'num'], ['Submitted']];
    $('task-table').replaceChildren(table('tasks-table', cols, tasks.map(t =>
      [taskLink(t.id), t.queue, t.fn, t.state, fmtNum(t.priority), fmtNum(t.attempts), fmtTime(t.submitted_ms)]),
      i => ({'data-task': String(tasks[i].id)})));
    const next = r.next_after || r.next || (r.more && tasks.length ? tasks[tasks.length - 1].id : null);
    state.listAfter = r.more === false ? null : next;
    $('list-next').classList.toggle('hidden', !state.listAfter);
  } catch (e) {
    $('task-table').replaceChildren(el('p', {class: 'warn'}, 'list: ' + e.message));
    $('list-next').classList.add('hidden');
  }
}

// ---- dead and failed -----------------------------------------------------------

async function refreshSet(which) {
  let r;
  try {
    r = await readOp(which, {limit: 200});
  } catch (e) {
    put(which, 'error:' + e.message, el('p', {class: 'warn'}, which + ': ' + e.message));
    return;
  }
  const tasks = r.tasks || [];
  state.setIds[which] = tasks.map(t => t.id);
  const cols = [['Id'], ['Queue'], ['Function'], ['Attempts', 'num'], ['Error', 'err'], ['Finished'], ['Actions']];
  const rows = tasks.map(t => [taskLink(t.id), t.queue, t.fn, fmtNum(t.attempts),
    t.error !== undefined ? t.error + (t.error_truncated ? ' …' : '') : (t.error_base64 ? '(binary, base64) ' + t.error_base64 : ''),
    fmtTime(t.finished_ms),
    el('span', {},
      actButton('Retry', 'act-retry', async () => { const x = await action('retry', {ids: [t.id]}); return 'task ' + t.id + ': ' + x.items[0].outcome; }), ' ',
      actButton('Purge', 'act-purge danger', async () => { const x = await action('purge', {ids: [t.id]}); return 'task ' + t.id + ': ' + x.items[0].outcome; }))]);
  put(which, JSON.stringify(tasks) + (state.session ? state.session.role : ''),
    el('div', {}, table(which + '-table', cols, rows, i => ({'data-task': String(tasks[i].id)})),
      r.more ? el('p', {class: 'note'}, 'more not shown (the first 200)') : null));
}

function refreshSets() {
  const page = currentPage();
  if (page === 'dead' || page === 'failed') refreshSet(page);
}

// Retry or purge every dead task ("all"), or every failed task listed
// (the failed set has no "all": its ids, at most 200 shown, go by id).
function setButtons(which) {
  const body = () => which === 'dead' ? {all: true} : {ids: state.setIds.failed};
  const label = which === 'dead' ? 'all' : 'listed';
  $(which + '-retry-all').replaceWith(actButton('Retry ' + label, 'act-retry-all', async () => {
    if (which !== 'dead' && !state.setIds.failed.length) return 'nothing to retry';
    const r = await action('retry', body()); return 'retried ' + fmtNum(r.count);
  }, 'Retry every ' + which + ' task' + (which === 'dead' ? '' : ' listed') + '?'));
  $(which + '-purge-all').replaceWith(actButton('Purge ' + label, 'act-purge-all danger', async () => {
    if (which !== 'dead' && !state.setIds.failed.length) return 'nothing to purge';
    const r = await action('purge', body()); return 'purged ' + fmtNum(r.count);
  }, 'Purge every ' + which + ' task' + (which === 'dead' ? '' : ' listed') + '?'));
}

// ---- the poll ----------------------------------------------------------------

async function poll() {
  try {
    const [s, h] = await Promise.all([getJSON('/api/v1/status'),
      getJSON('/api/v1/history?since=' + state.lastT)]);
    state.status = s;
    for (const p of h.points) state.points.push(p);
    if (h.points.length) state.lastT = h.points[h.points.length - 1][0];
    const cutoff = h.now - 3600;
    while (state.points.length && state.points[0][0] <= cutoff) state.points.shift();
    state.lastOk = Date.now();
    $('live').textContent = 'live · ' + new Date().toISOString().slice(11, 19) + 'Z';
    $('live').classList.remove('stale');
    render();
  } catch (e) {
    $('live').textContent = 'disconnected: ' + e.message;
    $('live').classList.add('stale');
  }
}

async function main() {
  try {
    state.session = await getJSON('/api/v1/session');
  } catch (e) {
    $('live').textContent = 'cannot start: ' + e.message;
    return;
  }
  $('who').textContent = state.session.user + ' (' + state.session.role + ')';
  state.charts = makeCharts();
  setButtons('dead');
  setButtons('failed');
  $('task-search').addEventListener('submit', ev => {
    ev.preventDefault();
    location.hash = '#tasks/' + $('task-id').value.trim();
  });
  $('task-list').addEventListener('submit', ev => { ev.preventDefault(); listTasks(null); });
  $('list-next').addEventListener('click', () => listTasks(state.listAfter));
  window.addEventListener('hashchange', showPage);
  showPage();
  await poll();
  setInterval(poll, POLL_MS);
  setInterval(refreshSets, 2 * POLL_MS);
}

document.addEventListener('DOMContentLoaded', main);
