// The console's entry: sign-in and sign-out, which views a role gets, and the event stream
// that keeps them current. The views live in their own modules.

import { enterAgent, leaveAgent, onAgentEvent, wireAgent } from "./agent.js";
import { $, api, eventStreamUrl, keepCsrf, session, showNotice } from "./api.js";
import { enterChats, leaveChats, onChatEvent, wireChats } from "./chats.js";

let stream = null;

function show(signedIn) {
  $("sign-in").hidden = signedIn;
  for (const id of ["presence-bar", "agent", "chats", "voicemail"]) $(id).hidden = !signedIn;
}

async function enter(user) {
  session.me = user;
  $("who").textContent = user.name;
  show(true);
  showNotice("");
  await enterAgent();
  await enterChats();
  follow();
}

// Live events for the signed-in user; reconnects after a drop, resuming where it stopped.
function follow(since) {
  let last = since;
  stream = new WebSocket(eventStreamUrl(since));
  stream.onmessage = (message) => {
    const event = JSON.parse(message.data);
    last = event.id;
    onAgentEvent(event);
    onChatEvent(event);
  };
  stream.onclose = () => {
    if (session.me !== null) setTimeout(() => follow(last), 1000);
  };
}

async function signIn(submit) {
  submit.preventDefault();
  try {
    const signedIn = await api("POST", "/session", {
      email: $("email").value.trim(), password: $("password").value,
    });
    keepCsrf(signedIn.csrf_token);
    $("password").value = "";
    await enter(signedIn.user);
  } catch (error) {
    showNotice(error.status === 429 ? "Too many failed attempts; try again later." : error.message);
  }
}

async function signOut() {
  const leaving = session.me;
  session.me = null;
  if (stream) stream.close();
  leaveAgent();
  leaveChats();
  try {
    if (leaving) await api("DELETE", "/session");
  } finally {
    keepCsrf(null);
    show(false);
    $("email").focus();
  }
}

async function start() {
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  wireAgent();
  wireChats();
  try {
    const current = await api("GET", "/me");
    keepCsrf(current.csrf_token);
    await enter(current.user);
  } catch (error) {
    show(false);
    if (error.status !== 401) showNotice(error.message);
  }
}

start();
