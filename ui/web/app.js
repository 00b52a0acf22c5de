// Live results: draws polls from the JSON API, then follows /api/v1/events.
// EventSource reconnects by itself (sending Last-Event-ID: the server first
// replays the taps missed); after each (re)connect the server sends a fresh
// status + tallies burst, so the page resyncs without reloading.
//
// The kiosk view (?kiosk=1) is for a projector: the shown poll fills the
// screen, the bar of each counted vote pulses, a banner thanks the voter
// and names the answer, a QR code leads phones to this page, and
// ?rotate=SECONDS cycles through the open polls (the active one first).
"use strict";
const params = new URLSearchParams(location.search);
const kiosk = params.get("kiosk") === "1";
const onlyPoll = params.get("poll");
if (kiosk) document.body.classList.add("kiosk");

// Polls with more answers than this are drawn as a word cloud in the kiosk.
const KIOSK_MAX_BARS = 24;
const PULSE_MS = 1100;
const THANKS_MS = 3000;
const CHART_EVERY_MS = 3000;

const state = { polls: [], tallies: new Map(), active: null, readers: [], rotation: 0 };
// The room's words and setting (GET /api/v1/room); English until it answers.
let room = { words: null, qr: false, public_url: "", rotate_s: 0 };
const w = key => (room.words && room.words[key]) || key;
const votes = n => `${n} ${n === 1 ? w("vote") : w("votes")}`;

const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

function rotateSeconds() {
  const q = Number(params.get("rotate"));
  return Number.isFinite(q) && q > 0 ? q : (room.rotate_s || 0);
}

// The polls the kiosk cycles through: the active one, then the other open ones.
function rotationOrder() {
  const open = state.polls.filter(p => p.open);
  const active = state.polls.find(p => p.id === state.active);
  const rest = open.filter(p => p !== active);
  return active ? [active, ...rest] : rest;
}

function shownPolls() {
  if (onlyPoll) return state.polls.filter(p => p.id === onlyPoll);
  if (kiosk) {
    if (rotateSeconds() > 0) {
      const order = rotationOrder();
      if (order.length) return [order[state.rotation % order.length]];
    }
    return state.polls.filter(p => p.id === state.active);
  }
  return state.polls;
}

const asCloud = p => p.display === "cloud" || (kiosk && p.answers.length > KIOSK_MAX_BARS);

function pollSection(p) {
  const sec = el("section", "poll");
  sec.dataset.poll = p.id;
  const head = el("div", "head");
  head.append(el("h2", null, p.question), el("div", "meta"));
  sec.append(head);
  if (asCloud(p)) {
    const cloud = el("div", "cloud");
    for (const a of p.answers) {
      const word = el("span", "word");
      word.dataset.answer = a.id;
      word.append(el("span", "w", a.label), el("span", "n", "0"));
      cloud.append(word);
    }
    sec.append(cloud);
  } else {
    const list = el("div", "answers" + (p.answers.length > 12 ? " many" : ""));
    // The kiosk's grid: up to 8 rows a column, the rows filling the screen.
    const cols = Math.max(1, Math.ceil(p.answers.length / 8));
    list.style.setProperty("--cols", cols);
    list.style.setProperty("--rows", Math.max(1, Math.ceil(p.answers.length / cols)));
    for (const a of p.answers) {
      const row = el("div", "answer");
      row.dataset.answer = a.id;
      const label = el("span", "label", a.label);
      label.title = a.label;
      const track = el("div", "track");
      track.append(el("div", "fill"));
      row.append(label, track, el("span", "num", "0"));
      list.append(row);
    }
    sec.append(list);
  }
  sec.append(el("div", "by-station"));
  if (!kiosk) {
    const fig = el("figure", "timeline");
    fig.append(el("figcaption", null, w("over_time")), el("div", "chart"));
    const dl = el("a", "download", w("download_image"));
    dl.href = `/api/v1/polls/${encodeURIComponent(p.id)}/tally.svg`;
    dl.download = `${p.id}.svg`;
    sec.append(fig, dl);
  }
  return sec;
}

function render() {
  const main = document.getElementById("polls");
  const shown = shownPolls();
  // Rebuild the structure only when the set of polls changes, so bars animate.
  const key = shown.map(p => `${p.id}:${p.answers.length}:${asCloud(p)}`).join(",") + (room.words ? "+w" : "");
  if (main.dataset.key !== key) {
    main.replaceChildren(...shown.map(pollSection));
    main.dataset.key = key;
    for (const p of shown) chart(p.id, true);
  }
  for (const p of shown) {
    const sec = main.querySelector(`section[data-poll="${CSS.escape(p.id)}"]`);
    const t = state.tallies.get(p.id);
    const total = t ? t.total : 0;
    sec.classList.toggle("active", p.id === state.active);
    const flags = [p.id === state.active ? w("active") : null, p.open ? w("open") : w("closed"), p.rule].filter(Boolean);
    sec.querySelector(".meta").textContent = `${votes(total)} · ${flags.join(" · ")}`;
    // In a herd: where the votes were cast ("from hall-a 120 · hall-b 80").
    const by = Object.entries((t && t.by_station) || {});
    const byLine = sec.querySelector(".by-station");
    byLine.hidden = by.length < 2;
    byLine.textContent = by.length < 2 ? "" : `${w("from")} ` + by.map(([s, n]) => `${s} ${n}`).join(" · ");
    const countOf = a => t ? (t.answers.find(x => x.id === a.id) || { count: 0 }).count : 0;
    if (asCloud(p)) {
      const max = Math.max(1, ...p.answers.map(countOf));
      for (const a of p.answers) {
        const word = sec.querySelector(`.word[data-answer="${CSS.escape(a.id)}"]`);
        const count = countOf(a);
        // Sizes follow the counts (by area: the square root), 1× to 4×.
        word.style.fontSize = (1 + 3 * Math.sqrt(count / max)).toFixed(3) + "em";
        word.querySelector(".n").textContent = count;
        word.dataset.count = count;
        word.title = `${a.label}: ${votes(count)}`;
      }
      continue;
    }
    for (const a of p.answers) {
      const row = sec.querySelector(`[data-answer="${CSS.escape(a.id)}"]`);
      const count = countOf(a);
      const pct = total ? Math.round((count / total) * 100) : 0;
      row.querySelector(".fill").style.width = pct + "%";
      row.querySelector(".num").textContent = `${count} · ${pct}%`;
      row.dataset.count = count;
    }
  }
  const readers = document.getElementById("readers");
  readers.replaceChildren(...state.readers.map(r => {
    const d = el("span", "dot " + r.status, r.id);
    d.title = r.last_error || r.status;
    return d;
  }));
}

// The votes-over-time chart of a poll (SVG drawn by the station), redrawn
// at most every few seconds while votes come in.
const charts = new Map();
function chart(pollId, now) {
  if (kiosk) return;
  const c = charts.get(pollId) || { timer: null, last: 0 };
  charts.set(pollId, c);
  if (c.timer) return;
  const wait = now ? 0 : Math.max(0, c.last + CHART_EVERY_MS - Date.now());
  c.timer = setTimeout(async () => {
    c.timer = null;
    c.last = Date.now();
    const box = document.querySelector(`section[data-poll="${CSS.escape(pollId)}"] .chart`);
    if (!box) return;
    try {
      const r = await fetch(`/api/v1/polls/${encodeURIComponent(pollId)}/timeline.svg`);
      if (r.ok) box.innerHTML = await r.text();
    } catch (e) { /* the next tally tries again */ }
  }, wait);
}

// A counted vote lights up its answer for about a second; a refused one
// marks nothing.
function pulse(tap) {
  if (!tap.counted) return;
  const sec = document.querySelector(`section[data-poll="${CSS.escape(tap.poll)}"]`);
  const target = sec && sec.querySelector(`[data-answer="${CSS.escape(tap.answer)}"]`);
  if (!target) return;
  target.classList.remove("pulse");
  void target.offsetWidth; // restart the animation
  target.classList.add("pulse");
  clearTimeout(target.pulseTimer);
  target.pulseTimer = setTimeout(() => target.classList.remove("pulse"), PULSE_MS);
}

// The kiosk's banner after a tap in the shown poll: "Thank you! · Pizza".
let thanksTimer = null;
function thanks(tap) {
  if (!kiosk || !shownPolls().some(p => p.id === tap.poll)) return;
  const p = state.polls.find(x => x.id === tap.poll);
  const a = p && p.answers.find(x => x.id === tap.answer);
  const banner = document.getElementById("thanks");
  const first = tap.name ? tap.name.split(" ")[0] : null;
  banner.textContent = tap.counted
    ? (first ? `${w("thank_you_name")}${first}!` : w("thank_you")) + (a ? ` · ${a.label}` : "")
    : w("already_voted");
  banner.className = "thanks " + (tap.counted ? "counted" : "refused");
  banner.hidden = false;
  clearTimeout(thanksTimer);
  thanksTimer = setTimeout(() => { banner.hidden = true; }, THANKS_MS);
}

async function loadPolls() {
  const r = await fetch("/api/v1/polls");
  if (!r.ok) throw new Error("polls: " + r.status);
  state.polls = await r.json();
  const a = state.polls.find(p => p.active);
  state.active = a ? a.id : null;
}

async function loadRoom() {
  try {
    const r = await fetch("/api/v1/room");
    if (r.ok) room = await r.json();
  } catch (e) { /* English, no QR code */ }
  document.documentElement.lang = room.language || "en";
  const qr = document.getElementById("qr");
  qr.hidden = !(kiosk && room.qr);
  document.body.classList.toggle("has-qr", !qr.hidden);
  if (!qr.hidden) {
    qr.querySelector("img").src = "/api/v1/qr.svg";
    qr.querySelector("img").alt = `${w("follow")}: ${room.public_url}`;
    qr.querySelector("figcaption").textContent = room.public_url;
  }
  document.getElementById("hint").textContent = kiosk ? w("footer") : "";
  const secs = rotateSeconds();
  if (kiosk && secs > 0) setInterval(() => { state.rotation += 1; render(); }, secs * 1000);
}

function setStatus(cls, text) {
  const s = document.getElementById("status");
  s.className = "status " + cls;
  s.textContent = text;
}

// Results heard from other stations or sites over XMPP, marked as such.
function renderRemote(remote) {
  const box = document.getElementById("remote");
  box.hidden = remote.length === 0;
  box.replaceChildren(...remote.map(r => {
    const sec = document.createElement("section");
    sec.className = "poll remote";
    const h = document.createElement("h2");
    h.textContent = `${r.question} (remote: ${r.source})`;
    const p = document.createElement("p");
    p.className = "total";
    p.textContent = r.answers.map(([, title, count]) => `${title} ${count}`).join(" · ") + ` — ${votes(r.total)}`;
    sec.append(h, p);
    return sec;
  }));
}

// Screen readers hear the tally politely, at most once every 10 s (the
// latest counts of the polls that changed), never once per vote.
const ANNOUNCE_EVERY_MS = 10000;
const changed = new Set();
let lastAnnounced = 0;
let announceTimer = null;
function announce(pollId) {
  if (!shownPolls().some(p => p.id === pollId)) return;
  changed.add(pollId);
  if (announceTimer) return;
  const wait = Math.max(0, lastAnnounced + ANNOUNCE_EVERY_MS - Date.now());
  announceTimer = setTimeout(() => {
    announceTimer = null;
    lastAnnounced = Date.now();
    const parts = [];
    for (const p of state.polls.filter(p => changed.has(p.id))) {
      const t = state.tallies.get(p.id);
      if (!t) continue;
      const counts = p.answers.map(a => `${a.label} ${(t.answers.find(x => x.id === a.id) || { count: 0 }).count}`);
      parts.push(`${p.question} ${counts.join(", ")}; ${votes(t.total)}.`);
    }
    changed.clear();
    document.getElementById("announce").textContent = parts.join(" ");
  }, wait);
}

function connect() {
  const es = new EventSource("/api/v1/events");
  es.addEventListener("open", () => setStatus("live", w("live")));
  es.addEventListener("error", () => setStatus("reconnecting", w("reconnecting")));
  es.addEventListener("status", async ev => {
    const st = JSON.parse(ev.data);
    document.getElementById("station").textContent = "pollstation · " + st.id;
    state.readers = st.readers;
    // Poll state (open, active) may have changed: reload the definitions.
    try { await loadPolls(); } catch (e) { /* keep what we have */ }
    render();
    const up = st.readers.filter(r => r.status === "connected").length;
    const xmpp = st.xmpp.state === "disabled" ? "" :
      ` · XMPP ${st.xmpp.state}` + (st.xmpp.outbox > 0 ? ` (${st.xmpp.outbox} queued)` : "");
    const herd = !st.herd ? "" : st.herd.restoring ? " · herd: restoring" :
      ` · herd ${st.herd.peers.filter(p => p.state === "up").length}/${st.herd.peers.length}`;
    setStatus("live", `${w("live")} · ${w("readers")} ${up}/${st.readers.length} · ${w("network")} ${st.network.state}${xmpp}${herd}` +
      (st.store.writable ? "" : ` · ${w("store_failing")}`));
    renderRemote(st.remote || []);
  });
  es.addEventListener("tally", ev => {
    const t = JSON.parse(ev.data);
    state.tallies.set(t.poll, t);
    render();
    announce(t.poll);
    chart(t.poll, false);
  });
  es.addEventListener("tap", ev => {
    const tap = JSON.parse(ev.data);
    pulse(tap);
    thanks(tap);
  });
  es.addEventListener("reader", ev => {
    const r = JSON.parse(ev.data);
    state.readers = state.readers.map(x => x.id === r.id ? r : x);
    render();
  });
}

loadRoom().then(loadPolls).then(render).catch(() => {}).finally(connect);
