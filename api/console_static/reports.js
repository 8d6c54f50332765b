// Reports for supervisors: call statistics per agent and queue for a period, and one
// customer's calls and chats, newest first.

import { $, api, showNotice, tableRow } from "./api.js";

let nextCursor = null;

function minutes(seconds) {
  return seconds === null || seconds === undefined ? "" : `${(seconds / 60).toFixed(1)} min`;
}

// A day picked in the browser is that day from local midnight; `until` takes in the last day.
function localDay(value, addDays = 0) {
  const [year, month, day] = value.split("-").map(Number);
  return new Date(year, month - 1, day + addDays).toISOString();
}

async function showStats(submit) {
  submit.preventDefault();
  const period = `since=${encodeURIComponent(localDay($("stats-since").value))}` +
    `&until=${encodeURIComponent(localDay($("stats-until").value, 1))}`;
  try {
    const [agents, queues] = await Promise.all([
      api("GET", `/stats/calls/agents?${period}`), api("GET", `/stats/calls/queues?${period}`),
    ]);
    $("agent-stats").replaceChildren(...agents.items.map((a) => tableRow([
      a.name, String(a.answered), String(a.missed), minutes(a.talk_seconds),
      minutes(a.wrap_up_seconds), minutes(a.handling_seconds),
    ])));
    $("queue-stats").replaceChildren(...queues.items.map((q) => tableRow([
      q.name || `queue ${q.queue_id}`, String(q.entered), String(q.answered), String(q.abandoned),
      q.mean_wait_seconds === null ? "" : `${Math.round(q.mean_wait_seconds)} s`,
      q.service_level === null ? "" : `${Math.round(q.service_level * 100)} %`,
      minutes(q.handling_seconds),
    ])));
    showNotice("");
  } catch (error) {
    showNotice(error.message);
  }
}

function timelineItem(item) {
  const entry = document.createElement("li");
  const when = new Date(item.at).toLocaleString();
  const who = item.handled_by ? `, ${item.handled_by.name}` : "";
  const length = item.duration_seconds === null ? "" : `, ${Math.round(item.duration_seconds)} s`;
  entry.textContent = `${when}: ${item.kind} ${item.direction}${who}, ${item.outcome || ""}${length}`;
  return entry;
}

async function showTimeline(more) {
  const phone = $("timeline-phone").value.trim();
  const cursor = more && nextCursor ? `&cursor=${encodeURIComponent(nextCursor)}` : "";
  try {
    const page = await api("GET", `/customers/timeline?phone=${encodeURIComponent(phone)}${cursor}`);
    const items = page.items.map(timelineItem);
    if (more) $("timeline").append(...items);
    else $("timeline").replaceChildren(...items);
    nextCursor = page.next_cursor;
    $("timeline-more").hidden = nextCursor === null;
    showNotice("");
  } catch (error) {
    showNotice(error.message);
  }
}

export function enterReports() {
  const today = new Date();
  const iso = `${today.getFullYear()}-${String(today.getMonth() + 1).padStart(2, "0")}-${String(today.getDate()).padStart(2, "0")}`;
  $("stats-since").value = iso;
  $("stats-until").value = iso;
}

export function wireReports() {
  $("stats-form").addEventListener("submit", showStats);
  $("timeline-form").addEventListener("submit", (submit) => {
    submit.preventDefault();
    showTimeline(false);
  });
  $("timeline-more").addEventListener("click", () => showTimeline(true));
}
