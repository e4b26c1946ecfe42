// authwire web view: plain DOM, no build step, no dependencies. Everything shown comes from attackers
// (user agents, paths, credential ids), so text goes in with textContent only, never parsed as HTML, and links
// are built from URLSearchParams.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const FILTER_NAMES = ["since", "outcome", "method", "reason", "os", "client_ip", "consumer", "credential", "route",
                      "syn_signature"];
const COLORS = ["#c0392b", "#2e86c1", "#d68910", "#7d3c98", "#17a589", "#566573", "#cb4335", "#1abc9c",
                "#a04000", "#5b2c6f", "#2874a6", "#b7950b", "#909497"];
const SPLIT_FILTER = {"auth.reason": "reason", "syn.signature": "syn_signature", "auth.outcome": "outcome"};

let split = "auth.reason";
let nextPage = "";

// --- small DOM helpers ----------------------------------------------------------------------------

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}

function inspectLink(ip) {
  const a = el("a", ip, "ip");
  a.href = "/inspect?" + new URLSearchParams({ip: ip}).toString();
  return a;
}

function cell(value) {
  const td = el("td");
  if (value instanceof Node) td.appendChild(value); else td.textContent = value === undefined ? "" : String(value);
  return td;
}

function table(id, headers, rows) {
  const t = document.getElementById(id);
  t.replaceChildren();
  const head = el("tr");
  for (const h of headers) head.appendChild(el("th", h));
  const thead = el("thead");
  thead.appendChild(head);
  const body = el("tbody");
  for (const row of rows) {
    const tr = el("tr");
    for (const v of row) tr.appendChild(cell(v));
    body.appendChild(tr);
  }
  if (!rows.length) {
    const tr = el("tr", null, "empty");
    const td = el("td", "nothing");
    td.colSpan = headers.length;
    tr.appendChild(td);
    body.appendChild(tr);
  }
  t.append(thead, body);
  return body;
}

function say(text) {
  const m = document.getElementById("message");
  m.textContent = text;
  m.hidden = !text;
}

// --- API ------------------------------------------------------------------------------------------

async function api(path, params) {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) if (v !== "" && v !== undefined && v !== null) query.set(k, v);
  const response = await fetch(path + (query.toString() ? "?" + query.toString() : ""),
                               {credentials: "same-origin", headers: {"Accept": "application/json"}});
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) {
    throw new Error("Not logged in (or the session ended): open a new login link — " +
                    "`authwire web-url --token-file PATH` prints one.");
  }
  if (!response.ok) {
    const names = (body.invalid_params || []).map(p => p.name + ": " + p.reason).join("; ");
    throw new Error(names || body.detail || ("HTTP " + response.status));
  }
  return body;
}

function short(enumName) {
  // "AUTH_OUTCOME_FAILURE" -> "failure" (the CLI's spelling)
  if (!enumName) return "";
  const parts = String(enumName).split("_");
  const known = {"AUTH_OUTCOME": 2, "AUTH_METHOD": 2, "FAILURE_REASON": 2, "JOIN_STATUS": 2, "ALERT_SEVERITY": 2,
                 "CONNECTION_STATE": 2, "GATEWAY_KIND": 2};
  const n = known[parts.slice(0, 2).join("_")] || 0;
  return parts.slice(n).join("_").toLowerCase();
}

function when(ts) {
  return ts ? ts.replace("T", " ").replace(/\.\d+Z$/, "Z") : "";
}

function ms(duration) {
  return duration ? (parseFloat(duration) * 1000).toFixed(2) : "";
}

// --- filters <-> the address bar ------------------------------------------------------------------

function currentFilters() {
  const params = new URLSearchParams(location.search);
  const f = {};
  for (const name of FILTER_NAMES) if (params.get(name)) f[name] = params.get(name);
  return f;
}

function showFilters(f) {
  const form = document.getElementById("filters");
  for (const name of FILTER_NAMES) {
    const input = form.elements[name];
    if (input.tagName === "SELECT" && f[name] && ![...input.options].some(o => o.value === f[name])) {
      input.appendChild(el("option", f[name])).value = f[name];
    }
    input.value = f[name] || "";
  }
}

function setFilters(f) {
  const query = new URLSearchParams();
  for (const name of FILTER_NAMES) if (f[name]) query.set(name, f[name]);
  history.pushState(null, "", "/" + (query.toString() ? "?" + query.toString() : ""));
  loadDashboard();
}

function readForm() {
  const form = document.getElementById("filters");
  const f = {};
  for (const name of FILTER_NAMES) {
    const v = form.elements[name].value.trim();
    if (v) f[name] = v;
  }
  return f;
}

// --- dashboard ------------------------------------------------------------------------------------

async function resolved(f) {
  // Without `since`, the view covers the last hour of data (the hour before the newest matching record):
  // recent on a live sidecar, still everything of a demo store opened days later, and never a scan of a
  // whole multi-million-record store for the default page.
  if (f.since) return f;
  const newest = (await api("/v1/records", Object.assign({}, f, {limit: 1}))).records || [];
  if (!newest.length) return f;
  const since = new Date(Date.parse(newest[0].event.start_time) - 3600 * 1000).toISOString();
  return Object.assign({}, f, {since: since});
}

async function loadDashboard() {
  const f = currentFilters();
  showFilters(f);
  say("");
  try {
    const q = await resolved(f);
    await Promise.all([loadChart(q), loadTops(q, f), loadAlerts(), loadRecords(q, false)]);
  } catch (err) {
    say(err.message);
  }
}

async function loadChart(q) {
  const failures = Object.assign({}, q, split === "auth.outcome" ? {} : {outcome: "failure"});
  const body = await api("/v1/timeline", Object.assign({split_by: split, buckets: 40}, failures));
  drawChart(body, currentFilters());  // a click filters on what the address bar holds, plus the value
}

function drawChart(body, f) {
  const box = document.getElementById("chart");
  const legend = document.getElementById("legend");
  box.replaceChildren();
  legend.replaceChildren();
  const buckets = body.buckets || [];
  const totals = new Map();
  for (const b of buckets) for (const g of b.groups) totals.set(g.values[0], (totals.get(g.values[0]) || 0) + +g.count);
  const series = [...totals.keys()].sort((a, b) => totals.get(b) - totals.get(a) || (a < b ? -1 : a > b ? 1 : 0));
  const color = new Map(series.map((s, i) => [s, COLORS[i % COLORS.length]]));
  const W = 960, H = 240, left = 44, bottom = 28, top = 8;
  const chart = svg("svg", {viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img", "aria-label": "failures over time"});
  const max = Math.max(1, ...buckets.map(b => b.groups.reduce((n, g) => n + +g.count, 0)));
  const slot = (W - left - 8) / Math.max(1, buckets.length);
  const y = v => H - bottom - (H - bottom - top) * v / max;
  for (const tick of [0, Math.ceil(max / 2), max]) {
    chart.appendChild(svg("line", {x1: left, x2: W - 8, y1: y(tick), y2: y(tick), class: "grid"}));
    const label = svg("text", {x: left - 6, y: y(tick) + 4, "text-anchor": "end", class: "axis"});
    label.textContent = String(tick);
    chart.appendChild(label);
  }
  buckets.forEach((b, i) => {
    let base = 0;
    const x = left + i * slot + 1;
    for (const g of [...b.groups].sort((p, q) => series.indexOf(p.values[0]) - series.indexOf(q.values[0]))) {
      const n = +g.count;
      const value = g.values[0];
      const rect = svg("rect", {x: x, width: Math.max(1, slot - 2), y: y(base + n), height: y(base) - y(base + n),
                                fill: color.get(value), class: "bar", "data-value": value});
      const tip = svg("title");
      tip.textContent = `${when(b.start)}  ${value || "(none)"}: ${n}`;
      rect.appendChild(tip);
      rect.addEventListener("click", () => filterOn(value, f));
      chart.appendChild(rect);
      base += n;
    }
    if (i % Math.ceil(buckets.length / 6) === 0) {
      const label = svg("text", {x: x, y: H - 8, class: "axis"});
      const width = body.bucket_seconds;
      const text = b.start.replace("T", " ");  // 2026-12-01 09:50:31.120Z
      label.textContent = width >= 60 ? text.slice(5, 16) : text.slice(11, width >= 1 ? 19 : 23);
      chart.appendChild(label);
    }
  });
  if (!buckets.length) {
    const none = svg("text", {x: W / 2, y: H / 2, "text-anchor": "middle", class: "axis"});
    none.textContent = "no failures match";
    chart.appendChild(none);
  }
  box.appendChild(chart);
  for (const s of series) {
    const li = el("li");
    const swatch = el("span", null, "swatch");
    swatch.style.background = color.get(s);  // CSSOM, allowed by the CSP (no inline style attribute)
    const button = el("button", `${s || "(none)"} (${totals.get(s)})`);
    button.type = "button";
    button.addEventListener("click", () => filterOn(s, f));
    li.append(swatch, button);
    legend.appendChild(li);
  }
}

function filterOn(value, f) {
  if (!value || value === "(other)") return;
  const next = Object.assign({}, f, {[SPLIT_FILTER[split]]: value});
  if (split !== "auth.outcome") next.outcome = "failure";
  setFilters(next);
}

async function loadTops(q, f) {
  const failing = Object.assign({}, q, {outcome: q.outcome || "failure", limit: 10});
  const [stacks, ips, creds] = await Promise.all([
    api("/v1/records", Object.assign({group_by: "syn.signature,syn.os_hint"}, failing)),
    api("/v1/records", Object.assign({group_by: "client_ip"}, failing)),
    api("/v1/records", Object.assign({group_by: "credential_id,auth.method"}, failing)),
  ]);
  const stackRows = (stacks.groups || []).map(g => {
    const a = el("a", g.values[0] || "(no SYN seen)", "sig");
    if (g.values[0]) {
      a.href = "/?" + new URLSearchParams(Object.assign({}, f, {syn_signature: g.values[0], outcome: "failure"}));
    }
    return [a, g.values[1], g.count];
  });
  table("top-stacks", ["SYN signature", "os", "failures"], stackRows);
  table("top-ips", ["client", "failures"], (ips.groups || []).map(g => [inspectLink(g.values[0]), g.count]));
  table("top-credentials", ["credential id", "method", "failures"],
        (creds.groups || []).map(g => [g.values[0] || "(none)", g.values[1], g.count]));
}

async function loadAlerts() {
  const body = await api("/v1/alerts", {limit: 20});
  alertTable("alerts", body.alerts || []);
}

function alertTable(id, alerts) {
  table(id, ["last seen", "detection", "severity", "summary", "clients", "credentials", "stack"], alerts.map(a => {
    const clients = el("span");
    for (const ip of (a.clients || []).slice(0, 8)) clients.append(inspectLink(ip), " ");
    return [when(a.last_time), a.detection, short(a.severity), a.summary, clients,
            (a.credentials || []).slice(0, 5).join(", "), a.stack || ""];
  }));
}

const RECORD_HEADERS = ["time", "client", "method", "path", "status", "auth", "outcome", "reason", "consumer",
                        "credential", "os", "SYN signature", "rtt ms", "user agent", "request id"];

function recordRow(r) {
  const e = r.event || {}, a = e.auth || {}, h = e.http || {}, c = r.connection || {}, s = c.syn || {};
  return [when(e.start_time), inspectLink((e.client || {}).ip || ""), h.method, h.path, h.status, short(a.method),
          short(a.outcome), short(a.reason), a.consumer, a.credential_id, s.os_hint, s.signature,
          ms(c.handshake_rtt), h.user_agent, e.request_id];
}

async function loadRecords(f, more) {
  const params = Object.assign({limit: 50}, f);
  if (more && nextPage) params.page_token = nextPage;
  const body = await api("/v1/records", params);
  const rows = (body.records || []).map(recordRow);
  if (more) {
    const tbody = document.querySelector("#records tbody");
    for (const row of rows) {
      const tr = el("tr");
      for (const v of row) tr.appendChild(cell(v));
      tbody.appendChild(tr);
    }
  } else {
    table("records", RECORD_HEADERS, rows);
  }
  nextPage = body.next_page_token || "";
  document.getElementById("more").hidden = !nextPage;
  document.getElementById("records-count").textContent =
    `${document.querySelectorAll("#records tbody tr:not(.empty)").length} shown, newest first`;
}

// --- inspect --------------------------------------------------------------------------------------

async function loadInspect() {
  const ip = new URLSearchParams(location.search).get("ip") || "";
  document.getElementById("inspect-ip").textContent = ip;
  document.getElementById("inspect-all").href = "/?" + new URLSearchParams({client_ip: ip}).toString();
  document.title = "authwire: " + ip;
  try {
    const b = await api("/v1/inspect", {ip: ip});
    document.getElementById("inspect-facts").textContent =
      `${b.requests} requests · first seen ${when(b.first_seen) || "never"} · last seen ${when(b.last_seen) || "never"}`;
    const groups = (id, headers, list) => table(id, headers, (list || []).map(g => [...g.values, g.count]));
    groups("inspect-outcomes", ["outcome", "requests"], b.outcomes);
    groups("inspect-stacks", ["SYN signature", "os", "hops", "requests"], b.stacks);
    groups("inspect-credentials", ["credential id", "method", "outcome", "requests"], b.credentials);
    groups("inspect-routes", ["route", "outcome", "requests"], b.routes);
    groups("inspect-reasons", ["outcome", "reason", "requests"], b.reasons);
    table("inspect-agents", ["user agent", "requests (recent)"], (b.user_agents || []).map(u => [u.user_agent, u.count]));
    alertTable("inspect-alerts", b.alerts || []);
    const live = new Set((b.live_connections || []).map(c => c.uid));
    table("inspect-connections", ["uid", "client port", "SYN signature", "os", "ttl", "mss", "wscale", "rtt ms",
                                  "state", "history", "community id"],
          [...(b.live_connections || []), ...(b.connections || []).filter(c => !live.has(c.uid))].map(c => {
            const s = c.syn || {};
            const wscale = s.window_scale === undefined ? "" : (s.window_scale < 0 ? "none" : s.window_scale);
            return [c.uid, (c.client || {}).port, s.signature, s.os_hint, s.ttl, s.mss, wscale,
                    ms(c.handshake_rtt), short(c.state), c.history, c.community_id];
          }));
    table("inspect-records", RECORD_HEADERS, (b.recent || []).map(recordRow));
  } catch (err) {
    say(err.message);
  }
}

async function loadFacts() {
  try {
    const s = await api("/v1/stats");
    document.getElementById("store-facts").textContent =
      `${s.store_records || 0} records · inspector ${s.inspector_running ? "running" : "off"}`;
  } catch (err) {
    say(err.message);
  }
}

// --- start ----------------------------------------------------------------------------------------

function start() {
  loadFacts();
  if (location.pathname === "/inspect") {
    document.getElementById("inspect").hidden = false;
    loadInspect();
    return;
  }
  document.getElementById("dashboard").hidden = false;
  document.getElementById("filters").addEventListener("submit", event => {
    event.preventDefault();
    setFilters(readForm());
  });
  document.getElementById("clear").addEventListener("click", () => setFilters({}));
  document.getElementById("more").addEventListener("click", () => resolved(currentFilters()).then(
    q => loadRecords(q, true)).catch(err => say(err.message)));
  for (const button of document.querySelectorAll("[data-split]")) {
    button.addEventListener("click", () => {
      split = button.dataset.split;
      for (const b of document.querySelectorAll("[data-split]")) b.classList.toggle("on", b === button);
      resolved(currentFilters()).then(loadChart).catch(err => say(err.message));
    });
  }
  window.addEventListener("popstate", loadDashboard);
  loadDashboard();
}

document.addEventListener("DOMContentLoaded", start);
