// Create an account; the verification link arrives by email (verify-email.js).

import { post } from '../api.js';
import { busy, credits, field, h, heading, showError, showNotice } from '../ui.js';

export async function render(main) {
  heading(main, 'Sign up');
  const email = h('input', { type: 'email', name: 'email', autocomplete: 'email', required: true });
  const password = h('input', { type: 'password', name: 'password', autocomplete: 'new-password', required: true, minLength: 10, maxLength: 256 });
  const repeat = h('input', { type: 'password', name: 'password-repeat', autocomplete: 'new-password', required: true });
  const messages = h('div');
  const form = h('form', {},
    field('Email', email),
    field('Password', password, '10 to 256 characters.'),
    field('Repeat the password', repeat),
    h('button', { type: 'submit' }, 'Create account'));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    if (password.value !== repeat.value) {
      showError(messages, new Error('The two passwords differ.'));
      repeat.focus();
      return;
    }
    busy(form, async () => {
      try {
        const created = await post('/v1/auth/register', { email: email.value, password: password.value }, { auth: false });
        const bonus = created.signup_credits;
        const waiting = bonus.amount > 0 && !bonus.granted
          ? ` Your ${credits(bonus.amount)} arrive once the address is verified.`
          : '';
        form.remove();
        showNotice(messages,
          h('p', {}, `Account created for ${created.email}. We sent a link to verify the address.${waiting}`),
          h('p', {}, h('a', { href: '/console/sign-in' }, 'Sign in')));
        messages.querySelector('a').focus();
      } catch (error) {
        showError(messages, error);
      }
    });
  });
  main.append(messages, form, h('p', {}, 'Have an account? ', h('a', { href: '/console/sign-in' }, 'Sign in'), '.'));
  email.focus();
}
