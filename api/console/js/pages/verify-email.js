// The page the verification email links to (/console/verify-email?token=…): it confirms
// the address at once with the token, which is then taken out of the address bar. Without
// a token in the link, the token from the email can be pasted.

import { post } from '../api.js';
import * as session from '../session.js';
import { busy, codeOf, field, h, heading, showError, showNotice } from '../ui.js';

const MESSAGES = {
  already_verified: 'This address is verified already.',
  token_expired: 'This link has expired. Sign in and ask for a new one.',
  invalid_token: 'This link is not valid. Check that you opened the whole link from the email.',
};

export async function render(main, { params }) {
  heading(main, 'Verify your email address');
  const messages = h('div');
  main.append(messages);
  const token = params.get('token');
  if (token) history.replaceState(null, '', '/console/verify-email');

  const verify = async (value) => {
    try {
      const user = await post('/v1/auth/verify-email', { token: value }, { auth: false });
      showNotice(messages,
        h('p', {}, `${user.email} is verified. Thank you!`),
        h('p', {}, session.signedIn()
          ? h('a', { href: '/console/credits' }, 'See your credits')
          : h('a', { href: '/console/sign-in' }, 'Sign in')));
      messages.querySelector('a').focus();
      return true;
    } catch (error) {
      if (MESSAGES[codeOf(error)]) { error.message = MESSAGES[codeOf(error)]; error.errors = []; }
      showError(messages, error);
      return false;
    }
  };

  if (token) {
    showNotice(messages, h('p', {}, 'Verifying…'));
    if (await verify(token)) return;
  }
  const input = h('input', { type: 'text', name: 'token', required: true, autocomplete: 'off', spellcheck: false });
  const form = h('form', {}, field('Token from the email', input), h('button', { type: 'submit' }, 'Verify'));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    busy(form, async () => {
      if (await verify(input.value.trim())) form.remove();
    });
  });
  main.append(form);
}
