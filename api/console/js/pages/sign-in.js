// Sign in with email and password; then back to the page that asked for it.

import { get, post } from '../api.js';
import * as session from '../session.js';
import { busy, field, h, heading, showError } from '../ui.js';

export async function render(main, { params, navigate, refreshNav }) {
  heading(main, 'Sign in');
  const email = h('input', { type: 'email', name: 'email', autocomplete: 'username', required: true });
  const password = h('input', { type: 'password', name: 'password', autocomplete: 'current-password', required: true });
  const messages = h('div');
  const form = h('form', { 'aria-describedby': 'sign-in-help' },
    field('Email', email),
    field('Password', password),
    h('button', { type: 'submit' }, 'Sign in'));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    busy(form, async () => {
      try {
        const tokens = await post('/v1/auth/login', { email: email.value, password: password.value }, { auth: false });
        session.store(tokens);
        session.setUser(await get('/v1/me'));
        refreshNav();
        const next = params.get('next');
        navigate(next && next.startsWith('/console/') ? next : 'videos', { replace: true });
      } catch (error) {
        showError(messages, error);
        password.focus();
      }
    });
  });
  main.append(messages, form,
    h('p', { id: 'sign-in-help' },
      'No account yet? ', h('a', { href: '/console/sign-up' }, 'Sign up'), '. ',
      h('a', { href: '/console/forgot-password' }, 'Forgot your password?')));
  email.focus();
}
