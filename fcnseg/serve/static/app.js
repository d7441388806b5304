// fcnseg serve: drop images, send each to POST /api/predict, show the overlay, legend and class under the cursor.
// Plain JavaScript, no dependencies. The server returns the image as it segmented it (upright RGB JPEG)
// and the label map as a palette PNG; the overlay is blended here, as fcnseg.data.palette.overlay does:
// class colours over the image at the chosen opacity, background (class 0) left as it is.
"use strict";

const state = {
  model: null,        // GET /api/model
  colourToClass: new Map(),  // "r,g,b" -> class index, from the model's palette
  results: [],        // one per file: {name, status, answer, canvases...}
  current: null,      // the result on show
  view: "overlay",
  opacity: 0.5,
  scale: 1,           // screen pixels per image pixel of the picture on show
  fitted: true,       // the scale follows the window ("fit") until the user zooms
};

const READABLE_SIDE = 256;  // small images are drawn at least this many screen pixels on their long side
const ZOOM_STEP = 1.25;
const MIN_SCALE = 0.01, MAX_SCALE = 64;

const $ = (id) => document.getElementById(id);

function formatBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
}

function percent(fraction) { return (100 * fraction).toFixed(2) + "%"; }

function showMessage(text) {
  const div = document.createElement("div");
  div.className = "message";
  div.setAttribute("role", "alert");
  const span = document.createElement("span");
  span.className = "text";
  span.textContent = text;
  const close = document.createElement("button");
  close.type = "button";
  close.className = "close";
  close.title = "dismiss";
  close.setAttribute("aria-label", "dismiss");
  close.textContent = "\u00d7";
  close.addEventListener("click", () => div.remove());
  div.append(span, close);
  $("messages").appendChild(div);
}

function formatSeconds(ms) { return (ms / 1000).toFixed(ms < 10000 ? 1 : 0) + " s"; }

// --- the model ---------------------------------------------------------------------------------

async function loadModel() {
  const response = await fetch("/api/model");
  const model = await response.json();
  state.model = model;
  model.classes.forEach((c) => state.colourToClass.set(c.colour.join(","), c.index));
  const r = model.runtime;
  const info = $("model-info");
  info.innerHTML = "";
  const parts = [
    ["model", `${model.name} (${model.arch}, ${model.backbone} trunk)`],
    ["classes", `${model.num_classes}`],
    ["precision", model.precision],
    ["runtime", `PyTorch ${r.torch} on ${r.device} (${r.processor}), ${r.layout}, ${r.threads} threads`],
  ];
  parts.forEach(([key, value], i) => {
    if (i) info.appendChild(document.createTextNode(" · "));
    info.appendChild(document.createTextNode(key + " "));
    const b = document.createElement("b");
    b.textContent = value;
    b.id = "model-" + key;
    info.appendChild(b);
  });
  const limits = model.limits;
  const pixels = limits.max_pixels >= 1e6 ? `${+(limits.max_pixels / 1e6).toFixed(1)} megapixels`
    : `${Number(limits.max_pixels).toLocaleString("en-US")} pixels`;
  $("limits").textContent = `up to ${formatBytes(limits.max_upload_bytes)} per file` + (limits.max_pixels ? `, ${pixels}` : "");
  renderLegend(null);
  document.body.dataset.state = "idle";
}

function renderLegend(answer) {
  const body = $("legend").querySelector("tbody");
  body.innerHTML = "";
  state.model.classes.forEach((c) => {
    const area = answer ? answer.areas[c.name] : null;
    const row = document.createElement("tr");
    row.dataset.class = c.name;
    row.dataset.index = c.index;
    if (area) {
      row.dataset.pixels = area.pixels;
      row.dataset.fraction = area.fraction;
      if (area.pixels === 0) row.className = "absent";
    }
    const swatch = `<span class="swatch" style="background: rgb(${c.colour.join(",")})"></span>`;
    row.innerHTML = `<td>${swatch}</td><td class="name"></td><td class="num area">${area ? percent(area.fraction) : ""}</td>` +
      `<td class="num pixels">${area ? area.pixels.toLocaleString("en-US") : ""}</td>`;
    row.querySelector(".name").textContent = c.name;
    body.appendChild(row);
  });
}

// --- sending images ----------------------------------------------------------------------------

function addResult(file) {
  const result = { name: file.name, file, status: "waiting", answer: null, error: null };
  const li = document.createElement("li");
  li.innerHTML = '<span class="name"></span><span class="status">waiting</span>';
  li.querySelector(".name").textContent = file.name;
  li.title = file.name;
  li.addEventListener("click", () => { if (result.answer) show(result); });
  result.item = li;
  $("results").appendChild(li);
  state.results.push(result);
  return result;
}

function setStatus(result, text, failed) {
  result.status = text;
  result.item.querySelector(".status").textContent = text;
  if (failed) result.item.classList.add("failed");
}

let sending = Promise.resolve();

function handleFiles(files) {
  for (const file of files) {
    const result = addResult(file);
    // One at a time: the server queues for everyone, and a page should not fill the queue alone.
    sending = sending.then(() => send(result).catch((e) => fail(result, `${result.name}: ${e.message || e}`)));
  }
}

// POST a form with XMLHttpRequest (fetch cannot report upload progress): onUpload(sentBytes, totalBytes) while
// the body goes out, onSent() once it is all sent. Resolves to {ok, status, statusText, answer}.
function postForm(url, form, onUpload, onSent) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onUpload(e.loaded, e.total); };
    xhr.upload.onload = onSent;
    xhr.onerror = () => reject(new Error("the connection to the server failed"));
    xhr.onload = () => {
      let answer;
      try { answer = JSON.parse(xhr.responseText); } catch (e) { answer = { error: xhr.statusText || "no answer" }; }
      resolve({ ok: xhr.status >= 200 && xhr.status < 300, status: xhr.status, statusText: xhr.statusText, answer });
    };
    xhr.send(form);
  });
}

function showProgress(text) {
  const progress = $("progress");
  progress.textContent = text;
  progress.hidden = !text;
}

async function send(result) {
  const limit = state.model.limits.max_upload_bytes;
  if (result.file.size > limit) {
    fail(result, `${result.name}: ${formatBytes(result.file.size)} is larger than this server's limit of ${formatBytes(limit)} (--max-upload-mb)`);
    return;
  }
  document.body.dataset.state = "working";
  const form = new FormData();
  form.append("image", result.file, result.name);
  const started = performance.now();
  // What is going on, and for how long: the upload's bytes, then the seconds the server has been at it and,
  // for an image cut into tiles, the tiles done (GET /api/progress/JOB while the request runs).
  const job = Math.random().toString(36).slice(2) + Date.now().toString(36);
  let phase = "uploading", sent = 0, total = result.file.size, sentAt = null, tiles = null, asking = false;
  const tick = () => {
    const now = performance.now();
    const text = phase === "uploading"
      ? `uploading ${formatBytes(sent)} of ${formatBytes(total)}`
      : `segmenting… ${tiles && tiles.total > 1 ? `tile ${tiles.done}/${tiles.total}, ` : ""}${formatSeconds(now - sentAt)}`;
    setStatus(result, text);
    showProgress(`${result.name}: ${text} (${formatSeconds(now - started)} in all)`);
  };
  const ask = () => {
    if (phase !== "segmenting" || asking) return;
    asking = true;
    fetch(`/api/progress/${job}`).then((r) => (r.ok ? r.json() : null))
      .then((p) => { if (p && phase === "segmenting") { tiles = p; tick(); } })
      .catch(() => {})
      .finally(() => { asking = false; });
  };
  tick();
  const clock = setInterval(tick, 200);
  const poll = setInterval(ask, 500);
  let response;
  try {
    response = await postForm(`/api/predict?image=true&progress=${job}`, form,
      (loaded, size) => { sent = loaded; total = size; tick(); },
      () => { phase = "segmenting"; sentAt = performance.now(); tick(); });
  } catch (e) {
    fail(result, `${result.name}: the upload failed (${e.message || e})`);
    return;
  } finally {
    phase = "done";
    clearInterval(clock);
    clearInterval(poll);
    showProgress("");
  }
  const answer = response.answer;
  if (!response.ok) {
    const reason = answer.error || response.statusText;
    // The server names the file in most messages already.
    fail(result, `${reason.startsWith(result.name) ? "" : result.name + ": "}${reason} (HTTP ${response.status})`);
    return;
  }
  answer.roundTripMs = performance.now() - started;
  result.answer = answer;
  try {
    await prepare(result);
  } catch (e) {
    fail(result, `${result.name}: cannot show the result (${e.message || e})`);
    return;
  }
  setStatus(result, `${answer.timings.total_ms.toFixed(0)} ms`);
  show(result);
}

function fail(result, message) {
  result.error = message;
  setStatus(result, "failed", true);
  showMessage(message);
  document.body.dataset.state = "error";
}

// --- drawing -----------------------------------------------------------------------------------

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error("the browser cannot decode it"));
    image.src = src;
  });
}

function canvasOf(width, height) {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  return canvas;
}

async function prepare(result) {
  const a = result.answer;
  const [image, labels] = await Promise.all([
    loadImage("data:image/jpeg;base64," + a.image_jpeg),
    loadImage("data:image/png;base64," + a.labels_png),
  ]);
  result.image = canvasOf(a.width, a.height);
  result.image.getContext("2d").drawImage(image, 0, 0);
  // The label PNG's colours are the model's palette: each maps back to its class index.
  const colours = canvasOf(a.width, a.height);
  const ctx = colours.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(labels, 0, 0);
  const pixels = ctx.getImageData(0, 0, a.width, a.height);
  const index = new Uint8Array(a.width * a.height);
  const d = pixels.data;
  for (let i = 0, p = 0; p < index.length; p++, i += 4) {
    const k = state.colourToClass.get(d[i] + "," + d[i + 1] + "," + d[i + 2]);
    index[p] = k === undefined ? 255 : k;
  }
  result.index = index;
  result.labels = colours;
  // The overlay layer: class colours, transparent on background (class 0).
  const layer = ctx.createImageData(a.width, a.height);
  layer.data.set(d);
  for (let p = 0; p < index.length; p++) layer.data[4 * p + 3] = index[p] === 0 ? 0 : 255;
  result.layer = canvasOf(a.width, a.height);
  result.layer.getContext("2d").putImageData(layer, 0, 0);
  result.labelsUrl = "data:image/png;base64," + a.labels_png;
}

function render() {
  const result = state.current;
  if (!result) return;
  const view = $("view");
  const a = result.answer;
  view.width = a.width;
  view.height = a.height;
  const ctx = view.getContext("2d");
  ctx.globalAlpha = 1;
  if (state.view === "labels") {
    ctx.drawImage(result.labels, 0, 0);
  } else {
    ctx.drawImage(result.image, 0, 0);
    if (state.view === "overlay") {
      ctx.globalAlpha = state.opacity;
      ctx.drawImage(result.layer, 0, 0);
      ctx.globalAlpha = 1;
    }
  }
  view.dataset.view = state.view;
  view.dataset.opacity = state.opacity;
}

// The scale that shows the whole picture: as large as the stage and the window below it allow (leaving
// room for the readouts under it); a small image at least READABLE_SIDE px on its long side (4x at the
// least), its pixels drawn as squares, not blurred.
function fitScale(a) {
  const stage = $("stage");
  const stageWidth = stage.clientWidth - 20;
  const height = Math.max(240, window.innerHeight - stage.getBoundingClientRect().top - 90);
  const fit = Math.min(stageWidth / a.width, height / a.height);
  const readable = Math.max(4, READABLE_SIDE / Math.max(a.width, a.height));
  return Math.min(fit, readable);
}

// Draw the picture at `scale`, keeping the image point under `anchor` (a mouse event), else the one at the
// stage's centre, where it was on the screen.
function setScale(scale, anchor) {
  const result = state.current;
  if (!result) return;
  const a = result.answer;
  const stage = $("stage"), view = $("view");
  scale = Math.min(MAX_SCALE, Math.max(MIN_SCALE, scale));
  const before = view.getBoundingClientRect(), frame = stage.getBoundingClientRect();
  const at = anchor ? { x: anchor.clientX, y: anchor.clientY } : { x: frame.left + frame.width / 2, y: frame.top + frame.height / 2 };
  const fx = before.width ? Math.min(1, Math.max(0, (at.x - before.left) / before.width)) : 0.5;
  const fy = before.height ? Math.min(1, Math.max(0, (at.y - before.top) / before.height)) : 0.5;
  state.scale = scale;
  view.style.width = Math.max(1, Math.round(a.width * scale)) + "px";
  view.classList.toggle("pixelated", scale > 1);
  const after = view.getBoundingClientRect();
  stage.scrollLeft += after.left + fx * after.width - at.x;
  stage.scrollTop += after.top + fy * after.height - at.y;
  stage.classList.toggle("pannable", stage.scrollWidth > stage.clientWidth || stage.scrollHeight > stage.clientHeight);
  view.dataset.scale = scale;
  $("zoom-value").textContent = Math.round(100 * scale) + "%";
}

function zoom(factor, anchor) {
  state.fitted = false;
  setScale(state.scale * factor, anchor);
}

function fit() {
  if (!state.current) return;
  state.fitted = true;
  setScale(fitScale(state.current.answer));
}

function show(result) {
  state.current = result;
  state.results.forEach((r) => r.item.classList.toggle("current", r === result));
  const a = result.answer;
  $("toolbar").hidden = false;
  $("stage").hidden = false;
  render();
  fit();
  renderLegend(a);
  const stem = result.name.replace(/\.[^.]+$/, "");
  const labels = $("download-labels");
  labels.href = result.labelsUrl;
  labels.download = stem + "_labels.png";  // never the upload's own name: saving it beside the photo must not replace it
  $("download-overlay").download = stem + "_overlay.png";
  const t = a.timings;
  $("timing").textContent =
    `${result.name}: ${a.width}×${a.height} px, predicted in ${t.total_ms.toFixed(0)} ms ` +
    `(network ${t.predict_ms.toFixed(0)} ms, decode ${t.decode_ms.toFixed(0)} ms, encode ${t.encode_ms.toFixed(0)} ms, ` +
    `queue ${t.queue_ms.toFixed(0)} ms), ${a.tiles} ${a.tiles === 1 ? "forward" : "tiles"}, precision ${a.precision}`;
  $("hover").innerHTML = "&nbsp;";
  document.body.dataset.state = "ready";
}

// --- interaction -------------------------------------------------------------------------------

function pixelUnder(event) {
  const view = $("view");
  const box = view.getBoundingClientRect();
  const x = Math.floor((event.clientX - box.left) * view.width / box.width);
  const y = Math.floor((event.clientY - box.top) * view.height / box.height);
  if (x < 0 || y < 0 || x >= view.width || y >= view.height) return null;
  return { x, y };
}

function hover(event) {
  const result = state.current;
  const at = result && pixelUnder(event);
  document.querySelectorAll("#legend tr.hovered").forEach((row) => row.classList.remove("hovered"));
  if (!at) { $("hover").innerHTML = "&nbsp;"; return; }
  const k = result.index[at.y * result.answer.width + at.x];
  const c = state.model.classes[k];
  const name = c ? c.name : "ignore";
  const out = $("hover");
  out.textContent = `(${at.x}, ${at.y}): ${name}`;
  out.dataset.class = name;
  const row = document.querySelector(`#legend tr[data-index="${k}"]`);
  if (row) row.classList.add("hovered");
}

function downloadOverlay(event) {
  const result = state.current;
  if (!result) return;
  event.preventDefault();
  const canvas = canvasOf(result.answer.width, result.answer.height);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(result.image, 0, 0);
  ctx.globalAlpha = state.opacity;
  ctx.drawImage(result.layer, 0, 0);
  canvas.toBlob((blob) => {
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = $("download-overlay").download;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  }, "image/png");
}

// Dragging the zoomed picture scrolls the stage.
function setUpPanning() {
  const stage = $("stage");
  let drag = null;
  stage.addEventListener("mousedown", (e) => {
    if (e.button !== 0 || !stage.classList.contains("pannable")) return;
    drag = { x: e.clientX, y: e.clientY, left: stage.scrollLeft, top: stage.scrollTop };
    stage.classList.add("panning");
    e.preventDefault();
  });
  window.addEventListener("mousemove", (e) => {
    if (!drag) return;
    stage.scrollLeft = drag.left - (e.clientX - drag.x);
    stage.scrollTop = drag.top - (e.clientY - drag.y);
  });
  window.addEventListener("mouseup", () => {
    drag = null;
    stage.classList.remove("panning");
  });
  stage.addEventListener("wheel", (e) => {
    if (!state.current) return;
    e.preventDefault();
    zoom(e.deltaY < 0 ? ZOOM_STEP : 1 / ZOOM_STEP, e);
  }, { passive: false });
  $("zoom-in").addEventListener("click", () => zoom(ZOOM_STEP));
  $("zoom-out").addEventListener("click", () => zoom(1 / ZOOM_STEP));
  $("zoom-actual").addEventListener("click", () => { state.fitted = false; setScale(1); });
  $("zoom-fit").addEventListener("click", fit);
  window.addEventListener("resize", () => { if (state.fitted) fit(); });
}

function setUp() {
  const drop = $("drop");
  ["dragenter", "dragover"].forEach((type) => drop.addEventListener(type, (e) => {
    e.preventDefault();
    drop.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((type) => drop.addEventListener(type, () => drop.classList.remove("over")));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    handleFiles(e.dataTransfer.files);
  });
  // Dropping anywhere else must not navigate away to the file.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
  $("file-input").addEventListener("change", (e) => {
    handleFiles(e.target.files);
    e.target.value = "";  // choosing the same file again fires change again
  });
  document.querySelectorAll('input[name="view"]').forEach((radio) => radio.addEventListener("change", (e) => {
    state.view = e.target.value;
    render();
  }));
  $("opacity").addEventListener("input", (e) => {
    state.opacity = parseFloat(e.target.value);
    $("opacity-value").textContent = Math.round(100 * state.opacity) + "%";
    render();
  });
  $("view").addEventListener("mousemove", hover);
  $("view").addEventListener("mouseleave", () => { $("hover").innerHTML = "&nbsp;"; });
  $("download-overlay").addEventListener("click", downloadOverlay);
  setUpPanning();
  loadModel().catch((e) => showMessage(`cannot reach the server (${e.message || e})`));
}

setUp();
