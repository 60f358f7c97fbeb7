// The caller's videos, newest first: finished ones play in the page (poster first, the
// video on demand), unfinished ones show their live progress from the event stream and can
// be cancelled.

import { get, post } from '../api.js';
import { follow, isTerminal } from '../events.js';
import { credits, h, heading, showError, when, announce } from '../ui.js';

// Streams open at once; the server caps them per user, and the others are read again as
// those finish.
const MAX_STREAMS = 3;

const LABELS = {
  queued: 'Queued',
  submitted: 'Submitted',
  running: 'Generating',
  completed: 'Ready',
  failed: 'Failed',
  cancelled: 'Cancelled',
};

function card(video, onCancel) {
  const titleId = `video-${video.id}-title`;
  const article = h('article', {
    className: 'card', 'aria-labelledby': titleId,
    dataset: { videoId: video.id, status: video.status },
  });
  const title = h('h2', { id: titleId }, video.prompt);
  const meta = h('p', { className: 'muted' },
    `${video.provider ?? 'auto'} · ${video.duration_seconds} s · ${video.aspect_ratio} · ${video.resolution} · ${when(video.created_at)}`);
  const parts = [title];
  if (video.status === 'completed' && video.content) {
    parts.push(h('video', {
      controls: true,
      preload: 'none',
      playsInline: true,
      src: video.content.url,
      poster: video.poster?.url,
      'aria-label': `Video: ${video.prompt}`,
    }));
    parts.push(h('p', {}, `${LABELS.completed} · charged ${credits(video.final_cost ?? video.estimated_cost)} · `,
      h('a', { href: video.content.url, download: `${video.id}.mp4` }, 'Download')));
  } else {
    const progressId = `video-${video.id}-progress`;
    parts.push(h('p', { id: progressId }, `${LABELS[video.status] ?? video.status}`,
      isTerminal(video.status) ? null : ` · ${video.progress}%`));
    if (!isTerminal(video.status)) {
      parts.push(h('progress', { max: 100, value: video.progress, 'aria-labelledby': progressId }));
    }
    if (video.error) parts.push(h('p', { className: 'alert' }, video.error.message));
    if (video.cancellation) parts.push(h('p', {}, video.cancellation.charged ? 'Cancelled late: charged.' : 'Cancelled: nothing charged.'));
    if (!isTerminal(video.status) && !video.cancellation) {
      parts.push(h('button', { type: 'button', className: 'danger', onclick: () => onCancel(video) },
        'Cancel', h('span', { className: 'visually-hidden' }, ` “${video.prompt}”`)));
    }
  }
  parts.push(meta);
  article.append(...parts);
  return article;
}

export async function render(main, { params }) {
  heading(main, 'Your videos');
  const messages = h('div');
  const list = h('ul', { className: 'gallery', 'aria-label': 'Videos' });
  main.append(h('p', {}, h('a', { href: '/console/create' }, 'Request a new video')), messages, list);
  const stop = new AbortController();
  const following = new Set();
  const items = new Map(); // id -> <li>

  const drawn = new Map(); // id -> what its card shows, so an unchanged one is left alone
  const draw = (video) => {
    const shown = JSON.stringify([video.status, video.progress, video.updated_at, video.cancellation]);
    // Redrawing would restart a video someone is watching (and its links are only renewed).
    if (items.has(video.id) && drawn.get(video.id) === shown) return items.get(video.id);
    drawn.set(video.id, shown);
    const item = items.get(video.id) ?? h('li');
    const focused = item.contains(document.activeElement);
    item.replaceChildren(card(video, cancel));
    if (focused) item.querySelector('button, video, a')?.focus();
    items.set(video.id, item);
    document.getElementById('no-videos')?.remove();
    return item;
  };

  async function cancel(video) {
    try {
      draw(await post(`/v1/videos/${video.id}/cancel`, {}));
      announce('Cancellation requested.');
    } catch (error) {
      showError(messages, error);
    }
  }

  const watch = (video) => {
    if (isTerminal(video.status) || following.has(video.id) || following.size >= MAX_STREAMS) return;
    following.add(video.id);
    let lastStatus = video.status;
    follow(video.id, (state) => {
      draw(state);
      if (state.status !== lastStatus) {
        lastStatus = state.status;
        announce(`${state.prompt}: ${LABELS[state.status] ?? state.status}`);
      }
    }, stop.signal)
      .catch((error) => showError(messages, error))
      .finally(() => {
        following.delete(video.id);
        if (!stop.signal.aborted) reload();
      });
  };

  let cursor = null;
  const more = h('button', { type: 'button', className: 'secondary', hidden: true }, 'Show older videos');
  main.append(more);
  const load = async (from) => {
    const query = from ? `?cursor=${encodeURIComponent(from)}` : '';
    const page = await get(`/v1/videos${query}`);
    for (const video of page.items) list.append(draw(video));
    cursor = page.next_cursor;
    more.hidden = !cursor;
    page.items.forEach(watch);
    return page.items;
  };
  // After a stream ends: the first page again (other unfinished videos get a stream).
  async function reload() {
    try {
      const page = await get('/v1/videos');
      page.items.forEach((video) => {
        if (!items.has(video.id)) list.prepend(draw(video));
        else if (!following.has(video.id)) draw(video);
      });
      page.items.forEach(watch);
    } catch (error) {
      if (!stop.signal.aborted) showError(messages, error);
    }
  }
  more.addEventListener('click', () => load(cursor).catch((e) => showError(messages, e)));

  const first = await load(null);
  if (!first.length) list.before(h('p', { id: 'no-videos' }, 'No videos yet.'));
  const fresh = params.get('new');
  if (fresh) announce('Video requested. Its progress shows here.');
  if (fresh && items.has(fresh)) items.get(fresh).scrollIntoView({ block: 'nearest' });
  return () => stop.abort();
}
