// Pages about topics: overview, topics list, browse, live tail.

import { h, section, muted, button, link, setText, nc, int, rate, bytes, duration, grouped, when, showError, table, num, emptyRow, field, liveBadge, dl, confirmDialog } from './dom.js';
import { api, overview, invalidateOverview, seg } from './api.js';
import { eventDetail, expandableRows, removeRow, dataPreview } from './event.js';

const PAGE_EVENTS = 100; // the server's default page
const TAIL_ROWS_MAX = 500;

export const topicHref = (t) => '#/topics/' + seg(t);
export const groupHref = (g) => '#/groups/' + seg(g);
export const dlqHref = (g) => '#/dlq/' + seg(g);
export const schemasHref = (t) => topicHref(t) + '/schemas';

/** "7 d", "1.0 GiB", "7 d or 1.0 GiB", "forever". */
function retention(ms, b) {
  const parts = [];
  if (ms != null) parts.push(duration(ms));
  if (b != null) parts.push(bytes(b));
  return parts.join(' or ') || 'forever';
}

/** The damaged and fenced things ([] when none). */
function problemList(o) {
  const items = [
    ...(o.damaged || []).map((d) => h('li', null, h('strong', null, `${d.kind} ${d.name}`), `: ${d.problem} `, muted(d.served ? '(still served)' : '(not served)'))),
    ...(o.fenced || []).map((f) => h('li', null, h('strong', null, `${f.kind} ${f.name}`), ` is fenced: ${f.reason}`, f.storage_full ? h('span', { class: 'tag warn' }, 'storage full') : null)),
  ];
  return items.length ? [h('h2', null, 'Problems'), h('ul', { 'data-testid': 'problems', class: 'problems' }, items)] : [];
}

// ---- overview

export async function overviewPage(ctx) {
  const status = h('span', { 'data-testid': 'status', class: 'badge' }, '…');
  const live = liveBadge();
  const { main, errs } = ctx.page('overview', 'Overview', null, h('span', { class: 'status-wrap' }, 'Status ', status), live);
  const o = await ctx.get(overview(0), errs);
  if (!o) return;
  const cards = {};
  const card = (key, label, testid, unit, href) => {
    cards[key] = h('span', { 'data-testid': testid }, '—');
    return h('div', { class: 'card' }, h('div', { class: 'card-label' }, href ? link(href, label) : label), h('div', { class: 'card-value' }, cards[key], unit && h('span', { class: 'unit' }, unit)));
  };
  const problems = h('div');
  const streamErr = h('div');
  const tg = table('top-groups', ['Group', nc('Members'), nc('Lag'), nc('Dead letters')], 'Groups with the most lag');
  main.append(
    streamErr,
    h('section', { class: 'cards', 'aria-label': 'Totals' },
      card('in', 'Events in', 'events-in', '/s'), card('out', 'Events out', 'events-out', '/s'),
      card('lag', 'Total lag', 'total-lag', 'events'), card('dl', 'Dead letters', 'dead-letters', null, '#/dlq'),
      card('topics', 'Topics', 'topic-count', null, '#/topics'), card('groups', 'Groups', 'group-count', null, '#/groups')),
    problems,
    section('Groups with the most lag', tg.wrap),
  );
  const groups = new Map();
  let lastStatus = '';
  const setStatus = (st) => {
    setText(status, st);
    status.className = 'badge ' + (st === 'ready' ? 'ok' : 'warn');
    lastStatus = st;
  };
  const setTotals = (t) => {
    if (!t) return;
    setText(cards.in, rate(t.events_in_per_s));
    setText(cards.out, rate(t.events_out_per_s));
    setText(cards.lag, int(t.lag));
    setText(cards.dl, int(t.dead_letters));
    setText(cards.topics, int(t.topics));
    setText(cards.groups, int(t.groups));
  };
  // the 10 groups with the most lag (then dead letters, then by name)
  const renderTops = () => {
    const gs = [...groups.values()].sort((x, y) => y.lag - x.lag || y.dead_letters - x.dead_letters || (x.name < y.name ? -1 : 1)).slice(0, 10);
    tg.tbody.replaceChildren(...gs.map((g) => h('tr', { 'data-group': g.name }, h('td', null, link(groupHref(g.name), g.name)), num(int(g.members)), num(int(g.lag)), num(int(g.dead_letters)))));
    if (!gs.length) tg.tbody.append(emptyRow(4, 'No consumer groups yet.'));
  };
  const load = (ov) => {
    setStatus(ov.status);
    setTotals(ov.totals);
    problems.replaceChildren(...problemList(ov));
    groups.clear();
    for (const g of ov.groups || []) groups.set(g.name, { ...g });
    renderTops();
  };
  load(o);
  ctx.ready();

  let refetching = false;
  ctx.ticks(live, streamErr, (t) => {
    setTotals(t.totals);
    if (t.status && t.status !== lastStatus && !refetching) {
      // the problem list is not in the tick: read it again
      refetching = true;
      overview(0).then((ov) => ctx.live && load(ov), (e) => ctx.fail(errs, e)).finally(() => (refetching = false));
    }
    if (t.status) setStatus(t.status);
    for (const [name, v] of Object.entries(t.groups || {})) if (groups.has(name)) Object.assign(groups.get(name), v);
    renderTops();
  });
}

// ---- topics

/** "7d" → {retention_ms}, "500MB" → {retention_bytes}; a bare number is milliseconds. */
export function parseRetention(text) {
  const t = text.trim();
  if (!t) return {};
  const m = /^(\d+(?:\.\d+)?)\s*([a-zA-Z]*)$/.exec(t);
  const time = { '': 1, ms: 1, s: 1e3, sec: 1e3, m: 6e4, min: 6e4, h: 36e5, d: 864e5, w: 6048e5 };
  const size = { b: 1, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3, tib: 1024 ** 4 };
  const u = m && m[2].toLowerCase();
  if (m && u in time) return { retention_ms: Math.round(m[1] * time[u]) };
  if (m && u in size) return { retention_bytes: Math.round(m[1] * size[u]) };
  throw new Error(`Retention "${t}" is neither a duration (7d, 12h, 30min, 90s) nor a size (500MB, 2GiB).`);
}

function createForm(ctx, note, reload) {
  const name = h('input', { id: 'name', name: 'name', required: true, autocomplete: 'off', spellcheck: 'false' });
  const parts = h('input', { id: 'partitions', name: 'partitions', type: 'number', min: 1, step: 1, value: 1, required: true });
  const ret = h('input', { id: 'retention', name: 'retention', autocomplete: 'off', placeholder: 'forever', 'aria-describedby': 'retention-hint' });
  const err = h('div');
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Create topic');
  const form = h('form', { 'data-testid': 'create-topic', class: 'inline-form', 'aria-labelledby': 'create-title' },
    h('h2', { id: 'create-title' }, 'Create a topic'),
    h('div', { class: 'fields' },
      field('name', 'Name', name),
      field('partitions', 'Partitions', parts, 'narrow'),
      h('p', { class: 'field' }, h('label', { for: 'retention' }, 'Retention'), ret, h('span', { id: 'retention-hint', class: 'hint' }, 'e.g. 7d, 12h or 500MB; empty keeps events forever')),
      h('p', { class: 'field button-field' }, submit)),
    err);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    showError(err, '');
    let body;
    try {
      const n = Number(parts.value);
      if (!name.value.trim()) throw new Error('Enter a topic name.');
      if (!Number.isInteger(n) || n < 1) throw new Error('Partitions is a whole number, at least 1.');
      body = { name: name.value.trim(), partitions: n, ...parseRetention(ret.value) };
    } catch (x) {
      return showError(err, x.message);
    }
    submit.disabled = true;
    try {
      await api('/v1/topics', { method: 'POST', body });
      note.textContent = `Created topic ${body.name}.`;
      form.reset();
      invalidateOverview();
      await reload();
    } catch (x) {
      ctx.fail(err, x);
    }
    submit.disabled = false;
  });
  return form;
}

export async function topicsPage(ctx) {
  const count = h('span', { class: 'muted' });
  const live = liveBadge();
  const { main, errs } = ctx.page('topics', 'Topics', null, count, live);
  const note = h('div', { role: 'status', class: 'note' });
  const streamErr = h('div');
  main.append(note, streamErr);
  const o = await ctx.get(overview(0), errs);
  if (!o) return;
  if (o.may && o.may.create_topics) main.append(createForm(ctx, note, reload));

  const filter = h('input', { id: 'topic-filter', type: 'search', autocomplete: 'off', placeholder: 'Name contains…' });
  const internal = h('input', { id: 'show-internal', type: 'checkbox' });
  const t = table('topics', ['Name', nc('Partitions'), nc('Events'), nc('Size'), 'Retention', nc('In/s'), { label: 'Actions', sr: true }], 'Topics');
  main.append(h('div', { class: 'toolbar' }, field('topic-filter', 'Filter', filter), h('p', { class: 'check' }, internal, h('label', { for: 'show-internal' }, 'Show internal topics (DLQ and replay)'))), t.wrap);

  let topics = o.topics || [];
  let cells = new Map();
  const row = (tp) => {
    const c = { ev: num(int(tp.events)), sz: num(bytes(tp.bytes), { title: grouped(tp.bytes) + ' bytes' }), rt: num(rate(tp.in_per_s)) };
    cells.set(tp.name, c);
    const may = tp.may || [];
    const reads = may.includes('consume');
    return h('tr', { 'data-topic': tp.name, class: tp.internal ? 'internal' : null },
      h('td', { class: 'name' }, reads ? link(topicHref(tp.name), tp.name) : tp.name, tp.internal && h('span', { class: 'tag' }, 'internal'),
        tp.problems > 0 && h('span', { class: 'tag warn' }, tp.problems === 1 ? '1 problem' : `${tp.problems} problems`)),
      num(int(tp.partitions)), c.ev, c.sz, h('td', null, retention(tp.retention_ms, tp.retention_bytes)), c.rt,
      // every topic listed is one the caller sees, and seeing it is enough to read its schemas
      h('td', { class: 'actions' }, reads && link('#/tail/' + seg(tp.name), 'Tail'), h('a', { href: schemasHref(tp.name), 'aria-label': `Schemas of ${tp.name}` }, 'Schemas'),
        may.includes('admin') && h('button', { type: 'button', class: 'small danger-ghost', 'data-action': 'delete-topic', 'aria-label': `Delete topic ${tp.name}` }, 'Delete')));
  };
  function render() {
    const q = filter.value.trim().toLowerCase();
    const frag = document.createDocumentFragment();
    cells = new Map();
    let shown = 0;
    for (const tp of topics) {
      if ((tp.internal && !internal.checked) || (q && !tp.name.toLowerCase().includes(q))) continue;
      frag.appendChild(row(tp));
      shown++;
    }
    if (!shown) frag.appendChild(emptyRow(7, topics.length ? 'No topic matches.' : 'No topics yet.'));
    t.tbody.replaceChildren(frag);
    const user = topics.filter((x) => !x.internal).length;
    count.textContent = `${grouped(user)} ${user === 1 ? 'topic' : 'topics'}` + (shown !== user ? `, ${grouped(shown)} shown` : '');
  }
  async function reload() {
    const ov = await overview(0);
    if (!ctx.live) return;
    topics = ov.topics || [];
    render();
  }
  let debounce = 0;
  filter.addEventListener('input', () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => ctx.live && render(), 150);
  });
  internal.addEventListener('change', render);
  t.tbody.addEventListener('click', async (e) => {
    const btn = e.target.closest('button[data-action="delete-topic"]');
    if (!btn) return;
    const name = btn.closest('tr').dataset.topic;
    const tp = topics.find((x) => x.name === name);
    const ok = await confirmDialog({
      title: `Delete topic ${name}?`,
      message: [h('p', null, `This deletes the topic and its ${grouped(tp ? tp.events : 0)} stored events for good; groups reading it stop receiving from it. This cannot be undone.`)],
      confirmLabel: 'Delete topic',
      danger: true,
      typeToConfirm: name,
    });
    if (!ok || !ctx.live) return;
    btn.disabled = true;
    try {
      await api('/v1/topics/' + seg(name), { method: 'DELETE' });
      invalidateOverview();
      topics = topics.filter((x) => x.name !== name);
      note.textContent = `Deleted topic ${name}.`;
      render();
    } catch (x) {
      btn.disabled = false;
      ctx.fail(errs, x);
    }
  });
  render();
  ctx.ready();

  ctx.ticks(live, streamErr, (tick) => {
    for (const [name, v] of Object.entries(tick.topics || {})) {
      const c = cells.get(name);
      if (!c) continue;
      setText(c.ev, int(v.events));
      if (setText(c.sz, bytes(v.bytes))) c.sz.title = grouped(v.bytes) + ' bytes';
      setText(c.rt, rate(v.in_per_s));
    }
  });
}

// ---- browse

export async function browsePage(ctx) {
  const topic = ctx.params.topic;
  ctx.setLastTopic(topic);
  const { main, errs } = ctx.page('browse', topic, [link('#/topics', 'Topics'), h('span', null, topic)], h('a', { href: '#/tail/' + seg(topic), class: 'button' }, 'Live tail'), h('a', { href: schemasHref(topic), class: 'button' }, 'Schemas'));
  const info = await ctx.get(api('/v1/topics/' + seg(topic), { signal: ctx.signal }), errs);
  if (!info) return;
  const parts = info.partitions || [];
  const c = info.config || {};
  main.append(dl([
    ['Partitions', int(parts.length)],
    ['Events', grouped(parts.reduce((n, p) => n + (p.latest_offset - p.earliest_offset), 0))],
    ['Size', bytes(parts.reduce((n, p) => n + p.bytes, 0))],
    ['Retention', retention(c.retention_ms, c.retention_bytes)],
    ['Created', when(info.created_ms ?? info.created)],
  ], 'kv summary'));
  const bad = parts.filter((p) => p.problem);
  if (bad.length) main.append(h('ul', { class: 'problems' }, bad.map((p) => h('li', null, `Partition ${p.partition}: ${p.problem}`))));

  const q = ctx.query;
  const qOffset = /^\d+$/.test(q.get('offset') || '') ? Number(q.get('offset')) : null;
  const start = Math.max(0, Math.min(parts.length - 1, parseInt(q.get('partition'), 10) || 0));
  const partition = h('select', { id: 'partition', name: 'partition', value: start },
    parts.map((p) => h('option', { value: p.partition }, `${p.partition} (offsets ${p.earliest_offset}–${Math.max(p.earliest_offset, p.latest_offset - 1)})`)));
  const offset = h('input', { id: 'offset', name: 'offset', type: 'number', min: 0, step: 1, placeholder: 'earliest', value: qOffset ?? undefined });
  const time = h('input', { id: 'time', name: 'time', type: 'datetime-local', step: 1 });
  offset.addEventListener('input', () => offset.value && (time.value = ''));
  time.addEventListener('input', () => time.value && (offset.value = ''));
  const form = h('form', { class: 'toolbar', 'aria-label': 'Position' },
    field('partition', 'Partition', partition, 'narrow'), field('offset', 'Offset', offset, 'narrow'), field('time', 'Or from time', time),
    h('p', { class: 'field button-field' }, h('button', { type: 'submit', class: 'primary' }, 'Load')));
  const older = button('Older', { 'data-action': 'older' });
  const newer = button('Newer', { 'data-action': 'newer' });
  const newest = button('Newest', { 'data-action': 'newest' });
  const where = h('p', { class: 'muted', role: 'status' });
  const loadErr = h('div');
  const t = table('events', [nc('Offset'), 'Appended', 'Type', 'Key', 'ID'], 'Events');
  main.append(form, loadErr, h('div', { class: 'pager' }, older, where, newer, newest), t.wrap);

  const byOffset = new Map();
  let cur = { partition: start, first: null, next: null };
  let seq = 0;
  expandableRows(t.tbody, 5, (tr) => byOffset.has(tr.dataset.offset) && eventDetail(byOffset.get(tr.dataset.offset)));
  const earliest = () => (parts.find((x) => x.partition === cur.partition) || { earliest_offset: 0 }).earliest_offset;

  async function load(at, keepIfEmpty = false) {
    const my = ++seq;
    showError(loadErr, '');
    const qs = new URLSearchParams({ partition: at.partition, limit: PAGE_EVENTS });
    if (at.time) qs.set('time', at.time);
    else if (at.offset != null) qs.set('offset', at.offset);
    let res;
    try {
      res = await api(`/v1/topics/${seg(topic)}/events?${qs}`, { signal: ctx.signal });
    } catch (e) {
      if (my === seq) ctx.fail(loadErr, e);
      return;
    }
    if (!ctx.live || my !== seq) return;
    const events = res.events || [];
    if (!events.length && keepIfEmpty) return (where.textContent = 'No newer events yet.');
    cur = { partition: at.partition, first: events.length ? events[0].offset : res.next_offset, next: res.next_offset };
    byOffset.clear();
    const frag = document.createDocumentFragment();
    for (const st of events) {
      byOffset.set(String(st.offset), st);
      const ev = st.event || {};
      frag.appendChild(h('tr', { class: 'row', 'data-offset': st.offset, tabindex: '0', 'aria-expanded': 'false' },
        num(int(st.offset)), h('td', { class: 'nowrap' }, when(st.append_time_ms, true)), h('td', null, ev.type ?? ''),
        h('td', { class: 'mono' }, ev.partitionkey ?? ''), h('td', { class: 'mono clip', title: ev.id ?? '' }, ev.id ?? '')));
    }
    if (!events.length) frag.appendChild(emptyRow(5, 'No events at this position.'));
    t.tbody.replaceChildren(frag);
    where.textContent = events.length
      ? `Partition ${cur.partition}, offsets ${events[0].offset}–${events[events.length - 1].offset}`
      : `Partition ${cur.partition}: no events from offset ${res.next_offset}`;
    older.disabled = cur.first <= earliest();
  }

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const p = Number(partition.value);
    const o = offset.value.trim();
    if (time.value) {
      const d = new Date(time.value);
      if (isNaN(d)) return showError(loadErr, 'Enter a valid date and time.');
      load({ partition: p, time: d.toISOString() });
    } else if (o && !/^\d+$/.test(o)) showError(loadErr, 'The offset is a whole number, 0 or more.');
    else load({ partition: p, offset: o ? Number(o) : null });
  });
  older.addEventListener('click', () => cur.first != null && load({ partition: cur.partition, offset: Math.max(earliest(), cur.first - PAGE_EVENTS) }));
  newer.addEventListener('click', () => cur.next != null && load({ partition: cur.partition, offset: cur.next }, true));
  newest.addEventListener('click', async () => {
    const fresh = await ctx.get(api('/v1/topics/' + seg(topic), { signal: ctx.signal }), loadErr);
    const fp = fresh && (fresh.partitions || []).find((x) => x.partition === cur.partition);
    if (fp) load({ partition: cur.partition, offset: Math.max(fp.earliest_offset, fp.latest_offset - PAGE_EVENTS) });
  });
  await load({ partition: start, offset: qOffset });
  ctx.ready();
}

// ---- live tail

export function tailPage(ctx) {
  const topic = ctx.params.topic;
  ctx.setLastTopic(topic);
  const status = h('span', { 'data-testid': 'tail-status', class: 'badge' }, 'connecting');
  const extra = h('span', { class: 'muted' });
  const { main, errs } = ctx.page('tail', 'Live tail: ' + topic, [link('#/topics', 'Topics'), link(topicHref(topic), topic), h('span', null, 'Live tail')],
    h('span', { role: 'status', class: 'status-wrap' }, status, ' ', extra));
  const input = (id, ph) => h('input', { id, name: id, type: 'search', autocomplete: 'off', spellcheck: 'false', placeholder: ph });
  const ins = [input('filter-type', 'exact type'), input('filter-key', 'exact key'), input('filter-q', 'anywhere in the event')];
  const pause = button('Pause', { 'data-action': 'pause' });
  const form = h('form', { class: 'toolbar', 'aria-label': 'Filters' },
    field('filter-type', 'Type', ins[0]), field('filter-key', 'Key', ins[1]), field('filter-q', 'Text contains', ins[2]),
    h('p', { class: 'field button-field' }, pause));
  const empty = h('p', { class: 'empty' }, 'Waiting for new events…');
  const t = table('tail', ['Appended', nc('Partition'), nc('Offset'), 'Type', 'Key', 'ID', 'Data'], 'Live events, newest first');
  main.insertBefore(form, errs);
  main.append(t.wrap, empty);

  const rows = new Map();
  let count = 0;
  let queue = [];
  let held = [];
  let paused = false;
  let conn = 'connecting';
  let skipped = 0;
  let flushTimer = 0;
  let streamCtl = null;
  let debounce = 0;
  const key = (x) => x.partition + '/' + x.offset;
  expandableRows(t.tbody, 7, (tr) => rows.has(key(tr.dataset)) && eventDetail(rows.get(key(tr.dataset))));

  function showStatus() {
    const text = paused ? 'paused' : conn;
    status.textContent = text;
    status.className = 'badge ' + (text === 'live' ? 'ok' : text === 'paused' ? 'neutral' : 'warn');
    extra.textContent = [held.length && `${grouped(held.length)} new while paused`, skipped && `${grouped(skipped)} skipped by the server's rate limit`].filter(Boolean).join(' · ');
    pause.textContent = paused ? 'Resume' : 'Pause';
  }
  function flush() {
    flushTimer = 0;
    if (!ctx.live || !queue.length) return;
    const batch = queue.slice(-TAIL_ROWS_MAX);
    queue = [];
    const frag = document.createDocumentFragment();
    for (let i = batch.length - 1; i >= 0; i--) {
      const st = batch[i];
      const ev = st.event || {};
      rows.set(key(st), st);
      frag.appendChild(h('tr', { class: 'row', 'data-offset': st.offset, 'data-partition': st.partition, tabindex: '0', 'aria-expanded': 'false' },
        h('td', { class: 'nowrap' }, when(st.append_time_ms, true)), num(int(st.partition)), num(int(st.offset)),
        h('td', null, ev.type ?? ''), h('td', { class: 'mono' }, ev.partitionkey ?? ''), h('td', { class: 'mono clip', title: ev.id ?? '' }, ev.id ?? ''),
        h('td', { class: 'mono clip preview' }, dataPreview(ev))));
    }
    t.tbody.prepend(frag);
    for (count += batch.length; count > TAIL_ROWS_MAX; count--) {
      let last = t.tbody.lastElementChild;
      if (last && last.classList.contains('detail-row')) last = last.previousElementSibling;
      if (!last) break;
      rows.delete(key(last.dataset));
      removeRow(last);
    }
    empty.hidden = count > 0;
  }
  function add(st) {
    if (paused) {
      if (held.push(st) > TAIL_ROWS_MAX) held.shift();
      return showStatus();
    }
    queue.push(st);
    if (!flushTimer) flushTimer = setTimeout(flush, 50);
  }
  function connect() {
    if (streamCtl) streamCtl.abort();
    const ctl = (streamCtl = new AbortController());
    ctx.onLeave(() => ctl.abort());
    const qs = new URLSearchParams();
    ['type', 'key', 'q'].forEach((k, i) => ins[i].value.trim() && qs.set(k, ins[i].value.trim()));
    conn = 'connecting';
    showStatus();
    ctx.stream(`/v1/topics/${seg(topic)}/tail${qs.toString() ? '?' + qs : ''}`, ctl.signal, {
      event(type, data) {
        if (ctl.signal.aborted) return;
        if (type === 'ready') {
          conn = 'live';
          showError(errs, '');
          showStatus();
          ctx.ready();
        } else if (type === 'event') add(JSON.parse(data));
        else if (type === 'skipped') {
          skipped += Number(JSON.parse(data).count) || 0;
          showStatus();
        } else if (type === 'end') {
          let msg = 'The server ended the tail.';
          try {
            msg = JSON.parse(data).message || msg;
          } catch {
            /* not JSON */
          }
          showError(errs, msg);
        }
      },
      state(st, err) {
        if (ctl.signal.aborted) return;
        const s = err && err.status;
        if (st === 'error') conn = s >= 400 && s < 500 && s !== 408 && s !== 429 ? 'stopped' : 'reconnecting';
        else if (st === 'reconnecting' || (st === 'connecting' && conn !== 'reconnecting')) conn = st;
        if (st === 'error') ctx.fail(errs, err);
        showStatus();
      },
    });
  }
  function clearRows() {
    t.tbody.replaceChildren();
    rows.clear();
    queue = [];
    held = [];
    count = skipped = 0;
    empty.hidden = false;
  }
  const refilter = (now) => {
    clearTimeout(debounce);
    ctx.unready();
    conn = 'connecting';
    showStatus();
    debounce = setTimeout(() => ctx.live && (clearRows(), connect()), now ? 0 : 400);
  };
  for (const i of ins) {
    i.addEventListener('input', () => refilter(false));
    i.addEventListener('keydown', (e) => e.key === 'Enter' && (e.preventDefault(), refilter(true)));
  }
  form.addEventListener('submit', (e) => e.preventDefault());
  pause.addEventListener('click', () => {
    paused = !paused;
    if (!paused && held.length) {
      queue.push(...held);
      held = [];
      flush();
    }
    showStatus();
  });
  ctx.onLeave(() => clearTimeout(debounce));
  connect();
}
