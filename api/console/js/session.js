// The signed-in session: the access and refresh tokens and who they belong to, kept in
// sessionStorage (this tab only, gone when it closes; never in localStorage or a cookie).

const KEY = 'framegate.session';

function load() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY) || 'null');
  } catch {
    return null;
  }
}

let current = load();

export function signedIn() {
  return current !== null && typeof current.refresh_token === 'string';
}

export function tokens() {
  return current;
}

export function user() {
  return current?.user ?? null;
}

export function isAdmin() {
  return user()?.role === 'admin';
}

// Stores the tokens of a login or refresh (`TokenResponse`), keeping the known user.
export function store(tokenResponse) {
  current = {
    access_token: tokenResponse.access_token,
    refresh_token: tokenResponse.refresh_token,
    user: current?.user ?? null,
  };
  sessionStorage.setItem(KEY, JSON.stringify(current));
}

export function setUser(me) {
  if (current === null) return;
  current.user = me;
  sessionStorage.setItem(KEY, JSON.stringify(current));
}

export function clear() {
  current = null;
  sessionStorage.removeItem(KEY);
}
