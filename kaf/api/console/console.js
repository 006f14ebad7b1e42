// Kaf console: the logs, a live tail of one log over Server-Sent Events,
// puts, archives, and charts of the _kaf statistics.  Plain DOM and SVG,
// no build step.  Every URL is relative to the page (/console), so the
// console also works behind a proxy that serves Kaf under a prefix.
"use strict";

const TOKEN_KEY = "kaf-token";
const MAX_SHOWN = 500;          // messages kept in the tail's list
const HISTORY = 60;             // _kaf records read for rates and charts
const REFRESH_MS = 5000;

const main = document.getElementById("main");
const statusLine = document.getElementById("status");
let view = { stop() {} };       // the shown view; stop() ends its timers and streams

// -- talking to Kaf -----------------------------------------------------------

class ApiError extends Error {
  constructor(status, reason) { super(reason); this.status = status; }
}

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (token()) h["Authorization"] = "Bearer " + token();
  return h;
}

// A refusal becomes an ApiError with the server's one-line reason.
async function api(path, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = headers(opts.headers);
  let response;
  try {
    response = await fetch(path, opts);
  } catch (e) {
    throw new ApiError(0, "the server cannot be reached (" + e.message + ")");
  }
  if (!response.ok) {
    const reason = (await response.text()).trim();
    throw new ApiError(response.status, reason || "HTTP " + response.status);
  }
  return response;
}

function explain(error) {
  if (error.status === 401) {
    return token() ? "The token was refused: check it and enter it again above."
                   : "This server wants a token: enter it above.";
  }
  if (error.status === 403) return "The token is not allowed to do that: " + error.message;
  return error.message;
}

function say(text, ok) {
  statusLine.textContent = text;
  statusLine.className = ok ? "ok" : "";
  statusLine.hidden = !text;
}

function fail(error) {
  if (error instanceof ApiError) say(explain(error)); else throw error;
}

async function logs() {
  return (await api("logs")).json();
}

// The newest _kaf records (at most HISTORY), oldest first.
async function history() {
  const probe = await api("get/_kaf?from=1&limit=1&format=json");
  const last = Number(probe.headers.get("X-Kaf-LastMsg") || 0);
  if (!last) return [];
  const from = Math.max(1, last - HISTORY + 1);
  const reply = await api("get/_kaf?from=" + from + "&limit=" + HISTORY + "&format=json");
  return (await reply.json()).filter(r => r && Array.isArray(r.logs));
}

// -- small DOM helpers --------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v !== false && v !== null && v !== undefined) el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) el.append(c);
  return el;
}

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  return el;
}

// A polyline of values scaled into a width × height box.
function line(values, width, height, top, cls) {
  const n = values.length;
  const points = values.map((v, i) => {
    const x = n === 1 ? width : (i * width) / (n - 1);
    const y = height - (top ? (v / top) * (height - 2) : 0) - 1;
    return x.toFixed(1) + "," + y.toFixed(1);
  });
  return svg("polyline", { points: points.join(" "), fill: "none", "stroke-width": "1.5",
                           class: cls, "vector-effect": "non-scaling-stroke" });
}

function sparkline(values, label) {
  const box = svg("svg", { class: "spark", viewBox: "0 0 100 20", preserveAspectRatio: "none",
                           role: "img", "aria-label": label });
  const top = Math.max(1, ...values);
  box.append(line(values.length ? values : [0], 100, 20, top, "puts"));
  return box;
}

function size(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let n = bytes, u = 0;
  while (n >= 1024 && u < units.length - 1) { n /= 1024; u++; }
  return (u ? n.toFixed(1) : String(n)) + " " + units[u];
}

function rate(perSecond) {
  return perSecond >= 100 ? Math.round(perSecond).toLocaleString("en") : perSecond.toFixed(1);
}

// Per log: puts and gets of each record, and the rates of the newest one.
function activity(records) {
  const byLog = new Map();
  records.forEach((record, i) => {
    const seconds = Math.max(1e-3, (Date.parse(record.end) - Date.parse(record.beg)) / 1000);
    for (const entry of record.logs) {
      if (!byLog.has(entry.name)) {
        byLog.set(entry.name, { puts: new Array(records.length).fill(0),
                                gets: new Array(records.length).fill(0), putRate: 0, getRate: 0 });
      }
      const a = byLog.get(entry.name);
      a.puts[i] = entry.puts || 0;
      a.gets[i] = entry.gets || 0;
      if (i === records.length - 1) {
        a.putRate = a.puts[i] / seconds;
        a.getRate = a.gets[i] / seconds;
      }
    }
  });
  return byLog;
}

// -- the list of logs ---------------------------------------------------------

function logsView() {
  const body = h("tbody", { id: "logs-body" });
  const empty = h("p", { id: "no-logs", class: "muted", hidden: true, text: "No logs yet." });
  main.replaceChildren(
    h("h2", { id: "logs-title", text: "Logs" }),
    h("div", { class: "table-wrap" },
      h("table", { id: "logs", "aria-labelledby": "logs-title" },
        h("thead", {}, h("tr", {},
          h("th", { scope: "col", text: "Log" }),
          h("th", { scope: "col", class: "n", text: "Last" }),
          h("th", { scope: "col", class: "n wide", text: "Messages" }),
          h("th", { scope: "col", class: "n", text: "Size" }),
          h("th", { scope: "col", class: "n", text: "Puts/s" }),
          h("th", { scope: "col", class: "n wide", text: "Gets/s" }),
          h("th", { scope: "col", class: "wide", text: "Puts per interval" }))),
        body)),
    empty);

  async function refresh() {
    try {
      const [list, records] = await Promise.all([logs(), history()]);
      const seen = activity(records);
      body.replaceChildren(...list.map(log => {
        const a = seen.get(log.name) || { puts: records.map(() => 0), putRate: 0, getRate: 0 };
        return h("tr", { "data-log": log.name },
          h("td", {}, h("a", { href: "#/log/" + encodeURIComponent(log.name), text: log.name }),
            log.error ? h("span", { class: "muted", text: " (" + log.error + ")" }) : null),
          h("td", { class: "n", text: String(log.last) }),
          h("td", { class: "n wide", text: String(log.count) }),
          h("td", { class: "n", text: size(log.bytes) }),
          h("td", { class: "n", text: rate(a.putRate) }),
          h("td", { class: "n wide", text: rate(a.getRate) }),
          h("td", { class: "wide" }, sparkline(a.puts, "puts per interval of " + log.name)));
      }));
      empty.hidden = list.length > 0;
      if (statusLine.className !== "ok") say("");
    } catch (e) { fail(e); }
  }

  refresh();
  const timer = setInterval(refresh, REFRESH_MS);
  return { stop() { clearInterval(timer); } };
}

// -- one log --------------------------------------------------------------------

const CONTROL = /[\u0000-\u0008\u000e-\u001f\u007f]/;

// How a message is shown: pretty JSON when it parses, text, or hex.
function render(bytes, isText) {
  if (isText) {
    const text = new TextDecoder().decode(bytes);
    if (!CONTROL.test(text)) {
      try {
        return { kind: "json", text: JSON.stringify(JSON.parse(text), null, 2) };
      } catch (e) {
        return { kind: "text", text };
      }
    }
  }
  const rows = [];
  for (let at = 0; at < bytes.length; at += 16) {
    const hex = Array.from(bytes.slice(at, at + 16), b => b.toString(16).padStart(2, "0"));
    rows.push(at.toString(16).padStart(6, "0") + "  " + hex.join(" "));
  }
  return { kind: "hex", text: rows.join("\n") };
}

function base64Bytes(text) {
  const raw = atob(text);
  return Uint8Array.from(raw, c => c.charCodeAt(0));
}

// Reads a text/event-stream reply, calling onEvent(id, event, data) per event.
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "", id = null, event = "message", data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buffer.search(/\r\n|\r|\n/)) >= 0) {
      const lineText = buffer.slice(0, nl);
      buffer = buffer.slice(nl + (buffer.startsWith("\r\n", nl) ? 2 : 1));
      if (lineText === "") {
        if (data.length) onEvent(id, event, data.join("\n"));
        event = "message"; data = [];
        continue;
      }
      if (lineText.startsWith(":")) continue;
      const colon = lineText.indexOf(":");
      const field = colon < 0 ? lineText : lineText.slice(0, colon);
      let value = colon < 0 ? "" : lineText.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "id") id = value;
      else if (field === "event") event = value;
      else if (field === "data") data.push(value);
    }
  }
}

function logView(name) {
  const path = encodeURIComponent(name);
  const list = h("ol", { id: "messages", "aria-label": "Messages of " + name, tabindex: "0" });
  const summary = h("p", { id: "log-summary", class: "muted" });
  const pause = h("button", { type: "button", id: "pause", text: "Pause" });
  const jumpTo = h("input", { id: "jump-to", type: "number", min: "1", inputmode: "numeric" });
  const putBody = h("textarea", { id: "put-body", rows: "3" });
  const putResult = h("p", { id: "put-result", role: "status" });
  const upto = h("input", { id: "archive-upto", type: "number", min: "1", inputmode: "numeric",
                            required: true });
  const question = h("p", { id: "archive-question" });
  const confirmBox = h("div", { id: "archive-confirm", class: "confirm", hidden: true }, question,
    h("button", { type: "button", id: "archive-yes", text: "Archive" }), " ",
    h("button", { type: "button", id: "archive-no", class: "secondary", text: "Cancel" }));
  const archiveResult = h("p", { id: "archive-result", role: "status" });

  main.replaceChildren(
    h("h2", { id: "log-title", text: "Log " + name }),
    summary,
    h("section", { "aria-labelledby": "tail-title" },
      h("h3", { id: "tail-title", text: "Live tail" }),
      h("form", { id: "jump", onsubmit: e => { e.preventDefault(); jump(); } },
        pause,
        h("label", { for: "jump-to", text: "Jump to message" }), jumpTo,
        h("button", { type: "submit", id: "jump-go", text: "Go" })),
      list),
    h("section", { "aria-labelledby": "put-title" },
      h("h3", { id: "put-title", text: "Put a message" }),
      h("form", { id: "put-form", onsubmit: e => { e.preventDefault(); put(); } },
        h("label", { for: "put-body", class: "muted", text: "Message (sent as UTF-8)" }),
        putBody,
        h("button", { type: "submit", id: "put-send", text: "Put" })),
      putResult),
    h("section", { "aria-labelledby": "archive-title" },
      h("h3", { id: "archive-title", text: "Archive" }),
      h("form", { id: "archive-form", onsubmit: e => { e.preventDefault(); askArchive(); } },
        h("label", { for: "archive-upto", text: "Archive messages up to" }), upto,
        h("button", { type: "submit", id: "archive-ask", text: "Archive…" })),
      confirmBox, archiveResult));

  let stream = null;            // AbortController of the running stream
  let lastShown = 0;
  let info = null;              // this log's entry of /logs

  async function describe() {
    try {
      info = (await logs()).find(l => l.name === name) || null;
      summary.textContent = info
        ? (info.count ? "messages " + info.first + "–" + info.last : "no messages, last " + info.last)
          + ", " + size(info.bytes)
        : "no such log yet: a put creates it";
    } catch (e) { fail(e); }
    return info;
  }

  function show(num, bytes, isText) {
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 8;
    const shown = render(bytes, isText);
    list.append(h("li", { "data-num": String(num), "data-kind": shown.kind },
      h("span", { class: "num", text: "#" + num }),
      h("span", { class: "kind", text: shown.kind }),
      h("pre", { text: shown.text })));
    while (list.children.length > MAX_SHOWN) list.firstElementChild.remove();
    lastShown = Math.max(lastShown, num);
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  async function follow(from) {
    stop();
    const controller = new AbortController();
    stream = controller;
    try {
      const response = await api("get/" + path + "?from=" + from,
        { headers: { Accept: "text/event-stream" }, signal: controller.signal });
      if (!(response.headers.get("Content-Type") || "").startsWith("text/event-stream")) {
        say("This server sends no event stream: the live tail needs a newer Kaf.");
        return;
      }
      await readEvents(response, (id, event, data) => {
        const num = Number(id);
        if (event === "base64") show(num, base64Bytes(data.replace(/\n/g, "")), false);
        else if (event === "message") show(num, new TextEncoder().encode(data), true);
      });
    } catch (e) {
      if (e.name !== "AbortError") fail(e);
    } finally {
      if (stream === controller) stream = null;
    }
  }

  function stop() {
    if (stream) { stream.abort(); stream = null; }
  }

  pause.addEventListener("click", () => {
    if (stream) {
      stop();
      pause.textContent = "Resume";
    } else {
      pause.textContent = "Pause";
      follow(lastShown + 1);
    }
  });

  function jump() {
    const n = Number(jumpTo.value);
    if (!Number.isInteger(n) || n < 1) { say("Jump to a message number of 1 or more."); return; }
    list.replaceChildren();
    lastShown = n - 1;
    pause.textContent = "Pause";
    follow(n);
  }

  async function put() {
    putResult.textContent = "";
    if (!putBody.value) { say("put: empty message"); return; }
    try {
      const reply = await api("put/" + path, { method: "POST", body: putBody.value,
        headers: { "Content-Type": "application/octet-stream" } });
      const num = (await reply.text()).trim();
      putResult.textContent = "Put as message " + num + ".";
      putBody.value = "";
      say("");
      describe();
    } catch (e) { fail(e); }
  }

  async function askArchive() {
    archiveResult.textContent = "";
    const n = Number(upto.value);
    if (!Number.isInteger(n) || n < 1) { say("Archive up to a message number of 1 or more."); return; }
    const now = await describe();
    if (!now) return;
    const stay = !now.count || n < now.first ? now.count : Math.max(0, now.last - n);
    question.textContent = "Archive the messages of " + name + " up to " + n + "? "
      + stay + (stay === 1 ? " message stays" : " messages stay") + " in the log; "
      + "the older ones move to an archive file.";
    confirmBox.hidden = false;
    document.getElementById("archive-yes").focus();
  }

  confirmBox.addEventListener("click", async e => {
    if (e.target.id === "archive-no") { confirmBox.hidden = true; upto.focus(); return; }
    if (e.target.id !== "archive-yes") return;
    confirmBox.hidden = true;
    try {
      const reply = await (await api("archive/" + path + "?upto=" + Number(upto.value),
                                     { method: "POST" })).json();
      archiveResult.textContent = reply.archive
        ? "Archived up to " + reply.upto + " into " + reply.archive + "; " + reply.kept + " kept."
        : "Nothing to archive up to " + reply.upto + "; " + reply.kept + " kept.";
      say("");
      describe();
    } catch (err) { fail(err); }
  });

  describe().then(found => {
    const last = found ? found.last : 0;
    lastShown = Math.max(0, last - 50);
    follow(lastShown + 1);
  });
  return { stop };
}

// -- _kaf statistics ---------------------------------------------------------

function statsView() {
  const charts = h("div", { id: "charts" });
  main.replaceChildren(
    h("h2", { id: "stats-title", text: "Statistics (_kaf)" }),
    h("p", { class: "muted", text: "Puts and gets per interval of the _kaf log, per log." }),
    h("p", { class: "legend" },
      h("span", { class: "swatch-puts", text: "— puts" }),
      h("span", { class: "swatch-gets", text: "— gets" })),
    charts);

  async function refresh() {
    try {
      const records = await history();
      const seen = activity(records);
      if (!seen.size) {
        charts.replaceChildren(h("p", { id: "no-stats", class: "muted",
          text: "No statistics yet: _kaf gets a record each interval in which logs were used." }));
        return;
      }
      charts.replaceChildren(...[...seen.entries()].sort().map(([log, a]) => {
        const top = Math.max(1, ...a.puts, ...a.gets);
        const chart = svg("svg", { class: "chart", viewBox: "0 0 400 100",
          preserveAspectRatio: "none", role: "img",
          "aria-label": "puts and gets per interval of " + log + ", at most " + top });
        chart.append(line(a.puts, 400, 100, top, "puts"), line(a.gets, 400, 100, top, "gets"));
        return h("section", { class: "stats", "data-log": log },
          h("h3", { text: log + " (at most " + top + " an interval)" }), chart);
      }));
    } catch (e) { fail(e); }
  }

  refresh();
  const timer = setInterval(refresh, REFRESH_MS);
  return { stop() { clearInterval(timer); } };
}

// -- routing and the token ----------------------------------------------------

function route() {
  view.stop();
  say("");
  const hash = location.hash || "#/";
  let which = "nav-logs";
  if (hash.startsWith("#/log/")) {
    view = logView(decodeURIComponent(hash.slice(6)));
    which = null;
  } else if (hash === "#/stats") {
    view = statsView();
    which = "nav-stats";
  } else {
    view = logsView();
  }
  for (const id of ["nav-logs", "nav-stats"]) {
    const a = document.getElementById(id);
    if (id === which) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
}

const tokenInput = document.getElementById("token");
tokenInput.value = token();
document.getElementById("token-form").addEventListener("submit", e => {
  e.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, tokenInput.value);
  route();
  say(tokenInput.value ? "Token set for this tab." : "", true);
});
document.getElementById("token-forget").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  tokenInput.value = "";
  route();
  say("Token forgotten.", true);
});
window.addEventListener("hashchange", route);
route();
