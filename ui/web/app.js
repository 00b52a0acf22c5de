// Live results: draws polls from the JSON API, then follows /api/v1/events.
// EventSource reconnects by itself (sending Last-Event-ID: the server first
// replays the taps missed); after each (re)connect the server sends a fresh
// status + tallies burst, so the page resyncs without reloading.
"use strict";
const params = new URLSearchParams(location.search);
const kiosk = params.get("kiosk") === "1";
const onlyPoll = params.get("poll");
if (kiosk) document.body.classList.add("kiosk");

const state = { polls: [], tallies: new Map(), active: null, readers: [] };
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

function shownPolls() {
  if (onlyPoll) return state.polls.filter(p => p.id === onlyPoll);
  if (kiosk) return state.polls.filter(p => p.id === state.active);
  return state.polls;
}

function render() {
  const main = document.getElementById("polls");
  const shown = shownPolls();
  // Rebuild the structure only when the set of polls changes, so bars animate.
  const key = shown.map(p => p.id + ":" + p.answers.length).join(",");
  if (main.dataset.key !== key) {
    main.replaceChildren(...shown.map(p => {
      const sec = el("section", "poll");
      sec.dataset.poll = p.id;
      sec.append(el("h2", null, p.question), el("div", "meta"));
      const list = el("div", "answers" + (p.answers.length > 12 ? " many" : ""));
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
      sec.append(list, el("div", "by-station"));
      return sec;
    }));
    main.dataset.key = key;
  }
  for (const p of shown) {
    const sec = main.querySelector(`section[data-poll="${CSS.escape(p.id)}"]`);
    const t = state.tallies.get(p.id);
    const total = t ? t.total : 0;
    sec.classList.toggle("active", p.id === state.active);
    const flags = [p.id === state.active ? "active" : null, p.open ? "open" : "closed", p.rule].filter(Boolean);
    sec.querySelector(".meta").textContent = `${total} vote${total === 1 ? "" : "s"} · ${flags.join(" · ")}`;
    // In a herd: where the votes were cast ("from hall-a 120 · hall-b 80").
    const by = Object.entries((t && t.by_station) || {});
    const byLine = sec.querySelector(".by-station");
    byLine.hidden = by.length < 2;
    byLine.textContent = by.length < 2 ? "" : "from " + by.map(([s, n]) => `${s} ${n}`).join(" · ");
    for (const a of p.answers) {
      const row = sec.querySelector(`[data-answer="${CSS.escape(a.id)}"]`);
      const count = t ? (t.answers.find(x => x.id === a.id) || { count: 0 }).count : 0;
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

async function loadPolls() {
  const r = await fetch("/api/v1/polls");
  if (!r.ok) throw new Error("polls: " + r.status);
  state.polls = await r.json();
  const a = state.polls.find(p => p.active);
  state.active = a ? a.id : null;
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
    p.textContent = r.answers.map(([, title, count]) => `${title} ${count}`).join(" · ") + ` — ${r.total} votes`;
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
      parts.push(`${p.question} ${counts.join(", ")}; ${t.total} vote${t.total === 1 ? "" : "s"}.`);
    }
    changed.clear();
    document.getElementById("announce").textContent = parts.join(" ");
  }, wait);
}

function connect() {
  const es = new EventSource("/api/v1/events");
  es.addEventListener("open", () => setStatus("live", "live"));
  es.addEventListener("error", () => setStatus("reconnecting", "reconnecting…"));
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
    setStatus("live", `live · readers ${up}/${st.readers.length} · network ${st.network.state}${xmpp}${herd}` +
      (st.store.writable ? "" : " · STORE FAILING"));
    renderRemote(st.remote || []);
  });
  es.addEventListener("tally", ev => {
    const t = JSON.parse(ev.data);
    state.tallies.set(t.poll, t);
    render();
    announce(t.poll);
  });
  es.addEventListener("reader", ev => {
    const r = JSON.parse(ev.data);
    state.readers = state.readers.map(x => x.id === r.id ? r : x);
    render();
  });
}

loadPolls().then(render).catch(() => {}).finally(connect);
