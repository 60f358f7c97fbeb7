// Request a video: provider and model from /v1/providers (only the durations, aspect ratios
// and resolutions the model allows are offered), an optional start image uploaded on
// selection and previewed, and the price from /v1/videos/estimate shown as the form
// changes, before anything is submitted.

import { api, get, post } from '../api.js';
import { busy, credits, field, h, heading, showError } from '../ui.js';

// A fresh Idempotency-Key (crypto.randomUUID needs a secure context; this does not).
function newKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `console-${[...bytes].map((b) => b.toString(16).padStart(2, '0')).join('')}`;
}

function options(select, values, describe = String, preferred) {
  const previous = select.value;
  select.replaceChildren(...values.map((v) => h('option', { value: String(v) }, describe(v))));
  const keep = values.map(String).includes(previous) ? previous : preferred;
  if (keep !== undefined && values.map(String).includes(String(keep))) select.value = String(keep);
}

export async function render(main, { navigate }) {
  heading(main, 'New video');
  const catalog = (await get('/v1/providers')).filter((p) => p.enabled && p.models.length);
  if (!catalog.length) {
    main.append(h('p', { className: 'alert', role: 'alert' }, 'No provider is configured on this server.'));
    return undefined;
  }

  const provider = h('select', { name: 'provider' });
  const model = h('select', { name: 'model' });
  const duration = h('select', { name: 'duration_seconds' });
  const aspect = h('select', { name: 'aspect_ratio' });
  const resolution = h('select', { name: 'resolution' });
  const prompt = h('textarea', { name: 'prompt', required: true, maxLength: 4000, rows: 4 });
  const negative = h('textarea', { name: 'negative_prompt', maxLength: 4000, rows: 2 });
  const image = h('input', { type: 'file', name: 'image', accept: 'image/jpeg,image/png,image/webp' });
  const preview = h('div', { className: 'preview', 'aria-live': 'polite' });
  const estimate = h('p', { className: 'estimate', id: 'estimate', role: 'status', 'aria-live': 'polite' }, 'Estimating…');
  const messages = h('div');
  const submit = h('button', { type: 'submit' }, 'Request video');
  let imageId = null;
  let key = newKey();

  options(provider, catalog.map((p) => p.provider), (id) => catalog.find((p) => p.provider === id).name);
  const currentModel = () => catalog.find((p) => p.provider === provider.value)
    .models.find((m) => m.model === model.value);
  const fillModels = () => {
    const models = catalog.find((p) => p.provider === provider.value).models;
    options(model, models.map((m) => m.model), String, models.find((m) => m.default)?.model);
    fillChoices();
  };
  const fillChoices = () => {
    const m = currentModel();
    options(duration, m.durations, (d) => `${d} seconds`);
    options(aspect, m.aspect_ratios);
    options(resolution, m.resolutions, (r) => {
      const price = m.resolution_prices?.[r] ?? m.credits_per_second;
      return `${r} (${credits(price)} a second)`;
    });
    image.disabled = !m.image_input;
    if (!m.image_input) clearImage();
  };

  const body = () => {
    const request = {
      prompt: prompt.value,
      provider: provider.value,
      model: model.value,
      duration_seconds: Number(duration.value),
      aspect_ratio: aspect.value,
      resolution: resolution.value,
    };
    if (negative.value.trim()) request.negative_prompt = negative.value;
    if (imageId) request.image_id = imageId;
    return request;
  };

  let estimating = 0;
  const refreshEstimate = async () => {
    const mine = ++estimating;
    const request = body();
    // The price does not depend on the words: an empty prompt still gets a price.
    if (!request.prompt.trim()) request.prompt = 'estimate';
    try {
      const answer = await post('/v1/videos/estimate', request);
      if (mine !== estimating) return;
      estimate.dataset.cost = String(answer.cost);
      estimate.textContent = `Estimated cost: ${credits(answer.cost)} (${answer.duration_seconds} s × ${credits(answer.credits_per_second)}); you have ${credits(answer.available)} available.`;
    } catch (error) {
      if (mine !== estimating) return;
      delete estimate.dataset.cost;
      estimate.textContent = `No estimate: ${error.message}`;
    }
  };
  let timer = null;
  const later = () => {
    clearTimeout(timer);
    timer = setTimeout(refreshEstimate, 250);
  };

  let objectUrl = null;
  function clearImage() {
    imageId = null;
    if (objectUrl) URL.revokeObjectURL(objectUrl);
    objectUrl = null;
    preview.replaceChildren();
    image.value = '';
  }
  image.addEventListener('change', async () => {
    const file = image.files[0];
    imageId = null;
    if (objectUrl) URL.revokeObjectURL(objectUrl);
    if (!file) {
      clearImage();
      later();
      return;
    }
    objectUrl = URL.createObjectURL(file);
    const status = h('p', {}, `Uploading ${file.name}…`);
    preview.replaceChildren(h('img', { src: objectUrl, alt: `Preview of ${file.name}`, id: 'image-preview' }), status);
    submit.disabled = true;
    try {
      const form = new FormData();
      form.append('file', file);
      const uploaded = await api('POST', '/v1/images', { form });
      if (uploaded.status !== 'available') {
        throw new Error(`The image was refused: ${uploaded.moderation?.reason || uploaded.status}.`);
      }
      imageId = uploaded.id;
      preview.dataset.imageId = uploaded.id;
      status.textContent = `Uploaded ${file.name} (${uploaded.width} × ${uploaded.height}).`;
      const remove = h('button', { type: 'button', className: 'secondary' }, 'Remove image');
      remove.addEventListener('click', () => { clearImage(); later(); image.focus(); });
      preview.append(remove);
    } catch (error) {
      clearImage();
      showError(preview, error);
    } finally {
      submit.disabled = false;
      later();
    }
  });

  provider.addEventListener('change', () => { fillModels(); later(); });
  model.addEventListener('change', () => { fillChoices(); later(); });
  for (const control of [duration, aspect, resolution, prompt, negative]) {
    control.addEventListener(control.tagName === 'TEXTAREA' ? 'input' : 'change', later);
  }

  const form = h('form', { id: 'request-form' },
    field('Prompt', prompt, 'What the video shows, up to 4,000 characters.'),
    field('Negative prompt (optional)', negative),
    field('Provider', provider),
    field('Model', model),
    field('Duration', duration),
    field('Aspect ratio', aspect),
    field('Resolution', resolution),
    field('Start image (optional)', image, 'JPEG, PNG or WEBP; the video starts from it.'),
    preview,
    estimate,
    submit);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    busy(form, async () => {
      try {
        const video = await api('POST', '/v1/videos', { body: body(), headers: { 'idempotency-key': key } });
        key = newKey();
        navigate(`videos?new=${video.id}`);
      } catch (error) {
        // A refused request took nothing: the next try is a new request.
        if (error.status < 500) key = newKey();
        showError(messages, error);
        messages.querySelector('[role=alert]')?.focus?.();
      }
    });
  });
  main.append(messages, form);
  fillModels();
  await refreshEstimate();
  prompt.focus();
  return () => { clearTimeout(timer); if (objectUrl) URL.revokeObjectURL(objectUrl); };
}
