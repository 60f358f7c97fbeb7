// Administration (role admin): the users, a credit grant to one of them, and the audit
// timeline of one video (every event of its stream, secrets redacted by the API).

import { get, post } from '../api.js';
import * as session from '../session.js';
import { busy, credits, field, h, heading, showError, showNotice, when } from '../ui.js';

function timeline(events) {
  return h('ol', { className: 'timeline', id: 'timeline', 'aria-label': 'Events, oldest first' },
    events.map((event) => h('li', { dataset: { eventType: event.event_type } },
      h('p', {}, h('strong', {}, event.event_type), ` · ${when(event.recorded_at)} · by ${event.actor ?? 'system'}`,
        event.client_ip ? ` from ${event.client_ip}` : ''),
      h('details', {}, h('summary', {}, 'Payload and metadata'),
        h('pre', {}, JSON.stringify({ payload: event.payload, metadata: event.metadata }, null, 2))))));
}

export async function render(main) {
  heading(main, 'Administration');
  if (!session.isAdmin()) {
    main.append(h('p', { className: 'alert', role: 'alert' }, 'This page is for administrators.'));
    return;
  }
  const messages = h('div');
  main.append(messages);

  // Users.
  const users = [];
  let cursor = null;
  do {
    const query = cursor ? `?limit=100&cursor=${encodeURIComponent(cursor)}` : '?limit=100';
    const page = await get(`/v1/admin/users${query}`);
    users.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor && users.length < 1000);
  main.append(h('h2', { id: 'users-title' }, 'Users'),
    h('table', { 'aria-labelledby': 'users-title' },
      h('thead', {}, h('tr', {},
        h('th', { scope: 'col' }, 'Email'), h('th', { scope: 'col' }, 'Role'),
        h('th', { scope: 'col' }, 'Verified'), h('th', { scope: 'col' }, 'State'),
        h('th', { scope: 'col' }, 'Created'))),
      h('tbody', {}, users.map((user) => h('tr', { dataset: { userId: user.id } },
        h('th', { scope: 'row' }, user.email), h('td', {}, user.role),
        h('td', {}, user.email_verified ? 'yes' : 'no'),
        h('td', {}, user.disabled ? 'disabled' : 'active'),
        h('td', {}, when(user.created_at)))))));

  // Grants.
  const who = h('select', { name: 'user' },
    users.map((user) => h('option', { value: user.id }, user.email)));
  const amount = h('input', { type: 'number', name: 'amount', min: 1, step: 1, required: true });
  const reason = h('input', { type: 'text', name: 'reason', required: true, maxLength: 500 });
  const granted = h('div', { id: 'grant-result' });
  const grant = h('form', { id: 'grant-form' },
    field('User', who), field('Credits', amount), field('Reason', reason, 'Kept in the audit log.'),
    h('button', { type: 'submit' }, 'Grant credits'));
  grant.addEventListener('submit', (event) => {
    event.preventDefault();
    busy(grant, async () => {
      try {
        const email = who.selectedOptions[0].textContent;
        const account = await post(`/v1/admin/users/${who.value}/credits`,
          { amount: Number(amount.value), reason: reason.value });
        showNotice(granted, `Granted ${credits(Number(amount.value))} to ${email}: ${credits(account.available)} available now.`);
        grant.reset();
      } catch (error) {
        showError(granted, error);
      }
    });
  });
  main.append(h('h2', {}, 'Grant credits'), grant, granted);

  // A video's audit timeline.
  const video = h('input', { type: 'text', name: 'video', required: true, spellcheck: false, autocomplete: 'off' });
  const recent = h('ul', { id: 'recent-videos' });
  const shown = h('div', { id: 'timeline-box' });
  const show = async (id) => {
    try {
      const stream = await get(`/v1/admin/events/video/${encodeURIComponent(id)}`);
      shown.replaceChildren(h('h3', {}, stream.aggregate), timeline(stream.events));
    } catch (error) {
      showError(shown, error);
    }
  };
  const lookup = h('form', { id: 'timeline-form' },
    field('Video id', video), h('button', { type: 'submit' }, 'Show timeline'));
  lookup.addEventListener('submit', (event) => {
    event.preventDefault();
    busy(lookup, () => show(video.value.trim()));
  });
  const requests = await get('/v1/admin/audit?event_type=VideoRequested&limit=10');
  recent.append(...requests.items.map((entry) => h('li', {},
    h('button', {
      type: 'button', className: 'link',
      onclick: () => { video.value = entry.aggregate_id; show(entry.aggregate_id); },
    }, `${entry.aggregate_id}`), ` requested ${when(entry.recorded_at)}`)));
  main.append(h('h2', {}, 'Video audit timeline'), lookup,
    requests.items.length ? h('p', {}, 'Recent requests:') : null, recent, shown);
}
