// rshash search page: uses the JSON API only (/api/index, /api/search,
// /api/images/{id}/thumbnail, /api/quicklook/{scene}). Every string from the server
// goes into the page through textContent or an attribute, never as HTML.
//
// An index of geo-referenced scenes also gets a map: a small view of our own (no map
// library, nothing loaded from elsewhere) in Web Mercator, where the scenes'
// quicklooks already are; the query chip and the hits are outlines over them.
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
  geo: false, // an index of chips of geo-referenced scenes: the map, place filters
  bbox: "", dateFrom: "", dateTo: "", // the place filters the shown ranking used
  queryFootprint: null, // lon/lat corners of the query chip, when it is one
  selected: null, // the hit highlighted on the map and in the list
  again: false, // a new search was asked for while one ran
  found: [], // find-all's chips (outlined on the map)
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
  placeParams(p);
  for (const [key, value] of Object.entries(extra || {})) p.set(key, String(value));
  return p;
}

function findParams(extra) { // find-all: the query chip, the marks on screen, the place
  const p = new URLSearchParams();
  if (state.query && state.query.id !== undefined) p.set("id", state.query.id);
  for (const [id, v] of state.marks) p.append(v, id);
  placeParams(p);
  if ($("find-rule").value) p.set("rule", $("find-rule").value);
  if ($("find-threshold").value !== "") p.set("threshold", $("find-threshold").value);
  if ($("find-merge").checked) p.set("merge", "true");
  for (const [key, value] of Object.entries(extra || {})) p.set(key, String(value));
  return p.toString();
}

async function findAll() {
  setStatus("finding all...");
  try {
    const doc = await apiJson("/api/findall?" + findParams());
    state.found = doc.results;
    $("found").textContent = `${doc.total} of ${doc.scored} chips found ` +
      `(${doc.rule}, score ≥ ${doc.threshold}) in ${doc.query_ms} ms`;
    setStatus("");
    drawShapes();
  } catch (err) {
    setStatus(err.message, true);
  }
}

function placeParams(p) {
  if (state.bbox) p.set("bbox", state.bbox);
  if (state.dateFrom) p.set("date_from", state.dateFrom);
  if (state.dateTo) p.set("date_to", state.dateTo);
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

const BOX = ["bbox-w", "bbox-s", "bbox-e", "bbox-n"];

function readControls() {
  state.k = Number($("k").value) || 20;
  state.cls = $("class").value;
  state.maxDistance = $("max-distance").value.trim();
  // a box only when all four sides are typed (the server checks them: one line if wrong)
  const sides = BOX.map((id) => $(id).value.trim());
  state.bbox = sides.every((v) => v !== "") ? sides.join(",") : "";
  state.dateFrom = $("date-from").value;
  state.dateTo = $("date-to").value;
}

function writeControls() {
  $("k").value = String(state.k);
  $("class").value = state.cls;
  $("max-distance").value = state.maxDistance;
  const sides = state.bbox ? state.bbox.split(",") : [];
  BOX.forEach((id, i) => { $(id).value = sides[i] !== undefined ? sides[i] : ""; });
  $("date-from").value = state.dateFrom;
  $("date-to").value = state.dateTo;
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
  for (const [id, fmt] of [["export-csv", "csv"], ["export-json", "json"],
    ["export-geojson", "geojson"]]) {
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
  const canFind = state.geo && ((state.query && state.query.id !== undefined) || nPos > 0);
  $("find-all").disabled = !canFind;
  const fa = $("export-findall");
  fa.classList.toggle("disabled", !canFind);
  if (canFind) fa.href = "/api/findall?" + findParams({format: "geojson"});
  else fa.removeAttribute("href");
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
  if (r.footprint) card.append(renderPlace(r));
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

function renderPlace(r) {
  // a chip: its date, and its place (the footprint's centre, lat/lon); a click shows it
  const [lon, lat] = centreOf(r.footprint);
  const line = el("div", "place");
  line.append(el("span", "date", r.date));
  const where = el("button", "locate", `${lat.toFixed(4)}, ${lon.toFixed(4)}`);
  where.type = "button";
  where.title = "show on the map (scene " + r.scene + ")";
  where.addEventListener("click", () => {
    selectHit(r.image_id);
    $("map").scrollIntoView({block: "nearest"});
  });
  line.append(where);
  return line;
}

function showPage(doc, append) {
  if (!append) {
    $("grid").replaceChildren();
    state.results = [];
    state.selected = null;
  }
  if (!append) state.queryFootprint = doc.query.footprint || null;
  for (const r of doc.results) $("grid").append(renderCard(r));
  state.results = state.results.concat(doc.results);
  if (state.geo) drawShapes();
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
  if (!state.query) return;
  if (state.loading) {
    // a new search while one runs (a box drawn, then dates typed): run it after, on the
    // controls as they are then (a later page of the old search is not wanted any more)
    if (!append) state.again = true;
    return;
  }
  state.loading = true;
  try {
    const offset = append ? state.results.length : 0;
    const doc = await apiJson("/api/search?" + searchParams({offset: offset}));
    if (!state.again) showPage(doc, append);
  } catch (err) {
    if (!state.again) setStatus(err.message, true);
  } finally {
    state.loading = false;
  }
  if (state.again) {
    state.again = false;
    run(false);
  }
}

function newQuery(query, label, image) {
  state.query = query;
  state.queryLabel = label;
  state.marks.clear();
  state.pos = [];
  state.neg = [];
  state.found = [];
  if (state.geo) $("found").textContent = "";
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
  placeParams(p);
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

function applyControls() {
  readControls();
  updateUrl(true);
  run(false);
}

function fromUrl() {
  const p = new URLSearchParams(location.search);
  state.k = Number(p.get("k")) || 20;
  state.cls = p.get("class") || "";
  state.maxDistance = p.get("max_distance") || "";
  state.bbox = p.get("bbox") || "";
  state.dateFrom = p.get("date_from") || "";
  state.dateTo = p.get("date_to") || "";
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
    if (info.geo) {
      $("index-info").textContent = $("index-info").textContent.replace(" images", " chips") +
        ` \u00b7 ${info.scenes.length} scenes`;
      initMap(info);
    }
  } catch (err) {
    setStatus(err.message, true);
  }
  $("by-id").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = $("id").value.trim();
    if (id) searchById(id);
  });
  $("apply").addEventListener("click", applyControls);
  for (const id of [...BOX, "date-from", "date-to"]) {
    $(id).addEventListener("keydown", (e) => { if (e.key === "Enter") applyControls(); });
  }
  $("clear-place").addEventListener("click", () => {
    for (const id of [...BOX, "date-from", "date-to"]) $(id).value = "";
    applyControls();
  });
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

// --- the map (an index of geo-referenced scenes) ---------------------------------

const R = 6378137; // the sphere of Web Mercator (EPSG:3857), metres
const HALF = Math.PI * R; // the world's half width in metres
const SVG = "http://www.w3.org/2000/svg";
const map = {
  cx: 0, cy: 0, res: 1000, // the view: centre (EPSG:3857 metres), metres per CSS pixel
  scenes: [], // {id, bounds: [w, s, e, n] in 3857, img}
  home: null, // the scenes' bounds together (3857)
  basemap: null, tiles: new Map(), // XYZ template, and the tile images drawn
  drag: null, // {kind: "pan" | "box", x, y, ...} while a pointer is down
  moved: false, // the last pointer-down dragged (its click selects nothing)
  drawing: false, // "box" toggled: a plain drag draws a box
  frame: 0,
};

function mercator(lon, lat) { // spherical Mercator, as EPSG:3857 is
  const clamped = Math.max(-85.0511287798, Math.min(85.0511287798, lat));
  return [lon * HALF / 180, R * Math.log(Math.tan(Math.PI / 4 + clamped * Math.PI / 360))];
}

function lonLat(x, y) {
  return [x / HALF * 180, (2 * Math.atan(Math.exp(y / R)) - Math.PI / 2) * 180 / Math.PI];
}

function centreOf(footprint) { // the middle of a chip's lon/lat corners
  const lons = footprint.map((c) => c[0]), lats = footprint.map((c) => c[1]);
  return [(Math.min(...lons) + Math.max(...lons)) / 2, (Math.min(...lats) + Math.max(...lats)) / 2];
}

function mapSize() {
  const m = $("map");
  return [m.clientWidth, m.clientHeight];
}

function toScreen(x, y) {
  const [w, h] = mapSize();
  return [(x - map.cx) / map.res + w / 2, (map.cy - y) / map.res + h / 2];
}

function fromScreen(px, py) {
  const [w, h] = mapSize();
  return [map.cx + (px - w / 2) * map.res, map.cy - (py - h / 2) * map.res];
}

function fit(bounds) { // show [w, s, e, n] (3857) whole, with a margin
  const [w, h] = mapSize();
  map.cx = (bounds[0] + bounds[2]) / 2;
  map.cy = (bounds[1] + bounds[3]) / 2;
  map.res = Math.max((bounds[2] - bounds[0]) / (w * 0.9), (bounds[3] - bounds[1]) / (h * 0.9), 0.05);
  render();
}

function zoomAt(px, py, factor) { // the point under (px, py) stays there
  const [x, y] = fromScreen(px, py);
  const res = Math.min(Math.max(map.res / factor, 0.05), 2 * HALF / 256);
  map.cx = x - (x - map.cx) * res / map.res;
  map.cy = y - (y - map.cy) * res / map.res;
  map.res = res;
  render();
}

function render() { // at most once a frame
  if (!map.frame) map.frame = requestAnimationFrame(() => { map.frame = 0; draw(); });
}

function draw() {
  const [w, h] = mapSize();
  $("map").dataset.centre = lonLat(map.cx, map.cy).map((v) => v.toFixed(7)).join(",");
  if (map.basemap) drawTiles(w, h);
  for (const s of map.scenes) {
    // the scenes of the dates searched (ISO dates compare as text)
    s.img.hidden = (state.dateFrom && s.date < state.dateFrom) || (state.dateTo && s.date > state.dateTo);
    place(s.img, s.bounds);
  }
  const svg = $("map-overlay");
  svg.setAttribute("width", String(w));
  svg.setAttribute("height", String(h));
  for (const shape of svg.children) {
    const ring = JSON.parse(shape.dataset.ring);
    shape.setAttribute("points", ring.map(([x, y]) => toScreen(x, y).map((v) => v.toFixed(1)).join(",")).join(" "));
  }
}

function place(img, bounds) { // an image over [w, s, e, n] (3857)
  const [left, top] = toScreen(bounds[0], bounds[3]);
  img.style.left = left + "px";
  img.style.top = top + "px";
  img.style.width = (bounds[2] - bounds[0]) / map.res + "px";
  img.style.height = (bounds[3] - bounds[1]) / map.res + "px";
}

function drawTiles(w, h) {
  // the zoom level whose tiles are closest to the view's scale, and the tiles that cover it
  const z = Math.max(0, Math.min(19, Math.round(Math.log2(2 * HALF / (256 * map.res)))));
  const n = 2 ** z, size = 2 * HALF / n;
  const [x0, y0] = fromScreen(0, 0), [x1, y1] = fromScreen(w, h);
  const wanted = new Set();
  for (let ty = Math.max(0, Math.floor((HALF - y0) / size)); ty <= Math.min(n - 1, Math.floor((HALF - y1) / size)); ty++) {
    for (let tx = Math.floor((x0 + HALF) / size); tx <= Math.floor((x1 + HALF) / size); tx++) {
      const wrapped = ((tx % n) + n) % n;
      const key = `${z}/${tx}/${ty}`;
      wanted.add(key);
      let img = map.tiles.get(key);
      if (!img) {
        img = el("img", "tile");
        img.alt = "";
        img.draggable = false;
        img.src = map.basemap.replace("{z}", String(z)).replace("{x}", String(wrapped)).replace("{y}", String(ty));
        map.tiles.set(key, img);
        $("map-tiles").append(img);
      }
      const west = tx * size - HALF, north = HALF - ty * size;
      place(img, [west, north - size, west + size, north]);
    }
  }
  for (const [key, img] of map.tiles) {
    if (!wanted.has(key)) { img.remove(); map.tiles.delete(key); }
  }
}

function ringOf(footprint) {
  return footprint.map(([lon, lat]) => mercator(lon, lat));
}

function outline(cls, footprint) {
  const p = document.createElementNS(SVG, "polygon");
  p.setAttribute("class", cls);
  p.dataset.ring = JSON.stringify(ringOf(footprint));
  return p;
}

function drawShapes() { // the filter's box, the hits and the query chip, as outlines
  const svg = $("map-overlay");
  svg.replaceChildren();
  const sides = state.bbox.split(",").map(Number);
  if (state.bbox && sides.length === 4 && sides.every(Number.isFinite)) {
    const [w, s, e, n] = sides;
    svg.append(outline("filter", [[w, n], [e, n], [e, s], [w, s]]));
  }
  for (const r of state.found.slice(0, 5000)) { // find-all's chips, under the hits
    if (!r.footprint) continue;
    const p = outline("found", r.footprint);
    p.dataset.id = r.image_id;
    svg.append(p);
  }
  // the best hit drawn last (on top)
  for (const r of [...state.results].reverse()) {
    if (!r.footprint) continue;
    const p = document.createElementNS(SVG, "polygon");
    p.setAttribute("class", r.image_id === state.selected ? "hit selected" : "hit");
    p.dataset.id = r.image_id;
    p.dataset.ring = JSON.stringify(ringOf(r.footprint));
    const title = document.createElementNS(SVG, "title");
    title.textContent = `#${r.rank} d = ${r.distance} \u00b7 ${r.date} \u00b7 ${r.image_id}`;
    p.append(title);
    svg.append(p);
  }
  const selected = svg.querySelector("polygon.selected");
  if (selected) svg.append(selected);
  if (state.queryFootprint) svg.append(outline("query", state.queryFootprint));
  draw();
}

function selectHit(id) { // highlight a hit on the map and in the list, centre the map on it
  const r = state.results.find((x) => x.image_id === id);
  if (!r) return;
  state.selected = id;
  const ring = ringOf(r.footprint);
  const xs = ring.map((c) => c[0]), ys = ring.map((c) => c[1]);
  map.cx = (Math.min(...xs) + Math.max(...xs)) / 2;
  map.cy = (Math.min(...ys) + Math.max(...ys)) / 2;
  raiseScene(r.scene);
  for (const c of document.querySelectorAll("#grid .card.selected")) c.classList.remove("selected");
  const card = [...document.querySelectorAll("#grid .card")].find((c) => c.dataset.id === id);
  if (card) card.classList.add("selected");
  drawShapes();
}

function raiseScene(id) { // dates of one place overlap: the hit's own date drawn on top
  const s = map.scenes.find((x) => x.id === id);
  if (s) $("map-scenes").append(s.img);
}

function boxDone(a, b) { // a box drawn on the map (two corners, screen px): the filter
  if (Math.abs(a[0] - b[0]) < 4 || Math.abs(a[1] - b[1]) < 4) return;
  const [x0, y0] = fromScreen(Math.min(a[0], b[0]), Math.max(a[1], b[1]));
  const [x1, y1] = fromScreen(Math.max(a[0], b[0]), Math.min(a[1], b[1]));
  const [west, south] = lonLat(x0, y0), [east, north] = lonLat(x1, y1);
  [west, south, east, north].forEach((v, i) => { $(BOX[i]).value = v.toFixed(6); });
  setDrawing(false);
  applyControls();
}

function setDrawing(on) {
  map.drawing = on;
  $("draw-box").setAttribute("aria-pressed", String(on));
  $("map").classList.toggle("drawing", on);
}

function mapPoint(e) {
  const rect = $("map").getBoundingClientRect();
  return [e.clientX - rect.left, e.clientY - rect.top];
}

function onPointerMove(e) {
  const d = map.drag;
  if (!d) return;
  const [px, py] = mapPoint(e);
  if (Math.abs(px - d.x) + Math.abs(py - d.y) > 3) map.moved = true;
  if (d.kind === "pan") {
    map.cx = d.cx - (px - d.x) * map.res;
    map.cy = d.cy + (py - d.y) * map.res;
    render();
  } else {
    const box = $("map-box");
    box.hidden = false;
    box.style.left = Math.min(px, d.x) + "px";
    box.style.top = Math.min(py, d.y) + "px";
    box.style.width = Math.abs(px - d.x) + "px";
    box.style.height = Math.abs(py - d.y) + "px";
  }
}

function onPointerUp(e) {
  const d = map.drag;
  map.drag = null;
  window.removeEventListener("pointermove", onPointerMove);
  window.removeEventListener("pointerup", onPointerUp);
  $("map").classList.remove("panning");
  if (d && d.kind === "box") {
    $("map-box").hidden = true;
    boxDone([d.x, d.y], mapPoint(e));
  }
}

function initMap(info) {
  state.geo = true;
  for (const id of ["map-wrap", "place-row", "find-row", "export-geojson"]) $(id).hidden = false;
  $("find-all").addEventListener("click", findAll);
  for (const id of ["find-rule", "find-threshold", "find-merge"]) $(id).addEventListener("change", updateLinks);
  const m = $("map");
  for (const s of info.scenes) {
    const img = el("img", "scene");
    img.alt = s.id;
    img.title = `${s.id} \u00b7 ${s.date} \u00b7 ${s.n_chips} chips`;
    img.draggable = false;
    img.dataset.id = s.id;
    img.src = "/api/quicklook/" + encodeURIComponent(s.id).replace(/\./g, "%2E");
    $("map-scenes").append(img);
    map.scenes.push({id: s.id, date: s.date, bounds: s.quicklook_bounds_3857, img: img});
  }
  if (map.scenes.length) {
    const b = map.scenes.map((s) => s.bounds);
    map.home = [Math.min(...b.map((v) => v[0])), Math.min(...b.map((v) => v[1])),
      Math.max(...b.map((v) => v[2])), Math.max(...b.map((v) => v[3]))];
  }
  if (info.basemap) {
    map.basemap = info.basemap;
    $("map-attribution").textContent = "tiles: " + new URL(info.basemap.replace(/[{}]/g, "")).host;
  }
  m.addEventListener("pointerdown", (e) => {
    if (e.button !== 0 || e.target.closest("#map-buttons")) return;
    e.preventDefault();
    const [x, y] = mapPoint(e);
    map.moved = false;
    map.drag = {kind: e.shiftKey || map.drawing ? "box" : "pan", x: x, y: y, cx: map.cx, cy: map.cy};
    if (map.drag.kind === "pan") m.classList.add("panning");
    window.addEventListener("pointermove", onPointerMove);
    window.addEventListener("pointerup", onPointerUp);
  });
  m.addEventListener("wheel", (e) => {
    e.preventDefault();
    const [x, y] = mapPoint(e);
    zoomAt(x, y, Math.pow(2, -e.deltaY / 250));
  }, {passive: false});
  $("map-overlay").addEventListener("click", (e) => {
    const hit = e.target.closest("polygon.hit");
    if (hit && !map.moved) {
      selectHit(hit.dataset.id);
      const card = [...document.querySelectorAll("#grid .card")].find((c) => c.dataset.id === hit.dataset.id);
      if (card) card.scrollIntoView({block: "nearest"});
    }
  });
  $("zoom-in").addEventListener("click", () => zoomAt(...mapSize().map((v) => v / 2), 2));
  $("zoom-out").addEventListener("click", () => zoomAt(...mapSize().map((v) => v / 2), 0.5));
  $("zoom-fit").addEventListener("click", () => { if (map.home) fit(map.home); });
  $("draw-box").addEventListener("click", () => setDrawing(!map.drawing));
  window.addEventListener("resize", render);
  if (map.home) fit(map.home);
}

init();
