// DOM building and formatting. Untrusted text reaches the DOM only through text nodes and
// setAttribute: never innerHTML.

function add(el, children) {
  for (const c of children) {
    if (c == null || c === false) continue;
    if (Array.isArray(c)) add(el, c);
    else el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

function make(el, attrs, children) {
  let value;
  for (const k in attrs || {}) {
    const v = attrs[k];
    if (v == null || v === false) continue;
    if (k === 'value') value = v;
    else if (k === 'checked') el.checked = true;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  add(el, children);
  if (value !== undefined) el.value = String(value); // after the options of a <select>
  return el;
}

/** h('tag', {attr: value}, ...children): children are nodes, text or arrays. */
export const h = (tag, attrs, ...children) => make(document.createElement(tag), attrs, children);
/** The same for SVG. */
export const s = (tag, attrs, ...children) => make(document.createElementNS('http://www.w3.org/2000/svg', tag), attrs, children);

// ---- numbers: counts are plain integers ("12345"), what the tests read

const finite = (n, f) => (n != null && n !== '' && Number.isFinite(Number(n)) ? f(Number(n)) : '—');
export const int = (n) => finite(n, (v) => String(Math.round(v)));
const NF = new Intl.NumberFormat('en-US');
export const grouped = (n) => finite(n, (v) => NF.format(v));
/** A rate rounded to one decimal. */
export const rate = (n) => finite(n, (v) => String(Math.round(v * 10) / 10));

/** 1536 → "1.5 KiB". */
export const bytes = (n) => finite(n, (v) => {
  let i = 0;
  for (; v >= 1024 && i < 5; i++) v /= 1024;
  return (i ? v.toFixed(v < 10 ? 1 : 0) : v) + ' ' + ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'][i];
});

/** 1500 → "1.5 s", 604800000 → "7 d". */
export const duration = (ms) => finite(ms, (v) => {
  for (const [u, m] of [['d', 864e5], ['h', 36e5], ['min', 6e4], ['s', 1e3]]) {
    const x = v / m;
    if (x >= 1) return (Number.isInteger(x) ? x : x < 10 ? x.toFixed(1) : Math.round(x)) + ' ' + u;
  }
  return (Number.isInteger(v) ? v : v.toFixed(1)) + ' ms';
});

/** 12345 → "12.3k" (chart axes). */
export function compact(n) {
  for (const [d, u] of [[1e9, 'G'], [1e6, 'M'], [1e4, 'k']]) if (Math.abs(n) >= d) return +(n / (d === 1e4 ? 1e3 : d)).toFixed(1) + u;
  return String(Math.round(n));
}

// ---- times

/** ms since the epoch from ms or RFC 3339 (nanoseconds accepted); NaN if neither. */
export const toMs = (t) => (typeof t === 'number' ? t : t ? Date.parse(String(t).replace(/(\.\d{3})\d+/, '$1')) : NaN);

const pad = (n, w = 2) => String(n).padStart(w, '0');
/** Local "2024-05-01 12:03:04" (and ".123" with millis). */
export function localTime(ms, millis) {
  const d = new Date(ms);
  const t = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return millis ? t + '.' + pad(d.getMilliseconds(), 3) : t;
}

/** "5 min ago", "in 3 s". */
export function ago(ms, now = Date.now()) {
  const d = (now - ms) / 1000;
  const a = Math.abs(d);
  if (a < 5) return 'just now';
  const t = a < 60 ? Math.round(a) + ' s' : a < 3600 ? Math.round(a / 60) + ' min' : a < 86400 ? Math.round(a / 3600) + ' h' : Math.round(a / 86400) + ' d';
  return d >= 0 ? t + ' ago' : 'in ' + t;
}

/** <time>: relative (local and UTC in the title) or, abs, local (relative in the title). */
export function when(t, abs) {
  const ms = toMs(t);
  if (!Number.isFinite(ms)) return h('span', { class: 'muted' }, '—');
  const iso = new Date(ms).toISOString();
  return abs
    ? h('time', { datetime: iso, title: `${ago(ms)} · ${iso}` }, localTime(ms, true))
    : h('time', { datetime: iso, title: `${localTime(ms)} local · ${iso}`, 'data-rel': ms }, ago(ms));
}

/** Refreshes the relative <time>s (every few seconds). */
export function refreshRelative() {
  for (const el of document.querySelectorAll('time[data-rel]')) {
    const t = ago(Number(el.getAttribute('data-rel')));
    if (el.textContent !== t) el.textContent = t;
  }
}

// ---- page pieces

/** Shows msg in slot as role="alert", or empties the slot. */
export const showError = (slot, msg) => slot.replaceChildren(...(msg ? [h('p', { role: 'alert', class: 'error' }, String(msg))] : []));

/** {table, tbody, wrap}; cols: label | {label, num, sr}. */
export function table(testid, cols, caption) {
  const tbody = h('tbody');
  const head = cols.map((c) => (typeof c === 'string' ? { label: c } : c)).map((c) => h('th', { scope: 'col', class: c.num ? 'num' : null }, c.sr ? h('span', { class: 'sr-only' }, c.label) : c.label));
  const t = h('table', { 'data-testid': testid }, h('caption', { class: 'sr-only' }, caption), h('thead', null, h('tr', null, head)), tbody);
  return { table: t, tbody, wrap: h('div', { class: 'table-wrap' }, t) };
}

/** A numeric column of table(). */
export const nc = (label) => ({ label, num: true });
export const link = (href, text) => h('a', { href }, text);
export const setText = (el, text) => el.textContent !== text && ((el.textContent = text), true);
export const button = (text, attrs) => h('button', { type: 'button', ...attrs }, text);
export const muted = (...c) => h('span', { class: 'muted' }, ...c);
export const section = (title, ...c) => h('section', null, h('h2', null, title), ...c);
export const num = (text, attrs) => h('td', { class: 'num', ...attrs }, text);
export const emptyRow = (colspan, text) => h('tr', null, h('td', { colspan, class: 'empty' }, text));
export const field = (id, label, input, cls = '') => h('p', { class: 'field ' + cls }, h('label', { for: id }, label), input);
export const liveBadge = () => h('span', { class: 'live', role: 'status' });

/** The page's heading, breadcrumbs and header extras. */
export function pageHead(title, crumbs, ...extra) {
  return h('header', { class: 'page-head' },
    crumbs && h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, crumbs.map((c, i) => [i ? ' / ' : null, c])),
    h('div', { class: 'title-row' }, h('h1', { tabindex: '-1' }, title), h('div', { class: 'head-extra' }, extra)));
}

/** A <dl> of [[term, detail]]. */
export const dl = (pairs, cls = 'kv') => h('dl', { class: cls }, pairs.map(([k, v]) => h('div', null, h('dt', null, k), h('dd', null, v))));

const open = new Set();
/** Closes the open dialogs (on navigation). */
export const closeDialogs = () => open.forEach((d) => d.close());

/** A modal <dialog> (focus trapped, Escape cancels) resolving true when confirmed; with typeToConfirm, once that text is typed. */
export function confirmDialog({ title, message, confirmLabel = 'Confirm', danger, typeToConfirm }) {
  return new Promise((resolve) => {
    let ok = false;
    const input = typeToConfirm != null && h('input', { id: 'confirm-text', autocomplete: 'off', spellcheck: 'false', autocapitalize: 'off' });
    const yes = h('button', { type: 'button', class: danger ? 'danger' : 'primary', 'data-action': 'confirm', disabled: !!input }, confirmLabel);
    const no = h('button', { type: 'button', 'data-action': 'cancel' }, 'Cancel');
    const dlg = h('dialog', { 'aria-labelledby': 'dialog-title' }, h('h2', { id: 'dialog-title' }, title), message,
      input && field('confirm-text', ['Type ', h('strong', null, typeToConfirm), ' to confirm'], input),
      h('div', { class: 'actions' }, no, yes));
    if (input) {
      input.addEventListener('input', () => (yes.disabled = input.value !== typeToConfirm));
      input.addEventListener('keydown', (e) => e.key === 'Enter' && (e.preventDefault(), yes.disabled || yes.click()));
    }
    yes.addEventListener('click', () => ((ok = true), dlg.close()));
    no.addEventListener('click', () => dlg.close());
    dlg.addEventListener('close', () => (open.delete(dlg), dlg.remove(), resolve(ok)));
    open.add(dlg);
    document.body.append(dlg);
    dlg.showModal();
    (input || no).focus();
  });
}
