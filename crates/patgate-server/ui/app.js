// patgate's web interface: a small single-page application over the JSON API, signed in
// by a session cookie. No framework, no inline script (the page's CSP forbids it), and no
// HTML built from strings: every value reaches the page as text.
'use strict';

const state = { session: null, resources: null };

// ---- DOM -----------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on')) element.addEventListener(key.slice(2), value);
    else if (key === 'class') element.className = value;
    else element.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

function show(...nodes) {
  const main = document.getElementById('main');
  main.replaceChildren(...nodes);
  const heading = main.querySelector('h1');
  if (heading) heading.setAttribute('tabindex', '-1');
}

function say(text, error) {
  const status = document.getElementById('status');
  status.textContent = text;
  status.classList.toggle('error', Boolean(error));
  status.hidden = !text;
}

function badge(text, kind) {
  return h('span', { class: `badge ${kind || ''}` }, text);
}

function date(text) {
  return text ? text.slice(0, 10) : '—';
}

function when(text) {
  return text ? text.replace('T', ' ').replace('Z', ' UTC') : 'never';
}

// ---- API -----------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.code = body && body.error;
  }
}

async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && state.session) headers['X-CSRF-Token'] = state.session.csrf_token;
  const response = await fetch(path, {
    method,
    headers,
    credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    if (response.status === 401 && !path.startsWith('/api/v1/session')) {
      state.session = null;
      location.hash = '#/sign-in';
    }
    throw new ApiError(response.status, data);
  }
  return { data, headers: response.headers };
}

async function guarded(action) {
  try {
    say('');
    await action();
  } catch (error) {
    say(error.message, true);
  }
}

// ---- sign-in ------------------------------------------------------------------------

function signInPage() {
  const username = h('input', { type: 'text', id: 'username', name: 'username', autocomplete: 'username', required: true });
  const password = h('input', { type: 'password', id: 'password', name: 'password', autocomplete: 'current-password', required: true });
  const form = h('form', { class: 'card signin', onsubmit: (event) => {
    event.preventDefault();
    guarded(async () => {
      const { data } = await api('POST', '/api/v1/session', { username: username.value, password: password.value });
      state.session = data;
      password.value = '';
      enterApp();
      location.hash = '#/tokens';
    });
  } },
  h('h1', {}, 'Sign in to patgate'),
  h('div', { class: 'field' }, h('label', { for: 'username' }, 'Username'), username),
  h('div', { class: 'field' }, h('label', { for: 'password' }, 'Password'), password),
  h('button', { type: 'submit', class: 'primary' }, 'Sign in'));
  document.getElementById('nav').hidden = true;
  show(form);
  username.focus();
}

function enterApp() {
  const nav = document.getElementById('nav');
  nav.hidden = false;
  document.getElementById('who').textContent = `${state.session.username}${state.session.admin ? ' (admin)' : ''}`;
  for (const link of nav.querySelectorAll('[data-admin]')) link.hidden = !state.session.admin;
}

// ---- the tokens table -----------------------------------------------------------------

const FLAGS = {
  broad_legacy_scope: ['Broad legacy scope', 'bad'],
  write_everywhere: ['Writes everywhere', 'bad'],
  unused_permissions: ['Unused permissions', 'warn'],
  never_used: ['Never used', 'warn'],
  expiring_soon: ['Expiring soon', 'warn'],
  exceeds_policy: ['Exceeds policy', 'bad'],
};
const STATES = { active: 'ok', expired: '', revoked: '', blocked: 'bad' };

function grantsText(token) {
  if (token.scopes) return h('div', { class: 'perms' }, 'Scopes: ', token.scopes.map((s) => h('code', {}, s, ' ')));
  return h('div', { class: 'perms' }, (token.grants || []).map((grant) => h('div', {},
    h('strong', {}, grant.reach.replace('_', ' ')),
    grant.projects && grant.projects.length ? ` (${grant.projects.join(', ')})` : '',
    grant.groups && grant.groups.length ? ` (groups: ${grant.groups.join(', ')})` : '',
    ': ',
    Object.entries(grant.permissions).map(([resource, actions]) => h('code', {}, `${resource}:${actions.join('+')} `)))));
}

function filterBar(query, onChange, withUser) {
  const select = (name, label, options) => {
    const element = h('select', { id: `filter-${name}`, onchange: () => { query[name] = element.value; onChange(); } },
      h('option', { value: '' }, 'Any'), options.map(([value, text]) => h('option', { value, selected: query[name] === value }, text)));
    return h('div', { class: 'field' }, h('label', { for: `filter-${name}` }, label), element);
  };
  const fields = [
    select('state', 'State', Object.keys(STATES).map((s) => [s, s])),
    select('kind', 'Kind', [['fine_grained', 'Fine-grained'], ['legacy', 'Legacy']]),
    select('flag', 'Flag', Object.entries(FLAGS).map(([key, [text]]) => [key, text])),
  ];
  if (withUser) {
    const user = h('input', { type: 'search', id: 'filter-user', value: query.user || '', placeholder: 'username' });
    user.addEventListener('change', () => { query.user = user.value.trim(); onChange(); });
    fields.push(h('div', { class: 'field' }, h('label', { for: 'filter-user' }, 'User'), user));
  }
  return h('div', { class: 'row', role: 'search', 'aria-label': 'Filter tokens' }, fields);
}

function tokenTable(tokens, { admin, reload }) {
  if (!tokens.length) return h('p', {}, 'No tokens match.');
  const rows = tokens.map((token) => {
    const live = token.state === 'active' || token.state === 'blocked';
    return h('tr', { 'data-token-id': token.id },
      h('td', { 'data-label': 'Name' }, h('strong', {}, token.name), h('div', { class: 'hint' }, `${token.kind === 'legacy' ? 'Legacy' : 'Fine-grained'} · ${token.display_prefix}…`), admin ? h('div', { class: 'hint' }, `Owner: ${token.user}`) : null),
      h('td', { 'data-label': 'Permissions' }, grantsText(token),
        token.unused_permissions ? h('div', { class: 'hint' }, 'Unused: ', token.unused_permissions.join(', ')) : null),
      h('td', { 'data-label': 'State' }, badge(token.state + (token.blocked_reason ? ` (${token.blocked_reason})` : ''), STATES[token.state])),
      h('td', { 'data-label': 'Flags' }, token.flags.map((flag) => badge(FLAGS[flag] ? FLAGS[flag][0] : flag, FLAGS[flag] && FLAGS[flag][1]))),
      h('td', { 'data-label': 'Created' }, date(token.created_at)),
      h('td', { 'data-label': 'Expires' }, token.expires_at || 'never'),
      h('td', { 'data-label': 'Last used' }, when(token.last_used_at), token.last_ips.length ? h('div', { class: 'hint' }, token.last_ips.join(', ')) : null),
      h('td', { class: 'actions', 'data-label': 'Actions' },
        live ? h('button', { type: 'button', onclick: () => { location.hash = `#/tokens/${token.id}/suggestion`; } }, 'Suggestion') : null,
        live ? h('button', { type: 'button', onclick: () => rotate(token, reload) }, 'Rotate') : null,
        live ? h('button', { type: 'button', class: 'danger', onclick: () => revoke(token, reload) }, 'Revoke') : null));
  });
  return h('div', { class: 'table-wrap' }, h('table', { class: 'cards' },
    h('caption', { class: 'hint' }, `${tokens.length} token${tokens.length === 1 ? '' : 's'}`),
    h('thead', {}, h('tr', {}, ['Name', 'Permissions', 'State', 'Flags', 'Created', 'Expires', 'Last used', 'Actions'].map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, rows)));
}

function revoke(token, reload) {
  if (!confirm(`Revoke the token “${token.name}”? Anything using it stops working at once.`)) return;
  guarded(async () => {
    await api('DELETE', `/api/v1/personal_access_tokens/${token.id}`);
    say(`Token “${token.name}” revoked.`);
    await reload();
  });
}

function rotate(token, reload) {
  if (!confirm(`Rotate the token “${token.name}”? You get a new secret; the old one stops working.`)) return;
  guarded(async () => {
    const { data } = await api('POST', `/api/v1/personal_access_tokens/${token.id}/rotate`);
    await reload();
    document.getElementById('main').prepend(secretBox(data));
  });
}

function secretBox(token) {
  const code = h('code', { id: 'new-token' }, token.token);
  const copy = h('button', { type: 'button', onclick: async () => {
    try { await navigator.clipboard.writeText(token.token); copy.textContent = 'Copied'; } catch (_) { copy.textContent = 'Select and copy it'; }
  } }, 'Copy');
  return h('div', { class: 'secret', role: 'alert' },
    h('strong', {}, `Your new token “${token.name}”:`), code, copy,
    h('span', { class: 'hint' }, 'Copy it now: it is shown only once.'));
}

async function tokensPage(query) {
  const reload = () => tokensPage(query);
  const params = new URLSearchParams(Object.entries(query).filter(([, v]) => v));
  const { data } = await api('GET', `/api/v1/personal_access_tokens?${params}`);
  const menu = h('div', { role: 'menu', hidden: true },
    h('button', { type: 'button', role: 'menuitem', onclick: () => { location.hash = '#/tokens/new/fine-grained'; } }, 'Fine-grained token'),
    h('button', { type: 'button', role: 'menuitem', onclick: () => { location.hash = '#/tokens/new/legacy'; } }, 'Legacy token'));
  const toggle = h('button', { type: 'button', class: 'primary', 'aria-haspopup': 'menu', 'aria-expanded': 'false', onclick: () => {
    menu.hidden = !menu.hidden;
    toggle.setAttribute('aria-expanded', String(!menu.hidden));
    if (!menu.hidden) menu.querySelector('button').focus();
  } }, 'Generate token ▾');
  menu.addEventListener('keydown', (event) => {
    const items = [...menu.querySelectorAll('[role=menuitem]')];
    const at = items.indexOf(document.activeElement);
    if (event.key === 'Escape') { menu.hidden = true; toggle.focus(); }
    if (event.key === 'ArrowDown') { event.preventDefault(); items[(at + 1) % items.length].focus(); }
    if (event.key === 'ArrowUp') { event.preventDefault(); items[(at + items.length - 1) % items.length].focus(); }
  });
  show(
    h('div', { class: 'row', style: 'justify-content: space-between' },
      h('h1', {}, 'Personal access tokens'), h('div', { class: 'menu' }, toggle, menu)),
    filterBar(query, reload, false),
    tokenTable(data, { admin: false, reload }));
}

// ---- generating tokens ----------------------------------------------------------------

function inDays(days) {
  const when = new Date(Date.now() + days * 86400000);
  return when.toISOString().slice(0, 10);
}

function basicsFields() {
  const name = h('input', { type: 'text', id: 'token-name', required: true, maxlength: 255 });
  const expires = h('input', { type: 'date', id: 'token-expires', value: inDays(30), min: inDays(1) });
  return { name, expires, fields: h('div', { class: 'row' },
    h('div', { class: 'field' }, h('label', { for: 'token-name' }, 'Token name'), name),
    h('div', { class: 'field' }, h('label', { for: 'token-expires' }, 'Expiration date'), expires)) };
}

const ROLE_RANK = { guest: 10, planner: 15, reporter: 20, developer: 30, maintainer: 40, owner: 50 };

async function fineGrainedPage() {
  if (!state.resources) state.resources = (await api('GET', '/api/v1/resources')).data;
  const { name, expires, fields } = basicsFields();
  const selected = new Map(); // path -> namespace entry
  const chips = h('div', { class: 'chips', 'aria-live': 'polite' });
  const results = h('ul', { class: 'results', hidden: true });
  const search = h('input', { type: 'search', id: 'reach-search', placeholder: 'Search your projects and groups', 'aria-describedby': 'reach-hint' });
  const warnings = h('div', { 'aria-live': 'polite' });
  const reach = (value, label, hint) => h('label', { class: 'row', style: 'font-weight: 400; align-items: center' },
    h('input', { type: 'radio', name: 'reach', value, checked: value === 'selected', onchange: () => { picker.hidden = value !== 'selected'; check(); } }),
    h('span', {}, h('strong', {}, label), ' ', h('span', { class: 'hint' }, hint)));
  const renderChips = () => {
    chips.replaceChildren(...[...selected.values()].map((entry) => h('span', { class: 'chip' },
      `${entry.kind === 'group' ? 'Group' : 'Project'}: ${entry.path}`,
      h('button', { type: 'button', 'aria-label': `Remove ${entry.path}`, onclick: () => { selected.delete(entry.path); renderChips(); check(); } }, '×'))));
  };
  let pending;
  search.addEventListener('input', () => {
    clearTimeout(pending);
    pending = setTimeout(() => guarded(async () => {
      const term = search.value.trim();
      if (!term) { results.hidden = true; return; }
      const { data } = await api('GET', `/api/v1/user/namespaces?search=${encodeURIComponent(term)}&limit=20`);
      results.replaceChildren(...data.map((entry) => h('li', {}, h('button', { type: 'button', onclick: () => {
        selected.set(entry.path, entry); renderChips(); results.hidden = true; search.value = ''; check();
      } }, `${entry.kind === 'group' ? 'Group' : 'Project'} ${entry.path}`, h('span', { class: 'hint' }, entry.role ? ` — you are ${entry.role}` : ` — ${entry.visibility}`)))));
      results.hidden = data.length === 0;
    }), 200);
  });
  const picker = h('div', {}, h('label', { for: 'reach-search' }, 'Projects and groups'), search, h('div', { id: 'reach-hint', class: 'hint' }, 'A group covers its subgroups and their projects.'), results, chips);

  // The resource × action grid, grouped by boundary.
  const boxes = [];
  const sections = ['project', 'group', 'user'].concat(state.session.admin ? ['instance'] : []).map((boundary) => {
    const rows = state.resources.filter((r) => r.boundary === boundary).map((resource) => h('tr', {},
      h('th', { scope: 'row' }, resource.label),
      ['create', 'read', 'update', 'delete'].map((action) => {
        const offered = resource.actions.find((a) => a.action === action);
        if (!offered) return h('td', {}, h('span', { class: 'hint', 'aria-label': 'not available' }, '—'));
        const box = h('input', { type: 'checkbox', 'aria-label': `${resource.label}: ${action}`, 'data-permission': `${resource.name}:${action}`, onchange: () => check() });
        boxes.push({ box, resource, action, boundary, requires: offered.requires });
        return h('td', {}, box);
      })));
    return h('details', { open: boundary === 'project' }, h('summary', {}, h('strong', {}, `${boundary[0].toUpperCase()}${boundary.slice(1)} permissions`)),
      h('div', { class: 'table-wrap' }, h('table', { class: 'grid' },
        h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Resource'), ['Create', 'Read', 'Update', 'Delete'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, rows))));
  });

  // Warn when a checked permission needs more than the user's role where the token reaches:
  // in each selected project or group, or, reaching all memberships, in every one of them
  // (the highest role the user holds, which the session tells).
  function check() {
    const mode = document.querySelector('input[name=reach]:checked').value;
    const notes = [];
    const highest = state.session.highest_roles || {};
    for (const item of boxes) {
      item.box.closest('td').classList.remove('exceeds');
      if (!item.box.checked || !(item.requires in ROLE_RANK)) continue;
      if (mode === 'all_memberships' && !state.session.admin && (item.boundary === 'project' || item.boundary === 'group')) {
        const role = highest[item.boundary];
        if (!role || ROLE_RANK[role] < ROLE_RANK[item.requires]) {
          item.box.closest('td').classList.add('exceeds');
          const where = item.boundary === 'project'
            ? 'the token could use it only in your personal projects'
            : 'the token could not use it anywhere';
          notes.push(`${item.resource.label}: ${item.action} needs ${item.requires}; in your memberships you are ${role ? `at most ${role}` : 'not a member'} of any ${item.boundary}, so ${where}.`);
        }
        continue;
      }
      if (mode !== 'selected') continue;
      for (const entry of selected.values()) {
        if (entry.kind !== item.boundary && !(entry.kind === 'group' && item.boundary === 'project')) continue;
        const rank = entry.role ? ROLE_RANK[entry.role] : 0;
        if (rank < ROLE_RANK[item.requires]) {
          item.box.closest('td').classList.add('exceeds');
          notes.push(`${item.resource.label}: ${item.action} needs ${item.requires}; you are ${entry.role || 'not a member'} in ${entry.path}, so the token could not use it there.`);
        }
      }
    }
    warnings.replaceChildren(...notes.map((note) => h('p', { class: 'warning' }, note)));
  }

  const form = h('form', { onsubmit: (event) => {
    event.preventDefault();
    guarded(async () => {
      const mode = document.querySelector('input[name=reach]:checked').value;
      const permissions = (boundaries) => {
        const map = {};
        for (const item of boxes) {
          if (!item.box.checked || !boundaries.includes(item.boundary)) continue;
          (map[item.resource.name] = map[item.resource.name] || []).includes(item.action) || map[item.resource.name].push(item.action);
        }
        return map;
      };
      const grants = [];
      const spatial = permissions(['project', 'group']);
      if (Object.keys(spatial).length) {
        const grant = { reach: mode, permissions: spatial };
        if (mode === 'selected') {
          grant.projects = [...selected.values()].filter((e) => e.kind === 'project').map((e) => e.path);
          grant.groups = [...selected.values()].filter((e) => e.kind === 'group').map((e) => e.path);
        }
        grants.push(grant);
      }
      const own = permissions(['user']);
      if (Object.keys(own).length) grants.push({ reach: 'user', permissions: own });
      const instance = permissions(['instance']);
      if (Object.keys(instance).length) grants.push({ reach: 'instance', permissions: instance });
      if (!grants.length) throw new Error('Choose at least one permission.');
      const { data } = await api('POST', '/api/v1/user/personal_access_tokens', { name: name.value, expires_at: expires.value || null, grants });
      await tokensPage({});
      document.getElementById('main').prepend(secretBox(data));
      history.replaceState(null, '', '#/tokens');
    });
  } },
  fields,
  h('fieldset', {}, h('legend', {}, 'Reach: where the token works'),
    reach('selected', 'Selected projects and groups', 'only the ones you list'),
    reach('personal_projects', 'Personal projects', 'the projects in your own namespace'),
    reach('all_memberships', 'All my memberships', 'every group and project you are a member of, now and later'),
    picker),
  h('fieldset', {}, h('legend', {}, 'Permissions: what it may do there'), sections, warnings),
  h('div', { class: 'row' }, h('button', { type: 'submit', class: 'primary' }, 'Generate fine-grained token'),
    h('a', { href: '#/tokens', class: 'button' }, 'Cancel')));
  show(h('h1', {}, 'Generate a fine-grained token'), form);
}

const SCOPES = [
  ['api', 'Full read and write access to the API, Git and the registries'],
  ['read_api', 'Read access to the API'],
  ['read_user', 'Read your user profile'],
  ['read_repository', 'Pull repositories over Git'],
  ['write_repository', 'Pull and push repositories over Git'],
  ['read_registry', 'Pull container images'],
  ['write_registry', 'Push container images'],
  ['create_runner', 'Create runners'],
  ['manage_runner', 'Manage runners'],
  ['self_rotate', 'Rotate this token'],
];

function legacyPage() {
  const { name, expires, fields } = basicsFields();
  const scopes = SCOPES.concat(state.session.admin ? [['sudo', 'Act as another user'], ['admin_mode', 'Administrator endpoints']] : []);
  const boxes = scopes.map(([scope, text]) => h('label', { class: 'row', style: 'font-weight: 400; align-items: center' },
    h('input', { type: 'checkbox', value: scope }), h('span', {}, h('code', {}, scope), ' ', h('span', { class: 'hint' }, text))));
  const form = h('form', { onsubmit: (event) => {
    event.preventDefault();
    guarded(async () => {
      const chosen = boxes.map((l) => l.querySelector('input')).filter((b) => b.checked).map((b) => b.value);
      if (!chosen.length) throw new Error('Choose at least one scope.');
      const { data } = await api('POST', '/api/v1/user/personal_access_tokens', { name: name.value, expires_at: expires.value || null, scopes: chosen });
      await tokensPage({});
      document.getElementById('main').prepend(secretBox(data));
      history.replaceState(null, '', '#/tokens');
    });
  } },
  h('p', { class: 'warning' }, 'A legacy token reaches everything you can reach. Prefer a fine-grained token.'),
  fields,
  h('fieldset', {}, h('legend', {}, 'Scopes'), boxes),
  h('div', { class: 'row' }, h('button', { type: 'submit', class: 'primary' }, 'Generate legacy token'), h('a', { href: '#/tokens', class: 'button' }, 'Cancel')));
  show(h('h1', {}, 'Generate a legacy token'), form);
}

// ---- the suggestion ---------------------------------------------------------------------

async function suggestionPage(id) {
  const { data } = await api('GET', `/api/v1/personal_access_tokens/${id}/suggestion`);
  const place = (b) => b.path ? `${b.kind} ${b.path}` : b.kind;
  const narrow = h('button', { type: 'button', class: 'primary', disabled: !data.narrower, onclick: () => {
    if (!confirm('Replace the token with these grants? You get a new secret; the old one stops working.')) return;
    guarded(async () => {
      const { data: made } = await api('POST', `/api/v1/personal_access_tokens/${id}/narrow`);
      await tokensPage({});
      document.getElementById('main').prepend(secretBox(made));
      history.replaceState(null, '', '#/tokens');
    });
  } }, 'Replace token with the suggestion');
  show(
    h('h1', {}, `Least privilege for token ${id}`),
    h('p', {}, data.message),
    h('h2', {}, `Used in the last ${data.window_days} days`),
    data.observed.length ? h('div', { class: 'table-wrap' }, h('table', { class: 'cards' },
      h('thead', {}, h('tr', {}, ['Permission', 'Where', 'Uses', 'Last used'].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, data.observed.map((o) => h('tr', {},
        h('td', { 'data-label': 'Permission' }, h('code', {}, o.permission)), h('td', { 'data-label': 'Where' }, place(o.boundary)),
        h('td', { 'data-label': 'Uses' }, String(o.uses)), h('td', { 'data-label': 'Last used' }, when(o.last_used_at))))))) : h('p', {}, 'Nothing.'),
    h('h2', {}, 'Suggested grants'),
    data.grants.length ? grantsText({ grants: data.grants }) : h('p', {}, 'None.'),
    h('h2', {}, 'Removed'),
    h('ul', {},
      data.removed.permissions.map((p) => h('li', {}, 'permission ', h('code', {}, p))),
      data.removed.reaches.map((r) => h('li', {}, 'reach ', h('code', {}, r))),
      data.removed.scopes.map((s) => h('li', {}, 'scope ', h('code', {}, s)))),
    data.left_out.length ? [h('h2', {}, 'Left out'), h('ul', {}, data.left_out.map((l) => h('li', {}, h('code', {}, l.permission), ` at ${place(l.boundary)}: ${l.reason.replace('_', ' ')}`)))] : null,
    h('div', { class: 'row' }, narrow, h('a', { href: '#/tokens', class: 'button' }, 'Back')));
}

// ---- administration ---------------------------------------------------------------------

async function credentialsPage(query) {
  const reload = () => credentialsPage(query);
  const params = new URLSearchParams(Object.entries(query).filter(([, v]) => v));
  const { data, headers } = await api('GET', `/api/v1/admin/credentials?${params}`);
  show(h('h1', {}, 'Credentials inventory'),
    h('p', { class: 'hint' }, `${headers.get('x-total') || data.length} tokens across all users.`),
    filterBar(query, reload, true),
    tokenTable(data, { admin: true, reload }));
}

async function auditPage(query) {
  const params = new URLSearchParams(Object.entries(query).filter(([, v]) => v));
  params.set('limit', '50');
  const { data } = await api('GET', `/api/v1/audit_events?${params}`);
  const type = h('input', { type: 'search', id: 'audit-type', value: query.type || '', placeholder: 'token_revoked' });
  const user = h('input', { type: 'search', id: 'audit-user', value: query.user || '', placeholder: 'username' });
  const apply = () => auditPage({ type: type.value.trim(), user: user.value.trim() });
  type.addEventListener('change', apply);
  user.addEventListener('change', apply);
  show(h('h1', {}, 'Audit log'),
    h('div', { class: 'row', role: 'search', 'aria-label': 'Filter events' },
      h('div', { class: 'field' }, h('label', { for: 'audit-type' }, 'Event type'), type),
      h('div', { class: 'field' }, h('label', { for: 'audit-user' }, 'User'), user)),
    h('div', { class: 'table-wrap' }, h('table', { class: 'cards' },
      h('thead', {}, h('tr', {}, ['When', 'Event', 'User', 'Token', 'Actor', 'Details'].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, data.events.map((e) => h('tr', {},
        h('td', { 'data-label': 'When' }, when(e.at)), h('td', { 'data-label': 'Event' }, h('code', {}, e.type)),
        h('td', { 'data-label': 'User' }, e.user || '—'), h('td', { 'data-label': 'Token' }, e.token_id ? String(e.token_id) : '—'),
        h('td', { 'data-label': 'Actor' }, e.actor || '—'), h('td', { 'data-label': 'Details' }, h('code', {}, JSON.stringify(e.details)))))))),
    data.next_before_id ? h('div', { class: 'pager' }, h('button', { type: 'button', onclick: () => auditPage({ ...query, before_id: String(data.next_before_id) }) }, 'Older events')) : null);
}

// ---- routing ---------------------------------------------------------------------------

async function route() {
  const hash = location.hash || '#/tokens';
  if (!state.session) {
    try {
      state.session = (await api('GET', '/api/v1/session')).data;
    } catch (_) {
      state.session = null;
    }
  }
  if (!state.session) return signInPage();
  enterApp();
  const section = hash.startsWith('#/admin/credentials') ? 'credentials' : hash.startsWith('#/admin/audit') ? 'audit' : 'tokens';
  for (const link of document.querySelectorAll('[data-nav]')) {
    if (link.dataset.nav === section) link.setAttribute('aria-current', 'page'); else link.removeAttribute('aria-current');
  }
  await guarded(async () => {
    let match;
    if (hash === '#/sign-in') location.hash = '#/tokens';
    else if (hash === '#/tokens/new/fine-grained') await fineGrainedPage();
    else if (hash === '#/tokens/new/legacy') legacyPage();
    else if ((match = hash.match(/^#\/tokens\/(\d+)\/suggestion$/))) await suggestionPage(match[1]);
    else if (hash.startsWith('#/admin/credentials')) await credentialsPage({});
    else if (hash.startsWith('#/admin/audit')) await auditPage({});
    else await tokensPage({});
  });
  const heading = document.querySelector('main h1');
  if (heading) heading.focus();
}

window.addEventListener('hashchange', route);
document.addEventListener('DOMContentLoaded', () => {
  document.getElementById('sign-out').addEventListener('click', () => guarded(async () => {
    await api('DELETE', '/api/v1/session');
    state.session = null;
    location.hash = '#/sign-in';
    signInPage();
  }));
  route();
});
