// The lag chart: an inline SVG line chart of [t_ms, lag] points over the last 15 minutes.

import { s, compact, grouped, int } from './dom.js';

const WINDOW_MS = 15 * 60 * 1000;
const HEIGHT = 200;
const PAD = { l: 52, r: 16, t: 14, b: 34 };

/** The top of the y axis: 4 steps of 1, 2 or 5 × 10^k covering v. */
function niceMax(v) {
  const step = Math.max(1, v / 4);
  const p = 10 ** Math.floor(Math.log10(step));
  return 4 * p * (p > 1 ? [1, 2, 2.5, 5, 10] : [1, 2, 5, 10]).find((m) => m * p >= step);
}

const hhmm = (ms) => {
  const d = new Date(ms);
  return String(d.getHours()).padStart(2, '0') + ':' + String(d.getMinutes()).padStart(2, '0');
};

/** The chart: {el, set(points), push(t, lag), draw()}. Redraws at its container's width. */
export function lagChart() {
  const el = s('svg', {
    'data-testid': 'lag-chart',
    role: 'img',
    'aria-label': 'Lag over the last 15 minutes',
    class: 'chart',
    height: HEIGHT,
  });
  let points = [];

  function draw() {
    // the server's clock may run ahead of this one: "now" is the later of the two
    const now = Math.max(Date.now(), points.length ? points[points.length - 1][0] : 0);
    points = points.filter((p) => p[0] >= now - WINDOW_MS);
    const width = Math.max(280, Math.floor(el.parentNode?.clientWidth || 640));
    el.setAttribute('width', width);
    el.setAttribute('viewBox', `0 0 ${width} ${HEIGHT}`);
    const x0 = PAD.l;
    const x1 = width - PAD.r;
    const y0 = HEIGHT - PAD.b;
    const y1 = PAD.t;
    const max = niceMax(points.reduce((m, p) => Math.max(m, p[1]), 0));
    const x = (t) => x0 + ((t - (now - WINDOW_MS)) / WINDOW_MS) * (x1 - x0);
    const y = (v) => y0 - (v / max) * (y0 - y1);
    const parts = [];
    const last = points.length ? points[points.length - 1] : null;
    parts.push(s('desc', null, last ? `Current lag ${grouped(last[1])} events` : 'No lag samples yet'));
    for (let i = 0; i <= 4; i++) {
      const v = (max * i) / 4;
      parts.push(
        s('line', { class: i ? 'grid' : 'axis', x1: x0, x2: x1, y1: y(v), y2: y(v) }),
        s('text', { x: x0 - 6, y: y(v) + 4, 'text-anchor': 'end' }, compact(v)),
      );
    }
    for (let m = 15; m >= 0; m -= 5) {
      const t = now - m * 60000;
      parts.push(
        s('line', { class: 'axis', x1: x(t), x2: x(t), y1: y0, y2: y0 + 4 }),
        s('text', { x: x(t), y: y0 + 16, 'text-anchor': m === 0 ? 'end' : m === 15 ? 'start' : 'middle' }, m === 0 ? 'now' : hhmm(t)),
      );
    }
    parts.push(
      s('text', { x: x0 + (x1 - x0) / 2, y: HEIGHT - 2, 'text-anchor': 'middle' }, 'Time (last 15 minutes)'),
      s('text', { x: 12, y: y1 + (y0 - y1) / 2, 'text-anchor': 'middle', transform: `rotate(-90 12 ${y1 + (y0 - y1) / 2})` }, 'Lag (events)'),
    );
    if (points.length) {
      const d = points.map((p, i) => (i ? 'L' : 'M') + x(p[0]).toFixed(1) + ' ' + y(p[1]).toFixed(1)).join(' ');
      const area = d + ` L${x(last[0]).toFixed(1)} ${y0} L${x(points[0][0]).toFixed(1)} ${y0} Z`;
      parts.push(s('path', { class: 'area', d: area }), s('path', { class: 'line', d }));
      const lx = x(last[0]);
      const ly = y(last[1]);
      parts.push(
        s('circle', { class: 'line', cx: lx, cy: ly, r: 3.5 }),
        s('text', { class: 'last', x: Math.min(lx, x1) - 6, y: Math.max(ly - 8, y1 + 10), 'text-anchor': 'end' }, int(last[1])),
      );
    } else {
      parts.push(s('text', { x: x0 + (x1 - x0) / 2, y: y1 + (y0 - y1) / 2, 'text-anchor': 'middle' }, 'No lag samples yet'));
    }
    el.replaceChildren(...parts);
  }

  return {
    el,
    draw,
    set(pts) {
      points = (Array.isArray(pts) ? pts : []).filter((p) => Array.isArray(p) && Number.isFinite(+p[0]) && Number.isFinite(+p[1])).map((p) => [+p[0], +p[1]]);
      points.sort((a, b) => a[0] - b[0]);
      draw();
    },
    push(t, lag) {
      if (!Number.isFinite(+t) || !Number.isFinite(+lag)) return;
      if (points.length && points[points.length - 1][0] >= t) return;
      points.push([+t, +lag]);
      draw();
    },
  };
}
