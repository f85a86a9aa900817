// tapswitch's classroom page: the switch pushes its events and, every
// second, its state (ports, MAC table) as server-sent events; this script
// keeps a model of both and draws it. Read-only: it never sends anything.
"use strict";

const model = {
  ports: new Map(),   // port_no -> {name, kind, stats, rates}
  fdb: new Map(),     // mac -> {mac, port_no, port, kind, seenAt (ms, page clock)}
  ageing: 0,          // seconds; 0 = never
  lastState: null,    // {time (s, switch clock), ports}
};
const LOG_LINES = 200;
const $ = (id) => document.getElementById(id);

function setStatus(state, text) {
  const status = $("status");
  status.className = state;
  status.textContent = text;
  document.body.classList.toggle("disconnected", state === "disconnected");
}

function connect() {
  const source = new EventSource("/events");
  source.onopen = () => setStatus("connected", "connected");
  source.onmessage = (message) => {
    let data;
    try { data = JSON.parse(message.data); } catch (e) { return; }
    if (data.event === "state") { applyState(data); } else { applyEvent(data); }
    draw();
  };
  source.onerror = () => {
    setStatus("disconnected", "disconnected: the switch is gone; reconnecting…");
    // The browser retries on its own unless it gave up; then so do we, later.
    if (source.readyState === EventSource.CLOSED) {
      setTimeout(connect, 1000);
    }
  };
}

function applyState(state) {
  $("network").textContent = "network " + state.network;
  model.ageing = state.ageing_time;
  $("ageing").textContent = state.ageing_time ? "(entries age out after " + state.ageing_time + " s)" : "(entries never age)";
  const previous = model.lastState;
  const seen = new Set();
  for (const p of state.ports) {
    seen.add(p.port_no);
    let rates = null;
    const before = previous && previous.ports.get(p.port_no);
    const dt = previous ? state.time - previous.time : 0;
    if (before && dt > 0) {
      rates = {
        rxFrames: (p.stats.rx_frames - before.rx_frames) / dt,
        txFrames: (p.stats.tx_frames - before.tx_frames) / dt,
        rxBits: 8 * (p.stats.rx_bytes - before.rx_bytes) / dt,
        txBits: 8 * (p.stats.tx_bytes - before.tx_bytes) / dt,
      };
    }
    model.ports.set(p.port_no, { name: p.name, kind: p.kind, stats: p.stats, rates });
  }
  for (const id of [...model.ports.keys()]) { if (!seen.has(id)) model.ports.delete(id); }
  model.lastState = { time: state.time, ports: new Map(state.ports.map((p) => [p.port_no, p.stats])) };
  const now = performance.now();
  const macs = new Set();
  for (const e of state.fdb) {
    macs.add(e.mac);
    const old = model.fdb.get(e.mac);
    model.fdb.set(e.mac, { mac: e.mac, port_no: e.port_no, port: e.port, kind: e.kind,
      seenAt: now - 1000 * e.ageing_timer, fresh: old ? old.fresh : false });
  }
  for (const mac of [...model.fdb.keys()]) { if (!macs.has(mac)) model.fdb.delete(mac); }
}

function applyEvent(e) {
  const now = performance.now();
  switch (e.event) {
    case "learned":
    case "static_added":
      model.fdb.set(e.mac, { mac: e.mac, port_no: e.port, port: e.dev,
        kind: e.event === "learned" ? "dynamic" : "static", seenAt: now, fresh: true });
      break;
    case "moved": {
      model.fdb.set(e.mac, { mac: e.mac, port_no: e.to, port: e.dev, kind: "dynamic", seenAt: now, fresh: true });
      break;
    }
    case "expired":
    case "evicted":
    case "static_removed":
    case "deleted":
      model.fdb.delete(e.mac);
      break;
    case "flushed":
      for (const [mac, entry] of model.fdb) { if (entry.port_no === e.port) model.fdb.delete(mac); }
      break;
    case "port_added":
      model.ports.set(e.port, { name: e.name, kind: "", stats: null, rates: null });
      break;
    case "port_removed":
      model.ports.delete(e.port);
      break;
  }
  log(e);
}

function describe(e) {
  const dev = e.dev || "?";
  switch (e.event) {
    case "learned": return e.mac + " dev " + dev + " learned";
    case "moved": return e.mac + " dev " + dev + " moved from " + (e.from_dev || "?") + " to " + dev;
    case "expired": return e.mac + " dev " + dev + " expired";
    case "evicted": return e.mac + " dev " + dev + " evicted (table full)";
    case "flushed": return "dev " + dev + " flushed (" + e.entries + (e.entries === 1 ? " entry)" : " entries)");
    case "static_added": return e.mac + " dev " + dev + " static added";
    case "static_removed": return e.mac + " dev " + dev + " static removed";
    case "deleted": return e.mac + " dev " + dev + " deleted";
    case "port_added": return "port " + e.name + " added";
    case "port_removed": return "port " + e.name + " removed" + (e.reason ? ": " + e.reason : "");
    case "link_down": return "port " + e.name + " link down";
    case "link_up": return "port " + e.name + " link up";
    case "flow_opened": return "flow " + e.flow + " opened";
    case "flow_closed": return "flow " + e.flow + " closed";
    case "trace": return "trace " + e.line;
    case "lost": return "lost " + e.count + " events (this page was too slow)";
    default: return JSON.stringify(e);
  }
}

function log(e) {
  const item = document.createElement("li");
  item.textContent = (typeof e.time === "number" ? e.time.toFixed(3) + "  " : "") + describe(e);
  item.className = e.event;
  const list = $("log");
  list.prepend(item);
  while (list.children.length > LOG_LINES) list.lastChild.remove();
}

function remaining(entry, now) {
  if (entry.kind !== "dynamic" || !model.ageing) return 1;
  return Math.max(0, 1 - (now - entry.seenAt) / (1000 * model.ageing));
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function rate(value, scale) {
  return value === undefined ? "" : (value / scale).toFixed(1);
}

function drawPorts() {
  const body = $("ports").tBodies[0];
  body.replaceChildren();
  for (const [id, p] of [...model.ports].sort((a, b) => a[0] - b[0])) {
    const row = document.createElement("tr");
    row.className = "port-row";
    row.dataset.port = p.name;
    const r = p.rates || {};
    cell(row, id, "num");
    cell(row, p.name);
    cell(row, p.kind);
    cell(row, rate(r.rxFrames, 1), "num");
    cell(row, rate(r.txFrames, 1), "num");
    cell(row, rate(r.rxBits, 1000), "num");
    cell(row, rate(r.txBits, 1000), "num");
    cell(row, p.stats ? p.stats.rx_dropped + p.stats.tx_dropped : "", "num");
    body.appendChild(row);
  }
}

function drawFdb() {
  const body = $("fdb").tBodies[0];
  const now = performance.now();
  body.replaceChildren();
  const entries = [...model.fdb.values()].sort((a, b) => (a.port_no - b.port_no) || a.mac.localeCompare(b.mac));
  for (const e of entries) {
    const row = document.createElement("tr");
    row.className = "fdb-row" + (e.fresh ? " fresh" : "");
    e.fresh = false;
    row.dataset.mac = e.mac;
    cell(row, e.mac, "mac");
    cell(row, e.port);
    cell(row, e.kind);
    const bar = document.createElement("div");
    bar.className = "bar" + (e.kind === "dynamic" ? "" : " static");
    const fill = document.createElement("div");
    fill.style.width = (100 * remaining(e, now)).toFixed(1) + "%";
    bar.appendChild(fill);
    bar.title = e.kind === "dynamic" && model.ageing ? "ages out in " + (remaining(e, now) * model.ageing).toFixed(0) + " s" : "never ages";
    const td = cell(row, "");
    td.appendChild(bar);
    body.appendChild(row);
  }
}

const SVG = "http://www.w3.org/2000/svg";
function svg(name, attrs, parent) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  parent.appendChild(el);
  return el;
}

// The switch in the middle, each port a line out of it, the hosts learned
// on a port fanned out at its end.
function drawTopology() {
  const picture = $("topology");
  picture.replaceChildren();
  const ports = [...model.ports].sort((a, b) => a[0] - b[0]);
  const n = Math.max(ports.length, 1);
  ports.forEach(([id, p], i) => {
    const angle = -Math.PI / 2 + (2 * Math.PI * i) / n;
    const x = 110 * Math.cos(angle), y = 110 * Math.sin(angle);
    svg("line", { x1: 0, y1: 0, x2: x, y2: y, class: "link" }, picture);
    const label = svg("text", { x: x * 0.55, y: y * 0.55 - 4, class: "port-label", "text-anchor": "middle" }, picture);
    label.textContent = p.name;
    const hosts = [...model.fdb.values()].filter((e) => e.port_no === id);
    hosts.forEach((h, j) => {
      const spread = hosts.length > 1 ? (j / (hosts.length - 1) - 0.5) * Math.min(1.4, 0.35 * hosts.length) : 0;
      const hx = 180 * Math.cos(angle + spread), hy = 180 * Math.sin(angle + spread);
      svg("line", { x1: x, y1: y, x2: hx, y2: hy, class: "host-link" }, picture);
      const g = svg("g", { class: "host" + (h.kind === "local" ? " gateway" : ""), "data-mac": h.mac }, picture);
      svg("circle", { cx: hx, cy: hy, r: 6, opacity: 0.3 + 0.7 * remaining(h, performance.now()) }, g);
      const t = svg("text", { x: hx, y: hy + 16, "text-anchor": "middle" }, g);
      t.textContent = h.mac;
    });
  });
  svg("rect", { x: -28, y: -18, width: 56, height: 36, rx: 6, class: "switch" }, picture);
  const name = svg("text", { x: 0, y: 4, "text-anchor": "middle", fill: "#fff", "font-size": 11 }, picture);
  name.textContent = "switch";
}

function draw() {
  drawPorts();
  drawFdb();
  drawTopology();
}

// The ageing bars count down between the switch's updates.
setInterval(() => { drawFdb(); }, 250);
setStatus("connecting", "connecting…");
connect();
