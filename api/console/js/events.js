// A video's live states from GET /v1/videos/{id}/events. EventSource cannot send an
// Authorization header, so the stream is read with fetch: the same text/event-stream
// parsed here, reconnecting with Last-Event-ID (and the server's retry hint) when the
// stream ends before the video has, until the video finishes or `signal` aborts.

import { authorizedFetch } from './api.js';

const TERMINAL = new Set(['completed', 'failed', 'cancelled']);

// Splits a stream's text into events: {event, data, id, retry}.
function* parse(block) {
  const message = { event: 'message', data: [], id: null, retry: null };
  for (const line of block.split(/\r\n|\r|\n/)) {
    if (line === '' || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const name = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (name === 'event') message.event = value;
    else if (name === 'data') message.data.push(value);
    else if (name === 'id') message.id = value;
    else if (name === 'retry' && /^\d+$/.test(value)) message.retry = Number(value);
  }
  if (message.data.length || message.id !== null || message.retry !== null) {
    yield { ...message, data: message.data.join('\n') };
  }
}

const pause = (ms, signal) => new Promise((resolve) => {
  const timer = setTimeout(resolve, ms);
  signal?.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
});

// Calls onVideo(video) for each state; resolves with the last one once it is terminal.
export async function follow(videoId, onVideo, signal) {
  let lastId = null;
  let retry = 2000;
  let last = null;
  while (!signal?.aborted) {
    const headers = { accept: 'text/event-stream' };
    if (lastId !== null) headers['last-event-id'] = lastId;
    let response;
    try {
      response = await authorizedFetch(`/v1/videos/${videoId}/events`, { headers, signal });
    } catch (error) {
      if (signal?.aborted) return last;
      await pause(retry, signal);
      continue;
    }
    if (response.status === 204) return last; // finished, and we have its final state
    if (!response.ok) {
      // Too many streams or the server is busy: wait as told, then try again.
      const after = Number(response.headers.get('retry-after')) || retry / 1000;
      if (response.status === 404 || response.status === 401 || response.status === 403) {
        throw new Error(`the video's events cannot be followed (${response.status})`);
      }
      await pause(after * 1000, signal);
      continue;
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.search(/\r\n\r\n|\n\n|\r\r/)) !== -1) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end).replace(/^(\r\n\r\n|\n\n|\r\r)/, '');
          for (const message of parse(block)) {
            if (message.retry !== null) retry = message.retry;
            if (message.id !== null) lastId = message.id;
            if (message.event === 'video') {
              last = JSON.parse(message.data);
              onVideo(last);
            } else if (message.event === 'error') {
              const problem = JSON.parse(message.data);
              // An access token that expired mid-stream: reconnect (and so refresh it).
              if (problem.code === 'token_expired') break;
              throw new Error(problem.detail || 'the stream ended with an error');
            }
          }
        }
      }
    } catch (error) {
      if (signal?.aborted) return last;
      throw error;
    }
    if (last && TERMINAL.has(last.status)) return last;
    await pause(retry, signal);
  }
  return last;
}

export function isTerminal(status) {
  return TERMINAL.has(status);
}
