// Sluice console: the live board (GET /v1/board every REFRESH_MS, drawn as SVG charts) and
// the SQL console (POST /v1/query). No framework and no build step: the query API serves this
// file as it is. Every chart's <figure> carries its latest values in data-* attributes, which
// the browser test reads.
"use strict";

const REFRESH_MS = 1500;
// About two minutes of samples.
const HISTORY = 80;
const KEY_STORE = "sluice.key";
const SVG_NS = "http://www.w3.org/2000/svg";

const COLORS = {
  gray: "#9ca3af", blue: "#3b82f6", green: "#22c55e", red: "#ef4444",
  yellow: "#eab308", orange: "#f97316", accent: "#2dd4bf", violet: "#a78bfa",
};

const $ = (selector, root = document) => root.querySelector(selector);

// ---------------------------------------------------------------------------------------------
// API calls, with the key when one is kept. A 401 asks for a key and then retries the call.

let keyPrompt = null;

function storedKey() {
  return sessionStorage.getItem(KEY_STORE);
}

async function api(path, options = {}) {
  for (;;) {
    const headers = new Headers(options.headers || {});
    const key = storedKey();
    if (key) headers.set("Authorization", `Bearer ${key}`);
    const response = await fetch(path, { ...options, headers });
    if (response.status === 401 || (response.status === 403 && !key)) {
      await askForKey(key ? "That key was not accepted." : "");
      continue;
    }
    if (response.status === 403) {
      await askForKey("That key may not read: it needs the read scope.");
      continue;
    }
    return response;
  }
}

// Shows the key dialog once, however many calls are waiting for it.
function askForKey(message) {
  if (keyPrompt) return keyPrompt;
  sessionStorage.removeItem(KEY_STORE);
  const dialog = $("#key-dialog");
  $("#key-error").textContent = message;
  $("#key-input").value = "";
  keyPrompt = new Promise((resolve) => {
    const form = $("#key-form");
    const submit = (event) => {
      event.preventDefault();
      const key = $("#key-input").value.trim();
      if (!key) return;
      sessionStorage.setItem(KEY_STORE, key);
      form.removeEventListener("submit", submit);
      dialog.close();
      keyPrompt = null;
      updateKeyButton();
      resolve();
    };
    form.addEventListener("submit", submit);
    // The page is useless without a key: Escape does not dismiss the dialog.
    dialog.addEventListener("cancel", (event) => event.preventDefault(), { once: true });
  });
  dialog.showModal();
  $("#key-input").focus();
  setLive("warn", "API key needed");
  return keyPrompt;
}

function updateKeyButton() {
  $("#forget-key").hidden = !storedKey();
}

// ---------------------------------------------------------------------------------------------
// Formatting.

function fmt(value, digits = 0) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  const abs = Math.abs(value);
  if (abs >= 1e9) return (value / 1e9).toFixed(1) + "G";
  if (abs >= 1e6) return (value / 1e6).toFixed(1) + "M";
  if (abs >= 1e4) return (value / 1e3).toFixed(1) + "k";
  return value.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

function fmtMs(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms >= 10000) return (ms / 1000).toFixed(0) + " s";
  if (ms >= 1000) return (ms / 1000).toFixed(1) + " s";
  return Math.round(ms) + " ms";
}

// ---------------------------------------------------------------------------------------------
// SVG charts: small, dependency-free, redrawn whole on every refresh.

function el(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function frame(container) {
  const width = Math.max(container.clientWidth, 200);
  const height = Math.max(container.clientHeight, 120);
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  container.replaceChildren(svg);
  return { svg, width, height };
}

// A round upper bound for an axis, and its ticks.
// Counts get whole steps.
function niceScale(max, { ticks = 4, integer = false } = {}) {
  if (!(max > 0)) max = 1;
  const raw = max / ticks;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  let step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= raw);
  if (integer) step = Math.max(1, Math.ceil(step));
  return { top: step * Math.ceil(max / step), step };
}

function emptyMessage(svg, width, height, text) {
  svg.append(el("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "empty" }, text));
}

// Time series: `series` = [{name, color, values}], all as long as `times` (ms). `stacked`
// draws areas on top of each other; otherwise lines with a light fill under the first.
function timeChart(container, times, series, { stacked = false, integer = false, format = fmt } = {}) {
  const { svg, width, height } = frame(container);
  const left = 44, right = 10, top = 8, bottom = 22;
  const plotW = width - left - right, plotH = height - top - bottom;
  if (times.length < 2) {
    emptyMessage(svg, width, height, "collecting samples…");
    return;
  }
  const n = times.length;
  const sums = times.map((_, i) => series.reduce((s, x) => s + (x.values[i] || 0), 0));
  const max = stacked ? Math.max(...sums) : Math.max(...series.flatMap((s) => s.values.map((v) => v || 0)));
  const { top: yTop, step } = niceScale(max, { integer });
  const t0 = times[0], t1 = times[n - 1];
  const span = Math.max(t1 - t0, 1);
  const x = (t) => left + ((t - t0) / span) * plotW;
  const y = (v) => top + plotH - (v / yTop) * plotH;

  for (let v = 0; v <= yTop + 1e-9; v += step) {
    svg.append(el("line", { x1: left, x2: width - right, y1: y(v), y2: y(v), class: "gridline" }));
    svg.append(el("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end" }, format(v)));
  }
  // Seconds before now along the bottom.
  const seconds = span / 1000;
  const tickEvery = seconds > 90 ? 30 : seconds > 40 ? 15 : seconds > 15 ? 5 : 2;
  for (let s = 0; s <= seconds; s += tickEvery) {
    const xt = x(t1 - s * 1000);
    svg.append(el("text", { x: xt, y: height - 6, "text-anchor": s === 0 ? "end" : "middle" }, s === 0 ? "now" : `-${s}s`));
  }

  const base = new Array(n).fill(0);
  series.forEach((s, index) => {
    const points = s.values.map((v, i) => [x(times[i]), y((stacked ? base[i] : 0) + (v || 0))]);
    const line = points.map(([px, py], i) => `${i ? "L" : "M"}${px.toFixed(1)},${py.toFixed(1)}`).join("");
    if (stacked || index === 0) {
      const floor = stacked
        ? base.map((b, i) => [x(times[i]), y(b)]).reverse()
        : [[x(t1), y(0)], [x(t0), y(0)]];
      const area = line + floor.map(([px, py]) => `L${px.toFixed(1)},${py.toFixed(1)}`).join("") + "Z";
      svg.append(el("path", { d: area, fill: s.color, "fill-opacity": stacked ? 0.55 : 0.14, stroke: "none" }));
    }
    svg.append(el("path", { d: line, fill: "none", stroke: s.color, "stroke-width": 1.8, "stroke-linejoin": "round" }));
    if (stacked) s.values.forEach((v, i) => { base[i] += v || 0; });
  });
  svg.append(el("line", { x1: left, x2: width - right, y1: y(0), y2: y(0), class: "axis" }));
}

// Horizontal bars: one row per label; `series` stacked within a row.
function barChart(container, labels, series, { format = fmt } = {}) {
  const { svg, width, height } = frame(container);
  if (!labels.length) {
    emptyMessage(svg, width, height, "nothing to show");
    return;
  }
  const labelW = Math.min(Math.max(...labels.map((l) => String(l).length)) * 6.8 + 12, width * 0.38);
  const left = labelW, right = 56, top = 4, bottom = 4;
  const rowH = Math.min((height - top - bottom) / labels.length, 34);
  const barH = Math.max(rowH * 0.62, 3);
  const totals = labels.map((_, i) => series.reduce((s, x) => s + (x.values[i] || 0), 0));
  const max = Math.max(...totals, 1e-9);
  const plotW = width - left - right;
  labels.forEach((label, i) => {
    const cy = top + rowH * i + rowH / 2;
    const text = String(label);
    const shown = text.length * 6.8 > labelW - 10 ? text.slice(0, Math.floor((labelW - 14) / 6.8)) + "…" : text;
    svg.append(el("text", { x: left - 8, y: cy + 4, "text-anchor": "end" }, shown));
    svg.append(el("rect", { x: left, y: cy - barH / 2, width: plotW, height: barH, rx: 3, fill: "#162032" }));
    let at = left;
    for (const s of series) {
      const w = ((s.values[i] || 0) / max) * plotW;
      if (w > 0) {
        svg.append(el("rect", { x: at, y: cy - barH / 2, width: Math.max(w, 1), height: barH, fill: s.color, rx: 2, "data-series": s.name }));
      }
      at += w;
    }
    svg.append(el("text", { x: at + 6, y: cy + 4, class: "value-label" }, format(totals[i])));
  });
}

// Grouped columns: one group per label, one column per series.
function columnChart(container, labels, series, { format = fmt } = {}) {
  const { svg, width, height } = frame(container);
  const left = 44, right = 8, top = 14, bottom = 22;
  const plotW = width - left - right, plotH = height - top - bottom;
  const max = Math.max(...series.flatMap((s) => s.values.map((v) => v || 0)));
  if (!(max > 0)) {
    emptyMessage(svg, width, height, "no notification is green yet");
    return;
  }
  const { top: yTop, step } = niceScale(max);
  const y = (v) => top + plotH - (v / yTop) * plotH;
  for (let v = 0; v <= yTop + 1e-9; v += step) {
    svg.append(el("line", { x1: left, x2: width - right, y1: y(v), y2: y(v), class: "gridline" }));
    svg.append(el("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end" }, format(v)));
  }
  const groupW = plotW / labels.length;
  const colW = Math.min((groupW * 0.7) / series.length, 38);
  labels.forEach((label, g) => {
    const gx = left + groupW * g + (groupW - colW * series.length) / 2;
    series.forEach((s, k) => {
      const v = s.values[g] || 0;
      svg.append(el("rect", { x: gx + k * colW + 1, y: y(v), width: colW - 2, height: Math.max(y(0) - y(v), 0), fill: s.color, rx: 2 }));
      svg.append(el("text", { x: gx + k * colW + colW / 2, y: y(v) - 4, "text-anchor": "middle", class: "value-label" }, format(v)));
    });
    svg.append(el("text", { x: left + groupW * g + groupW / 2, y: height - 6, "text-anchor": "middle" }, label));
  });
  svg.append(el("line", { x1: left, x2: width - right, y1: y(0), y2: y(0), class: "axis" }));
}

function legend(figure, items) {
  const box = $(".legend", figure);
  if (!box) return;
  box.replaceChildren(...items.map(([name, color, value]) => {
    const item = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.className = "swatch";
    swatch.style.background = color;
    const label = document.createElement("b");
    label.textContent = value;
    item.append(swatch, `${name} `, label);
    return item;
  }));
}

// Records what a chart shows, for people inspecting the page and for the browser test.
function mark(figure, latest) {
  figure.dataset.latest = JSON.stringify(latest);
  figure.dataset.renders = String(Number(figure.dataset.renders || 0) + 1);
}

// ---------------------------------------------------------------------------------------------
// The board.

const samples = [];

function chartOf(name) {
  return $(`figure[data-chart="${name}"]`);
}

function setKpi(name, value, note) {
  const tile = $(`.kpi[data-kpi="${name}"]`);
  $(".value", tile).textContent = value;
  if (note !== undefined) $(".note", tile).textContent = note;
}

function setLive(state, text) {
  $("#live-dot").className = `dot ${state}`;
  $("#live-text").textContent = text;
}

// Notifications a second between consecutive samples, from the nodes' cumulative counts.
function rates() {
  return samples.map((sample, i) => {
    if (i === 0) return 0;
    const previous = samples[i - 1];
    const seconds = (sample.time - previous.time) / 1000;
    const accepted = sample.board.totals.accepted - previous.board.totals.accepted;
    // A node that restarted or stopped answering makes the sum drop: no rate for that step.
    return seconds > 0 && accepted >= 0 ? accepted / seconds : 0;
  });
}

function slowest(board, path) {
  const values = board.ingest
    .filter((node) => node.ok && node.freshness && node.freshness[path[0]])
    .map((node) => node.freshness[path[0]][path[1]]);
  return values.length ? Math.max(...values) : null;
}

function drawBoard() {
  if (!samples.length) return;
  const board = samples[samples.length - 1].board;
  const totals = board.totals;
  const times = samples.map((s) => s.time);
  const rate = rates();
  const column = (f) => samples.map((s) => f(s.board.totals));

  // Ingest rate.
  const ingestFigure = chartOf("ingest-rate");
  timeChart($(".chart", ingestFigure), times, [{ name: "rate", color: COLORS.accent, values: rate }]);
  const nowRate = rate[rate.length - 1];
  const peak = Math.max(...rate);
  legend(ingestFigure, [["now", COLORS.accent, fmt(nowRate, 1) + "/s"], ["peak", COLORS.violet, fmt(peak, 1) + "/s"], ["accepted", COLORS.gray, fmt(totals.accepted)]]);
  mark(ingestFigure, { rate: nowRate, peak, accepted: totals.accepted });

  // Colors over time, stacked.
  const colorNames = ["gray", "blue", "green"];
  const colorsFigure = chartOf("colors");
  timeChart($(".chart", colorsFigure), times,
    colorNames.map((c) => ({ name: c, color: COLORS[c], values: column((t) => t[c]) })), { stacked: true, integer: true });
  legend(colorsFigure, [...colorNames, "red"].map((c) => [c, COLORS[c], fmt(totals[c])]));
  mark(colorsFigure, { gray: totals.gray, blue: totals.blue, green: totals.green, red: totals.red });

  // Per node, now.
  const nodesFigure = chartOf("nodes");
  const nodes = board.ingest.filter((n) => n.ok);
  const labels = nodes.map((n) => n.producer_id || n.url);
  barChart($(".chart", nodesFigure), labels,
    [...colorNames, "red"].map((c) => ({ name: c, color: COLORS[c], values: nodes.map((n) => n[c]) })));
  const down = board.ingest.filter((n) => !n.ok);
  legend(nodesFigure, [
    ["nodes up", COLORS.green, `${nodes.length}/${board.ingest.length}`],
    ["memory used", COLORS.blue, nodes.length ? `${fmt(100 * nodes.reduce((s, n) => s + n.used_bytes, 0) / Math.max(nodes.reduce((s, n) => s + n.budget_bytes, 0), 1), 1)}%` : "–"],
    ...down.map((n) => [n.url, COLORS.red, "not answering"]),
  ]);
  mark(nodesFigure, { nodes: nodes.map((n) => ({ node: n.producer_id, gray: n.gray, blue: n.blue, green: n.green, red: n.red })), down: down.length });

  // Replication lag: what is durable or staged but not yet queryable.
  const lagFigure = chartOf("lag");
  const backlog = column((t) => t.gray + t.blue);
  timeChart($(".chart", lagFigure), times, [
    { name: "blue", color: COLORS.blue, values: column((t) => t.blue) },
    { name: "gray", color: COLORS.gray, values: column((t) => t.gray) },
  ], { stacked: true, integer: true });
  const p50 = slowest(board, ["durable_to_green", "p50_ms"]);
  legend(lagFigure, [["backlog", COLORS.blue, fmt(backlog[backlog.length - 1])], ["durable → green p50", COLORS.green, fmtMs(p50)]]);
  mark(lagFigure, { backlog: backlog[backlog.length - 1], durable_to_green_p50_ms: p50 });

  // Freshness percentiles.
  const freshFigure = chartOf("freshness");
  const percentiles = ["p50_ms", "p99_ms", "max_ms"];
  const durable = percentiles.map((p) => slowest(board, ["durable_to_green", p]) || 0);
  const received = percentiles.map((p) => slowest(board, ["received_to_green", p]) || 0);
  columnChart($(".chart", freshFigure), ["p50", "p99", "max"], [
    { name: "durable → green", color: COLORS.green, values: durable },
    { name: "received → green", color: COLORS.blue, values: received },
  ]);
  const measured = nodes.reduce((s, n) => s + ((n.freshness && n.freshness.notifications) || 0), 0);
  legend(freshFigure, [["durable → green", COLORS.green, ""], ["received → green", COLORS.blue, ""], ["measured", COLORS.gray, fmt(measured)]]);
  mark(freshFigure, { durable_to_green: durable, received_to_green: received, measured });

  // Queries.
  const queriesFigure = chartOf("queries");
  timeChart($(".chart", queriesFigure), times, [
    { name: "orange", color: COLORS.orange, values: column((t) => t.orange) },
    { name: "yellow", color: COLORS.yellow, values: column((t) => t.yellow) },
  ], { integer: true });
  legend(queriesFigure, [["yellow", COLORS.yellow, fmt(totals.yellow)], ["orange", COLORS.orange, fmt(totals.orange)], ["answered", COLORS.green, fmt(totals.queries_answered)], ["failed", COLORS.red, fmt(totals.queries_failed)]]);
  mark(queriesFigure, { yellow: totals.yellow, orange: totals.orange, answered: totals.queries_answered, failed: totals.queries_failed });

  // Tiles.
  setKpi("rate", fmt(nowRate, 1), `notifications/s · peak ${fmt(peak, 1)}`);
  setKpi("memory", fmt(totals.gray + totals.blue + totals.green), `${fmt(totals.gray)} gray · ${fmt(totals.blue)} blue · ${fmt(totals.green)} green`);
  setKpi("lag", fmt(backlog[backlog.length - 1]), `entries not yet queryable · p50 ${fmtMs(p50)}`);
  setKpi("fresh", fmtMs(slowest(board, ["durable_to_green", "p99_ms"])), `p99 · p50 ${fmtMs(p50)}`);
  setKpi("queries", `${fmt(totals.yellow)} · ${fmt(totals.orange)}`, "yellow · orange");
  setKpi("replica", totals.replica_version === null ? "–" : `v${totals.replica_version}`, `${board.handlers.filter((h) => h.ok).length}/${board.handlers.length} query handlers up`);
  $("#board-meta").textContent = `${board.ingest.length} ingest node${board.ingest.length === 1 ? "" : "s"} · ${board.handlers.length} query handler${board.handlers.length === 1 ? "" : "s"} · every ${REFRESH_MS / 1000} s`;
}

async function refreshBoard() {
  try {
    const response = await api("../v1/board");
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      setLive("down", body.error || `board: HTTP ${response.status}`);
    } else {
      const board = await response.json();
      samples.push({ time: Date.now(), board });
      if (samples.length > HISTORY) samples.shift();
      drawBoard();
      const totals = board.totals;
      const allUp = totals.ingest_nodes_up === totals.ingest_nodes && totals.handlers_up === totals.handlers;
      setLive(allUp ? "live" : "warn", allUp ? `live · ${new Date().toLocaleTimeString()}` : "some nodes are not answering");
    }
  } catch (error) {
    setLive("down", `cannot reach the query API: ${error.message}`);
  }
  setTimeout(refreshBoard, REFRESH_MS);
}

// ---------------------------------------------------------------------------------------------
// The SQL console.

let lastResult = null;

const NUMERIC = /^(U?Int\d+|Float\d+|Decimal)/;
const TEXTUAL = /^(Utf8|LargeUtf8|Utf8View|Dictionary|Boolean|Date|Timestamp)/;

function setState(state, text) {
  const pill = $("#query-state");
  pill.className = `pill state-${state}`;
  pill.textContent = text;
  pill.dataset.state = state;
}

function cellText(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function renderTable(result) {
  const table = $("#results");
  const head = document.createElement("tr");
  result.columns.forEach((column) => {
    const th = document.createElement("th");
    th.textContent = column.name;
    const type = document.createElement("span");
    type.className = "type";
    type.textContent = column.type;
    th.append(type);
    if (NUMERIC.test(column.type)) th.className = "num";
    head.append(th);
  });
  $("thead", table).replaceChildren(head);
  const rows = result.rows.map((row) => {
    const tr = document.createElement("tr");
    row.forEach((value, i) => {
      const td = document.createElement("td");
      if (value === null) {
        td.className = "null";
        td.textContent = "null";
      } else {
        td.textContent = cellText(value);
        if (NUMERIC.test(result.columns[i].type)) td.className = "num";
      }
      tr.append(td);
    });
    return tr;
  });
  $("tbody", table).replaceChildren(...rows);
  $("#results-placeholder").hidden = rows.length > 0;
  $("#results-placeholder").textContent = rows.length ? "" : "The query returned no rows.";
}

// A bar chart of the first text column by the first numeric one (the first column stands for
// the labels when every column is numeric).
function renderResultChart(result) {
  const figure = chartOf("result");
  const container = $(".chart", figure);
  const value = result.columns.findIndex((c) => NUMERIC.test(c.type));
  let label = result.columns.findIndex((c, i) => i !== value && TEXTUAL.test(c.type));
  if (label < 0) label = result.columns.findIndex((_, i) => i !== value);
  if (value < 0 || label < 0 || !result.rows.length) {
    container.style.height = "";
    const { svg, width, height } = frame(container);
    emptyMessage(svg, width, height, "needs a text and a numeric column");
    $("#result-chart-hint").textContent = "no chart for this result";
    mark(figure, { bars: 0 });
    return;
  }
  const rows = result.rows.slice(0, 25);
  // As tall as its bars need, so that a short answer leaves no empty card.
  container.style.height = `${Math.max(120, rows.length * 30 + 12)}px`;
  $("#result-chart-hint").textContent = `${result.columns[value].name} by ${result.columns[label].name}` +
    (result.rows.length > rows.length ? ` · first ${rows.length} of ${result.rows.length}` : "");
  barChart(container, rows.map((r) => cellText(r[label]) || "null"),
    [{ name: result.columns[value].name, color: COLORS.orange, values: rows.map((r) => Number(r[value]) || 0) }]);
  mark(figure, { bars: rows.length, label: result.columns[label].name, value: result.columns[value].name });
}

// RFC 4180, in the form the query API's own CSV takes: a header line, fields quoted only when
// they must be, "\n" line ends, null as an empty field.
function toCsv(result) {
  const field = (value) => {
    const text = cellText(value);
    return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
  };
  const lines = [result.columns.map((c) => field(c.name)).join(",")];
  for (const row of result.rows) lines.push(row.map(field).join(","));
  return lines.join("\n") + "\n";
}

function exportCsv() {
  if (!lastResult) return;
  const blob = new Blob([toCsv(lastResult)], { type: "text/csv" });
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = `sluice-${lastResult.query_id || "result"}.csv`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

async function runQuery() {
  const sql = $("#sql-editor").value;
  if (!sql.trim()) return;
  const run = $("#run");
  run.disabled = true;
  $("#query-error").hidden = true;
  // Yellow: waiting for a slot or running, as the handler calls it.
  setState("yellow", "yellow · running");
  $("#query-meta").textContent = "";
  const started = performance.now();
  try {
    const response = await api("../v1/query", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ sql }),
    });
    const roundTrip = performance.now() - started;
    const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
    if (!response.ok) {
      lastResult = null;
      $("#export-csv").disabled = true;
      setState("failed", "failed");
      $("#query-meta").textContent = `HTTP ${response.status} · ${fmtMs(roundTrip)}`;
      const error = $("#query-error");
      error.textContent = body.error || JSON.stringify(body);
      error.hidden = false;
      return;
    }
    lastResult = body;
    setState(body.state, body.state === "orange" ? (body.cached ? "orange · from cache" : "orange · cached") : body.state);
    $("#query-meta").textContent =
      `${fmt(body.row_count)} row${body.row_count === 1 ? "" : "s"} · ${body.elapsed_ms.toFixed(1)} ms on the handler · ${fmtMs(roundTrip)} round trip · replica v${body.replica_version}`;
    renderTable(body);
    renderResultChart(body);
    $("#export-csv").disabled = false;
  } catch (error) {
    setState("failed", "failed");
    const box = $("#query-error");
    box.textContent = `cannot reach the query API: ${error.message}`;
    box.hidden = false;
  } finally {
    run.disabled = false;
  }
}

// ---------------------------------------------------------------------------------------------

function start() {
  updateKeyButton();
  $("#forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    location.reload();
  });
  $("#run").addEventListener("click", runQuery);
  $("#export-csv").addEventListener("click", exportCsv);
  $("#sql-editor").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      runQuery();
    }
  });
  for (const button of document.querySelectorAll("[data-example]")) {
    button.addEventListener("click", () => {
      $("#sql-editor").value = button.dataset.example;
      runQuery();
    });
  }
  // Charts are drawn to their boxes' sizes.
  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => {
      drawBoard();
      if (lastResult) renderResultChart(lastResult);
    }, 150);
  });
  refreshBoard();
}

start();
