// The console's one script: sign-in, the presence menu and live updates from the event stream.
// It uses only the public REST API (/api/v1) with the session cookie; unsafe requests carry
// the session's CSRF token.

const API = "/api/v1";
const CSRF_KEY = "pbx.csrf";

const $ = (id) => document.getElementById(id);
let me = null;
let stream = null;

function showNotice(text) {
  $("notice").textContent = text;
}

async function api(method, path, body) {
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

function show(signedIn) {
  $("sign-in").hidden = signedIn;
  $("agent").hidden = !signedIn;
  $("voicemail").hidden = !signedIn;
  $("presence-bar").hidden = !signedIn;
}

function showPresence(presence) {
  $("status").value = presence.status;
  $("status-shown").textContent = presence.status.replace("_", " ");
  $("activity-shown").textContent = presence.activity === "idle" ? "" : `(${presence.activity.replace("_", " ")})`;
  const notReady = presence.status === "not_ready";
  $("reason").hidden = !notReady;
  $("reason-label").hidden = !notReady;
  if (notReady && presence.reason) $("reason").value = presence.reason;
  if (document.activeElement !== $("status-message")) $("status-message").value = presence.message || "";
}

async function loadReasons() {
  const board = await api("GET", "/presence");
  const reasons = $("reason");
  reasons.replaceChildren(...board.not_ready_reasons.map((reason) => new Option(reason, reason)));
}

async function enter(user) {
  me = user;
  $("who").textContent = user.name;
  show(true);
  showNotice("");
  await loadReasons();
  showPresence(await api("GET", `/users/${me.id}/presence`));
  await showVoicemail();
  follow();
}

function voicemailItem(message) {
  const item = document.createElement("li");
  const when = new Date(message.created_at).toLocaleString();
  const label = `Voicemail from ${message.caller || "unknown"}, ${when}, ${message.seconds} s`;
  const text = document.createElement("span");
  text.textContent = message.heard ? label : `${label} (new)`;
  const audio = document.createElement("audio");
  audio.controls = true;
  audio.preload = "none";
  audio.src = message.audio;
  audio.setAttribute("aria-label", label);
  const heard = document.createElement("button");
  heard.type = "button";
  heard.textContent = message.heard ? "Mark new" : "Mark heard";
  heard.setAttribute("aria-label", `${heard.textContent}: ${label}`);
  heard.addEventListener("click", async () => {
    await api("PATCH", `/voicemail/messages/${message.id}`, { heard: !message.heard });
    await showVoicemail();
  });
  item.append(text, " ", audio, " ", heard);
  return item;
}

// The signed-in person's own boxes (the API lists only those for an operator).
async function showVoicemail() {
  const boxes = await api("GET", "/voicemail/boxes");
  const messages = [];
  for (const box of boxes.items) {
    messages.push(...(await api("GET", `/voicemail/boxes/${box.id}/messages`)).items);
  }
  messages.sort((a, b) => b.created_at.localeCompare(a.created_at));
  $("voicemail-list").replaceChildren(...messages.map(voicemailItem));
  $("voicemail-empty").hidden = messages.length > 0;
}

async function choosePresence() {
  const status = $("status").value;
  const choice = { status, message: $("status-message").value.trim() || null };
  if (status === "not_ready") {
    $("reason").hidden = false;
    $("reason-label").hidden = false;
    choice.reason = $("reason").value;
  }
  try {
    showPresence(await api("PUT", `/users/${me.id}/presence`, choice));
    showNotice("");
  } catch (error) {
    showNotice(error.message);
  }
}

// Live events for the signed-in user; reconnects after a drop, resuming where it stopped.
function follow(since) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const query = since === undefined ? "" : `?since=${since}`;
  let last = since;
  stream = new WebSocket(`${scheme}//${location.host}${API}/events${query}`);
  stream.onmessage = (message) => {
    const event = JSON.parse(message.data);
    last = event.id;
    if (event.type === "presence_changed" && event.data.user_id === me.id) showPresence(event.data);
    if (event.type.startsWith("voicemail_")) showVoicemail();
  };
  stream.onclose = () => {
    if (me !== null) setTimeout(() => follow(last), 1000);
  };
}

async function signIn(submit) {
  submit.preventDefault();
  try {
    const session = await api("POST", "/session", {
      email: $("email").value.trim(), password: $("password").value,
    });
    sessionStorage.setItem(CSRF_KEY, session.csrf_token);
    $("password").value = "";
    await enter(session.user);
  } catch (error) {
    showNotice(error.status === 429 ? "Too many failed attempts; try again later." : error.message);
  }
}

async function signOut() {
  const leaving = me;
  me = null;
  if (stream) stream.close();
  try {
    if (leaving) await api("DELETE", "/session");
  } finally {
    sessionStorage.removeItem(CSRF_KEY);
    show(false);
    $("email").focus();
  }
}

async function start() {
  $("sign-in-form").addEventListener("submit", signIn);
  $("status").addEventListener("change", choosePresence);
  $("reason").addEventListener("change", choosePresence);
  $("status-message").addEventListener("change", choosePresence);
  $("sign-out").addEventListener("click", signOut);
  try {
    const session = await api("GET", "/me");
    if (session.csrf_token) sessionStorage.setItem(CSRF_KEY, session.csrf_token);
    await enter(session.user);
  } catch (error) {
    show(false);
    if (error.status !== 401) showNotice(error.message);
  }
}

start();
