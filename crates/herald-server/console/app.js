// Herald Console: hash router, navigation bar, sign-in, and the context every page runs in.

import { h, button, showError, closeDialogs, refreshRelative, pageHead, field } from './dom.js';
import { api, token, quiet, stream, onUnauthenticated, onPrincipal, invalidateOverview, seg } from './api.js';
import { overviewPage, topicsPage, browsePage, tailPage } from './topics.js';
import { groupsPage, groupPage, dlqPage, historyPage } from './groups.js';
import { schemasPage } from './schemas.js';

const app = document.getElementById('app');
const alerts = document.getElementById('alerts');
const who = document.getElementById('who');

let current = null;
let returnTo = null;
let lastTopic = null;
let principal = null;
let refused = '';
let authMode = null; // from /v1/console/session: 'none' or 'token' (null: not known)
let first = true;

/** {name, params, query} of a location hash, or {redirect}. */
function route(hash) {
  let path = hash.replace(/^#/, '');
  const qi = path.indexOf('?');
  const query = new URLSearchParams(qi < 0 ? '' : path.slice(qi + 1));
  if (qi >= 0) path = path.slice(0, qi);
  let p;
  try {
    p = path.split('/').filter(Boolean).map(decodeURIComponent);
  } catch {
    p = ['?'];
  }
  const n = p.length;
  const r = (name, params = {}) => ({ name, params, query });
  const is = (word, ...counts) => p[0] === word && counts.includes(n);
  if (n === 0 || is('overview', 1)) return r('overview');
  if (is('topics', 1)) return r('topics');
  if (is('topics', 2)) return r('browse', { topic: p[1] });
  if (is('topics', 3) && p[2] === 'schemas') return r('schemas', { topic: p[1] });
  if (is('tail', 1)) return { redirect: lastTopic ? '#/tail/' + seg(lastTopic) : '#/topics' };
  if (is('tail', 2)) return r('tail', { topic: p[1] });
  if (is('groups', 1)) return r('groups');
  if (is('groups', 2)) return r('group', { group: p[1] });
  if (is('dlq', 1, 2)) return r('dlq', { group: p[1] });
  if (is('history', 4) && /^\d+$/.test(p[2]) && /^\d+$/.test(p[3])) return r('history', { topic: p[1], partition: p[2], offset: p[3] });
  if (is('history', 2)) return r('history', { topic: p[1] });
  if (is('login', 1)) return r('login');
  return r('notfound');
}

const NAV = { overview: 'overview', topics: 'topics', browse: 'topics', schemas: 'topics', tail: 'tail', groups: 'groups', group: 'groups', dlq: 'dlq', history: 'topics' };

/** A problem in the console itself: shown, never logged. */
function bug(e) {
  if (!quiet(e)) showError(alerts, `Something went wrong in the console: ${(e && e.message) || e}. Reload the page to recover.`);
}

function context(r, hash, signal) {
  let pageName = r.name;
  let wasReady = false;
  const ctx = {
    params: r.params,
    query: r.query,
    signal,
    get live() {
      return !signal.aborted;
    },
    main(name) {
      pageName = name;
      const m = h('main', { 'data-page': name, id: 'main', tabindex: '-1' });
      app.replaceChildren(m);
      return m;
    },
    /** Mounts <main> with its heading and an error slot: {main, errs}. */
    page(name, title, crumbs, ...extra) {
      const main = ctx.main(name);
      const errs = h('div');
      main.append(pageHead(title, crumbs, ...extra), errs);
      return { main, errs };
    },
    /** The page rendered its data: the tests wait for body[data-ready=NAME], the benchmark reads the mark. */
    ready() {
      if (signal.aborted || location.hash !== hash) return;
      if (!wasReady) performance.mark('herald-ready-' + pageName);
      wasReady = true;
      document.body.dataset.ready = pageName;
    },
    unready() {
      if (!signal.aborted) document.body.dataset.ready = '';
    },
    /** Shows e in slot (nothing for an abort or a 401); a page whose first load failed is ready too. */
    fail(slot, e) {
      if (!e || quiet(e) || signal.aborted) return;
      showError(slot, e.message || String(e));
      if (!wasReady) ctx.ready();
    },
    /** The promise's value, or null (its error shown in slot) when it failed or the page was left. */
    async get(promise, slot) {
      try {
        const v = await promise;
        return signal.aborted ? null : v;
      } catch (e) {
        ctx.fail(slot, e);
        return null;
      }
    },
    stream(path, sig, on) {
      stream(path, sig, { ...on, bug });
    },
    /** The console stream's ticks, parsed, to fn; "● Live" / "Reconnecting…" in el, errors in slot. */
    ticks(el, slot, fn) {
      const text = { open: '● Live', connecting: 'Connecting…', reconnecting: 'Reconnecting…', error: 'Live updates stopped' };
      stream('/v1/console/stream', signal, {
        bug,
        event: (type, data) => type === 'tick' && fn(JSON.parse(data)),
        state(st, err) {
          el.textContent = text[st];
          el.className = 'live ' + st;
          if (st === 'error') ctx.fail(slot, err);
          else if (st === 'open') showError(slot, '');
        },
      });
    },
    setLastTopic(t) {
      lastTopic = t;
      document.querySelector('a[data-nav="tail"]').setAttribute('href', '#/tail/' + seg(t));
    },
    onLeave: (fn) => signal.addEventListener('abort', fn, { once: true }),
    later(ms, fn) {
      const t = setTimeout(() => signal.aborted || fn(), ms);
      ctx.onLeave(() => clearTimeout(t));
    },
  };
  return ctx;
}

const PAGES = { overview: overviewPage, topics: topicsPage, browse: browsePage, schemas: schemasPage, tail: tailPage, groups: groupsPage, group: groupPage, dlq: dlqPage, history: historyPage, login: loginPage, notfound: notFoundPage };

function navigate() {
  document.body.dataset.ready = '';
  if (current) current.abort();
  closeDialogs();
  showError(alerts, '');
  const hash = location.hash;
  const r = route(hash || '#/');
  if (r.redirect) return location.replace(r.redirect);
  if (authMode === 'token' && !token.get() && r.name !== 'login') {
    // no token: every call would be refused (and logged by the browser): sign in first
    returnTo = hash;
    return location.replace('#/login');
  }
  const ctl = (current = new AbortController());
  const ctx = context(r, hash, ctl.signal);
  for (const a of document.querySelectorAll('a[data-nav]')) {
    if (a.dataset.nav === NAV[r.name]) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const focus = !first;
  first = false;
  Promise.resolve()
    .then(() => {
      const done = PAGES[r.name](ctx);
      const heading = app.querySelector('h1');
      document.title = (heading ? heading.textContent + ' · ' : '') + 'Herald Console';
      if (focus && heading && !app.contains(document.activeElement)) {
        window.scrollTo(0, 0);
        heading.focus();
      }
      return done;
    })
    .catch((e) => {
      if (!ctx.live || quiet(e)) return;
      const slot = h('div');
      (app.querySelector('main') || ctx.main(r.name)).append(slot);
      ctx.fail(slot, e);
    });
}

// ---- sign-in

function renderWho() {
  const p = principal;
  who.replaceChildren(...[
    p && (p.anonymous ? h('span', { class: 'tag' }, 'anonymous') : h('span', { title: 'Signed in as ' + p.name }, p.name)),
    token.get() ? button('Log out', { class: 'small', 'data-action': 'logout' }) : authMode !== 'none' && !(p && !p.anonymous) && h('a', { href: '#/login' }, 'Sign in'),
  ].filter(Boolean));
}

/** GET /v1/console/session with tok (always 200: {auth, principal, error}); null from a server without it. */
async function session(tok) {
  try {
    const s = await api('/v1/console/session', { tok });
    authMode = (s && s.auth) || authMode;
    return s;
  } catch (e) {
    if (e.status === 404) return null;
    throw e;
  }
}

function setPrincipal(p) {
  principal = p && { name: String(p.principal ?? p.name ?? ''), anonymous: !!p.anonymous };
  renderWho();
}

function loginPage(ctx) {
  const main = ctx.main('login');
  const input = h('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'current-password', required: true, spellcheck: 'false' });
  const err = h('div');
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Sign in');
  const form = h('form', { 'aria-labelledby': 'login-title' }, field('token', 'Access token', input), err, h('p', null, submit));
  main.append(h('div', { class: 'login-box' },
    h('h1', { id: 'login-title', tabindex: '-1' }, 'Sign in to Herald'),
    refused ? h('p', { class: 'note warn' }, `The server refused the token (${refused}). Sign in again.`)
      : h('p', { class: 'muted' }, authMode === 'none' ? 'This server asks for no token: the console works without signing in.' : 'Paste an access token issued for this Herald server.'),
    form));
  refused = '';
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const t = input.value.trim();
    if (!t) return showError(err, 'Enter an access token.');
    showError(err, '');
    submit.disabled = true;
    try {
      // the session answer says why a token is refused without an error in the browser's console
      const s = await session(t);
      if (s && !s.principal) return showError(err, (s.error && s.error.message) || 'The server refused the token.');
      const me = s ? s.principal : await api('/v1/whoami', { tok: t, signal: ctx.signal });
      if (!ctx.live) return;
      token.set(t);
      invalidateOverview();
      setPrincipal(me);
      const to = returnTo && !returnTo.startsWith('#/login') ? returnTo : '#/';
      returnTo = null;
      location.hash = to;
    } catch (x) {
      if (x.name !== 'AbortError') showError(err, x.message);
    } finally {
      submit.disabled = false;
    }
  });
  input.focus();
  ctx.ready();
}

function notFoundPage(ctx) {
  const { main } = ctx.page('notfound', 'No such page');
  main.append(h('p', null, 'This address names no page of the console. ', h('a', { href: '#/' }, 'Go to the overview'), '.'));
  ctx.ready();
}

onUnauthenticated(() => {
  const here = location.hash || '#/';
  const onLogin = here.startsWith('#/login');
  if (!onLogin) returnTo = here;
  if (token.get()) refused = 'it may have expired';
  token.clear();
  invalidateOverview();
  setPrincipal(null);
  if (!onLogin) location.hash = '#/login';
});
onPrincipal((p) => (!principal || principal.name !== p.name || principal.anonymous !== !!p.anonymous) && setPrincipal(p));

who.addEventListener('click', (e) => {
  if (!e.target.closest('[data-action="logout"]')) return;
  token.clear();
  invalidateOverview();
  returnTo = null;
  setPrincipal(null);
  location.hash = '#/login';
});

// ---- start

window.addEventListener('unhandledrejection', (e) => {
  e.preventDefault();
  bug(e.reason);
});
document.querySelector('a.skip').addEventListener('click', (e) => {
  e.preventDefault();
  const m = app.querySelector('main');
  if (m) m.focus();
});
window.addEventListener('hashchange', navigate);
// Leaving the page (or entering the back/forward cache) closes its streams: an open one keeps a
// connection, and a browser has only six per server. Coming back from the cache opens them again.
window.addEventListener('pagehide', () => {
  if (current) current.abort();
});
window.addEventListener('pageshow', (e) => {
  if (e.persisted) navigate();
});
setInterval(refreshRelative, 15000);
if (!location.hash) history.replaceState(null, '', '#/');
renderWho();
// Who is this (a stored token may have expired) before any page asks for data.
session(token.get())
  .then((s) => {
    if (s && s.principal) setPrincipal(s.principal);
    else if (s && token.get()) {
      refused = (s.error && s.error.message) || 'refused';
      token.clear();
      setPrincipal(null);
    }
  }, () => {}) // unreachable: the page says so
  .finally(navigate);
