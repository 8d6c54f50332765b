// The console's entry: sign-in and sign-out, which views a role gets, and the event stream
// that keeps them current. The views live in their own modules.

import { enterAdmin, onAdminEvent, wireAdmin } from "./admin.js";
import { enterAgent, leaveAgent, onAgentEvent, wireAgent } from "./agent.js";
import { $, api, eventStreamUrl, keepCsrf, session, showNotice } from "./api.js";
import { enterChats, leaveChats, onChatEvent, wireChats } from "./chats.js";
import { enterReports, wireReports } from "./reports.js";
import { enterWallboard, leaveWallboard, onWallboardEvent } from "./wallboard.js";

let stream = null;

// Views each role gets besides the agent's own.
const ROLE_VIEWS = { operator: [], supervisor: ["wallboard", "reports"],
                     admin: ["wallboard", "reports", "admin"] };

function show(role) {
  $("sign-in").hidden = role !== null;
  for (const id of ["presence-bar", "agent", "chats", "voicemail"]) $(id).hidden = role === null;
  for (const id of ["wallboard", "reports", "admin"]) $(id).hidden = role === null || !ROLE_VIEWS[role].includes(id);
}

async function enter(user) {
  session.me = user;
  $("who").textContent = user.name;
  show(user.role);
  showNotice("");
  await enterAgent();
  await enterChats();
  if (ROLE_VIEWS[user.role].includes("wallboard")) await enterWallboard();
  if (ROLE_VIEWS[user.role].includes("reports")) enterReports();
  if (ROLE_VIEWS[user.role].includes("admin")) await enterAdmin();
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
    if (ROLE_VIEWS[session.me.role].includes("wallboard")) onWallboardEvent(event);
    if (ROLE_VIEWS[session.me.role].includes("admin")) onAdminEvent(event);
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
  leaveWallboard();
  try {
    if (leaving) await api("DELETE", "/session");
  } finally {
    keepCsrf(null);
    show(null);
    $("email").focus();
  }
}

async function start() {
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  wireAgent();
  wireChats();
  wireAdmin();
  wireReports();
  try {
    const current = await api("GET", "/me");
    keepCsrf(current.csrf_token);
    await enter(current.user);
  } catch (error) {
    show(null);
    if (error.status !== 401) showNotice(error.message);
  }
}

start();
