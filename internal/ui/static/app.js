// The live page: polls /ui/api/state, draws every part, places and follows
// orders through the public API, shows timelines and dead letters. Plain
// JavaScript; every request goes to the origin the page came from.
"use strict";

const FINAL = new Set(["CONFIRMED", "REJECTED", "CANCELLED"]);
const keys = { api: "", admin: "" };
const customer = "ui-" + Math.random().toString(36).slice(2, 10);
const orders = new Map(); // id -> order, in the order placed
let previous = null; // the last state, for rates

const $ = (sel, root = document) => root.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function say(id, text, error = false) {
  const m = document.getElementById(id);
  m.textContent = text;
  m.classList.toggle("error", error);
}

// api calls path on this origin with key; it returns the parsed body, and
// throws an Error with the problem's detail on a status of 400 or more.
async function api(path, { key = keys.api, method = "GET", body } = {}) {
  const headers = { Authorization: "Bearer " + key };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!resp.ok) {
    throw new Error((data && data.detail) || `${resp.status} ${resp.statusText}`);
  }
  return data;
}

// --- keys -------------------------------------------------------------

function loadKeys() {
  // converge dev prints /ui/#key=...&admin=...: a fragment never reaches a server.
  const frag = new URLSearchParams(location.hash.slice(1));
  if (frag.get("key")) sessionStorage.setItem("converge-api-key", frag.get("key"));
  if (frag.get("admin")) sessionStorage.setItem("converge-admin-key", frag.get("admin"));
  if (location.hash) history.replaceState(null, "", location.pathname);
  keys.api = sessionStorage.getItem("converge-api-key") || "";
  keys.admin = sessionStorage.getItem("converge-admin-key") || "";
  $("#api-key").value = keys.api;
  $("#admin-key").value = keys.admin;
}

$("#keys").addEventListener("submit", (ev) => {
  ev.preventDefault();
  keys.api = $("#api-key").value.trim();
  keys.admin = $("#admin-key").value.trim();
  sessionStorage.setItem("converge-api-key", keys.api);
  sessionStorage.setItem("converge-admin-key", keys.admin);
  loadStock();
  loadDeadLetters(true);
});

// --- the diagram ------------------------------------------------------

const fmt = (n, digits = 0) => (n === undefined || n === null ? "—" : Number(n).toLocaleString("en", { maximumFractionDigits: digits }));

function rate(part, field, now) {
  const before = previous && previous.parts.get(part.name);
  const v = part.figures[field];
  if (!before || v === undefined || before.figures[field] === undefined) return undefined;
  const dt = (now - previous.at) / 1000;
  if (dt <= 0) return undefined;
  return Math.max(0, (v - before.figures[field]) / dt);
}

// figures lists what a card shows of a part: [label, key, text].
function figures(p, now) {
  const f = p.figures;
  const out = [];
  const add = (label, key, text) => out.push([label, key, text]);
  switch (p.role) {
    case "lb":
    case "gateway": {
      add("requests/s", "throughput", fmt(rate(p, "requests", now), 1));
      const pools = {};
      for (const b of f.backends || []) {
        pools[b.pool] = pools[b.pool] || [0, 0];
        pools[b.pool][1]++;
        if (b.up) pools[b.pool][0]++;
      }
      for (const [pool, [up, all]] of Object.entries(pools)) add(`${pool} in rotation`, "rotation-" + pool, `${up} of ${all}`);
      break;
    }
    case "order":
    case "inventory":
      add("requests/s", "throughput", fmt(rate(p, "requests", now), 1));
      add("events out/s", "published", fmt(rate(p, "published", now), 1));
      add("outbox backlog", "outbox", fmt(f.outbox));
      add("consumer lag", "lag", fmt(f.lag));
      add("dead letters", "dead-letters", fmt(f.dead_letters));
      break;
    case "broker":
      add("messages in/s", "throughput", fmt(rate(p, "received", now), 1));
      add("stored", "stored", fmt(f.stored));
      break;
  }
  return out;
}

function card(name, note) {
  const id = "card-" + name;
  const c = el("article", { class: "card", "data-name": name, "aria-labelledby": id },
    el("h4", { id }, name),
    el("p", { class: "status" }, el("span", { "data-field": "status" }, "…")),
    el("p", { class: "detail", "data-field": "detail" }),
    el("dl"));
  if (note) c.append(el("p", { class: "note" }, note));
  return c;
}

function setCard(c, status, detail, rows) {
  c.dataset.status = status;
  // Not by colour alone: the word, and a sign, say it too.
  $("[data-field=status]", c).textContent = (status === "up" ? "\u25B2 " : "\u2715 ") + status;
  $("[data-field=detail]", c).textContent = detail || "";
  const dl = $("dl", c);
  const want = rows.map((r) => r[1]).join(",");
  if (dl.dataset.keys !== want) {
    dl.replaceChildren(...rows.flatMap(([label, key]) => [el("dt", {}, label), el("dd", { "data-figure": key })]));
    dl.dataset.keys = want;
  }
  for (const [, key, text] of rows) $(`[data-figure="${key}"]`, dl).textContent = text;
}

function controls(c, p) {
  let box = $(".controls", c);
  if (!p.control) { if (box) box.remove(); return; }
  if (box) return;
  box = el("div", { class: "controls" },
    el("button", { type: "button", "data-action": "stop", "data-component": p.name, "aria-label": `Stop ${p.name}`, onclick: () => control("stop", p.name) }, "Stop"),
    el("button", { type: "button", class: "secondary", "data-action": "start", "data-component": p.name, "aria-label": `Start ${p.name}`, onclick: () => control("start", p.name) }, "Start"));
  c.append(box);
}

async function control(action, name) {
  if (!keys.admin) { say("control-msg", "Stopping and starting needs the admin key.", true); return; }
  say("control-msg", `${action} ${name}…`);
  for (const b of document.querySelectorAll(`.controls button[data-component="${name}"]`)) b.disabled = true;
  try {
    await api("/ui/api/control", { key: keys.admin, method: "POST", body: { action, component: name } });
    say("control-msg", `${name}: ${action === "stop" ? "stopped" : "started"}`);
  } catch (err) {
    say("control-msg", `${action} ${name}: ${err.message} (the diagram shows what it is now)`, true);
  } finally {
    for (const b of document.querySelectorAll(`.controls button[data-component="${name}"]`)) b.disabled = false;
  }
  // Show what it did now, not at the next poll, which may wait on a part
  // slow to answer.
  refresh().catch(() => {});
}

// stores draws a service's database and cache, from its instances: the
// database is up while an instance's /readyz (a ping of it) passes.
function stores(role, db, cache, parts) {
  const box = $(`[data-role="stores-${role}"]`);
  const insts = parts.filter((p) => p.role === role);
  if (!insts.length) { box.replaceChildren(); return; }
  let dbCard = $(`[data-name="${db}"]`, box), cacheCard = $(`[data-name="${cache}"]`, box);
  if (!dbCard) {
    dbCard = card(db, `read through ${role}'s /readyz`);
    cacheCard = card(cache);
    box.replaceChildren(dbCard, cacheCard);
  }
  const up = insts.some((p) => p.status === "up");
  const engine = insts.map((p) => p.figures.db).find(Boolean);
  setCard(dbCard, up ? "up" : "down", up ? "" : `no ${role} instance can reach it`, [["engine", "engine", engine || "—"]]);
  const kind = insts.map((p) => p.figures.cache).find(Boolean);
  let hits = 0, misses = 0;
  for (const p of insts) { hits += p.figures.cache_hits || 0; misses += p.figures.cache_misses || 0; }
  const ratio = hits + misses ? `${Math.round((100 * hits) / (hits + misses))}%` : "—";
  setCard(cacheCard, up ? "up" : "down", "", [["kind", "kind", kind || "—"], ["hit ratio", "hits", ratio]]);
}

function draw(state) {
  const now = Date.parse(state.at);
  const names = new Set();
  for (const p of state.components) {
    names.add(p.name);
    const box = $(`[data-role="${p.role}"]`);
    if (!box) continue;
    let c = $(`[data-name="${p.name}"]`, box);
    if (!c) { c = card(p.name); box.append(c); }
    setCard(c, p.status, p.detail, figures(p, now));
    controls(c, p);
  }
  for (const c of document.querySelectorAll("#diagram [data-role] > .card")) {
    const role = c.parentElement.dataset.role;
    if (!role.startsWith("stores-") && !names.has(c.dataset.name)) c.remove();
  }
  stores("order", "DB A", "cache A", state.components);
  stores("inventory", "DB B", "cache B", state.components);
  previous = { at: now, parts: new Map(state.components.map((p) => [p.name, p])) };
}

// refresh asks for the state and draws it, unless the answer to a later
// request has been drawn meanwhile (a button's refresh runs beside the poll).
let asked = 0, drawn = 0;
async function refresh() {
  const n = ++asked;
  const state = await api("/ui/api/state");
  if (n < drawn) return;
  drawn = n;
  draw(state);
}

async function poll() {
  if (keys.api) {
    try {
      await refresh();
      say("conn", "live: updated " + new Date().toLocaleTimeString());
    } catch (err) {
      say("conn", "not updating: " + err.message, true);
    }
  }
  setTimeout(poll, 500);
}

// --- orders -----------------------------------------------------------

async function loadStock() {
  if (!keys.api) return;
  try {
    const page = await api("/api/v1/inventory?limit=20");
    const items = page.items || [];
    $("#stock").textContent = items.length
      ? "Stock: " + items.map((i) => `${i.sku} ${i.available} available`).join(", ")
      : "No stock yet: PUT /api/v1/inventory/{sku} creates some.";
    if (!$("#skus").value && items.length) $("#skus").value = items.slice(0, 3).map((i) => i.sku).join(",");
  } catch (err) {
    $("#stock").textContent = "Stock: " + err.message;
  }
}

$("#place").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const skus = $("#skus").value.split(",").map((s) => s.trim()).filter(Boolean);
  const quantity = Number($("#quantity").value);
  const count = Number($("#count").value);
  if (!skus.length) { say("place-msg", "Name at least one SKU.", true); return; }
  say("place-msg", `placing ${count} order(s)…`);
  let placed = 0, failed = 0, lastError = "";
  const one = async (i) => {
    try {
      const o = await api("/api/v1/orders", { method: "POST", body: { customer_id: customer, items: [{ sku: skus[i % skus.length], quantity }] } });
      orders.set(o.id, o);
      placed++;
    } catch (err) { failed++; lastError = err.message; }
  };
  // A few at a time, as a burst of clients would.
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(8, count) }, async () => {
    while (next < count) await one(next++);
  }));
  say("place-msg", `placed ${placed} order(s)` + (failed ? `; ${failed} failed: ${lastError}` : ""), failed > 0);
  drawOrders();
});

function drawOrders() {
  const counts = {};
  for (const o of orders.values()) counts[o.status] = (counts[o.status] || 0) + 1;
  $("#order-counts").textContent = orders.size
    ? Object.entries(counts).map(([s, n]) => `${n} ${s}`).join(", ")
    : "none yet";
  const latest = [...orders.values()].slice(-20).reverse();
  const body = $("#orders tbody");
  // A keyboard user on an id keeps their place: then only the cells change.
  if (body.contains(document.activeElement)) {
    for (const tr of body.rows) {
      const o = orders.get(tr.dataset.order);
      tr.cells[1].textContent = o.status;
      tr.cells[1].className = "st-" + o.status;
      tr.cells[2].textContent = o.reason || "";
    }
    return;
  }
  body.replaceChildren(...latest.map((o) => el("tr", { "data-order": o.id },
    el("td", {}, el("button", { type: "button", class: "link", onclick: () => showTimeline(o.id) }, o.id)),
    el("td", { class: "st-" + o.status, "data-field": "status" }, o.status),
    el("td", {}, o.reason || ""),
    el("td", {}, o.updated_at ? new Date(o.updated_at).toLocaleTimeString() : ""))));
}

// follow reads this page's orders (one customer id) a page at a time.
async function follow() {
  if (keys.api && [...orders.values()].some((o) => !FINAL.has(o.status))) {
    try {
      let after = "";
      do {
        const page = await api(`/api/v1/orders?customer_id=${encodeURIComponent(customer)}&limit=500` + (after ? `&after=${encodeURIComponent(after)}` : ""));
        for (const o of page.items || []) if (orders.has(o.id)) orders.set(o.id, o);
        after = page.next;
      } while (after);
    } catch (err) {
      say("place-msg", "following the orders: " + err.message, true);
    }
    drawOrders();
  }
  setTimeout(follow, 1000);
}

// --- timeline ---------------------------------------------------------

$("#timeline-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  showTimeline($("#order-id").value.trim());
});

async function showTimeline(id) {
  $("#order-id").value = id;
  say("timeline-msg", "loading…");
  try {
    const t = await api(`/api/v1/orders/${encodeURIComponent(id)}/timeline`);
    const steps = t.steps || [];
    const t0 = steps.length ? Date.parse(steps[0].at) : 0;
    $("#timeline tbody").replaceChildren(...steps.map((s) => el("tr", {},
      el("td", { class: "num" }, s.at.slice(11, 26)),
      el("td", { class: "num" }, `+${Date.parse(s.at) - t0} ms`),
      el("td", {}, s.service),
      el("td", {}, s.step),
      el("td", {}, s.detail || ""))));
    say("timeline-msg", `order ${t.order_id}: ${t.status || "?"}, ${steps.length} steps`);
    $("#timeline-h").scrollIntoView({ block: "nearest" });
  } catch (err) {
    $("#timeline tbody").replaceChildren();
    say("timeline-msg", err.message, true);
  }
}

// --- dead letters -----------------------------------------------------

async function loadDeadLetters(ev) {
  // The periodic refresh leaves the list alone while a keyboard user is in it.
  if (!ev && $("#dlq").contains(document.activeElement)) return;
  if (!keys.admin) { say("dlq-msg", "Enter the admin key to see them."); return; }
  try {
    const page = await api("/api/v1/admin/dead-letters?limit=50", { key: keys.admin });
    const items = page.items || [];
    $("#dlq tbody").replaceChildren(...items.map((d) => el("tr", {},
      el("td", { class: "num" }, String(d.seq)),
      el("td", {}, d.consumer),
      el("td", {}, d.type || ""),
      el("td", { class: "num" }, String(d.deliveries)),
      el("td", {}, new Date(d.dead_lettered_at).toLocaleString()),
      el("td", {}, d.error),
      el("td", {},
        el("button", { type: "button", "aria-label": `Replay dead letter ${d.seq}`, onclick: () => dlqAction(d.seq, "replay") }, "Replay"), " ",
        el("button", { type: "button", class: "secondary", "aria-label": `Discard dead letter ${d.seq}`, onclick: () => dlqAction(d.seq, "discard") }, "Discard")))));
    say("dlq-msg", items.length ? `${items.length}${page.next ? "+" : ""} dead letter(s)` : "no dead letters");
  } catch (err) {
    say("dlq-msg", err.message, true);
  }
}

async function dlqAction(seq, action) {
  try {
    if (action === "replay") await api(`/api/v1/admin/dead-letters/${seq}/replay`, { key: keys.admin, method: "POST" });
    else await api(`/api/v1/admin/dead-letters/${seq}`, { key: keys.admin, method: "DELETE" });
    say("dlq-msg", `dead letter ${seq}: ${action === "replay" ? "replayed" : "discarded"}`);
  } catch (err) {
    say("dlq-msg", `${action} ${seq}: ${err.message}`, true);
  }
  loadDeadLetters(true);
}

$("#dlq-refresh").addEventListener("click", loadDeadLetters);

loadKeys();
drawOrders();
poll();
follow();
loadStock();
loadDeadLetters(true);
setInterval(() => loadDeadLetters(), 5000);
setInterval(loadStock, 5000);
