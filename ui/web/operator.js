// Operator console: the admin token is asked once and kept in
// sessionStorage (gone when the tab closes). Poll actions, readers, the
// last 50 taps (with tags: this page is authenticated) and the CSV export.
// Public SSE events say *that* something changed; authenticated fetches
// get the details.
"use strict";
const KEY = "pollstation-admin-token";
let token = sessionStorage.getItem(KEY);
let taps = [];
let tallies = new Map();
const $ = id => document.getElementById(id);
const el = (tag, text, cls) => {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
};

async function api(path, opts = {}) {
  const r = await fetch(path, { ...opts, headers: { ...(opts.headers || {}), Authorization: "Bearer " + token } });
  if (r.status === 401) {
    sessionStorage.removeItem(KEY);
    token = null;
    showLogin("The token was refused.");
    throw new Error("unauthorized");
  }
  if (!r.ok) {
    let detail = r.status + "";
    try { const j = await r.json(); detail = j.detail || j.error; } catch (e) { /* not JSON */ }
    throw new Error(detail);
  }
  return r;
}

function showLogin(msg) {
  $("console").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = msg || "";
  $("token").focus();
}

$("login").addEventListener("submit", async ev => {
  ev.preventDefault();
  token = $("token").value.trim();
  try {
    await api("/api/v1/taps?tail=1");
    sessionStorage.setItem(KEY, token);
    start();
  } catch (e) {
    if (e.message !== "unauthorized") $("login-error").textContent = e.message;
  }
});

$("logout").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  token = null;
  showLogin();
});

$("csv").addEventListener("click", async () => {
  try {
    const r = await api("/api/v1/taps?format=csv");
    const url = URL.createObjectURL(await r.blob());
    const a = el("a");
    a.href = url;
    a.download = "taps.csv";
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (e) { $("action-error").textContent = "Export failed: " + e.message; }
});

async function act(poll, action) {
  if (action === "reset" && !confirm(`Reset poll "${poll}"? Its count starts again from zero (the taps stay in the log).`)) return;
  $("action-error").textContent = "";
  try {
    await api(`/api/v1/polls/${encodeURIComponent(poll)}/${action}`, { method: "POST" });
    await loadPolls();
  } catch (e) { $("action-error").textContent = `${action} ${poll}: ${e.message}`; }
}

let polls = [];
async function loadPolls() {
  polls = await (await fetch("/api/v1/polls")).json();
  renderPolls();
  if (lastStation) renderHotplug(lastStation);
}

function renderPolls() {
  const body = $("polls").tBodies[0];
  body.replaceChildren(...polls.map(p => {
    const tr = el("tr");
    tr.dataset.poll = p.id;
    const t = tallies.get(p.id);
    tr.append(el("td", `${p.question} (${p.id})`), el("td", p.rule),
      el("td", (p.open ? "open" : "closed") + (p.active ? " · active" : ""), p.open ? "ok" : "muted"),
      el("td", t ? String(t.total) : "0", "votes"));
    // In a herd: the votes by station that read them.
    const by = Object.entries((t && t.by_station) || {});
    if (by.length > 1) tr.cells[3].append(el("div", "from " + by.map(([s, n]) => `${s} ${n}`).join(" · "), "muted"));
    const td = el("td");
    for (const a of ["open", "close", "activate", "reset"]) {
      const b = el("button", a);
      b.type = "button";
      b.dataset.action = a;
      if ((a === "open" && p.open) || (a === "close" && !p.open) || (a === "activate" && p.active)) b.disabled = true;
      b.addEventListener("click", () => act(p.id, a));
      td.append(b);
    }
    // The results as an image, for slides and reports.
    const dl = el("a", "Download image", "download");
    dl.href = `/api/v1/polls/${encodeURIComponent(p.id)}/tally.svg`;
    dl.download = `${p.id}.svg`;
    td.append(dl);
    tr.append(td);
    return tr;
  }));
  const pick = $("chart-poll");
  if (pick.options.length !== polls.length) {
    pick.replaceChildren(...polls.map(p => { const o = el("option", p.question); o.value = p.id; return o; }));
    const active = polls.find(p => p.active);
    if (active) pick.value = active.id;
    drawChart(true);
  }
}

// Votes over time of the poll picked (SVG from the station), redrawn at
// most every 3 s while votes come in.
let chartTimer = null;
let chartLast = 0;
function drawChart(now) {
  if (chartTimer) return;
  const wait = now ? 0 : Math.max(0, chartLast + 3000 - Date.now());
  chartTimer = setTimeout(async () => {
    chartTimer = null;
    chartLast = Date.now();
    const poll = $("chart-poll").value;
    if (!poll) return;
    try {
      const r = await fetch(`/api/v1/polls/${encodeURIComponent(poll)}/timeline.svg`);
      if (r.ok) $("chart").innerHTML = await r.text();
    } catch (e) { /* the next tally tries again */ }
  }, wait);
}

function renderReaders(readers) {
  $("readers").tBodies[0].replaceChildren(...readers.map(r => {
    const tr = el("tr");
    tr.dataset.reader = r.id;
    const binding = r.binding.slot ? `slot ${r.binding.slot}` : `${r.binding.poll}/${r.binding.answer}`;
    tr.append(el("td", r.id), el("td", r.status, r.status === "connected" ? "ok" : "bad"), el("td", binding),
      el("td", r.protocol), el("td", String(r.taps)), el("td", String(r.frames_ok)), el("td", String(r.frames_bad)),
      el("td", r.last_error || ""));
    return tr;
  }));
}

function renderHealth(h) {
  $("health-level").textContent = h.level;
  $("health-level").className = "level " + h.level.toLowerCase();
  $("health").tBodies[0].replaceChildren(...h.components.map(c => {
    const tr = el("tr", null, "level-" + c.level.toLowerCase());
    tr.append(el("td", c.level, "level " + c.level.toLowerCase()), el("td", c.component), el("td", c.message), el("td", c.fix || ""));
    return tr;
  }));
}

// The unbound devices' rows are rebuilt only when what they show changes
// (the devices, or the active poll's answers), and keep what the operator
// typed or picked in them, so a status event never wipes a reader id being
// typed.
let lastStation = null;
let unboundShown = "";
function renderHotplug(st) {
  lastStation = st;
  $("hotplug").textContent = `hotplug: ${st.hotplug.state}` + (st.hotplug.detail ? ` (${st.hotplug.detail})` : "");
  const devices = st.hotplug.unbound;
  $("unbound").hidden = devices.length === 0;
  const active = polls.find(p => p.active);
  const key = JSON.stringify([devices, active ? [active.id, active.answers] : null]);
  if (key === unboundShown) return;
  unboundShown = key;
  // A slot is an answer of the active poll by position: A is the first.
  const letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
  const slots = active
    ? active.answers.slice(0, letters.length).map((a, i) => [letters[i], `${letters[i]} · ${a.label}`])
    : [...letters].map(l => [l, l]);
  const body = $("unbound-list").tBodies[0];
  const kept = new Map([...body.rows].map(r =>
    [r.dataset.device, { id: r.querySelector("input").value, slot: r.querySelector("select").value }]));
  body.replaceChildren(...devices.map(d => {
    const tr = el("tr");
    tr.dataset.device = d;
    const id = el("input");
    id.value = kept.has(d) ? kept.get(d).id : d.split("/").pop();
    id.setAttribute("aria-label", "reader id");
    const slot = el("select");
    slot.setAttribute("aria-label", "answer slot");
    for (const [value, label] of slots) slot.append(new Option(label, value));
    if (kept.has(d) && slots.some(([v]) => v === kept.get(d).slot)) slot.value = kept.get(d).slot;
    const b = el("button", "Bind");
    b.type = "button";
    b.addEventListener("click", async () => {
      $("action-error").textContent = "";
      try {
        await api("/api/v1/readers", { method: "POST", headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ device: d, id: id.value, slot: slot.value }) });
      } catch (e) { $("action-error").textContent = `bind ${d}: ${e.message}`; }
    });
    const c1 = el("td"); c1.append(id);
    const c2 = el("td"); c2.append(slot);
    const c3 = el("td"); c3.append(b);
    tr.append(el("td", d), c1, c2, c3);
    return tr;
  }));
}

function renderTaps() {
  $("taps").tBodies[0].replaceChildren(...taps.slice().reverse().map(t => {
    const tr = el("tr");
    tr.append(el("td", new Date(t.at).toLocaleTimeString()), el("td", `${t.station}:${t.seq}`), el("td", t.reader),
      el("td", t.tag, "tag"), el("td", t.poll), el("td", t.answer));
    return tr;
  }));
}

let fetching = false;
async function loadTaps() {
  if (fetching) return;
  fetching = true;
  try {
    taps = await (await api("/api/v1/taps?tail=50")).json();
    renderTaps();
  } catch (e) { /* shown by api() on 401 */ }
  fetching = false;
}

let readers = [];
function start() {
  $("login").hidden = true;
  $("console").hidden = false;
  loadPolls();
  loadTaps();
  $("chart-poll").addEventListener("change", () => drawChart(true));
  const es = new EventSource("/api/v1/events");
  es.addEventListener("open", () => { $("status").className = "status live"; $("status").textContent = "live"; });
  es.addEventListener("error", () => { $("status").className = "status reconnecting"; $("status").textContent = "reconnecting…"; });
  es.addEventListener("status", ev => {
    const st = JSON.parse(ev.data);
    $("station").textContent = "pollstation · operator · " + st.id;
    readers = st.readers;
    renderReaders(readers);
    renderHotplug(st);
    renderHealth(st.health);
    loadPolls();
    const herd = !st.herd ? "" : ` · herd ${st.herd.peers.filter(p => p.state === "up").length}/${st.herd.peers.length} links up` +
      (st.herd.restoring ? " (restoring)" : "");
    $("status").textContent = `live · network ${st.network.state}${herd}` + (st.store.writable ? "" : " · STORE FAILING: " + st.store.error);
  });
  es.addEventListener("reader", ev => {
    const r = JSON.parse(ev.data);
    readers = readers.map(x => x.id === r.id ? r : x);
    renderReaders(readers);
  });
  es.addEventListener("tally", ev => {
    const t = JSON.parse(ev.data);
    tallies.set(t.poll, t);
    renderPolls();
    if (t.poll === $("chart-poll").value) drawChart(false);
  });
  es.addEventListener("tap", () => loadTaps());
}

if (token) start(); else showLogin();
