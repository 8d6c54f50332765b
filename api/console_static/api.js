// The REST API as the console uses it: the session cookie, and the CSRF token on unsafe requests.

const API = "/api/v1";
const CSRF_KEY = "pbx.csrf";

export const $ = (id) => document.getElementById(id);
// Who is signed in (the user from /me or the sign-in), null when nobody is.
export const session = { me: null };

export function showNotice(text) {
  $("notice").textContent = text;
}

// Does `doing`, then shows its error, or clears the last one.
export async function attempt(doing) {
  try {
    await doing();
    showNotice("");
  } catch (error) {
    showNotice(error.message);
  }
}

// A table row whose first cell heads it.
export function tableRow(cells) {
  const tr = document.createElement("tr");
  cells.forEach((text, index) => {
    const cell = document.createElement(index === 0 ? "th" : "td");
    if (index === 0) cell.scope = "row";
    cell.textContent = text;
    tr.append(cell);
  });
  return tr;
}

export function keepCsrf(token) {
  if (token) sessionStorage.setItem(CSRF_KEY, token);
  else sessionStorage.removeItem(CSRF_KEY);
}

export function eventStreamUrl(since) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const query = since === undefined ? "" : `?since=${since}`;
  return `${scheme}//${location.host}${API}/events${query}`;
}

export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const csrf = sessionStorage.getItem(CSRF_KEY);
  if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
  const response = await fetch(API + path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) {
    const error = new Error((data && data.message) || `${method} ${path}: ${response.status}`);
    error.status = response.status;
    error.code = data && data.code;
    throw error;
  }
  return data;
}
