// The Forseti dashboard's page: one EventSource for everything that changes (the
// overview when it connects, then each event and each change of the nodes), and a page
// of processes asked for when the search or the page changes, or soon after an event
// (never more than a few times a second, and 50 rows at a time, whatever the total).
"use strict";

const $ = (selector) => document.querySelector(selector);
const EVENTS_KEPT = 200;
const view = {
  summary: null, window: 300, rates: new Map(), // second -> [starts, exits, failures]
  loads: [], // [second, {node: processes}], oldest first
  group: "", key: "", offset: 0, limit: 50, total: 0, pageTimer: null,
};

// An element with attributes and children (text is always text: nothing is parsed as HTML).
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "onclick") node.onclick = value;
    else if (value !== null && value !== undefined && value !== false) node.setAttribute(name, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}

function duration(seconds) {
  seconds = Math.max(0, Math.floor(seconds));
  const d = Math.floor(seconds / 86400), h = Math.floor(seconds / 3600) % 24;
  const m = Math.floor(seconds / 60) % 60, s = seconds % 60;
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

function clock(at) { return new Date(at * 1000).toLocaleTimeString(); }

function notice(text) {
  const box = $("#notice");
  box.textContent = text;
  box.hidden = !text;
}

// -- the nodes, the leader, the role --

function showSummary(summary) {
  view.summary = summary;
  const status = $("#status");
  status.textContent = summary.problem ? `no answer: ${summary.problem}` : "live";
  status.className = "badge " + (summary.problem ? "bad" : "live");
  const role = $("#role");
  role.textContent = `role: ${summary.role}`;
  document.body.dataset.role = summary.role;
  showLeader(summary.leader);
  showNodes(summary.nodes, summary.may);
  $("#proc-count").textContent = `(${summary.processes})`;
}

function showLeader(leader) {
  const box = $("#leader");
  if (!leader) { box.replaceChildren("leader: ?"); return; }
  const seats = (leader.candidates || [])
    .filter((seat) => leader.candidates.length > 1 || seat.name !== leader.leader)
    .map((seat) => el("span", { class: `seat ${seat.state}`, "data-seat": seat.name }, `${seat.name}: ${seat.state}`));
  // A number: the term of an elected leader (backend "etcd"); a text: the one leader's epoch.
  const epoch = leader.epoch ?? null;
  const term = epoch === null ? "" : typeof epoch === "number" ? ` (term ${epoch})` : ` (epoch ${epoch})`;
  box.replaceChildren(el("span", { id: "leader-name" }, `leader: ${leader.leader || "none"}`), term, ...seats);
}

function showNodes(nodes, may) {
  const counts = {};
  const busiest = Math.max(1, ...nodes.map((n) => n.processes)); // the scale of a node with no limit
  const rows = nodes.map((n) => {
    counts[n.state] = (counts[n.state] || 0) + 1;
    const share = Math.min(1, n.processes / (n.capacity || busiest));
    const limit = n.capacity ? n.capacity : "no limit";
    const bar = el("span", { class: n.capacity && share >= 1 ? "bar full" : "bar", title: `${n.processes} of ${limit}` },
      el("span", { style: `width: ${(share * 100).toFixed(1)}%` }));
    const actions = el("td", { class: "act" });
    if (may.drain && (n.state === "up" || n.state === "draining")) {
      const drain = n.state === "up";
      actions.append(el("button", {
        type: "button", class: drain ? "drain" : "undrain",
        onclick: () => act(drain ? "drain" : "undrain", { node: n.name }),
      }, drain ? "drain" : "undrain"));
    }
    return el("tr", { "data-node": n.name, "data-state": n.state },
      el("td", {}, n.name), el("td", {}, el("span", { class: `state ${n.state}` }, n.state)),
      el("td", {}, bar, el("span", { class: "load" }, n.capacity ? `${n.processes}/${n.capacity}` : `${n.processes}`)),
      el("td", {}, (n.suspended || []).join(", ") || "–"), actions);
  });
  $("#nodes tbody").replaceChildren(...rows);
  $("#node-count").textContent = "(" + Object.entries(counts).map(([s, c]) => `${c} ${s}`).join(", ") + ")";
}

// -- the admin actions --

async function act(action, fields) {
  notice("");
  try {
    const answer = await fetch(`api/${action}`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(fields),
    });
    const body = await answer.json();
    if (!answer.ok) notice(`${action}: ${body.message}`);
  } catch (error) {
    notice(`${action}: ${error}`);
  }
}

// -- the processes, a page at a time --

async function loadPage() {
  const query = new URLSearchParams({ group: view.group, key: view.key, offset: view.offset, limit: view.limit });
  let page;
  try {
    page = await (await fetch(`api/processes?${query}`)).json();
  } catch (error) {
    return; // (the stream's state says why; asked again on the next change)
  }
  if (page.items.length === 0 && page.offset > 0 && page.total > 0) { // the page emptied: back to the last one
    view.offset = Math.max(0, Math.floor((page.total - 1) / view.limit) * view.limit);
    return loadPage();
  }
  view.total = page.total;
  const may = view.summary ? view.summary.may : { stop: false };
  const rows = page.items.map((p) => {
    const actions = el("td", { class: "act" });
    if (may.stop) {
      actions.append(el("button", { type: "button", class: "stop", onclick: () => act("stop", { group: p.group, key: p.key }) }, "stop"));
    }
    return el("tr", { "data-group": p.group, "data-key": p.key },
      el("td", {}, p.group), el("td", { class: "key", title: p.key }, p.key), el("td", {}, p.node), el("td", {}, p.pid),
      el("td", { class: "uptime", "data-since": p.started_at }, duration(Date.now() / 1000 - p.started_at)), actions);
  });
  $("#procs tbody").replaceChildren(...rows);
  const last = Math.min(page.total, page.offset + page.items.length);
  $("#range").textContent = page.total ? `${page.offset + 1}–${last} of ${page.total}` : "none";
  $("#prev").disabled = page.offset === 0;
  $("#next").disabled = last >= page.total;
}

function pageSoon() {
  if (view.pageTimer === null) view.pageTimer = setTimeout(() => { view.pageTimer = null; loadPage(); }, 300);
}

// -- the events and the chart --

function addEvent(e) {
  let text, kind = e.kind;
  if (e.kind === "missed") {
    text = e.missed ? `${e.missed} events missed` : "the leader changed: events may have been missed";
  } else {
    const verb = e.adopted ? "running" : e.kind;
    text = `${verb} ${e.group}/${e.key} node=${e.node} pid=${e.pid}`;
    if (e.kind === "exited") {
      text += ` reason=${e.reason}` + (e.signal !== null ? ` signal=${e.signal}` : e.exit_code !== null ? ` code=${e.exit_code}` : "");
      if (e.failed) kind = "failed";
    }
  }
  const list = $("#events");
  list.prepend(el("li", { class: kind, "data-kind": e.kind, "data-key": e.key }, `${clock(e.at)} ${text}`));
  while (list.children.length > EVENTS_KEPT) list.lastChild.remove();
}

function count(e) {
  if ((e.kind !== "started" && e.kind !== "exited") || e.adopted) return;
  const second = Math.floor(e.at);
  const counts = view.rates.get(second) || [0, 0, 0];
  if (e.kind === "started") counts[0] += 1;
  else { counts[1] += 1; if (e.failed) counts[2] += 1; }
  view.rates.set(second, counts);
}

// A canvas ready to draw the last `view.window` seconds on, with its axes up to `top`.
function frame(canvas, top) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  if (canvas.width !== width * ratio) { canvas.width = width * ratio; canvas.height = height * ratio; }
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, width, height);
  const now = Math.floor(Date.now() / 1000), first = now - view.window;
  const left = 30, bottom = height - 16;
  const x = (s) => left + ((s - first) / view.window) * (width - left - 4);
  const y = (v) => bottom - (v / top) * (bottom - 8);
  g.strokeStyle = "#e2e5ea"; g.fillStyle = "#6b7483"; g.font = "11px system-ui, sans-serif"; g.lineWidth = 1;
  for (const v of [0, top / 2, top]) {
    g.beginPath(); g.moveTo(left, y(v)); g.lineTo(width - 4, y(v)); g.stroke();
    g.fillText(Number.isInteger(v) ? v : v.toFixed(1), 2, y(v) + 4);
  }
  g.fillText(`-${view.window / 60} min`, left, height - 2);
  g.fillText("now", width - 26, height - 2);
  return { g, x, y, first, now };
}

// One line from `first` to `now`: `value(second)` for each second (none where it is null).
function line(f, color, value) {
  f.g.strokeStyle = color; f.g.lineWidth = 1.5; f.g.beginPath();
  let drawing = false;
  for (let s = f.first; s <= f.now; s++) {
    const v = value(s);
    if (v === null) { drawing = false; continue; }
    if (drawing) f.g.lineTo(f.x(s), f.y(v)); else f.g.moveTo(f.x(s), f.y(v));
    drawing = true;
  }
  f.g.stroke();
}

function drawRates() {
  const first = Math.floor(Date.now() / 1000) - view.window;
  for (const second of view.rates.keys()) if (second < first) view.rates.delete(second);
  let top = 1;
  for (const counts of view.rates.values()) top = Math.max(top, ...counts);
  const f = frame($("#chart"), top);
  const style = getComputedStyle(document.documentElement);
  ["--starts", "--exits", "--failures"].forEach((name, i) => {
    line(f, style.getPropertyValue(name).trim(), (s) => (view.rates.get(s) || [0, 0, 0])[i]);
  });
  $("#chart-window").textContent = `(last ${view.window / 60} minutes)`;
}

const PALETTE = ["#2f6fdb", "#2e8b57", "#d98e04", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d", "#d35400"];
const LEGEND_MAX = 12;

function sampleLoads(nodes) {
  const second = Math.floor(Date.now() / 1000);
  const counts = Object.fromEntries(nodes.map((n) => [n.name, n.processes]));
  const last = view.loads[view.loads.length - 1];
  if (last && last[0] === second) last[1] = counts; else view.loads.push([second, counts]);
  while (view.loads.length > 1 && view.loads[1][0] <= second - view.window) view.loads.shift();
}

// Each node's processes, a step line from the samples (the last one holds until now).
function drawLoads() {
  const samples = view.loads;
  const names = [...new Set(samples.flatMap(([, counts]) => Object.keys(counts)))].sort();
  let top = 1;
  for (const [, counts] of samples) top = Math.max(top, ...Object.values(counts));
  const f = frame($("#loads"), top);
  names.forEach((name, i) => {
    let at = 0;
    line(f, PALETTE[i % PALETTE.length], (s) => {
      while (at + 1 < samples.length && samples[at + 1][0] <= s) at++;
      return samples.length && samples[at][0] <= s ? samples[at][1][name] ?? null : null; // (none before the first)
    });
  });
  const shown = names.slice(0, LEGEND_MAX).map((name, i) =>
    el("span", { style: `--color: ${PALETTE[i % PALETTE.length]}` }, name));
  if (names.length > LEGEND_MAX) shown.push(el("span", {}, `and ${names.length - LEGEND_MAX} more`));
  $("#loads-legend").replaceChildren(...shown);
}

function drawChart() {
  drawRates();
  drawLoads();
}

// -- the stream --

function connect() {
  const source = new EventSource("api/stream");
  source.addEventListener("overview", (message) => {
    const o = JSON.parse(message.data);
    view.window = o.window;
    view.rates = new Map(o.rates.map((r) => [r[0], r.slice(1)]));
    view.loads = o.loads;
    $("#events").replaceChildren();
    o.events.forEach(addEvent);
    showSummary(o);
    loadPage();
    drawChart();
  });
  source.addEventListener("summary", (message) => {
    const summary = JSON.parse(message.data);
    showSummary(summary);
    if (!summary.problem) sampleLoads(summary.nodes);
    pageSoon();
  });
  source.addEventListener("event", (message) => {
    const e = JSON.parse(message.data);
    addEvent(e);
    count(e);
    pageSoon();
  });
  source.addEventListener("processes", pageSoon);
  source.onerror = () => {
    const status = $("#status");
    status.textContent = "dashboard unreachable: reconnecting…";
    status.className = "badge bad";
  };
}

$("#search").addEventListener("submit", (event) => {
  event.preventDefault();
  view.group = $("#group").value.trim();
  view.key = $("#key").value;
  view.offset = 0;
  loadPage();
});
$("#prev").onclick = () => { view.offset = Math.max(0, view.offset - view.limit); loadPage(); };
$("#next").onclick = () => { view.offset += view.limit; loadPage(); };
setInterval(() => {
  drawChart();
  for (const cell of document.querySelectorAll("#procs td.uptime")) {
    cell.textContent = duration(Date.now() / 1000 - Number(cell.dataset.since));
  }
}, 1000);
connect();
