// Pages about consumer groups: groups list, one group, dead letters, event history.

import { h, section, muted, button, link, setText, nc, int, rate, grouped, duration, when, localTime, toMs, showError, table, num, emptyRow, field, liveBadge, dl, confirmDialog } from './dom.js';
import { api, overview, invalidateOverview, seg } from './api.js';
import { lagChart } from './chart.js';
import { eventDetail, expandableRows, historyHref } from './event.js';
import { topicHref, groupHref, dlqHref } from './topics.js';

// The filter's value for every reason: not a reason any letter can have (an empty one can).
const ALL_REASONS = '\u0000all';

const plural = (n, one, many) => `${grouped(n)} ${Number(n) === 1 ? one : many}`;
const mayOf = (o, g) => ((o && (o.groups || []).find((x) => x.name === g)) || {}).may || [];

// ---- groups

export async function groupsPage(ctx) {
  const count = h('span', { class: 'muted' });
  const live = liveBadge();
  const { main, errs } = ctx.page('groups', 'Consumer groups', null, count, live);
  const streamErr = h('div');
  main.append(streamErr);
  const o = await ctx.get(overview(0), errs);
  if (!o) return;
  const groups = (o.groups || []).slice().sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  count.textContent = plural(groups.length, 'group', 'groups');
  const t = table('groups', ['Name', nc('Members'), nc('Lag'), nc('Dead letters'), nc('Out/s')], 'Consumer groups');
  const cells = new Map();
  const frag = document.createDocumentFragment();
  for (const g of groups) {
    const dlText = (g.may || []).includes('dlq') ? link(dlqHref(g.name), int(g.dead_letters)) : h('span', null, int(g.dead_letters));
    const c = { members: num(int(g.members)), lag: num(int(g.lag)), dl: dlText, out: num(rate(g.out_per_s)) };
    cells.set(g.name, c);
    frag.appendChild(h('tr', { 'data-group': g.name }, h('td', null, link(groupHref(g.name), g.name)), c.members, c.lag, num(dlText), c.out));
  }
  if (!groups.length) frag.appendChild(emptyRow(5, 'No consumer groups yet: a group appears when a consumer first subscribes.'));
  t.tbody.replaceChildren(frag);
  main.append(t.wrap);
  ctx.ready();
  ctx.ticks(live, streamErr, (tick) => {
    for (const [name, v] of Object.entries(tick.groups || {})) {
      const c = cells.get(name);
      if (!c) continue;
      setText(c.members, int(v.members));
      setText(c.lag, int(v.lag));
      setText(c.dl, int(v.dead_letters));
      setText(c.out, rate(v.out_per_s));
    }
  });
}

// ---- one group

/** A setting's value as text (durations for *_ms, JSON for enums with data). */
function settingText(key, v) {
  if (Array.isArray(v)) return v.join(', ') || 'none';
  if (typeof v === 'number' && /_ms$/.test(key)) return `${duration(v)} (${grouped(v)} ms)`;
  return v && typeof v === 'object' ? JSON.stringify(v) : String(v ?? '—');
}

/** [[key, value]] of a config; nested ones (retry) as "retry.max_attempts". */
function settings(cfg, prefix = '', out = []) {
  for (const [k, v] of Object.entries(cfg || {})) {
    if (v && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length > 1) settings(v, prefix + k + '.', out);
    else out.push([h('code', null, prefix + k), settingText(k, v)]);
  }
  return out;
}

export async function groupPage(ctx) {
  const g = ctx.params.group;
  const live = liveBadge();
  const headLinks = h('span');
  const { main, errs } = ctx.page('group', g, [link('#/groups', 'Groups'), h('span', null, g)], headLinks, live);
  const streamErr = h('div');
  main.append(streamErr);
  const [ri, rl, ro] = await Promise.allSettled([
    api('/v1/groups/' + seg(g), { signal: ctx.signal }),
    api(`/v1/console/groups/${seg(g)}/lag`, { signal: ctx.signal }),
    overview(),
  ]);
  if (!ctx.live) return;
  if (ri.status === 'rejected') return ctx.fail(errs, ri.reason);
  let info = ri.value;
  const may = mayOf(ro.value, g);
  const mine = ((ro.value && ro.value.groups) || []).find((x) => x.name === g) || {};
  if (may.includes('dlq')) headLinks.append(h('a', { href: dlqHref(g), class: 'button' }, 'Dead letters'));

  const sum = { members: h('span'), gen: h('span'), lag: h('span'), dl: h('span'), out: h('span') };
  main.append(dl([['Members', sum.members], ['Generation', sum.gen], ['Lag', sum.lag], ['Dead letters', sum.dl], ['Out/s', sum.out]], 'kv summary'));
  const setLive = (v) => {
    if (v.dead_letters != null) setText(sum.dl, int(v.dead_letters));
    if (v.out_per_s != null) setText(sum.out, rate(v.out_per_s));
  };
  setLive(mine);

  const members = h('ul', { class: 'members', 'data-testid': 'members' });
  const pt = table('partitions', ['Topic', nc('Partition'), 'Owner', nc('Committed'), nc('Latest'), nc('Lag'), nc('In flight')], 'Partitions');
  main.append(h('div', { class: 'two-col' }, section('Members', members), h('section', { class: 'wide' }, h('h2', null, 'Partitions'), pt.wrap)));

  function render(gi) {
    info = gi;
    const ms = gi.members || [];
    const parts = gi.partitions || [];
    setText(sum.members, int(ms.length));
    setText(sum.gen, int(gi.generation));
    setText(sum.lag, int(gi.lag));
    const owned = new Map();
    for (const p of parts) {
      const k = p.owner ?? '';
      owned.set(k, [...(owned.get(k) || []), `${p.topic}/${p.partition}`]);
    }
    members.replaceChildren(
      ...(ms.length ? [] : [h('li', { class: 'muted' }, 'No member is connected.')]),
      ...ms.map((m) => h('li', { 'data-member': m }, h('code', null, m), muted(' — ', (owned.get(m) || []).join(', ') || 'no partitions'))),
      ...(owned.has('') ? [h('li', null, h('em', null, 'Unassigned'), muted(' — ', owned.get('').join(', ')))] : []),
    );
    const frag = document.createDocumentFragment();
    for (const p of parts) {
      frag.appendChild(h('tr', { 'data-topic': p.topic, 'data-partition': p.partition },
        h('td', null, link(topicHref(p.topic), p.topic)), num(int(p.partition)),
        h('td', { class: 'mono clip', title: p.owner ?? '' }, p.owner ?? muted('none')),
        num(int(p.committed), { 'data-testid': 'committed' }), num(int(p.latest), { 'data-testid': 'latest' }),
        num(int(p.lag), { 'data-testid': 'lag', class: p.lag > 0 ? 'num attn' : 'num' }), num(int(p.in_flight))));
    }
    if (!parts.length) frag.appendChild(emptyRow(7, 'No partitions assigned yet.'));
    pt.tbody.replaceChildren(frag);
  }
  render(info);

  const chart = lagChart();
  const chartErr = h('div');
  main.append(section('Lag', chartErr, h('div', { class: 'chart-wrap' }, chart.el)));
  if (rl.status === 'rejected') ctx.fail(chartErr, rl.reason);
  chart.set((rl.value && rl.value.points) || []);
  let resizeTimer = 0;
  const onResize = () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => ctx.live && chart.draw(), 100);
  };
  window.addEventListener('resize', onResize);
  ctx.onLeave(() => window.removeEventListener('resize', onResize));

  main.append(section('Settings in effect', dl(settings(info.config), 'kv settings')));
  if (may.includes('admin')) main.append(resetForm(ctx, g, render));
  ctx.ready();

  // totals every tick; the partitions again when they changed (at most every 2 s)
  let last = { lag: info.lag, members: (info.members || []).length };
  let fetchedAt = Date.now();
  let fetching = false;
  ctx.ticks(live, streamErr, (tick) => {
    const v = (tick.groups || {})[g];
    if (!v) return;
    setLive(v);
    setText(sum.lag, int(v.lag));
    chart.push(tick.t_ms, v.lag);
    const changed = v.lag !== last.lag || v.members !== last.members;
    last = v;
    const age = Date.now() - fetchedAt;
    if (!fetching && ((changed && age >= 2000) || age >= 5000)) {
      fetching = true;
      fetchedAt = Date.now();
      api('/v1/groups/' + seg(g), { signal: ctx.signal })
        .then((gi) => ctx.live && render(gi), (e) => ctx.fail(errs, e))
        .finally(() => (fetching = false));
    }
  });
}

function resetForm(ctx, g, render) {
  const to = h('select', { id: 'reset-to', name: 'to' },
    h('option', { value: 'earliest' }, 'Earliest stored event'),
    h('option', { value: 'latest' }, 'Latest (skip everything stored)'),
    h('option', { value: 'time' }, 'A point in time'));
  const time = h('input', { id: 'reset-time', name: 'time', type: 'datetime-local', step: 1 });
  const timeField = field('reset-time', 'Time', time);
  timeField.hidden = true;
  const err = h('div');
  const note = h('div', { role: 'status', class: 'note' });
  const submit = h('button', { type: 'submit', class: 'danger', 'data-action': 'reset-group' }, 'Reset offsets…');
  to.addEventListener('change', () => (timeField.hidden = to.value !== 'time'));
  const form = h('form', { class: 'inline-form', 'aria-labelledby': 'reset-title' },
    h('h2', { id: 'reset-title' }, 'Reset offsets'),
    h('p', { class: 'muted' }, 'Moves every partition of the group. The server refuses while members are connected: stop the consumers first.'),
    h('div', { class: 'fields' }, field('reset-to', 'Reset to', to), timeField, h('p', { class: 'field button-field' }, submit)),
    err, note);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    showError(err, '');
    note.textContent = '';
    let target = to.value;
    let label = target === 'earliest' ? 'the earliest stored events' : 'the latest position, skipping everything stored';
    if (target === 'time') {
      const d = new Date(time.value);
      if (!time.value || isNaN(d)) return showError(err, 'Choose the date and time to reset to.');
      target = d.toISOString();
      label = `the first events appended at or after ${localTime(d.getTime())}`;
    }
    const ok = await confirmDialog({
      title: `Reset group ${g}?`,
      message: [h('p', null, `Every partition of ${g} moves to ${label}. Events between the old and the new position are delivered again or skipped.`)],
      confirmLabel: 'Reset',
      danger: true,
    });
    if (!ok || !ctx.live) return;
    submit.disabled = true;
    try {
      const gi = await api(`/v1/groups/${seg(g)}/reset`, { method: 'POST', body: { to: target } });
      invalidateOverview();
      note.textContent = `Group ${g} reset to ${to.value === 'time' ? localTime(Date.parse(target)) : to.value}.`;
      render(gi);
    } catch (x) {
      ctx.fail(err, x);
    }
    submit.disabled = false;
  });
  return form;
}

// ---- dead letters

async function dlqPick(ctx) {
  const { main, errs } = ctx.page('dlq', 'Dead letters');
  const o = await ctx.get(overview(0), errs);
  if (!o) return;
  const all = (o.groups || []).filter((g) => (g.may || []).includes('dlq'));
  const some = all.filter((g) => g.dead_letters > 0).sort((a, b) => b.dead_letters - a.dead_letters);
  const t = table('dlq-groups', ['Group', nc('Dead letters'), nc('Lag')], 'Groups with dead letters');
  t.tbody.append(...some.map((g) => h('tr', { 'data-group': g.name }, h('td', null, link(dlqHref(g.name), g.name)), num(int(g.dead_letters)), num(int(g.lag)))));
  if (!some.length) t.tbody.append(emptyRow(3, 'No group has dead letters.'));
  main.append(t.wrap);
  ctx.ready();
}

const hdr = (ev, k) => (ev && ev[k] != null ? String(ev[k]) : '');

export async function dlqPage(ctx) {
  const g = ctx.params.group;
  if (g == null) return dlqPick(ctx);
  const { main, errs } = ctx.page('dlq', `Dead letters: ${g}`, [link('#/dlq', 'Dead letters'), link(groupHref(g), g)]);
  const resultSlot = h('div', { role: 'status' });
  main.append(resultSlot);
  let o = null;
  try {
    o = await overview();
  } catch (e) {
    if (e.status === 401) return;
    ctx.fail(errs, e);
  }
  if (!ctx.live) return;
  const may = mayOf(o, g).includes('dlq');
  if (!may && o) {
    // every dead-letter call would be refused (and the browser would log each refusal)
    main.append(h('p', { class: 'note warn' }, `You may not see the dead letters of ${g}: that takes the dlq permission on the group.`));
    return ctx.ready();
  }

  const total = h('span', { class: 'muted' });
  const btn = (action, text, cls, disabled) => (may ? h('button', { type: 'button', 'data-action': action, class: cls, disabled }, text) : null);
  const replayAll = btn('replay-all', 'Replay all', 'primary');
  const purgeAll = btn('purge-all', 'Purge all', 'danger');
  const rt = table('reasons', ['Reason', nc('Letters'), 'First failure', 'Last failure', { label: 'Actions', sr: true }], 'Dead letters by reason');
  const filter = h('select', { id: 'reason-filter', name: 'reason' }, h('option', { value: ALL_REASONS }, 'All reasons'));
  const replaySel = btn('replay-selected', 'Replay selected', null, true);
  const purgeSel = btn('purge-selected', 'Purge selected', 'danger-ghost', true);
  const lt = table('letters', [{ label: 'Select', sr: true }, nc('DLQ offset'), 'Original event', 'Type', 'Reason', nc('Attempts'), 'Last failure'], 'Dead letters');
  const selAll = h('input', { type: 'checkbox', id: 'select-all' });
  if (may) lt.table.querySelector('thead th').replaceChildren(selAll, h('label', { for: 'select-all', class: 'sr-only' }, 'Select all shown dead letters'));
  const lettersNote = h('p', { class: 'muted' });
  main.append(
    h('section', null, h('div', { class: 'section-head' }, h('h2', null, 'By reason'), total, h('span', { class: 'spacer' }), replayAll, purgeAll), rt.wrap),
    h('section', null, h('div', { class: 'section-head' }, h('h2', null, 'Letters'), h('span', { class: 'spacer' }), replaySel, purgeSel),
      h('div', { class: 'toolbar' }, field('reason-filter', 'Reason', filter)), lt.wrap, lettersNote));

  let reasons = { total: 0, reasons: [], other: 0 };
  const letters = new Map();
  const selected = new Set();

  function updateSelection() {
    if (!may) return;
    const n = selected.size;
    replaySel.disabled = purgeSel.disabled = n === 0;
    replaySel.textContent = n ? `Replay selected (${n})` : 'Replay selected';
    purgeSel.textContent = n ? `Purge selected (${n})` : 'Purge selected';
    selAll.checked = n > 0 && n === letters.size;
    selAll.indeterminate = n > 0 && n < letters.size;
  }

  function renderReasons() {
    const rs = reasons.reasons || [];
    total.textContent = plural(reasons.total || 0, 'letter', 'letters');
    if (may) replayAll.disabled = purgeAll.disabled = !reasons.total;
    rt.tbody.replaceChildren(...rs.map((r) => h('tr', { 'data-reason': r.reason },
      h('td', { class: 'reason' }, h('button', { type: 'button', class: 'link clip', 'data-action': 'filter-reason', title: 'Show only the letters with this reason' }, r.reason || '(empty reason)')),
      num(int(r.count), { 'data-testid': 'count' }),
      h('td', { class: 'nowrap' }, when(r.first_failure_ms || null)),
      h('td', { class: 'nowrap' }, when(r.last_failure_ms || null)),
      h('td', { class: 'actions' }, may && [
        button('Replay', { class: 'small', 'data-action': 'replay-reason' }),
        button('Purge', { class: 'small danger-ghost', 'data-action': 'purge-reason' })]))));
    if (reasons.other > 0) rt.tbody.append(h('tr', null, h('td', { class: 'muted' }, 'Other reasons (more distinct reasons than listed)'), num(int(reasons.other)), h('td'), h('td'), h('td')));
    if (!rt.tbody.firstChild) rt.tbody.append(emptyRow(5, 'No dead letters: nothing failed for good.'));
    const keep = filter.value;
    filter.replaceChildren(h('option', { value: ALL_REASONS }, `All reasons (${grouped(reasons.total || 0)})`),
      ...rs.map((r) => h('option', { value: r.reason }, `${r.reason === '' ? '(no reason)' : r.reason.length > 80 ? r.reason.slice(0, 80) + '…' : r.reason} (${grouped(r.count)})`)));
    filter.value = rs.some((r) => r.reason === keep) ? keep : ALL_REASONS;
  }

  function renderLetters(res) {
    letters.clear();
    selected.clear();
    const frag = document.createDocumentFragment();
    for (const l of res.dead_letters || []) {
      const ev = l.event || {};
      const off = String(l.dlq_offset);
      letters.set(off, l);
      frag.appendChild(h('tr', { class: 'row', 'data-dlq-offset': off, tabindex: '0', 'aria-expanded': 'false' },
        h('td', { class: 'select' }, may && [h('input', { type: 'checkbox', id: 'sel-' + off, 'data-action': 'select', value: off }), h('label', { for: 'sel-' + off, class: 'sr-only' }, `Select dead letter ${off}`)]),
        num(off),
        h('td', { class: 'mono nowrap' }, hdr(ev, 'dlqtopic') ? `${hdr(ev, 'dlqtopic')}/${hdr(ev, 'dlqpartition')}@${hdr(ev, 'dlqoffset')}` : '—'),
        h('td', null, ev.type ?? ''),
        h('td', { class: 'clip', title: hdr(ev, 'dlqreason') }, hdr(ev, 'dlqreason')),
        num(hdr(ev, 'dlqattempts') || '—'),
        h('td', { class: 'nowrap' }, when(hdr(ev, 'dlqlastfailure')))));
    }
    if (!letters.size) frag.appendChild(emptyRow(7, 'No dead letters.'));
    lt.tbody.replaceChildren(frag);
    const of = filter.value !== ALL_REASONS ? ((reasons.reasons || []).find((r) => r.reason === filter.value) || {}).count : reasons.total;
    lettersNote.textContent = res.truncated || of > letters.size ? `Showing the oldest ${grouped(letters.size)} of ${grouped(of ?? letters.size)}; replay or purge them to see more.` : '';
    updateSelection();
  }

  const lettersPath = () => `/v1/groups/${seg(g)}/dlq?max=100${filter.value !== ALL_REASONS ? '&reason=' + encodeURIComponent(filter.value) : ''}`;
  async function load() {
    const [rr, rl] = await Promise.allSettled([api(`/v1/groups/${seg(g)}/dlq/reasons`, { signal: ctx.signal }), api(lettersPath(), { signal: ctx.signal })]);
    if (!ctx.live) return;
    if (rr.status === 'rejected') return ctx.fail(errs, rr.reason);
    reasons = rr.value || reasons;
    renderReasons();
    if (rl.status === 'rejected') return ctx.fail(errs, rl.reason);
    renderLetters(rl.value || {});
  }
  async function loadLetters() {
    const res = await ctx.get(api(lettersPath(), { signal: ctx.signal }), errs);
    if (res) renderLetters(res);
  }

  async function act(kind, scope) {
    const verb = kind === 'replay' ? 'Replay' : 'Purge';
    let n = reasons.total || 0;
    let qs = '';
    let what = `all ${plural(n, 'dead letter', 'dead letters')} of ${g}`;
    if (scope.offsets) {
      n = scope.offsets.length;
      qs = '?offsets=' + scope.offsets.join(',');
      what = `the ${plural(n, 'selected dead letter', 'selected dead letters')}`;
    } else if (scope.reason != null) {
      n = scope.count;
      qs = '?reason=' + encodeURIComponent(scope.reason);
      what = `${plural(n, 'dead letter', 'dead letters')} with the reason “${scope.reason}”`;
    }
    const ok = await confirmDialog({
      title: `${verb} ${plural(n, 'dead letter', 'dead letters')}?`,
      message: [h('p', null, kind === 'replay'
        ? `${verb} ${what}: each goes back to group ${g} as a copy in its replay topic and is delivered again.`
        : `${verb} ${what}: they are deleted for good. This cannot be undone.`)],
      confirmLabel: `${verb} ${grouped(n)}`,
      danger: kind === 'purge',
    });
    if (!ok || !ctx.live) return;
    showError(errs, '');
    resultSlot.replaceChildren();
    try {
      const res = await api(`/v1/groups/${seg(g)}/dlq${kind === 'replay' ? '/replay' : ''}${qs}`, { method: kind === 'replay' ? 'POST' : 'DELETE' });
      invalidateOverview();
      const done = res && (kind === 'replay' ? res.replayed : res.purged);
      resultSlot.replaceChildren(h('p', { 'data-testid': 'result', class: 'result' }, `${kind === 'replay' ? 'Replayed' : 'Purged'} ${int(done ?? 0)}`));
    } catch (x) {
      ctx.fail(errs, x);
    }
    await load();
  }

  if (may) {
    replayAll.addEventListener('click', () => act('replay', {}));
    purgeAll.addEventListener('click', () => act('purge', {}));
    replaySel.addEventListener('click', () => act('replay', { offsets: [...selected] }));
    purgeSel.addEventListener('click', () => act('purge', { offsets: [...selected] }));
    selAll.addEventListener('change', () => {
      for (const cb of lt.tbody.querySelectorAll('input[data-action="select"]')) {
        cb.checked = selAll.checked;
        selected[selAll.checked ? 'add' : 'delete'](cb.value);
      }
      updateSelection();
    });
  }
  rt.tbody.addEventListener('click', (e) => {
    const b = e.target.closest('button[data-action]');
    const tr = b && b.closest('tr[data-reason]');
    if (!tr) return;
    const reason = tr.dataset.reason;
    const count = ((reasons.reasons || []).find((x) => x.reason === reason) || {}).count || 0;
    const a = b.dataset.action;
    if (a === 'filter-reason') {
      filter.value = reason;
      loadLetters();
    } else if (a === 'replay-reason' || a === 'purge-reason') act(a.slice(0, -7), { reason, count });
  });
  lt.tbody.addEventListener('change', (e) => {
    const cb = e.target.closest('input[data-action="select"]');
    if (!cb) return;
    selected[cb.checked ? 'add' : 'delete'](cb.value);
    updateSelection();
  });
  filter.addEventListener('change', loadLetters);
  expandableRows(lt.tbody, 7, (tr) => {
    const l = letters.get(tr.dataset.dlqOffset);
    if (!l) return null;
    const ev = l.event || {};
    const [t, p, o2] = ['dlqtopic', 'dlqpartition', 'dlqoffset'].map((k) => hdr(ev, k));
    const orig = t
      ? [h('span', { class: 'mono' }, `${t} / partition ${p} / offset ${o2}`), ' ', link(historyHref(t, p, o2), 'History'), ' · ',
        link(`${topicHref(t)}?partition=${encodeURIComponent(p)}&offset=${encodeURIComponent(o2)}`, 'Browse')]
      : '—';
    const extra = h('section', { class: 'dlq-summary' }, h('h3', null, `Dead letter ${l.dlq_offset}`), dl([
      ['Original event', orig],
      ['Reason', h('span', { class: 'pre-wrap' }, hdr(ev, 'dlqreason') || '—')],
      ['Attempts', hdr(ev, 'dlqattempts') || '—'],
      ['First failure', when(hdr(ev, 'dlqfirstfailure'), true)],
      ['Last failure', when(hdr(ev, 'dlqlastfailure'), true)],
      ['Replays', hdr(ev, 'dlqreplays') || '0'],
    ]));
    return eventDetail({ event: ev }, { extra, history: false });
  });
  await load();
  ctx.ready();
}

// ---- event history

const STATE_CLASS = { done: 'ok', dead_lettered: 'bad', in_progress: 'warn' };

/** One timeline entry (history.rs; the contract's names too). */
function entryText(e, hi) {
  const us = e.handler_us ?? e.handler_micros;
  const handler = us != null && muted(` · handler ${(us / 1000).toFixed(us < 10000 ? 2 : 0)} ms`);
  const copy = e.copy || (e.topic != null ? e : null);
  const copyText = copy && `${copy.topic}/${copy.partition}@${copy.offset}`;
  const isCopy = copy && (copy.topic !== hi.topic || copy.partition !== hi.partition || copy.offset !== hi.offset);
  const reason = e.reason != null && h('q', { class: 'reason pre-wrap' }, e.reason);
  const b = (t) => h('strong', null, t);
  switch (e.kind) {
    case 'delivered':
      return [b('Delivered'), e.attempt != null && ` (attempt ${e.attempt})`, e.member && [' to ', h('code', null, e.member)], isCopy && muted(` · the replay copy ${copyText}`)];
    case 'acked':
      return [b('Acknowledged'), handler];
    case 'nacked':
      return [b('Failed'), ', to be retried', e.delay_ms != null && ` in ${duration(e.delay_ms)}`, ': ', reason, handler];
    case 'rejected':
      return [b('Rejected'), ': ', reason, handler];
    case 'timed_out':
      return [b('Timed out'), e.attempt != null && `: attempt ${e.attempt} was not settled in time`];
    case 'dead_lettered':
      return [b('Dead-lettered'), e.attempts != null && ` after ${plural(e.attempts, 'attempt', 'attempts')}`, e.dlq_offset != null && ` · DLQ offset ${e.dlq_offset}`, reason && [': ', reason]];
    case 'replayed':
      return [b('Replayed'), ' from the DLQ', copy && ` as the copy ${copyText}`];
    case 'done':
      return [b('Done')];
    default:
      return [b(String(e.kind))];
  }
}

export async function historyPage(ctx) {
  const { topic, partition, offset } = ctx.params;
  const id = ctx.query.get('id');
  const refresh = button('Refresh', { 'data-action': 'refresh' });
  const where = offset != null ? `${topic}/${partition}@${offset}` : `id ${id ?? ''}`;
  const { main, errs } = ctx.page('history', 'Event history', [link('#/topics', 'Topics'), link(topicHref(topic), topic), h('span', null, where)], refresh);
  const body = h('div');
  main.append(body);
  if (offset == null && !id) {
    ctx.fail(errs, new Error('Say which event: #/history/<topic>/<partition>/<offset> or #/history/<topic>?id=<id>.'));
    return;
  }
  const path = offset != null
    ? `/v1/topics/${seg(topic)}/events/${offset}/history?partition=${partition}`
    : `/v1/topics/${seg(topic)}/history?id=${encodeURIComponent(id)}`;
  let lastText = '';

  function render(hi) {
    const pub = toMs(hi.published_ms);
    const at = `${hi.topic}/${hi.partition}@${hi.offset}`;
    const nodes = [dl([
      ['Event', [h('span', { class: 'mono' }, at), ' ', link(`${topicHref(hi.topic)}?partition=${hi.partition}&offset=${hi.offset}`, 'Browse')]],
      ['ID', h('span', { class: 'mono' }, hi.id ?? hi.event_id ?? '—')],
      ['Type', hi.type ?? '—'],
      ['Source', hi.source ?? '—'],
      ['Published', when(pub, true)],
    ], 'kv summary')];
    if (hi.truncated) nodes.push(h('p', { class: 'note warn' }, 'Part of this history may be missing (older than its retention, or the search stopped at its limit).'));
    const groups = hi.groups || [];
    if (!groups.length) nodes.push(h('p', { class: 'empty' }, 'No consumer group you may see reads this topic.'));
    for (const gh of groups) {
      const state = (hi.states || {})[gh.group] || 'pending';
      const entries = gh.entries || [];
      const items = [h('li', { 'data-kind': 'published' }, h('span', { class: 'at' }, when(pub, true)), h('span', { class: 'what' }, h('strong', null, 'Published'), ` to ${at}`))];
      for (const e of entries) {
        const t = toMs(e.at_ms);
        const delta = Number.isFinite(t) && Number.isFinite(pub) && muted(` +${duration(Math.max(0, t - pub))}`);
        items.push(h('li', { 'data-kind': e.kind }, h('span', { class: 'at' }, when(t, true), delta), h('span', { class: 'what' }, entryText(e, hi))));
      }
      if (!entries.length) items.push(h('li', { class: 'muted' }, h('span', { class: 'at' }), h('span', { class: 'what' }, 'Not delivered to this group yet.')));
      nodes.push(h('section', { 'data-group': gh.group, class: 'history-group' },
        h('div', { class: 'section-head' }, h('h2', null, link(groupHref(gh.group), gh.group)), h('span', { 'data-testid': 'state', class: 'badge ' + (STATE_CLASS[state] || '') }, state)),
        h('ol', { 'data-testid': 'timeline', class: 'timeline' }, items)));
    }
    body.replaceChildren(...nodes);
  }

  /** Loads and renders; true while some group has not finished with the event. */
  async function load() {
    const hi = await ctx.get(api(path, { signal: ctx.signal }), errs);
    if (!hi) return false;
    showError(errs, '');
    const text = JSON.stringify(hi);
    if (text !== lastText) render(hi);
    lastText = text;
    return Object.values(hi.states || {}).some((s) => s === 'pending' || s === 'in_progress');
  }
  refresh.addEventListener('click', load);
  const again = async () => (await load()) && ctx.later(3000, again);
  if (await load()) ctx.later(3000, again);
  ctx.ready();
}
