// One stored CloudEvent in full: attributes, headers (extension attributes), data.

import { h, muted, dl, when, bytes, int } from './dom.js';
import { seg } from './api.js';

/** The attributes Herald knows (codec/json.rs); every other top-level member is a header. */
const ATTRIBUTES = ['specversion', 'id', 'source', 'type', 'time', 'subject', 'datacontenttype', 'dataschema', 'partitionkey', 'traceparent', 'tracestate', 'correlationid', 'causationid'];
const NOT_HEADERS = new Set([...ATTRIBUTES, 'data', 'data_base64']);
const HEX_MAX = 65536;
const str = (v) => (typeof v === 'string' ? v : JSON.stringify(v));
const utf8 = (t) => new TextEncoder().encode(t).length;

/** Whether a datacontenttype declares JSON (absent counts as JSON, as the server reads it). */
function isJsonType(ct) {
  const e = ct == null ? 'application/json' : String(ct).split(';')[0].trim().toLowerCase();
  return e === 'application/json' || e === 'text/json' || e.endsWith('+json');
}

/** offset, 16 bytes in hex, the same as ASCII; one line per 16 bytes. */
export function hexDump(b) {
  const lines = [];
  const n = Math.min(b.length, HEX_MAX);
  for (let o = 0; o < n; o += 16) {
    let hex = '';
    let asc = '';
    for (let i = 0; i < 16; i++) {
      const c = b[o + i];
      hex += (o + i < n ? c.toString(16).padStart(2, '0') : '  ') + (i === 7 ? '  ' : ' ');
      if (o + i < n) asc += c >= 0x20 && c < 0x7f ? String.fromCharCode(c) : '.';
    }
    lines.push(o.toString(16).padStart(8, '0') + '  ' + hex + ' ' + asc);
  }
  if (b.length > n) lines.push(`… ${b.length - n} more bytes`);
  return lines.join('\n');
}

/** {kind: 'json' | 'text' | 'binary' | 'none', text, size, compact} of an event's data. */
export function dataOf(ev) {
  if ('data_base64' in ev) {
    try {
      const bin = atob(ev.data_base64);
      return { kind: 'binary', text: hexDump(Uint8Array.from(bin, (c) => c.charCodeAt(0))), size: bin.length };
    } catch {
      return { kind: 'binary', text: str(ev.data_base64), size: null };
    }
  }
  if (!('data' in ev)) return { kind: 'none', text: '', size: 0 };
  const d = ev.data;
  if (typeof d === 'string' && !isJsonType(ev.datacontenttype)) return { kind: 'text', text: d, size: utf8(d) };
  const c = JSON.stringify(d);
  return { kind: 'json', text: JSON.stringify(d, null, 2), size: utf8(c), compact: c };
}

/** A one-line preview of the data (tail rows). */
export function dataPreview(ev, max = 120) {
  const d = dataOf(ev);
  if (d.kind === 'binary') return `binary, ${d.size == null ? '?' : bytes(d.size)}`;
  const t = d.kind === 'json' ? d.compact : d.text.replace(/\s+/g, ' ');
  return t.length > max ? t.slice(0, max) + '…' : t;
}

export const historyHref = (topic, partition, offset) => `#/history/${seg(topic)}/${partition}/${offset}`;

/**
 * The details of a stored event ({topic, partition, offset, append_time_ms, event}) or of a bare
 * CloudEvent ({event}). opts.extra: shown first; opts.history: false leaves out the history link.
 */
export function eventDetail(stored, opts = {}) {
  const ev = stored.event || {};
  const data = dataOf(ev);
  const headers = Object.keys(ev).filter((k) => !NOT_HEADERS.has(k)).sort().map((k) => [k, str(ev[k])]);
  const attrs = ATTRIBUTES.filter((k) => k in ev).map((k) => [k === 'partitionkey' ? 'partitionkey (key)' : k, k === 'time' ? [str(ev[k]), ' (', when(ev[k]), ')'] : str(ev[k])]);
  const stored_ = stored.topic != null;
  return h('div', { class: 'event-detail', 'data-testid': 'event-detail' },
    opts.extra,
    stored_ && dl([['Topic', stored.topic], ['Partition', int(stored.partition)], ['Offset', int(stored.offset)], ['Appended', when(stored.append_time_ms ?? stored.append_time, true)]], 'kv inline'),
    stored_ && opts.history !== false && h('p', null, h('a', { href: historyHref(stored.topic, stored.partition, stored.offset) }, 'History')),
    h('div', { class: 'detail-grid' },
      h('section', null, h('h3', null, 'Attributes'), dl(attrs)),
      h('section', null, h('h3', null, 'Headers'), headers.length ? dl(headers) : h('p', { class: 'muted' }, 'No headers'))),
    h('section', null,
      h('h3', null, 'Data ', muted(data.kind === 'none' ? '(none)'
        : `(${data.kind === 'binary' ? 'binary, hex dump' : ev.datacontenttype || 'application/json'}${data.size != null ? ', ' + bytes(data.size) : ''})`)),
      h('pre', { 'data-testid': 'event-data', class: 'data', tabindex: '0' }, data.text)));
}

/** Click, Enter or Space on a row (tr.row) of tbody shows its details under it, or hides them. */
export function expandableRows(tbody, colspan, detailFor) {
  const toggle = (tr) => {
    const next = tr.nextElementSibling;
    const open = next && next.classList.contains('detail-row');
    const content = !open && detailFor(tr);
    if (open) next.remove();
    else if (content) tr.after(h('tr', { class: 'detail-row' }, h('td', { colspan }, content)));
    tr.setAttribute('aria-expanded', String(!open && !!content));
  };
  tbody.addEventListener('click', (e) => {
    const tr = !e.target.closest('a, button, input, label, select, .detail-row') && e.target.closest('tr.row');
    if (tr) toggle(tr);
  });
  tbody.addEventListener('keydown', (e) => {
    if ((e.key === 'Enter' || e.key === ' ') && e.target.matches('tr.row')) {
      e.preventDefault();
      toggle(e.target);
    }
  });
}

/** Removes a row and its open detail row. */
export function removeRow(tr) {
  const next = tr.nextElementSibling;
  if (next && next.classList.contains('detail-row')) next.remove();
  tr.remove();
}
