// Small DOM helpers shared by the pages: an element builder, labelled fields, messages
// announced to screen readers, and the display of API errors.

// h('button', {type: 'submit', onclick}, 'Save'): attributes starting with "on" are
// listeners, `dataset`/`className` are set as properties, children are nodes or text.
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) element.addEventListener(name.slice(2), value);
    else if (name === 'className') element.className = value;
    else if (name === 'dataset') Object.assign(element.dataset, value);
    else if (name in element && typeof value !== 'string') element[name] = value;
    else element.setAttribute(name, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

let ids = 0;

// A <label> wrapping its text and control, the control given an id and, with `hint`,
// an aria-describedby hint.
export function field(text, control, hint) {
  control.id ||= `field-${++ids}`;
  const parts = [h('span', {}, text), control];
  if (hint) {
    const hintId = `${control.id}-hint`;
    control.setAttribute('aria-describedby', hintId);
    parts.push(h('small', { id: hintId, className: 'muted' }, hint));
  }
  return h('label', { for: control.id }, ...parts);
}

export function announce(message) {
  const announcer = document.getElementById('announcer');
  announcer.textContent = '';
  // A change the screen reader notices even when the same text comes twice.
  setTimeout(() => { announcer.textContent = message; }, 50);
}

// Shows `error` (an ApiError or any Error) in `box`, with the fields it names, as an alert.
export function showError(box, error) {
  const items = (error.errors || []).map((e) => h('li', {}, `${e.field}: ${e.message}`));
  box.replaceChildren(
    h('div', { className: 'alert', role: 'alert', dataset: { code: error.code || 'error' } },
      h('p', {}, error.message),
      items.length ? h('ul', {}, items) : null),
  );
}

export function showNotice(box, ...content) {
  box.replaceChildren(h('div', { className: 'notice', role: 'status' }, ...content));
}

export function credits(n) {
  return `${Number(n).toLocaleString('en')} credit${Math.abs(n) === 1 ? '' : 's'}`;
}

export function when(timestamp) {
  return timestamp ? new Date(timestamp).toLocaleString() : '—';
}

// Disables the form's submit button while `work` runs.
export async function busy(form, work) {
  const buttons = [...form.querySelectorAll('button[type=submit]')];
  buttons.forEach((b) => { b.disabled = true; });
  try {
    return await work();
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
}

export function heading(main, text) {
  document.title = `${text} · Framegate`;
  main.append(h('h1', {}, text));
}

// The most specific stable code of an error: a field's own code when the problem names
// one field, else the problem's.
export function codeOf(error) {
  return error.errors?.length === 1 ? error.errors[0].code : error.code;
}
