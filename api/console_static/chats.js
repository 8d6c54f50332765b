// The chat inbox: dialogs offered to the agent and their own, the conversation, replies.

import { $, api, attempt, session } from "./api.js";

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
  return dialog.state === "new" && dialog.offered_to.includes(session.me.id);
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
      if (session.me !== null) await showDialogs();
    }, 100);
  }
}

async function showDialogs() {
  const found = new Map();
  for (const state of OPEN_STATES) {
    for (const dialog of (await api("GET", `/dialogs?state=${state}`)).items) {
      if (dialog.assignee_id === session.me.id || offeredToMe(dialog)) found.set(dialog.id, dialog);
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
  const mine = dialog.assignee_id === session.me.id;
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
  await attempt(doing);
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
  const others = board.items.filter((agent) => agent.user_id !== session.me.id);
  $("forward-to").replaceChildren(...others.map((agent) => new Option(agent.name, agent.user_id)));
}

export function wireChats() {
  $("reply-form").addEventListener("submit", sendReply);
  $("canned-search").addEventListener("input", showCanned);
  $("claim").addEventListener("click", () => act(() => api("POST", `/dialogs/${openDialog}/claim`)));
  $("close-dialog").addEventListener("click", () => act(() => api("POST", `/dialogs/${openDialog}/close`)));
  $("forward").addEventListener("click", () => act(() =>
    api("POST", `/dialogs/${openDialog}/forward`, { user_id: Number($("forward-to").value) })));
}

export async function enterChats() {
  await showDialogs();
  await loadCanned();
}

export function leaveChats() {
  openDialog = null;
  dialogs = new Map();
  offersSeen = new Set();
  $("conversation").hidden = true;
}

export function onChatEvent(event) {
  if (event.type.startsWith("dialog_") || event.type.startsWith("message_")) refreshDialogsSoon();
}
