// The schemas of a topic: its event types with their latest version, any version's document and,
// for the topic's admins, checking, registering and deleting schemas and editing the policy.

import { h, button, link, int, grouped, when, showError, table, num, nc, emptyRow, field, dl, section, confirmDialog } from './dom.js';
import { api, overview, quiet, seg } from './api.js';
import { topicHref } from './topics.js';

// herald_model::schema::Compatibility::ALL, in the registries' order
const COMPATIBILITY = ['NONE', 'BACKWARD', 'BACKWARD_TRANSITIVE', 'FORWARD', 'FORWARD_TRANSITIVE', 'FULL', 'FULL_TRANSITIVE'];
const FORMATS = { json_schema: 'JSON Schema', protobuf: 'Protobuf' };

const plural = (n, one, many) => `${grouped(n)} ${Number(n) === 1 ? one : many}`;
const formatName = (f) => FORMATS[f] || String(f ?? '—');
const byType = (a, b) => (a.type < b.type ? -1 : a.type > b.type ? 1 : 0);

const listPath = (t) => `/v1/topics/${seg(t)}/schemas`;
const typePath = (t, ty) => `${listPath(t)}/${seg(ty)}`;
const versionPath = (t, ty, n) => `${typePath(t, ty)}/versions/${n}`;

/** What the topic does with a type without a schema, in words. */
const unknownText = (u) => (u === 'refuse' ? 'refused' : 'allowed, stored unchecked');

export async function schemasPage(ctx) {
  const topic = ctx.params.topic;
  ctx.setLastTopic(topic);
  const { main, errs } = ctx.page('schemas', 'Schemas: ' + topic, [link('#/topics', 'Topics'), link(topicHref(topic), topic), h('span', null, 'Schemas')],
    h('a', { href: '#/tail/' + seg(topic), class: 'button' }, 'Live tail'));
  const note = h('div', { role: 'status', class: 'note' });
  main.append(note);
  // The overview first (mostly cached): a topic it does not list would be refused, and the browser
  // would log the refusal. Its `may` says which controls to show: none the server would refuse.
  let o = null;
  try {
    o = await overview();
  } catch (e) {
    if (quiet(e)) return;
  }
  if (!ctx.live) return;
  const tp = o && (o.topics || []).find((x) => x.name === topic);
  if (o && !tp) return ctx.fail(errs, new Error(`There is no topic ${topic} that you may see.`));
  const admin = !!tp && (tp.may || []).includes('admin');
  const first = await ctx.get(api(listPath(topic), { signal: ctx.signal }), errs);
  if (!first) return;

  let policy = first.policy || {};
  let types = (first.schemas || []).slice().sort(byType);

  // ---- policy

  const policyLine = h('p', { 'data-testid': 'schema-policy' });
  const renderPolicy = () => policyLine.replaceChildren(
    'Types without a schema: ', h('strong', { 'data-testid': 'policy-unknown' }, unknownText(policy.unknown_types)),
    ' · Default compatibility: ', h('strong', { 'data-testid': 'policy-compatibility' }, policy.compatibility ?? '—'));
  const policyEdit = admin ? policyForm(ctx, topic, () => policy, (p) => {
    policy = p;
    renderPolicy();
    note.textContent = `Saved the schema policy of ${topic}.`;
  }) : null;
  renderPolicy();
  main.append(section('Policy', policyLine, policyEdit && policyEdit.form));

  // ---- types

  const t = table('schemas', ['Type', nc('Latest version'), 'Format', 'Compatibility', 'Registered', { label: 'Actions', sr: true }], 'Event types with a schema');
  const command = h('code', null, `herald schema add ${topic} <type> --json-schema FILE`);
  const emptyText = ['No schemas on this topic. Register one ', admin ? 'here or ' : '', 'with ', command, '.'];
  let shown = null; // the type whose document is open
  let register = null; // the check and register form (admins)

  function renderTypes() {
    t.tbody.replaceChildren(...types.map((s) => h('tr', { 'data-type': s.type, class: s.type === shown ? 'selected' : null },
      h('td', { class: 'name' }, h('button', { type: 'button', class: 'link', 'data-action': 'show-schema', 'aria-controls': 'schema-doc', 'aria-expanded': String(s.type === shown) }, s.type)),
      num(int(s.version), { 'data-testid': 'version' }),
      h('td', null, formatName(s.format)),
      h('td', null, h('code', null, s.compatibility ?? '—')),
      h('td', { class: 'nowrap' }, when(s.registered_ms)),
      h('td', { class: 'actions' }, admin && h('button', { type: 'button', class: 'small danger-ghost', 'data-action': 'delete-schema', 'aria-label': `Delete the schema of ${s.type}` }, 'Delete')))));
    if (!types.length) t.tbody.append(emptyRow(6, emptyText));
  }
  main.append(section('Event types', t.wrap));

  // ---- one type's document

  const docTitle = h('h2', { id: 'schema-doc-title' });
  const versionSel = h('select', { id: 'schema-version', name: 'version' });
  const docInfo = h('div');
  const docErr = h('div');
  const pre = h('pre', { 'data-testid': 'schema-text', class: 'data schema-text', tabindex: '0', 'aria-labelledby': 'schema-doc-title' });
  const edit = admin ? button('Start a new version from this', { class: 'small', 'data-action': 'edit-schema' }) : null;
  const doc = h('section', { id: 'schema-doc', 'data-testid': 'schema-document', 'aria-labelledby': 'schema-doc-title', hidden: true },
    h('div', { class: 'section-head' }, docTitle, h('span', { class: 'spacer' }), edit),
    h('div', { class: 'toolbar' }, field('schema-version', 'Version', versionSel, 'narrow')),
    docErr, docInfo, pre);
  main.append(doc);
  let docSeq = 0;
  let docFormat = null;

  function hideDoc() {
    docSeq++;
    shown = null;
    doc.hidden = true;
  }

  /** Opens version n (the latest when absent) of type's document. */
  async function show(type, n) {
    const s = types.find((x) => x.type === type);
    if (!s) return;
    const my = ++docSeq;
    const version = n ?? s.version;
    shown = type;
    renderTypes();
    docTitle.textContent = `Schema of ${type}`;
    versionSel.replaceChildren(...Array.from({ length: s.version }, (_, i) => h('option', { value: i + 1 }, i + 1 === s.version ? `${i + 1} (latest)` : String(i + 1))));
    versionSel.value = String(version);
    doc.hidden = false;
    showError(docErr, '');
    if (edit) edit.hidden = true;
    pre.removeAttribute('data-version');
    ctx.unready();
    // the version for its details, its text for the document (JSON pretty-printed, or .proto)
    const [rv, rt] = await Promise.allSettled([
      api(versionPath(topic, type, version), { signal: ctx.signal }),
      api(versionPath(topic, type, version) + '/text', { signal: ctx.signal, text: true }),
    ]);
    if (!ctx.live || my !== docSeq) return;
    const bad = [rv, rt].find((r) => r.status === 'rejected');
    if (bad) {
      docInfo.replaceChildren();
      pre.textContent = '';
      ctx.fail(docErr, bad.reason);
      return ctx.ready();
    }
    const v = rv.value;
    docFormat = v.format;
    docInfo.replaceChildren(dl([
      ['Version', int(v.version)],
      ['Format', formatName(v.format)],
      ['Registered', when(v.registered_ms, true)],
      ['dataschema', h('code', { 'data-testid': 'dataschema' }, v.dataschema ?? '—')],
    ], 'kv summary'));
    pre.textContent = rt.value;
    pre.setAttribute('data-type', type);
    pre.setAttribute('data-version', version);
    // only a JSON Schema is edited here: a Protobuf version is registered from its .proto
    if (edit) edit.hidden = docFormat !== 'json_schema';
    ctx.ready();
  }

  async function reload() {
    const res = await ctx.get(api(listPath(topic), { signal: ctx.signal }), errs);
    if (!res) return false;
    policy = res.policy || policy;
    types = (res.schemas || []).slice().sort(byType);
    if (shown && !types.some((x) => x.type === shown)) hideDoc();
    renderPolicy();
    renderTypes();
    if (policyEdit) policyEdit.set(policy);
    if (register) register.types(types);
    return true;
  }

  async function remove(type, btn) {
    const s = types.find((x) => x.type === type);
    const ok = await confirmDialog({
      title: `Delete the schema of ${type}?`,
      message: [h('p', null, `This deletes ${!s || s.version === 1 ? 'the one version' : `all ${grouped(s.version)} versions`} of the schema of ${type} on ${topic}. `,
        policy.unknown_types === 'refuse'
          ? 'New events of this type are then refused: the topic refuses types without a schema.'
          : 'New events of this type are then stored unchecked.',
        ' This cannot be undone.')],
      confirmLabel: 'Delete schema',
      danger: true,
    });
    if (!ok || !ctx.live) return;
    btn.disabled = true;
    ctx.unready();
    try {
      const res = await api(typePath(topic, type), { method: 'DELETE' });
      note.textContent = `Deleted the schema of ${type} (${plural((res && res.deleted) ?? 0, 'version', 'versions')}).`;
      await reload();
    } catch (x) {
      btn.disabled = false;
      ctx.fail(errs, x);
    }
    ctx.ready();
  }

  t.tbody.addEventListener('click', (e) => {
    const b = e.target.closest('button[data-action]');
    const tr = b && b.closest('tr[data-type]');
    if (!tr) return;
    if (b.dataset.action === 'show-schema') show(tr.dataset.type);
    else if (b.dataset.action === 'delete-schema') remove(tr.dataset.type, b);
  });
  versionSel.addEventListener('change', () => shown && show(shown, Number(versionSel.value)));

  // ---- registering (admins)

  register = admin ? registerForm(ctx, topic, () => types, async (v) => {
    note.textContent = '';
    if (await reload()) await show(v.type, v.version);
  }) : null;
  if (register) {
    register.types(types);
    main.append(register.form);
    edit.addEventListener('click', () => register.fill(shown, pre.textContent));
  }

  renderTypes();
  const wanted = ctx.query.get('type');
  if (wanted && types.some((x) => x.type === wanted)) await show(wanted);
  else ctx.ready();
}

/** The policy's two selects and a save button: {form, set(policy)}. */
function policyForm(ctx, topic, get, saved) {
  const unknown = h('select', { id: 'policy-unknown', name: 'unknown_types' },
    h('option', { value: 'allow' }, 'Allow (stored unchecked)'), h('option', { value: 'refuse' }, 'Refuse'));
  const compat = h('select', { id: 'policy-compatibility', name: 'compatibility' }, COMPATIBILITY.map((c) => h('option', { value: c }, c)));
  const save = h('button', { type: 'submit', 'data-action': 'save-policy' }, 'Save policy');
  const err = h('div');
  const form = h('form', { 'data-testid': 'schema-policy-form', 'aria-label': 'Schema policy' },
    h('div', { class: 'fields' },
      field('policy-unknown', 'Types without a schema', unknown),
      field('policy-compatibility', 'Default compatibility', compat),
      h('p', { class: 'field button-field' }, save)),
    err);
  const set = (p) => {
    unknown.value = p.unknown_types ?? 'allow';
    compat.value = p.compatibility ?? 'BACKWARD';
  };
  set(get());
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    showError(err, '');
    save.disabled = true;
    ctx.unready();
    try {
      const p = await api(`/v1/topics/${seg(topic)}/schema-policy`, { method: 'PUT', body: { unknown_types: unknown.value, compatibility: compat.value } });
      if (ctx.live) saved(p || { unknown_types: unknown.value, compatibility: compat.value });
    } catch (x) {
      ctx.fail(err, x);
    }
    save.disabled = false;
    ctx.ready();
  });
  return { form, set };
}

/** Check and register a JSON Schema version: {form, types(list), fill(type, text)}. */
function registerForm(ctx, topic, getTypes, registered) {
  const type = h('input', { id: 'schema-type', name: 'type', required: true, autocomplete: 'off', spellcheck: 'false', autocapitalize: 'off', list: 'schema-types', placeholder: 'order.placed' });
  const known = h('datalist', { id: 'schema-types' });
  const text = h('textarea', { id: 'schema-json', name: 'schema', rows: 12, spellcheck: 'false', autocomplete: 'off', autocapitalize: 'off', 'aria-describedby': 'schema-json-hint', placeholder: '{"type": "object", "properties": {…}}' });
  const check = h('button', { type: 'submit', 'data-action': 'check-schema' }, 'Check');
  const reg = h('button', { type: 'button', class: 'primary', 'data-action': 'register-schema' }, 'Register');
  const err = h('div');
  const outcome = h('div', { role: 'status', 'data-testid': 'schema-outcome' });
  const problems = table('schema-problems', ['Rule', nc('Version'), 'Path', 'Message'], 'Why the schema is not compatible');
  problems.wrap.hidden = true;
  const form = h('form', { 'data-testid': 'schema-form', class: 'inline-form', 'aria-labelledby': 'schema-form-title' },
    h('h2', { id: 'schema-form-title' }, 'Check or register a JSON Schema'),
    h('div', { class: 'fields' },
      field('schema-type', 'Event type', type),
      h('p', { class: 'field wide' }, h('label', { for: 'schema-json' }, 'JSON Schema'), text,
        h('span', { id: 'schema-json-hint', class: 'hint' }, 'Check compares it with the registered versions under the type\'s compatibility rule; Register adds it as the next version when it passes.')),
      h('p', { class: 'field button-field' }, check, reg)),
    known, err, outcome, problems.wrap);

  /** The body to send, or an Error saying what to fix. */
  function read() {
    const ty = type.value.trim();
    if (!ty) throw new Error('Enter the event type the schema describes.');
    if (!text.value.trim()) throw new Error('Paste the JSON Schema document.');
    try {
      return { type: ty, format: 'json_schema', schema: JSON.parse(text.value) };
    } catch (x) {
      throw new Error(`The schema is not JSON: ${x.message}`);
    }
  }

  const say = (cls, msg, attrs) => outcome.replaceChildren(h('p', { class: cls, ...attrs }, msg));

  function showProblems(list) {
    problems.tbody.replaceChildren(...list.map((p) => h('tr', { 'data-rule': p.rule },
      h('td', null, h('code', null, p.rule)), num(int(p.version)),
      h('td', { class: 'mono' }, p.path || '(the root)'), h('td', { class: 'pre-wrap' }, p.message))));
    problems.wrap.hidden = !list.length;
  }

  async function run(registering) {
    showError(err, '');
    outcome.replaceChildren();
    showProblems([]);
    let body;
    try {
      body = read();
    } catch (x) {
      return showError(err, x.message);
    }
    const before = getTypes().find((x) => x.type === body.type);
    const next = before ? before.version + 1 : 1;
    check.disabled = reg.disabled = true;
    ctx.unready();
    try {
      // checked first, before registering too: a refusal then lists every problem, and the
      // browser logs no refused (409) request
      const res = await api(`${listPath(topic)}/check`, { method: 'POST', body, signal: ctx.signal });
      const ps = (res && res.problems) || [];
      showProblems(ps);
      if (!res.compatible) {
        say('note warn', `${registering ? 'Not registered: the' : 'The'} schema is not compatible with the registered versions of ${body.type} (${plural(ps.length, 'problem', 'problems')}).`, { 'data-compatible': 'false' });
      } else if (!registering) {
        say('result', before ? `Compatible: it would be version ${next} of ${body.type}.` : `Compatible: ${body.type} has no schema yet, it would be version 1.`, { 'data-compatible': 'true' });
      } else {
        const v = await api(listPath(topic), { method: 'POST', body });
        const same = before && v.version === before.version;
        say('result', same ? `Unchanged: the same document as version ${v.version} of ${v.type}.` : `Registered ${v.type} version ${v.version}.`, { 'data-version': v.version });
        if (ctx.live) await registered(v);
      }
    } catch (x) {
      ctx.fail(err, x);
    }
    check.disabled = reg.disabled = false;
    ctx.ready();
  }

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    run(false);
  });
  reg.addEventListener('click', () => run(true));
  return {
    form,
    types: (list) => known.replaceChildren(...list.map((s) => h('option', { value: s.type }))),
    fill(ty, doc) {
      type.value = ty;
      text.value = doc;
      text.focus();
    },
  };
}
