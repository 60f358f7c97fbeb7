// API keys: create one (its secret is shown this once), see the others, revoke.

import { api, get, post } from '../api.js';
import { busy, field, h, heading, showError, showNotice, when, announce } from '../ui.js';

const SCOPES = ['videos:read', 'videos:write', 'images:read', 'images:write', 'credits:read'];

export async function render(main) {
  heading(main, 'API keys');
  const messages = h('div');
  const created = h('div', { id: 'created-key' });
  const name = h('input', { type: 'text', name: 'name', required: true, maxLength: 100 });
  const scopeBoxes = SCOPES.map((scope) => h('input', { type: 'checkbox', name: 'scope', value: scope }));
  const form = h('form', {},
    field('Name', name, 'So you can tell your keys apart, e.g. "render farm".'),
    h('fieldset', {},
      h('legend', {}, 'Scopes (none checked: every scope)'),
      scopeBoxes.map((box) => {
        box.id = `scope-${box.value.replace(':', '-')}`;
        return h('label', { className: 'check', for: box.id }, box, box.value);
      })),
    h('button', { type: 'submit' }, 'Create key'));

  const rows = h('tbody');
  const table = h('table', { 'aria-labelledby': 'keys-title' },
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col' }, 'Name'), h('th', { scope: 'col' }, 'Key'),
      h('th', { scope: 'col' }, 'Scopes'), h('th', { scope: 'col' }, 'Created'),
      h('th', { scope: 'col' }, 'Last used'), h('th', { scope: 'col' }, 'State'))),
    rows);

  const revoke = async (key) => {
    if (!window.confirm(`Revoke the key “${key.name}”? Programs using it stop working at once.`)) return;
    try {
      await api('DELETE', `/v1/api-keys/${key.id}`);
      announce(`Key ${key.name} revoked.`);
      await refresh();
      rows.querySelector('button')?.focus() ?? name.focus();
    } catch (error) {
      showError(messages, error);
    }
  };

  async function refresh() {
    const page = await get('/v1/api-keys');
    const keys = page.items ?? page;
    rows.replaceChildren(...keys.map((key) => h('tr', { dataset: { keyId: key.id } },
      h('th', { scope: 'row' }, key.name),
      h('td', {}, h('code', {}, `${key.prefix}…`)),
      h('td', {}, key.scopes.length ? key.scopes.join(', ') : 'all'),
      h('td', {}, when(key.created_at)),
      h('td', {}, when(key.last_used_at)),
      h('td', {}, key.revoked_at
        ? `revoked ${when(key.revoked_at)}`
        : h('button', { type: 'button', className: 'danger', onclick: () => revoke(key) },
          'Revoke', h('span', { className: 'visually-hidden' }, ` ${key.name}`))))));
    if (!keys.length) rows.append(h('tr', {}, h('td', { colspan: 6 }, 'No keys yet.')));
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    busy(form, async () => {
      try {
        const scopes = scopeBoxes.filter((b) => b.checked).map((b) => b.value);
        const answer = await post('/v1/api-keys', { name: name.value, scopes });
        const secret = h('input', { type: 'text', readOnly: true, className: 'secret', value: answer.secret, id: 'new-key-secret' });
        const copy = h('button', { type: 'button', className: 'secondary' }, 'Copy');
        copy.addEventListener('click', async () => {
          secret.select();
          try {
            await navigator.clipboard.writeText(answer.secret);
            announce('Copied.');
          } catch {
            announce('Select the key and copy it.');
          }
        });
        showNotice(created,
          h('p', {}, h('strong', {}, `Key “${answer.name}” created. `), 'Copy it now: it is not shown again.'),
          field('Secret', secret), copy);
        form.reset();
        await refresh();
        secret.focus();
        secret.select();
      } catch (error) {
        showError(messages, error);
      }
    });
  });

  main.append(messages, form, created, h('h2', { id: 'keys-title' }, 'Your keys'), table);
  await refresh();
}
