// The HTTP API: JSON calls with the bearer token, errors as ApiError, and SSE read from fetch
// streams (EventSource cannot send an Authorization header).

const KEY = 'herald.token';
const store = (f) => {
  try {
    return f(sessionStorage);
  } catch {
    return ''; // storage refused (privacy mode): no token
  }
};
export const token = {
  get: () => store((s) => s.getItem(KEY)) || '',
  set: (t) => store((s) => s.setItem(KEY, t)),
  clear: () => store((s) => s.removeItem(KEY)),
};

/** An error answer ({code, message}); status 0 when the server could not be reached. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

/** Errors a page shows nothing for: the page was left, or the user is sent to sign in. */
export const quiet = (e) => !!e && (e.name === 'AbortError' || e.status === 401);

let unauthenticated = () => {};
let principalSeen = () => {};
/** What to do on a 401 (go to the login page). */
export const onUnauthenticated = (fn) => (unauthenticated = fn);
/** Called with the overview's principal ({name, anonymous}) whenever one arrives. */
export const onPrincipal = (fn) => (principalSeen = fn);

/** One path segment. */
export const seg = (s) => encodeURIComponent(s);

function headers(extra, tok) {
  const hd = { Accept: 'application/json', ...extra };
  if (tok) hd.Authorization = 'Bearer ' + tok;
  return hd;
}

async function errorOf(res) {
  let b = null;
  try {
    b = JSON.parse(await res.text());
  } catch {
    /* not JSON */
  }
  return new ApiError(res.status, (b && b.code) || 'http_' + res.status, (b && typeof b.message === 'string' && b.message) || `The server answered ${res.status} ${res.statusText}`.trim());
}

function fetchFailed(e, signal) {
  if (!(signal && signal.aborted) && e.name !== 'AbortError') return new ApiError(0, 'unreachable', 'Cannot reach the Herald server: check that it is running, then try again.');
  const a = new Error('aborted');
  a.name = 'AbortError';
  return a;
}

/**
 * A JSON call; tok: another token than the stored one (then a 401 stays here); text: the answer
 * is text/plain (a schema's document), returned as it is (errors are JSON all the same).
 */
export async function api(path, { method = 'GET', body, signal, tok, text: plain = false } = {}) {
  let res;
  try {
    const extra = { ...(plain ? { Accept: 'text/plain, application/json' } : {}), ...(body === undefined ? {} : { 'Content-Type': 'application/json' }) };
    res = await fetch(path, {
      method,
      headers: headers(extra, tok ?? token.get()),
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: 'no-store',
    });
    if (!res.ok) {
      const err = await errorOf(res);
      if (res.status === 401 && tok === undefined) unauthenticated();
      throw err;
    }
    const text = await res.text();
    if (plain) return text;
    return text ? JSON.parse(text) : null;
  } catch (e) {
    if (e instanceof ApiError) throw e;
    if (e instanceof SyntaxError) throw new ApiError(res.status, 'bad_answer', 'The server sent an answer that is not JSON.');
    throw fetchFailed(e, signal);
  }
}

// The overview is shared for a few seconds: the group and DLQ pages read `may` from it.
let cached = null;

/** GET /v1/console/overview, reused when younger than maxAge ms. */
export function overview(maxAge = 3000) {
  if (cached && Date.now() - cached.at <= maxAge) return cached.promise;
  const entry = { at: Date.now() };
  entry.promise = api('/v1/console/overview').then((o) => {
    if (o && o.principal) principalSeen(o.principal);
    return o;
  });
  entry.promise.catch(() => cached === entry && (cached = null));
  return (cached = entry).promise;
}

/** Forgets the cached overview (after a change, a login or a logout). */
export const invalidateOverview = () => (cached = null);

/** Reads an SSE body, calling dispatch(type, data) per event, until it ends. */
async function readSse(body, dispatch) {
  const reader = body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  let cr = '';
  let data = [];
  let type = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    let text = cr + dec.decode(value, { stream: true });
    cr = text.endsWith('\r') ? '\r' : ''; // maybe half of a CRLF split across chunks
    if (cr) text = text.slice(0, -1);
    const lines = (buf + text.replace(/\r\n?/g, '\n')).split('\n');
    buf = lines.pop();
    for (const line of lines) {
      if (line === '') {
        if (data.length) dispatch(type || 'message', data.join('\n'));
        data = [];
        type = '';
      } else if (line[0] !== ':') {
        const c = line.indexOf(':');
        const field = c < 0 ? line : line.slice(0, c);
        const val = c < 0 ? '' : line.slice(line[c + 1] === ' ' ? c + 2 : c + 1);
        if (field === 'data') data.push(val);
        else if (field === 'event') type = val;
      }
    }
  }
}

/**
 * SSE over fetch, reconnected 2 s after it drops, until signal aborts; a 4xx (not 408/429) stops it.
 * on: {event(type, data), state('connecting' | 'open' | 'reconnecting' | 'error', err), bug(e)}.
 */
export function stream(path, signal, on) {
  const safe = (f) => (...a) => {
    try {
      f && f(...a);
    } catch (e) {
      on.bug && on.bug(e);
    }
  };
  const state = safe(on.state);
  const dispatch = safe(on.event);
  const wait = () => new Promise((r) => {
    const t = setTimeout(r, 2000);
    signal.addEventListener('abort', () => (clearTimeout(t), r()), { once: true });
  });
  (async () => {
    while (!signal.aborted) {
      state('connecting');
      try {
        const res = await fetch(path, { headers: headers({ Accept: 'text/event-stream' }, token.get()), signal, cache: 'no-store' });
        if (!res.ok) {
          const err = await errorOf(res);
          if (res.status === 401) return unauthenticated();
          state('error', err);
          if (res.status < 500 && res.status !== 408 && res.status !== 429) return;
        } else {
          state('open');
          await readSse(res.body, dispatch);
        }
      } catch {
        /* dropped (or left): reconnect below unless left */
      }
      if (signal.aborted) return;
      state('reconnecting');
      await wait();
    }
  })();
}
