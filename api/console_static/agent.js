// The agent's own things: the presence menu, the current call, their voicemail.

import { $, api, session, showNotice } from "./api.js";

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
  if (event.type === "queue_offer" && data.user_id === session.me.id) {
    setCurrentCall({ caller: data.caller, called: data.called, queue: data.queue,
                     waited: data.wait_seconds || 0, since: Date.now(), talking: false });
  } else if (event.type === "queue_connect" && data.user_id === session.me.id && currentCall !== null) {
    setCurrentCall({ ...currentCall, talking: true, since: Date.now() });
  } else if (event.type === "presence_changed" && data.user_id === session.me.id) {
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
    showPresence(await api("PUT", `/users/${session.me.id}/presence`, choice));
    showNotice("");
  } catch (error) {
    showNotice(error.message);
  }
}

export async function enterAgent() {
  await loadReasons();
  showPresence(await api("GET", `/users/${session.me.id}/presence`));
  await showVoicemail();
}

export function leaveAgent() {
  setCurrentCall(null);
}

export function onAgentEvent(event) {
  followCall(event);
  if (event.type === "presence_changed" && event.data.user_id === session.me.id) showPresence(event.data);
  if (event.type.startsWith("voicemail_")) showVoicemail();
}

export function wireAgent() {
  $("status").addEventListener("change", choosePresence);
  $("reason").addEventListener("change", choosePresence);
  $("status-message").addEventListener("change", choosePresence);
}
