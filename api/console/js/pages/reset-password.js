// The page the password-reset email links to (/console/reset-password?token=…): choose a
// new password; the token is taken out of the address bar and kept in this page only.
// A reset ends every session, this tab's included.

import { post } from '../api.js';
import * as session from '../session.js';
import { busy, codeOf, field, h, heading, showError, showNotice } from '../ui.js';

const MESSAGES = {
  token_expired: 'This link has expired. Ask for a new one.',
  invalid_token: 'This link is not valid or was used already. Ask for a new one.',
};

export async function render(main, { params }) {
  heading(main, 'Choose a new password');
  const messages = h('div');
  const token = params.get('token');
  if (token) history.replaceState(null, '', '/console/reset-password');
  const tokenInput = h('input', { type: 'text', name: 'token', required: true, autocomplete: 'off', spellcheck: false });
  const password = h('input', { type: 'password', name: 'new-password', autocomplete: 'new-password', required: true, minLength: 10, maxLength: 256 });
  const repeat = h('input', { type: 'password', name: 'new-password-repeat', autocomplete: 'new-password', required: true });
  const form = h('form', {},
    token ? null : field('Token from the email', tokenInput),
    field('New password', password, '10 to 256 characters.'),
    field('Repeat the new password', repeat),
    h('button', { type: 'submit' }, 'Set the new password'));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    if (password.value !== repeat.value) {
      showError(messages, new Error('The two passwords differ.'));
      repeat.focus();
      return;
    }
    busy(form, async () => {
      try {
        await post('/v1/auth/password-reset/confirm',
          { token: token || tokenInput.value.trim(), new_password: password.value }, { auth: false });
        session.clear();
        form.remove();
        showNotice(messages,
          h('p', {}, 'Your password is changed, and every session has ended.'),
          h('p', {}, h('a', { href: '/console/sign-in' }, 'Sign in with the new password')));
        messages.querySelector('a').focus();
      } catch (error) {
        if (MESSAGES[codeOf(error)]) { error.message = MESSAGES[codeOf(error)]; error.errors = []; }
        showError(messages, error);
      }
    });
  });
  main.append(messages, form, h('p', {}, h('a', { href: '/console/forgot-password' }, 'Ask for a new link')));
  (token ? password : tokenInput).focus();
}
