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
  $("chats").hidden = !signedIn;
  $("presence-bar").hidden = !signedIn;
}

// The call ringing or talking at the agent's phone: from the queue's offer, else presence.
let currentCall = null;
let callClock = null;

function showCurrentCall() {
  const shown = $("current-call");
  if (currentCall === null) {
    shown.textContent = "";
    return;
  }
  const seconds = Math.round((Date.now() - currentCall.since) / 1000);
  if (currentCall.caller === undefined) {
    shown.textContent = `${currentCall.talking ? "On a call" : "Ringing"}, ${seconds} s`;
    return;
  }
  const where = `${currentCall.caller} for ${currentCall.queue} (number ${currentCall.called})`;
  const waited = Math.round(currentCall.waited + (currentCall.talking ? 0 : seconds));
  shown.textContent = currentCall.talking
    ? `On a call with ${where}, ${seconds} s`
    : `Ringing: ${where}, waiting ${waited} s`;
}

function setCurrentCall(call) {
  currentCall = call;
  clearInterval(callClock);
  callClock = call === null ? null : setInterval(showCurrentCall, 1000);
  showCurrentCall();
}

function followCall(event) {
  const data = event.data;
  if (event.type === "queue_offer" && data.user_id === me.id) {
    setCurrentCall({ caller: data.caller, called: data.called, queue: data.queue,
                     waited: data.wait_seconds || 0, since: Date.now(), talking: false });
  } else if (event.type === "queue_connect" && data.user_id === me.id && currentCall !== null) {
    setCurrentCall({ ...currentCall, talking: true, since: Date.now() });
  } else if (event.type === "presence_changed" && data.user_id === me.id) {
    if (data.activity === "idle") setCurrentCall(null);
    else if (currentCall === null) setCurrentCall({ since: Date.now(), talking: data.activity === "in_call" });
    else if (data.activity === "in_call" && !currentCall.talking) setCurrentCall({ ...currentCall, talking: true, since: Date.now() });
  }
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
  await showDialogs();
  await loadCanned();
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
    followCall(event);
    if (event.type === "presence_changed" && event.data.user_id === me.id) showPresence(event.data);
    if (event.type.startsWith("voicemail_")) showVoicemail();
    if (event.type.startsWith("dialog_") || event.type.startsWith("message_")) refreshDialogsSoon();
  };
  stream.onclose = () => {
    if (me !== null) setTimeout(() => follow(last), 1000);
  };
}

// -- chats ---------------------------------------------------------------------------------

const OPEN_STATES = ["new", "assigned", "answered", "waiting"];
const READ_KEY = "pbx.read";  // dialog id -> id of the last message this browser showed
let dialogs = new Map();
let openDialog = null;
let canned = [];
let offersSeen = new Set();

function lastRead() {
  return JSON.parse(localStorage.getItem(READ_KEY) || "{}");
}

function markRead(dialogId, messageId) {
  const read = lastRead();
  read[dialogId] = Math.max(read[dialogId] || 0, messageId);
  localStorage.setItem(READ_KEY, JSON.stringify(read));
}

function customerName(dialog) {
  return dialog.customer.name || dialog.customer.id;
}

function offeredToMe(dialog) {
  return dialog.state === "new" && dialog.offered_to.includes(me.id);
}

// A short tone and the count in the title when a dialog is newly offered or assigned.
function announce(newOnes) {
  if (newOnes === 0) return;
  document.title = `(${newOnes}) PBX console`;
  try {
    const audio = new AudioContext();
    const tone = audio.createOscillator();
    tone.frequency.value = 880;
    tone.connect(audio.destination);
    tone.start();
    tone.stop(audio.currentTime + 0.15);
  } catch {
    // No audio output: the title still tells.
  }
}

// A burst of chat events is one refresh.
let refreshing = null;
function refreshDialogsSoon() {
  if (refreshing === null) {
    refreshing = setTimeout(async () => {
      refreshing = null;
      if (me !== null) await showDialogs();
    }, 100);
  }
}

async function showDialogs() {
  const found = new Map();
  for (const state of OPEN_STATES) {
    for (const dialog of (await api("GET", `/dialogs?state=${state}`)).items) {
      if (dialog.assignee_id === me.id || offeredToMe(dialog)) found.set(dialog.id, dialog);
    }
  }
  const details = await Promise.all([...found.keys()].map((id) => api("GET", `/dialogs/${id}`)));
  dialogs = new Map(details.map((detail) => [detail.id, detail]));
  const fresh = [...dialogs.keys()].filter((id) => !offersSeen.has(id));
  fresh.forEach((id) => offersSeen.add(id));
  announce(fresh.length);
  const read = lastRead();
  const items = [...dialogs.values()]
    .sort((a, b) => b.last_message_at.localeCompare(a.last_message_at))
    .map((dialog) => {
      const unread = dialog.messages.filter((m) => m.direction === "in" && m.id > (read[dialog.id] || 0)).length;
      const item = document.createElement("li");
      const open = document.createElement("button");
      open.type = "button";
      const offered = dialog.state === "new" ? ", offered" : "";
      open.textContent = `${customerName(dialog)}${offered}${unread ? ` (${unread} unread)` : ""}`;
      open.setAttribute("aria-label", `Chat with ${customerName(dialog)}${offered}, ${unread} unread`);
      open.addEventListener("click", () => openConversation(dialog.id));
      item.append(open);
      return item;
    });
  $("dialog-list").replaceChildren(...items);
  $("dialogs-empty").hidden = items.length > 0;
  if (openDialog !== null) {
    if (dialogs.has(openDialog)) showConversation(dialogs.get(openDialog));
    else $("conversation").hidden = true;
  }
}

function showConversation(dialog) {
  $("conversation").hidden = false;
  $("conversation-title").textContent = `Chat with ${customerName(dialog)}`;
  $("messages").replaceChildren(...dialog.messages.map((message) => {
    const item = document.createElement("li");
    item.className = message.direction;
    const who = message.direction === "in" ? customerName(dialog) : "You";
    item.textContent = `${who}: ${message.text}`;
    return item;
  }));
  const mine = dialog.assignee_id === me.id;
  $("claim").hidden = mine;
  $("reply-form").hidden = !mine;
  $("close-dialog").hidden = !mine;
  const last = dialog.messages.at(-1);
  if (last) markRead(dialog.id, last.id);
}

async function openConversation(dialogId) {
  openDialog = dialogId;
  document.title = "PBX console";
  await loadForwardTargets();
  showConversation(await api("GET", `/dialogs/${dialogId}`));
  await showDialogs();
  $("reply").focus();
}

async function act(doing) {
  try {
    await doing();
    showNotice("");
  } catch (error) {
    showNotice(error.message);
  }
  await showDialogs();
}

async function sendReply(submit) {
  submit.preventDefault();
  const text = $("reply").value.trim();
  if (!text || openDialog === null) return;
  await act(async () => {
    await api("POST", `/dialogs/${openDialog}/messages`, { text });
    $("reply").value = "";
  });
}

async function useCanned(response) {
  await act(() => api("POST", `/dialogs/${openDialog}/messages`, { canned_response_id: response.id }));
}

function showCanned() {
  const wanted = $("canned-search").value.trim().toLowerCase();
  const matching = canned.filter((r) => !wanted || `${r.title} ${r.text}`.toLowerCase().includes(wanted));
  $("canned-list").replaceChildren(...matching.slice(0, 20).map((response) => {
    const item = document.createElement("li");
    const use = document.createElement("button");
    use.type = "button";
    use.textContent = response.title;
    use.title = response.text;
    use.setAttribute("aria-label", `Send canned response ${response.title}`);
    use.addEventListener("click", () => useCanned(response));
    item.append(use);
    return item;
  }));
}

async function loadCanned() {
  canned = (await api("GET", "/canned-responses")).items;
  showCanned();
}

async function loadForwardTargets() {
  const board = await api("GET", "/presence");
  const others = board.items.filter((agent) => agent.user_id !== me.id);
  $("forward-to").replaceChildren(...others.map((agent) => new Option(agent.name, agent.user_id)));
}

function wireChats() {
  $("reply-form").addEventListener("submit", sendReply);
  $("canned-search").addEventListener("input", showCanned);
  $("claim").addEventListener("click", () => act(() => api("POST", `/dialogs/${openDialog}/claim`)));
  $("close-dialog").addEventListener("click", () => act(() => api("POST", `/dialogs/${openDialog}/close`)));
  $("forward").addEventListener("click", () => act(() =>
    api("POST", `/dialogs/${openDialog}/forward`, { user_id: Number($("forward-to").value) })));
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
  openDialog = null;
  dialogs = new Map();
  offersSeen = new Set();
  $("conversation").hidden = true;
  setCurrentCall(null);
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
  wireChats();
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
