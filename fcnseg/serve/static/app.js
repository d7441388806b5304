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
};

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
  div.textContent = text;
  $("messages").appendChild(div);
}

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

async function send(result) {
  const limit = state.model.limits.max_upload_bytes;
  if (result.file.size > limit) {
    fail(result, `${result.name}: ${formatBytes(result.file.size)} is larger than this server's limit of ${formatBytes(limit)} (--max-upload-mb)`);
    return;
  }
  document.body.dataset.state = "working";
  setStatus(result, "segmenting…");
  const form = new FormData();
  form.append("image", result.file, result.name);
  const started = performance.now();
  let response, answer;
  try {
    response = await fetch("/api/predict?image=true", { method: "POST", body: form });
    answer = await response.json();
  } catch (e) {
    fail(result, `${result.name}: the upload failed (${e.message || e})`);
    return;
  }
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

function show(result) {
  state.current = result;
  state.results.forEach((r) => r.item.classList.toggle("current", r === result));
  const a = result.answer;
  $("toolbar").hidden = false;
  $("stage").hidden = false;
  const view = $("view");
  // As large as the stage and the window below it allow (leaving room for the readouts under it);
  // small images up to 4x, their pixels shown as squares, not blurred.
  const stage = $("stage");
  const stageWidth = stage.clientWidth - 20;
  const height = Math.max(240, window.innerHeight - stage.getBoundingClientRect().top - 90);
  const width = Math.floor(Math.min(stageWidth, height * a.width / a.height, 4 * a.width));
  view.style.width = width + "px";
  view.classList.toggle("pixelated", width > a.width);
  render();
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
  loadModel().catch((e) => showMessage(`cannot reach the server (${e.message || e})`));
}

setUp();
