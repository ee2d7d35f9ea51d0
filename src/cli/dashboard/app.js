// Strata dashboard: plain JavaScript, no framework, no build step. Every figure comes from the
// broker's /api/ (the admin code path the CLI uses). Pages are hash routes so that the back
// button, bookmarks and the keyboard work: #/overview, #/streams, #/streams/<name>[/<partition>],
// #/consumers, #/browse?stream=<name>.
"use strict";

const TOKEN_KEY = "strata.token";
const view = document.getElementById("view");
const statusLine = document.getElementById("status");
let timer = null; // the current page's refresh
let generation = 0; // bumps on every navigation: late answers of a left page are dropped

// ---------------------------------------------------------------------------------------
// Helpers

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function bytes(n) {
  if (n < 1024) return n + " B";
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit++; }
  return value.toFixed(value < 10 ? 2 : 1) + " " + units[unit];
}

function time(ms) {
  if (ms === null || ms === undefined) return "—";
  return new Date(ms).toISOString().replace("T", " ");
}

// A number cell: the exact figure as text and in data-value; `field` names it for tests and
// for styling.
function num(field, value, shown) {
  return el("td", { class: "num", "data-field": field, "data-value": value }, shown === undefined ? value : shown);
}

function table(headers, rows, attrs) {
  return el("div", { class: "table-wrap" },
    el("table", attrs || {},
      el("thead", {}, el("tr", {}, headers.map((h) => {
        const [label, numeric] = Array.isArray(h) ? h : [h, false];
        return el("th", { scope: "col", class: numeric ? "num" : null }, label);
      }))),
      el("tbody", {}, rows)));
}

function setStatus(text, bad) {
  statusLine.textContent = text;
  statusLine.classList.toggle("bad", !!bad);
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, body) {
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers["Authorization"] = "Bearer " + token;
  const init = { headers, cache: "no-store" };
  if (body !== undefined) {
    init.method = "POST";
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = { error: text }; }
  if (response.status === 401) throw new ApiError(401, "This broker wants its HTTP token ([http] token_file).");
  if (!response.ok) throw new ApiError(response.status, (data && data.error) || response.statusText);
  return data;
}

// Shows `error` in place of the page; a 401 shows the token form.
function showError(error, into) {
  const target = into || view;
  if (error instanceof ApiError && error.status === 401) {
    stopTimer();
    view.replaceChildren(loginForm(error.message));
    const input = document.getElementById("token");
    if (input) input.focus();
    setStatus("token needed", true);
    return;
  }
  target.replaceChildren(el("p", { class: "error", role: "alert" }, String(error.message || error)));
  setStatus("error", true);
}

function loginForm(message) {
  const input = el("input", { id: "token", type: "password", autocomplete: "current-password", required: true });
  return el("form", {
    class: "inline", id: "login",
    onsubmit: (event) => {
      event.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      route();
    },
  },
  el("p", {}, message, " It is kept in this tab only (sessionStorage) and sent as a bearer header."),
  el("label", { for: "token" }, "Token", input),
  el("button", { type: "submit" }, "Sign in"));
}

// Asks before a change; resolves to whether the operator confirmed.
function confirmAction(title, body) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-body").replaceChildren(body);
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
  });
}

function stopTimer() {
  if (timer) clearInterval(timer);
  timer = null;
}

// Runs `update` now and every `ms` while the page stays; marks the page loaded for tests and
// for screen readers.
function every(ms, update) {
  const mine = generation;
  const run = async () => {
    if (mine !== generation) return;
    try {
      await update(() => mine !== generation);
      if (mine === generation) {
        view.dataset.loaded = String(Number(view.dataset.loaded || 0) + 1);
        setStatus("updated " + new Date().toLocaleTimeString());
      }
    } catch (error) {
      if (mine !== generation) return;
      // An unknown stream or a missing token replaces the page; anything else (the broker
      // restarting, say) is shown in the status line while the page keeps its last figures
      // and tries again at the next tick.
      if (error.status === 401 || error.status === 404) {
        stopTimer();
        showError(error);
      } else {
        setStatus("not updated: " + error.message, true);
      }
    }
  };
  run();
  timer = setInterval(run, ms);
}

// ---------------------------------------------------------------------------------------
// Overview

const samples = []; // {t, received, sent}: the live chart's samples

function chart(samples) {
  const width = 600, height = 160, pad = 28;
  const rates = [];
  for (let i = 1; i < samples.length; i++) {
    const dt = (samples[i].t - samples[i - 1].t) / 1000;
    if (dt <= 0) continue;
    rates.push({
      in: Math.max(0, (samples[i].received - samples[i - 1].received) / dt),
      out: Math.max(0, (samples[i].sent - samples[i - 1].sent) / dt),
    });
  }
  const max = Math.max(1, ...rates.map((r) => Math.max(r.in, r.out)));
  // The newest rate at the right edge ("now"), one step per sample to the left.
  const step = (width - pad - 4) / 59;
  const x = (i) => width - 4 - (rates.length - 1 - i) * step;
  const y = (v) => height - 18 - (v / max) * (height - 30);
  const line = (key) => rates.map((r, i) => x(i) + "," + y(r[key]).toFixed(1)).join(" ");
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("role", "img");
  const last = rates[rates.length - 1] || { in: 0, out: 0 };
  svg.setAttribute("aria-label", `Messages per second over the last two minutes: now ${last.in.toFixed(1)} in, ${last.out.toFixed(1)} out`);
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    svg.append(node);
  };
  add("line", { class: "axis", x1: pad, y1: height - 18, x2: width, y2: height - 18 });
  add("text", { x: 2, y: 12 }, max.toFixed(max < 10 ? 1 : 0));
  add("text", { x: 2, y: height - 20 }, "0");
  add("text", { x: pad, y: height - 4 }, "−2 min");
  add("text", { x: width - 26, y: height - 4 }, "now");
  if (rates.length > 1) {
    add("polyline", { class: "in", points: line("in") });
    add("polyline", { class: "out", points: line("out") });
  }
  return svg;
}

function card(figure, label, value, shown) {
  return el("div", { class: "card" },
    el("div", { class: "label" }, label),
    el("div", { class: "value", "data-figure": figure, "data-value": value }, shown === undefined ? value : shown));
}

function overviewPage() {
  const cards = el("div", { class: "cards" });
  const rate = el("div", { class: "chart" });
  const health = el("div");
  view.replaceChildren(
    el("h1", {}, "Overview"),
    cards,
    el("h2", {}, "Messages per second"),
    el("div", { class: "legend" }, el("span", { class: "in" }, "in (received)"), el("span", { class: "out" }, "out (sent)")),
    rate,
    el("h2", {}, "Health"),
    health,
    el("h2", {}, "Nodes"),
    el("p", { class: "note" }, "This broker runs as a single node: the figures here are this node's. Once clustering ships, this page lists every node with its partitions."));
  every(2000, async (left) => {
    const o = await api("/api/overview");
    if (left()) return;
    samples.push({ t: Date.now(), received: o.messages_received, sent: o.messages_sent });
    while (samples.length > 61) samples.shift();
    const lastRate = (key) => {
      if (samples.length < 2) return "—";
      const a = samples[samples.length - 2], b = samples[samples.length - 1];
      return ((b[key] - a[key]) / Math.max(0.001, (b.t - a.t) / 1000)).toFixed(1);
    };
    cards.replaceChildren(
      card("nodes", "Nodes", o.nodes),
      card("connections", "Connections", o.connections),
      card("in_rate", "Messages in /s", lastRate("received")),
      card("out_rate", "Messages out /s", lastRate("sent")),
      card("messages_received", "Received since start", o.messages_received),
      card("messages_sent", "Sent since start", o.messages_sent),
      card("streams", "Streams", o.streams),
      card("partitions", "Partitions", o.partitions),
      card("disk_bytes", "Bytes on disk", o.disk_bytes, bytes(o.disk_bytes)));
    rate.replaceChildren(chart(samples));
    health.replaceChildren(o.healthy
      ? el("p", { class: "ok", "data-figure": "health" }, "Healthy: every partition takes publishes.")
      : el("div", { "data-figure": "health" },
          el("p", { class: "bad" }, "Publishes are refused on some partitions:"),
          el("ul", {}, o.storage_problems.map((p) => el("li", {}, p)))));
  });
}

// ---------------------------------------------------------------------------------------
// Streams

function partitionRows(stream) {
  return stream.partitions.map((p) => el("tr", { "data-stream": stream.name, "data-partition": p.partition },
    el("td", {}, el("a", { href: `#/streams/${encodeURIComponent(stream.name)}/${p.partition}` }, stream.name + " / " + p.partition)),
    num("log_start", p.log_start),
    num("cleaned_up_to", p.cleaned_up_to),
    num("high_watermark", p.high_watermark),
    num("log_end", p.log_end),
    num("segment_count", p.segment_count),
    num("size_bytes", p.size_bytes, bytes(p.size_bytes)),
    el("td", { "data-field": "leader" }, "this node")));
}

const PARTITION_HEADERS = ["Partition", ["Log start", true], ["Cleaned up to", true], ["High watermark", true],
  ["Log end", true], ["Segments", true], ["Bytes", true], "Leader"];

function streamsPage() {
  const list = el("div");
  const partitions = el("div");
  view.replaceChildren(
    el("h1", {}, "Streams"),
    list,
    el("h2", {}, "Partitions"),
    el("p", { class: "note" }, "log start ≤ cleaned up to ≤ high watermark ≤ log end. Replicas and the in-sync set appear here once replication ships; today each partition lives on this node."),
    partitions);
  every(5000, async (left) => {
    const { streams } = await api("/api/streams");
    if (left()) return;
    list.replaceChildren(table(
      ["Stream", "Topics", "Cleanup", ["Partitions", true], ["Messages", true], ["Bytes", true]],
      streams.map((s) => el("tr", { "data-stream": s.name },
        el("td", {}, el("a", { href: "#/streams/" + encodeURIComponent(s.name) }, s.name)),
        el("td", {}, s.topics.length ? s.topics.join(", ") : el("span", { class: "muted" }, "(what no stream captures)")),
        el("td", { "data-field": "cleanup_policy" }, s.cleanup_policy),
        num("partitions", s.partitions.length),
        num("messages", s.messages),
        num("size_bytes", s.size_bytes, bytes(s.size_bytes)))),
      { id: "streams" }));
    partitions.replaceChildren(table(PARTITION_HEADERS, streams.flatMap(partitionRows), { id: "partitions" }));
  });
}

function segmentMap(map) {
  const ns = "http://www.w3.org/2000/svg";
  const width = 1000, height = 120, top = 10, base = 116;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  const p = map.partition;
  svg.setAttribute("aria-label", `Segments of ${map.stream} partition ${p.partition} along offsets ${p.log_start} to ${p.log_end}; the table below lists them`);
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    svg.append(node);
    return node;
  };
  const segs = map.segments;
  const first = segs.length ? segs[0].base_offset : p.log_start;
  const end = Math.max(p.log_end, first + 1);
  // Every segment gets at least a sliver, so empty and tiny ones stay visible.
  const minWidth = 6;
  const span = end - first;
  const usable = width - minWidth * segs.length;
  const maxBytes = Math.max(1, ...segs.map((s) => s.size_bytes));
  let x = 0;
  const xOf = (offset) => {
    // Offset to x, through the same layout as the bars.
    let pos = 0;
    for (const s of segs) {
      const w = minWidth + (usable * (s.next_offset - s.base_offset)) / span;
      if (offset <= s.next_offset) {
        const within = s.next_offset > s.base_offset ? (offset - s.base_offset) / (s.next_offset - s.base_offset) : 1;
        return pos + w * Math.min(1, Math.max(0, within));
      }
      pos += w;
    }
    return pos;
  };
  for (const s of segs) {
    const w = minWidth + (usable * (s.next_offset - s.base_offset)) / span;
    const h = 8 + ((base - top - 8) * s.size_bytes) / maxBytes;
    const kind = s.retention ? "doomed" : s.cleaned ? "cleaned" : s.active ? "active" : "";
    const rect = add("rect", { class: "seg " + kind, x: x.toFixed(1), y: (base - h).toFixed(1), width: Math.max(1, w - 1).toFixed(1), height: h.toFixed(1) });
    const title = document.createElementNS(ns, "title");
    title.textContent = `segment ${s.base_offset}–${s.next_offset}, ${bytes(s.size_bytes)}` +
      (s.retention ? `, deleted next by ${s.retention}` : "") + (s.cleaned ? ", compacted" : "") + (s.active ? ", active" : "");
    rect.append(title);
    x += w;
  }
  // The offsets as dashed lines; their labels are HTML below, which stays legible however
  // the drawing is stretched to the screen's width.
  const marks = [["log start", p.log_start], ["cleaned up to", p.cleaned_up_to], ["high watermark", p.high_watermark], ["log end", p.log_end]];
  for (const [, offset] of marks) {
    const mx = xOf(offset);
    add("line", { class: "mark", x1: mx.toFixed(1), y1: top - 4, x2: mx.toFixed(1), y2: base + 2 });
  }
  return el("div", { class: "segmap" }, svg,
    el("p", { class: "note" }, "Bar width: offsets; bar height: bytes. Dashed lines: ",
      marks.map(([label, offset]) => `${label} ${offset}`).join(" · "), "."),
    el("div", { class: "key" }, el("span", {}, "sealed segment"), el("span", { class: "active" }, "active segment"),
      el("span", { class: "cleaned" }, "compacted by the cleaner"), el("span", { class: "doomed" }, "deleted by the next retention pass")));
}

// Settings whose new values apply at the next start to partitions already open.
const KNOWN_SETTINGS = ["retention_ms", "retention_bytes", "retention_messages", "cleanup_policy", "compaction_key",
  "min_compaction_lag_ms", "max_compaction_lag_ms", "min_cleanable_dirty_ratio", "delete_retention_ms",
  "segment_bytes", "segment_ms", "index_interval_bytes", "flush", "flush_interval_ms", "compression"];

function settingsForm(stream, onSaved) {
  const current = stream.settings;
  const inputs = Object.entries(current).map(([key, value]) => [key, el("input", {
    id: "setting-" + key, name: key, value, "data-setting": key, "aria-label": key, spellcheck: "false",
  })]);
  const unset = KNOWN_SETTINGS.filter((k) => !(k in current));
  const newKey = el("select", { id: "new-setting-key", "aria-label": "Setting to add" },
    el("option", { value: "" }, "(add a setting)"), unset.map((k) => el("option", { value: k }, k)));
  const newValue = el("input", { id: "new-setting-value", "aria-label": "Its value", spellcheck: "false" });
  const message = el("p", { role: "status", id: "settings-message" });
  const form = el("form", {
    id: "settings",
    onsubmit: async (event) => {
      event.preventDefault();
      const change = {};
      for (const [key, input] of inputs) if (input.value.trim() !== current[key]) change[key] = input.value.trim();
      if (newKey.value && newValue.value.trim()) change[newKey.value] = newValue.value.trim();
      const keys = Object.keys(change);
      if (!keys.length) { message.textContent = "Nothing changed."; return; }
      const ok = await confirmAction(`Alter stream ${stream.name}?`, el("div", {},
        el("p", {}, "These settings change now, through the admin API (as strata stream alter would):"),
        el("ul", { id: "confirm-changes" }, keys.map((k) => el("li", {}, el("code", {}, k), ": ",
          current[k] === undefined ? "(unset)" : current[k], " → ", el("strong", {}, change[k]))))));
      if (!ok) { message.textContent = "Cancelled; nothing changed."; return; }
      try {
        const result = await api(`/api/streams/${encodeURIComponent(stream.name)}/settings`, { settings: change });
        const later = result.at_restart.length ? ` (${result.at_restart.join(", ")} apply to open partitions at the next start)` : "";
        onSaved(result.stream, "Saved" + later + ".");
      } catch (error) {
        if (error.status === 401) return showError(error);
        message.textContent = "Not changed: " + error.message;
        message.className = "error";
      }
    },
  },
  table(["Setting", "Value"], inputs.map(([key, input]) => el("tr", {}, el("td", {}, el("label", { for: input.id }, el("code", {}, key))), el("td", {}, input))), { class: "settings" }),
  el("div", { class: "controls" }, newKey, newValue, el("button", { type: "submit", id: "settings-review" }, "Review changes…")),
  message);
  return form;
}

function streamPage(name, partition) {
  const path = "/api/streams/" + encodeURIComponent(name);
  const partitions = el("div");
  const mapBox = el("div");
  const segTable = el("div");
  const settingsBox = el("div");
  const select = el("select", { id: "map-partition", "aria-label": "Partition", onchange: () => { location.hash = `#/streams/${encodeURIComponent(name)}/${select.value}`; } });
  view.replaceChildren(
    el("p", {}, el("a", { href: "#/streams" }, "← Streams")),
    el("h1", {}, "Stream ", el("code", { id: "stream-name" }, name)),
    partitions,
    el("h2", {}, "Segment map"),
    el("div", { class: "controls" }, el("label", { for: "map-partition" }, "Partition", select),
      el("a", { href: `#/browse?stream=${encodeURIComponent(name)}` }, "Browse its messages")),
    mapBox, segTable,
    el("h2", {}, "Settings"),
    el("p", { class: "note" }, "Retention, compaction and routing change at once; segment, index, flush and compression settings apply to partitions opened from now on."),
    settingsBox);
  let formShown = false;
  const showSettings = (stream, saved) => {
    settingsBox.replaceChildren(settingsForm(stream, (altered, text) => showSettings(altered, text)));
    if (saved) {
      const message = document.getElementById("settings-message");
      message.textContent = saved;
      message.className = "ok";
    }
  };
  every(5000, async (left) => {
    const stream = await api(path);
    if (left()) return;
    const chosen = Math.min(Number(partition || 0), stream.partitions.length - 1);
    if (select.options.length !== stream.partitions.length) {
      select.replaceChildren(...stream.partitions.map((p) => el("option", { value: p.partition }, String(p.partition))));
    }
    select.value = String(chosen);
    const map = await api(`${path}/partitions/${chosen}/segments`);
    if (left()) return;
    partitions.replaceChildren(
      el("p", {}, "Topics: ", stream.topics.length ? stream.topics.join(", ") : "(what no stream captures)", " · cleanup ", el("code", {}, stream.cleanup_policy)),
      table(PARTITION_HEADERS, partitionRows(stream), { id: "partitions" }));
    mapBox.replaceChildren(segmentMap(map));
    segTable.replaceChildren(table(
      [["Base offset", true], ["Next offset", true], ["Bytes", true], "Newest record", "State"],
      map.segments.map((s) => el("tr", { "data-segment": s.base_offset },
        num("base_offset", s.base_offset), num("next_offset", s.next_offset),
        num("size_bytes", s.size_bytes, bytes(s.size_bytes)),
        el("td", {}, time(s.max_timestamp)),
        el("td", { "data-field": "state" }, [s.active && "active", s.cleaned && "compacted",
          s.retention && `deleted next (${s.retention})`].filter(Boolean).join(", ") || "sealed"))),
      { id: "segments", "data-stream": name, "data-partition": chosen }));
    // The form is built once: a refresh must not wipe what the operator is typing.
    if (!formShown) { showSettings(stream); formShown = true; }
  });
}

// ---------------------------------------------------------------------------------------
// Consumers

function resetForm(group, streams) {
  const id = (s) => `reset-${s}`;
  const streamSel = el("select", { id: id("stream") }, el("option", { value: "" }, "all streams"),
    [...new Set(group.partitions.map((p) => p.stream).concat(streams))].map((s) => el("option", { value: s }, s)));
  const partitionIn = el("input", { id: id("partition"), inputmode: "numeric", placeholder: "all", size: 5 });
  const to = el("input", { id: id("to"), value: "earliest", spellcheck: "false", size: 16 });
  const message = el("p", { role: "status" });
  return el("form", {
    class: "inline", "data-reset": group.name,
    onsubmit: async (event) => {
      event.preventDefault();
      const body = { name: group.name, kind: group.kind, to: to.value.trim() };
      if (streamSel.value) body.stream = streamSel.value;
      if (partitionIn.value.trim()) body.partition = Number(partitionIn.value.trim());
      const where = (body.stream || "every stream") + (body.partition !== undefined ? ` partition ${body.partition}` : "");
      const ok = await confirmAction(`Reset the offsets of ${group.name}?`, el("p", {},
        `The ${group.kind === "share" ? "$share group" : "persistent session"} `, el("code", {}, group.name),
        ` will read ${where} from `, el("strong", {}, body.to), ". It must have no connected member."));
      if (!ok) { message.textContent = "Cancelled; nothing changed."; message.className = ""; return; }
      try {
        await api("/api/groups/reset", body);
        message.textContent = "Offsets reset.";
        message.className = "ok";
      } catch (error) {
        if (error.status === 401) return showError(error);
        message.textContent = "Not reset: " + error.message;
        message.className = "error";
      }
    },
  },
  el("label", { for: id("stream") }, "Stream", streamSel),
  el("label", { for: id("partition") }, "Partition", partitionIn),
  el("label", { for: id("to") }, "To (earliest, latest, offset, timestamp:ms)", to),
  el("button", { type: "submit" }, "Reset offsets…"),
  message);
}

function consumersPage() {
  const lagTable = el("div");
  const picker = el("select", { id: "reset-group", "aria-label": "Group or session" });
  const formBox = el("div");
  view.replaceChildren(
    el("h1", {}, "Consumers"),
    el("p", { class: "note" }, "$share groups and persistent sessions, with their committed offset and lag (high watermark − committed) per partition."),
    lagTable,
    el("h2", {}, "Reset offsets"),
    el("div", { class: "controls" }, el("label", { for: "reset-group" }, "Group or session", picker)),
    formBox);
  let groups = [], streams = [];
  const showForm = () => {
    const group = groups.find((g) => `${g.kind}:${g.name}` === picker.value);
    formBox.replaceChildren(group ? resetForm(group, streams) : el("p", { class: "muted" }, "No consumer yet."));
  };
  picker.addEventListener("change", showForm);
  every(5000, async (left) => {
    const [g, s] = await Promise.all([api("/api/groups"), api("/api/streams")]);
    if (left()) return;
    groups = g.groups;
    streams = s.streams.map((x) => x.name);
    const rows = groups.flatMap((group) => {
      const head = [el("td", {}, group.name), el("td", { "data-field": "kind" }, group.kind),
        el("td", { "data-field": "members" }, group.members), el("td", {}, el("code", {}, group.filter || "—"))];
      if (!group.partitions.length) {
        return [el("tr", { "data-group": group.name, "data-kind": group.kind }, head, el("td", { colspan: 5, class: "muted" }, "no position yet"))];
      }
      return group.partitions.map((p) => el("tr", { "data-group": group.name, "data-kind": group.kind, "data-stream": p.stream, "data-partition": p.partition },
        head.map((c) => c.cloneNode(true)),
        el("td", {}, p.stream + " / " + p.partition),
        num("committed", p.committed), num("high_watermark", p.high_watermark), num("lag", p.lag)));
    });
    lagTable.replaceChildren(groups.length
      ? table(["Name", "Kind", "Members", "Filter", "Partition", ["Committed", true], ["High watermark", true], ["Lag", true]], rows, { id: "groups" })
      : el("p", { class: "muted", id: "groups" }, "No $share group or persistent session yet."));
    const keys = groups.map((x) => `${x.kind}:${x.name}`);
    const had = [...picker.options].map((o) => o.value);
    if (keys.join("\n") !== had.join("\n")) {
      const keep = picker.value;
      picker.replaceChildren(...groups.map((x) => el("option", { value: `${x.kind}:${x.name}` }, `${x.name} (${x.kind})`)));
      if (keys.includes(keep)) picker.value = keep;
      showForm();
    }
  });
}

// ---------------------------------------------------------------------------------------
// Browse: the read a `$stream` replay makes, as a table.

function browsePage(params) {
  const streamSel = el("select", { id: "browse-stream", name: "stream" });
  const partitionIn = el("input", { id: "browse-partition", name: "partition", inputmode: "numeric", placeholder: "all", size: 5, value: params.get("partition") || "" });
  const mode = el("select", { id: "browse-from", name: "from" },
    el("option", { value: "earliest" }, "from the earliest"),
    el("option", { value: "offset" }, "from an offset"),
    el("option", { value: "time" }, "from a time"),
    el("option", { value: "tail" }, "tail (live)"));
  const offsetIn = el("input", { id: "browse-offset", inputmode: "numeric", size: 10, placeholder: "offset" });
  const timeIn = el("input", { id: "browse-time", type: "datetime-local", step: "1" });
  const limitIn = el("input", { id: "browse-limit", inputmode: "numeric", size: 5, value: "100" });
  const hexBox = el("input", { id: "browse-hex", type: "checkbox" });
  const results = el("div", { id: "browse-results" });
  const message = el("p", { role: "status", id: "browse-message" });
  let rows = [];
  let tailing = null;

  const render = () => {
    const hex = hexBox.checked;
    results.replaceChildren(rows.length ? table(
      [["Partition", true], ["Offset", true], "Time", "Topic", "Key", "Payload"],
      rows.map((m) => el("tr", { "data-partition": m.partition, "data-offset": m.offset },
        num("partition", m.partition), num("offset", m.offset),
        el("td", { "data-field": "timestamp", "data-value": m.timestamp }, time(m.timestamp)),
        el("td", { "data-field": "topic" }, m.topic),
        el("td", { "data-field": "key" }, m.key === null ? el("span", { class: "muted" }, "—") : m.key),
        el("td", { class: "payload", "data-field": "payload" },
          hex || m.payload_text === null ? m.payload_hex.replace(/(..)/g, "$1 ").trim() : m.payload_text,
          m.payload_bytes > m.payload_hex.length / 2 ? el("span", { class: "muted" }, ` … (${bytes(m.payload_bytes)} in all)`) : null))),
      { id: "messages" }) : el("p", { class: "muted", id: "messages" }, "No message."));
  };
  hexBox.addEventListener("change", render);

  const read = async (stream, partition, from, limit) => {
    const q = new URLSearchParams({ from, limit: String(limit) });
    if (partition !== "") q.set("partition", partition);
    return api(`/api/streams/${encodeURIComponent(stream)}/messages?${q}`);
  };

  const stopTail = () => { if (tailing) { clearInterval(tailing); tailing = null; } };
  const mine = generation;
  const submit = async (event) => {
    if (event) event.preventDefault();
    stopTail();
    const stream = streamSel.value;
    const partition = partitionIn.value.trim();
    const limit = Math.max(1, Math.min(1000, Number(limitIn.value) || 100));
    let from = "earliest";
    if (mode.value === "offset") from = offsetIn.value.trim() || "0";
    if (mode.value === "time" && exactTime) from = exactTime;
    else if (mode.value === "time") {
      const ms = timeIn.value ? new Date(timeIn.value).getTime() : NaN;
      if (Number.isNaN(ms)) { message.textContent = "Choose a time."; return; }
      from = "timestamp:" + ms;
    }
    try {
      if (mode.value !== "tail") {
        const page = await read(stream, partition, from, limit);
        rows = page.messages;
        message.textContent = `${rows.length} message(s) from ${from}.`;
        message.className = "";
        view.dataset.loaded = String(Number(view.dataset.loaded || 0) + 1);
        return render();
      }
      // Tail: the last messages of each partition read, then every second what follows.
      const described = await api("/api/streams/" + encodeURIComponent(stream));
      const parts = described.partitions.filter((p) => partition === "" || String(p.partition) === partition);
      if (!parts.length) { message.textContent = `Stream ${stream} has no partition ${partition}.`; message.className = "error"; return; }
      const per = Math.max(1, Math.floor(limit / parts.length));
      const next = new Map(parts.map((p) => [p.partition, Math.max(p.log_start, p.high_watermark - per)]));
      rows = [];
      const poll = async () => {
        if (mine !== generation) return stopTail();
        for (const [p, offset] of next) {
          const page = await read(stream, String(p), String(offset), per);
          rows.push(...page.messages);
          for (const n of page.next) next.set(n.partition, n.offset);
        }
        rows.sort((a, b) => a.timestamp - b.timestamp || a.partition - b.partition || a.offset - b.offset);
        rows = rows.slice(-limit);
        message.textContent = `Tailing ${stream}: ${rows.length} message(s) shown; new ones appear as they are stored.`;
        message.className = "";
        view.dataset.loaded = String(Number(view.dataset.loaded || 0) + 1);
        render();
      };
      await poll();
      tailing = setInterval(() => poll().catch((e) => { stopTail(); showError(e, message); }), 1000);
    } catch (error) {
      if (error.status === 401) return showError(error);
      message.textContent = error.message;
      message.className = "error";
    }
  };
  const showInputs = () => {
    offsetIn.hidden = mode.value !== "offset";
    timeIn.hidden = mode.value !== "time";
  };
  mode.addEventListener("change", showInputs);
  // A `timestamp:<ms>` from the address is kept to the millisecond until the time is edited
  // (the time field has whole seconds).
  let exactTime = null;
  timeIn.addEventListener("input", () => { exactTime = null; });
  const wanted = params.get("from") || "earliest";
  if (["earliest", "tail"].includes(wanted)) mode.value = wanted;
  else if (wanted.startsWith("timestamp:")) {
    mode.value = "time";
    exactTime = wanted;
    const d = new Date(Number(wanted.slice(10)) - new Date().getTimezoneOffset() * 60000);
    if (!Number.isNaN(d.getTime())) timeIn.value = d.toISOString().slice(0, 19);
  } else { mode.value = "offset"; offsetIn.value = wanted; }
  showInputs();

  view.replaceChildren(
    el("h1", {}, "Browse"),
    el("p", { class: "note" }, "The same read as a $stream replay: a stream from an offset or a time, or its tail."),
    el("form", { class: "inline", id: "browse", onsubmit: submit },
      el("label", { for: "browse-stream" }, "Stream", streamSel),
      el("label", { for: "browse-partition" }, "Partition", partitionIn),
      el("label", { for: "browse-from" }, "Start", mode),
      offsetIn, timeIn,
      el("label", { for: "browse-limit" }, "At most", limitIn),
      el("label", { for: "browse-hex", class: "check" }, "Payload as hex", hexBox),
      el("button", { type: "submit", id: "browse-read" }, "Read")),
    message, results);
  timer = { stop: stopTail };
  api("/api/streams").then(({ streams }) => {
    if (mine !== generation) return;
    streamSel.replaceChildren(...streams.map((s) => el("option", { value: s.name }, s.name)));
    const wantedStream = params.get("stream");
    if (wantedStream && streams.some((s) => s.name === wantedStream)) streamSel.value = wantedStream;
    setStatus("");
    if (params.get("stream")) submit();
    else view.dataset.loaded = "1";
  }).catch((e) => showError(e));
}

// ---------------------------------------------------------------------------------------
// Routing

function route() {
  if (timer && timer.stop) timer.stop(); else stopTimer();
  timer = null;
  generation++;
  delete view.dataset.loaded;
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query] = hash.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const page = parts[0] || "overview";
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.page === page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  view.dataset.page = page;
  setStatus("loading…");
  if (page === "streams" && parts[1]) streamPage(parts[1], parts[2]);
  else if (page === "streams") streamsPage();
  else if (page === "consumers") consumersPage();
  else if (page === "browse") browsePage(new URLSearchParams(query || ""));
  else overviewPage();
  document.title = "Strata · " + page[0].toUpperCase() + page.slice(1);
}

window.addEventListener("hashchange", () => { route(); document.getElementById("main").focus(); });
route();
