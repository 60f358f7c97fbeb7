// Ask for a password-reset email; the answer is the same whether or not the address has an
// account (the API tells nothing either way).

import { post } from '../api.js';
import { busy, field, h, heading, showError, showNotice } from '../ui.js';

export async function render(main) {
  heading(main, 'Reset your password');
  const email = h('input', { type: 'email', name: 'email', autocomplete: 'email', required: true });
  const messages = h('div');
  const form = h('form', {}, field('Email', email), h('button', { type: 'submit' }, 'Email me a reset link'));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    busy(form, async () => {
      try {
        await post('/v1/auth/password-reset', { email: email.value }, { auth: false });
        form.remove();
        showNotice(messages, h('p', {}, `If ${email.value} has an account, a reset link is on its way.`));
      } catch (error) {
        showError(messages, error);
      }
    });
  });
  main.append(messages, form);
  email.focus();
}
