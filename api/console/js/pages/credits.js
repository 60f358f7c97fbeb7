// The balance (total, reserved by videos in progress, available) and the ledger, newest
// first, a page at a time.

import { get } from '../api.js';
import { credits, h, heading, when } from '../ui.js';

const KINDS = {
  granted: 'Granted',
  reserved: 'Reserved for a video',
  captured: 'Charged for a video',
  released: 'Released',
  purchased: 'Purchased',
  revoked: 'Taken back (refund or dispute)',
};

export async function render(main) {
  heading(main, 'Credits');
  const account = await get('/v1/credits');
  main.append(h('div', { className: 'figures', id: 'balance' },
    h('div', {}, 'Available', h('strong', { dataset: { figure: 'available' } }, credits(account.available))),
    h('div', {}, 'Reserved', h('strong', { dataset: { figure: 'reserved' } }, credits(account.reserved))),
    h('div', {}, 'Balance', h('strong', { dataset: { figure: 'balance' } }, credits(account.balance)))));

  const rows = h('tbody');
  const table = h('table', { 'aria-labelledby': 'ledger-title' },
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col' }, 'When'), h('th', { scope: 'col' }, 'What'),
      h('th', { scope: 'col' }, 'Balance change'), h('th', { scope: 'col' }, 'Reserved change'),
      h('th', { scope: 'col' }, 'Details'))),
    rows);
  const more = h('button', { type: 'button', className: 'secondary' }, 'Show older entries');
  let cursor = null;
  const load = async () => {
    const query = cursor ? `?cursor=${encodeURIComponent(cursor)}` : '';
    const page = await get(`/v1/credits/ledger${query}`);
    for (const entry of page.items) {
      rows.append(h('tr', {},
        h('td', {}, when(entry.recorded_at)),
        h('td', {}, KINDS[entry.kind] || entry.kind),
        h('td', {}, String(entry.balance_change)),
        h('td', {}, String(entry.reserved_change)),
        h('td', {}, entry.reason || (entry.video_id ? `video ${entry.video_id}` : ''))));
    }
    cursor = page.next_cursor;
    more.hidden = !cursor;
    if (!rows.children.length) rows.append(h('tr', {}, h('td', { colspan: 5 }, 'No entries yet.')));
  };
  more.addEventListener('click', load);
  main.append(h('h2', { id: 'ledger-title' }, 'Ledger'), table, more);
  await load();
}
