// The supervisor's wallboard: queues, agents and chat channels now and today, and two charts
// of the day. One GET /wallboard, redone when an event may change it (a burst is one).

import { $, api, tableRow } from "./api.js";

const SVG = "http://www.w3.org/2000/svg";
const CHART = { width: 480, height: 160, left: 28, bottom: 20 };
let board = null;
let refreshing = null;
let ticking = null;

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const s = Math.max(0, Math.round(seconds));
  return s < 60 ? `${s} s` : s < 3600 ? `${Math.floor(s / 60)} min ${s % 60} s`
    : `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function percent(value) {
  return value === null || value === undefined ? "" : `${Math.round(value * 100)} %`;
}

function element(name, attributes, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function hourLabel(iso) {
  return new Date(iso).getHours().toString().padStart(2, "0");
}

// Bars per hour: answered and abandoned side by side.
function drawCalls(hours) {
  const chart = $("calls-chart");
  const most = Math.max(1, ...hours.map((h) => Math.max(h.answered, h.abandoned)));
  const slot = (CHART.width - CHART.left) / Math.max(1, hours.length);
  const scale = (CHART.height - CHART.bottom - 10) / most;
  const nodes = [element("text", { x: 0, y: 12, "font-size": 10 }, String(most))];
  hours.forEach((hour, index) => {
    const x = CHART.left + index * slot;
    for (const [offset, value, color, what] of [[0, hour.answered, "#2a7ab0", "answered"],
                                                 [slot / 2, hour.abandoned, "#c0392b", "abandoned"]]) {
      const height = value * scale;
      const bar = element("rect", { x: x + offset + 1, y: CHART.height - CHART.bottom - height,
                                    width: Math.max(1, slot / 2 - 2), height, fill: color });
      bar.append(element("title", {}, `${hourLabel(hour.hour)}:00 ${value} ${what}`));
      nodes.push(bar);
    }
    if (index % 2 === 0) nodes.push(element("text", { x, y: CHART.height - 6, "font-size": 10 }, hourLabel(hour.hour)));
  });
  chart.replaceChildren(...nodes);
}

// The day's service level, hour by hour (hours without answered or abandoned calls skipped).
function drawServiceLevel(hours) {
  const chart = $("service-chart");
  const slot = (CHART.width - CHART.left) / Math.max(1, hours.length);
  const top = 10;
  const y = (level) => top + (1 - level) * (CHART.height - CHART.bottom - top);
  const points = hours
    .map((hour, index) => [CHART.left + index * slot + slot / 2, hour.service_level, hour.hour])
    .filter(([, level]) => level !== null && level !== undefined);
  const nodes = [element("text", { x: 0, y: y(1) + 4, "font-size": 10 }, "100%"),
                 element("text", { x: 0, y: y(0), "font-size": 10 }, "0%")];
  if (points.length) {
    nodes.push(element("polyline", { points: points.map(([x, level]) => `${x},${y(level)}`).join(" "),
                                     fill: "none", stroke: "#2a7ab0", "stroke-width": 2 }));
    for (const [x, level, hour] of points) {
      const dot = element("circle", { cx: x, cy: y(level), r: 3, fill: "#2a7ab0" });
      dot.append(element("title", {}, `${hourLabel(hour)}:00 ${percent(level)}`));
      nodes.push(dot);
    }
  }
  chart.replaceChildren(...nodes);
}

function render() {
  if (board === null) return;
  const now = Date.now();
  const loadedAt = board.loadedAt;
  $("queue-board").replaceChildren(...board.queues.map((queue) => tableRow([
    queue.name, String(queue.waiting),
    queue.waiting ? duration(queue.longest_wait_seconds + (now - loadedAt) / 1000) : "",
    String(queue.answered_today), String(queue.abandoned_today), percent(queue.service_level_today),
  ])));
  $("agent-board").replaceChildren(...board.agents.map((agent) => tableRow([
    agent.name,
    agent.status.replace("_", " ") + (agent.reason ? ` (${agent.reason})` : ""),
    agent.activity.replace("_", " "),
    agent.since ? duration((now - Date.parse(agent.since)) / 1000) : "",
    String(agent.calls_today), String(agent.chats_today),
  ])));
  $("channel-board").replaceChildren(...board.channels.map((channel) => tableRow([channel.name, String(channel.waiting)])));
}

async function load() {
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  board = await api("GET", `/wallboard?time_zone=${encodeURIComponent(zone)}`);
  board.loadedAt = Date.now();
  render();
  drawCalls(board.calls_per_hour);
  drawServiceLevel(board.calls_per_hour);
}

export async function enterWallboard() {
  await load();
  clearInterval(ticking);
  ticking = setInterval(render, 1000);  // the waits and times in status count up
}

export function leaveWallboard() {
  clearInterval(ticking);
  ticking = null;
  board = null;
}

const CHANGES = ["presence_changed", "queue_", "dialog_", "call_"];

export function onWallboardEvent(event) {
  if (!CHANGES.some((prefix) => event.type.startsWith(prefix)) || refreshing !== null) return;
  refreshing = setTimeout(async () => {
    refreshing = null;
    if (board !== null) await load();
  }, 250);
}
