// The console's entry point: one page per path under /console/, each drawn by its module
// in pages/. Links inside the console change the page without reloading (History API);
// pages that need a session send a visitor to sign in first and back afterwards.

import { whenSignedOut, post } from './api.js';
import * as session from './session.js';
import { h } from './ui.js';

const PUBLIC = ['sign-in', 'sign-up', 'verify-email', 'forgot-password', 'reset-password'];
const PRIVATE = ['videos', 'create', 'credits', 'keys', 'admin'];
const main = document.getElementById('main');
let leave = null; // the current page's clean-up (streams to close)

function pageOf(pathname) {
  const page = pathname.replace(/^\/console\/?/, '').replace(/\/$/, '');
  if (page === '') return session.signedIn() ? 'videos' : 'sign-in';
  return page;
}

export function navigate(path, { replace = false } = {}) {
  const target = path.startsWith('/') ? path : `/console/${path}`;
  if (replace) history.replaceState(null, '', target);
  else history.pushState(null, '', target);
  route();
}

function drawNav(page) {
  const link = (to, text) => h('li', {},
    h('a', { href: `/console/${to}`, 'aria-current': to === page ? 'page' : false }, text));
  const items = session.signedIn()
    ? [
        link('videos', 'Videos'),
        link('create', 'New video'),
        link('credits', 'Credits'),
        link('keys', 'API keys'),
        session.isAdmin() ? link('admin', 'Admin') : null,
        h('li', {}, h('span', { className: 'muted' }, session.user()?.email ?? '')),
        h('li', {}, h('button', { type: 'button', className: 'link', onclick: signOut }, 'Sign out')),
      ]
    : [link('sign-in', 'Sign in'), link('sign-up', 'Sign up'), h('li', {}, h('a', { href: '/docs' }, 'API docs'))];
  document.getElementById('nav').replaceChildren(h('ul', {}, items));
}

async function signOut() {
  const tokens = session.tokens();
  session.clear();
  if (tokens) {
    // Ends the session on the server too; the page moves on whatever it answers.
    post('/v1/auth/logout', { refresh_token: tokens.refresh_token }, { auth: false }).catch(() => {});
  }
  navigate('sign-in');
}

async function route() {
  const page = pageOf(location.pathname);
  if (leave) {
    leave();
    leave = null;
  }
  if (PRIVATE.includes(page) && !session.signedIn()) {
    const next = encodeURIComponent(location.pathname + location.search);
    navigate(`sign-in?next=${next}`, { replace: true });
    return;
  }
  drawNav(page);
  main.replaceChildren();
  if (!PUBLIC.includes(page) && !PRIVATE.includes(page)) {
    document.title = 'Not found · Framegate';
    main.append(h('h1', {}, 'Page not found'), h('p', {}, h('a', { href: '/console/' }, 'Go to the console')));
    return;
  }
  const module = await import(`./pages/${page}.js`);
  const context = { params: new URLSearchParams(location.search), navigate, refreshNav: () => drawNav(page) };
  try {
    leave = (await module.render(main, context)) || null;
  } catch (error) {
    main.append(h('div', { className: 'alert', role: 'alert' }, h('p', {}, error.message)));
  }
  // Focus moves to the new page (its first field, if the page chose one), as a full page
  // load would put it at the top.
  if (!main.contains(document.activeElement)) main.focus();
}

// Same-origin links into the console change the page in place.
document.addEventListener('click', (event) => {
  const link = event.target.closest('a[href]');
  if (!link || event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const url = new URL(link.href, location.href);
  if (url.origin !== location.origin || !url.pathname.startsWith('/console')) return;
  event.preventDefault();
  navigate(url.pathname + url.search);
});

window.addEventListener('popstate', route);
whenSignedOut(() => navigate('sign-in', { replace: true }));
route();
