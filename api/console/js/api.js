// Calls to the /v1 API, same origin: the access token goes in the Authorization header; an
// expired one is exchanged once through /v1/auth/refresh (one exchange at a time, since a
// refresh token is single-use) and the call is made again. Errors are RFC 9457 problems,
// thrown as ApiError with their stable code and field errors.

import * as session from './session.js';

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `the server answered ${status}`);
    this.status = status;
    this.code = problem?.code ?? 'unknown';
    this.errors = problem?.errors ?? [];
  }
}

// Called when the session cannot be renewed (set by main.js: back to the sign-in page).
let onSignedOut = () => {};
export function whenSignedOut(handler) {
  onSignedOut = handler;
}

let refreshing = null;

async function refresh() {
  const current = session.tokens();
  if (!current) return false;
  refreshing ??= (async () => {
    try {
      const response = await fetch('/v1/auth/refresh', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ refresh_token: current.refresh_token }),
      });
      if (!response.ok) return false;
      session.store(await response.json());
      return true;
    } catch {
      return false;
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

// fetch() with the caller's access token, renewed once if it has expired. `init` as fetch's.
export async function authorizedFetch(path, init = {}) {
  const attempt = () => {
    const headers = new Headers(init.headers || {});
    const current = session.tokens();
    if (current) headers.set('authorization', `Bearer ${current.access_token}`);
    return fetch(path, { ...init, headers });
  };
  let response = await attempt();
  if (response.status === 401 && session.signedIn()) {
    if (await refresh()) {
      response = await attempt();
    } else {
      session.clear();
      onSignedOut();
    }
  }
  return response;
}

async function problemOf(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

// A JSON call: `body` is sent as JSON, `form` as multipart; returns the parsed answer
// (null for an empty one) or throws ApiError.
export async function api(method, path, { body, form, headers = {}, auth = true } = {}) {
  const init = { method, headers: { accept: 'application/json', ...headers } };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  } else if (form !== undefined) {
    init.body = form;
  }
  const response = auth ? await authorizedFetch(path, init) : await fetch(path, init);
  if (!response.ok) throw new ApiError(response.status, await problemOf(response));
  if (response.status === 204) return null;
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

export const get = (path, options) => api('GET', path, options);
export const post = (path, body, options = {}) => api('POST', path, { ...options, body });
