// rshash search page: uses the JSON API only (/api/index, /api/search,
// /api/images/{id}/thumbnail). Every string from the server goes into the page
// through textContent or an attribute, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  query: null, // {id} or {code} (an upload becomes its code once encoded)
  queryLabel: "",
  k: 20, cls: "", maxDistance: "",
  pos: [], neg: [], // the marks the shown ranking used
  marks: new Map(), // image id -> "pos" | "neg" (applied by "Re-rank")
  results: [], total: 0, loading: false,
  maxK: 1000, // the API's largest page (from /api/index)
};

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function thumbUrl(id) {
  // the whole id as one path segment: "/" as %2F, "." as %2E (no dot segments)
  return "/api/images/" + encodeURIComponent(id).replace(/\./g, "%2E") + "/thumbnail";
}

function searchParams(extra) {
  const p = new URLSearchParams();
  if (state.query.id !== undefined) p.set("id", state.query.id);
  else p.set("code", state.query.code);
  p.set("k", String(state.k));
  if (state.cls) p.set("class", state.cls);
  if (state.maxDistance !== "") p.set("max_distance", state.maxDistance);
  for (const id of state.pos) p.append("pos", id);
  for (const id of state.neg) p.append("neg", id);
  for (const [key, value] of Object.entries(extra || {})) p.set(key, String(value));
  return p;
}

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function apiJson(url, options) {
  const response = await fetch(url, options);
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    let detail = body && body.detail !== undefined ? body.detail : response.statusText;
    if (typeof detail !== "string") detail = JSON.stringify(detail);
    throw new Error(response.status + ": " + detail);
  }
  return body;
}

function readControls() {
  state.k = Number($("k").value) || 20;
  state.cls = $("class").value;
  state.maxDistance = $("max-distance").value.trim();
}

function writeControls() {
  $("k").value = String(state.k);
  $("class").value = state.cls;
  $("max-distance").value = state.maxDistance;
}

function showQueryImage(src) {
  $("query-img").src = src || "";
  $("drop").classList.toggle("has-img", Boolean(src));
}

function updateUrl(push) {
  const url = "/?" + searchParams().toString();
  if (push) history.pushState(null, "", url); else history.replaceState(null, "", url);
}

function updateLinks() {
  const ready = state.query && state.results.length > 0;
  for (const [id, fmt] of [["export-csv", "csv"], ["export-json", "json"]]) {
    const a = $(id);
    a.classList.toggle("disabled", !ready);
    // the results shown, up to the API's largest page (a longer list: page through the API)
    const k = Math.min(state.results.length, state.maxK);
    if (ready) a.href = "/api/search?" + searchParams({offset: 0, k: k, format: fmt});
    else a.removeAttribute("href");
  }
  const link = $("permalink");
  link.classList.toggle("disabled", !state.query);
  if (state.query) link.href = "/?" + searchParams().toString();
  const nPos = [...state.marks.values()].filter((v) => v === "pos").length;
  const nNeg = state.marks.size - nPos;
  $("marks").textContent = state.marks.size ? `${nPos} relevant, ${nNeg} not relevant` : "";
  $("rerank").disabled = !state.query || state.marks.size === 0;
  $("clear-marks").disabled = state.marks.size === 0;
}

function mark(card, id, value) {
  if (state.marks.get(id) === value) state.marks.delete(id); else state.marks.set(id, value);
  const now = state.marks.get(id);
  card.classList.toggle("pos", now === "pos");
  card.classList.toggle("neg", now === "neg");
  updateLinks();
}

function renderCard(r) {
  const card = el("div", "card");
  card.dataset.id = r.image_id;
  const m = state.marks.get(r.image_id);
  if (m) card.classList.add(m);
  const img = el("img");
  img.loading = "lazy";
  img.alt = r.image_id;
  img.title = "search with this image";
  img.src = thumbUrl(r.image_id);
  img.addEventListener("click", () => searchById(r.image_id));
  card.append(img);
  const top = el("div", "line");
  top.append(el("span", "rank", "#" + r.rank), el("span", "distance", "d = " + r.distance));
  card.append(top);
  const cls = el("div", "line");
  cls.append(el("span", "class", r.class_name));
  if (r.predicted_class !== null && r.predicted_class !== undefined) {
    const p = el("span", "predicted", "pred. " + r.predicted_class);
    if (r.predicted_class !== r.class_name) p.classList.add("other");
    cls.append(p);
  }
  card.append(cls);
  card.append(el("div", "id", r.image_id));
  const marks = el("div", "marks");
  const good = el("button", "good", "\u2713 relevant");
  good.type = "button";
  good.title = "mark as relevant";
  good.addEventListener("click", () => mark(card, r.image_id, "pos"));
  const bad = el("button", "bad", "\u2717 not");
  bad.type = "button";
  bad.title = "mark as not relevant";
  bad.addEventListener("click", () => mark(card, r.image_id, "neg"));
  marks.append(good, bad);
  card.append(marks);
  return card;
}

function showPage(doc, append) {
  if (!append) { $("grid").replaceChildren(); state.results = []; }
  for (const r of doc.results) $("grid").append(renderCard(r));
  state.results = state.results.concat(doc.results);
  state.total = doc.total;
  $("more").hidden = state.results.length >= state.total;
  let text = `${state.results.length} of ${state.total} results for ${state.queryLabel}` +
    ` \u00b7 query ${doc.query_ms.toFixed(1)} ms on the server`;
  if (doc.encode_ms !== undefined) text += ` (+ ${doc.encode_ms.toFixed(0)} ms to encode the image)`;
  if (doc.query.predicted_class) text += ` \u00b7 predicted class ${doc.query.predicted_class}`;
  setStatus(text, false);
  updateLinks();
}

async function run(append) {
  if (!state.query || state.loading) return;
  state.loading = true;
  try {
    const offset = append ? state.results.length : 0;
    const doc = await apiJson("/api/search?" + searchParams({offset: offset}));
    showPage(doc, append);
  } catch (err) {
    setStatus(err.message, true);
  } finally {
    state.loading = false;
  }
}

function newQuery(query, label, image) {
  state.query = query;
  state.queryLabel = label;
  state.marks.clear();
  state.pos = [];
  state.neg = [];
  showQueryImage(image);
}

function searchById(id) {
  readControls();
  newQuery({id: id}, id, thumbUrl(id));
  $("id").value = id;
  updateUrl(true);
  run(false);
  window.scrollTo(0, 0);
}

async function searchByFile(file) {
  if (!file) return;
  readControls();
  const image = URL.createObjectURL(file);
  newQuery(null, file.name, image);
  state.queryLabel = "the upload " + file.name;
  const form = new FormData();
  form.append("image", file, file.name);
  const p = new URLSearchParams({k: String(state.k)});
  if (state.cls) p.set("class", state.cls);
  if (state.maxDistance !== "") p.set("max_distance", state.maxDistance);
  setStatus("encoding " + file.name + "...", false);
  state.loading = true;
  try {
    const doc = await apiJson("/api/search?" + p, {method: "POST", body: form});
    state.query = {code: doc.query.code};
    $("id").value = "";
    updateUrl(true);
    showPage(doc, false);
  } catch (err) {
    setStatus(err.message, true);
    $("grid").replaceChildren();
  } finally {
    state.loading = false;
  }
}

function rerank() {
  state.pos = [...state.marks].filter(([, v]) => v === "pos").map(([id]) => id);
  state.neg = [...state.marks].filter(([, v]) => v === "neg").map(([id]) => id);
  updateUrl(true);
  run(false);
}

function fromUrl() {
  const p = new URLSearchParams(location.search);
  state.k = Number(p.get("k")) || 20;
  state.cls = p.get("class") || "";
  state.maxDistance = p.get("max_distance") || "";
  writeControls();
  state.marks.clear();
  state.pos = p.getAll("pos");
  state.neg = p.getAll("neg");
  for (const id of state.pos) state.marks.set(id, "pos");
  for (const id of state.neg) state.marks.set(id, "neg");
  if (p.has("id")) {
    state.query = {id: p.get("id")};
    state.queryLabel = p.get("id");
    $("id").value = p.get("id");
    showQueryImage(thumbUrl(p.get("id")));
  } else if (p.has("code")) {
    state.query = {code: p.get("code")};
    state.queryLabel = "code " + p.get("code");
    showQueryImage(null);
  } else {
    state.query = null;
  }
  if (state.query) run(false);
  updateLinks();
}

async function init() {
  try {
    const info = await apiJson("/api/index");
    $("index-info").textContent =
      `${info.n} images \u00b7 ${info.method}, ${info.bits} bits, ${info.backbone}` +
      ` \u00b7 generation ${info.generation}`;
    for (const name of info.class_names) {
      const o = el("option", null, name);
      o.value = name;
      $("class").append(o);
    }
    $("max-distance").max = String(info.bits);
    state.maxK = info.max_k;
    if (!info.can_upload) $("drop-text").textContent = "no model: search by id";
  } catch (err) {
    setStatus(err.message, true);
  }
  $("by-id").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = $("id").value.trim();
    if (id) searchById(id);
  });
  $("apply").addEventListener("click", () => { readControls(); updateUrl(true); run(false); });
  $("rerank").addEventListener("click", rerank);
  $("clear-marks").addEventListener("click", () => {
    state.marks.clear();
    for (const c of document.querySelectorAll(".card")) c.classList.remove("pos", "neg");
    updateLinks();
  });
  $("more").addEventListener("click", () => run(true));
  new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting) && !$("more").hidden) run(true);
  }).observe($("more"));
  const drop = $("drop");
  drop.addEventListener("click", () => $("file").click());
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter") $("file").click(); });
  $("file").addEventListener("change", () => searchByFile($("file").files[0]));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) searchByFile(e.dataTransfer.files[0]);
  });
  window.addEventListener("popstate", fromUrl);
  fromUrl();
}

init();
