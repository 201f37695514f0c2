// detkit web page: upload an image, draw the detections over it, filter them with the slider in the page.
// Everything is local: no framework, no external asset. The server is asked for every box (min_prob=0)
// once per image, so moving the slider never sends a new request.
"use strict";

const PREDICT_URL = "/api/fasterrcnn/predict/";
// Same palette as detkit/utils/draw.py, so the page and `detkit predict -d` colour classes alike.
const PALETTE = [
  [230, 25, 75], [60, 180, 75], [255, 225, 25], [67, 99, 216], [245, 130, 49],
  [145, 30, 180], [66, 212, 244], [240, 50, 230], [191, 239, 69], [250, 190, 212],
  [70, 153, 144], [220, 190, 255], [154, 99, 36], [255, 250, 200], [255, 85, 160],
  [170, 255, 195], [128, 128, 0], [255, 216, 177], [30, 144, 255], [169, 169, 169],
];

const $ = (id) => document.getElementById(id);
const state = { classes: [], result: null, request: 0, maxBytes: 0 };

function colorOf(label) {
  const i = Math.max(0, state.classes.indexOf(label));
  return PALETTE[i % PALETTE.length];
}
const css = (rgb) => `rgb(${rgb[0]}, ${rgb[1]}, ${rgb[2]})`;
// Black or white text, whichever reads better on the class colour (WCAG luminance, as draw.py).
function textOn(rgb) {
  const lin = rgb.map((c) => (c <= 10 ? c / 255 / 12.92 : ((c / 255 + 0.055) / 1.055) ** 2.4));
  const lum = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2];
  return (lum + 0.05) / 0.05 > 1.05 / (lum + 0.05) ? "#000" : "#fff";
}

function setStatus(text, isError = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

function threshold() { return parseFloat($("min-prob").value); }

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) node.append(child);
  return node;
}

function highlight(index, on) {
  for (const node of document.querySelectorAll(`[data-index="${index}"]`)) node.classList.toggle("hot", on);
}

function render() {
  const t = threshold();
  $("min-prob-value").value = t.toFixed(2);
  const boxes = $("boxes");
  const body = $("detections").tBodies[0];
  boxes.replaceChildren();
  body.replaceChildren();
  const result = state.result;
  if (!result) return;
  const visible = result.objects.filter((o) => o.prob >= t);
  visible.forEach((obj, n) => {
    const [x1, y1, x2, y2] = obj.bbox;
    const rgb = colorOf(obj.label);
    const box = el("div", { className: "detection", title: `${obj.label} ${obj.prob.toFixed(3)}` });
    box.dataset.index = String(n);
    box.dataset.label = obj.label;
    box.dataset.prob = String(obj.prob);
    // Percent of the image size: the boxes stay right at any displayed size.
    box.style.left = `${(100 * x1) / result.width}%`;
    box.style.top = `${(100 * y1) / result.height}%`;
    box.style.width = `${(100 * Math.max(0, x2 - x1)) / result.width}%`;
    box.style.height = `${(100 * Math.max(0, y2 - y1)) / result.height}%`;
    box.style.setProperty("--c", css(rgb));
    box.style.setProperty("--t", textOn(rgb));
    if (y1 < 0.06 * result.height) box.classList.add("top");  // keep the label inside the picture
    box.append(el("span", { className: "detection-label", textContent: `${obj.label} ${obj.prob.toFixed(2)}` }));
    box.addEventListener("mouseenter", () => highlight(n, true));
    box.addEventListener("mouseleave", () => highlight(n, false));
    boxes.append(box);

    const swatch = el("span", { className: "swatch" });
    swatch.style.setProperty("--c", css(rgb));
    const row = el("tr", {}, [
      el("td", { textContent: String(n + 1) }),
      el("td", {}, [swatch, obj.label]),
      el("td", { textContent: obj.prob.toFixed(3) }),
      el("td", { textContent: obj.bbox.map((v) => Math.round(v)).join(", ") }),
    ]);
    row.dataset.index = String(n);
    row.addEventListener("mouseenter", () => highlight(n, true));
    row.addEventListener("mouseleave", () => highlight(n, false));
    body.append(row);
  });
  const viewer = $("viewer");
  viewer.dataset.count = String(visible.length);
  viewer.dataset.total = String(result.objects.length);
  $("count").textContent = `${visible.length} of ${result.objects.length}`;
  $("no-detections").textContent = visible.length ? "" :
    (result.objects.length ? `None at or above ${t.toFixed(2)}; lower the slider.` : "Nothing detected.");
}

async function detect(file) {
  if (!file) return;
  const id = ++state.request;  // answers to an older upload are ignored
  state.result = null;
  render();
  if (state.maxBytes && file.size > state.maxBytes) {
    setStatus(`${file.name}: ${(file.size / 1048576).toFixed(1)} MB is over the server's limit of ` +
              `${(state.maxBytes / 1048576).toFixed(0)} MB`, true);
    return;
  }
  const photo = $("photo");
  if (photo.src.startsWith("blob:")) URL.revokeObjectURL(photo.src);
  photo.src = URL.createObjectURL(file);
  $("viewer").hidden = false;
  setStatus(`Detecting objects in ${file.name}…`);
  const form = new FormData();
  form.append("image", file, file.name);
  form.append("min_prob", "0");
  let answer;
  try {
    const response = await fetch(PREDICT_URL, { method: "POST", body: form });
    answer = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
    if (!response.ok) throw new Error(answer.error || `HTTP ${response.status}`);
  } catch (err) {
    if (id === state.request) setStatus(`${file.name}: ${err.message}`, true);
    return;
  }
  if (id !== state.request) return;
  state.result = answer;
  setStatus(`${file.name}: ${answer.width}×${answer.height}, ${answer.objects.length} detection(s) in ` +
            `${answer.seconds.toFixed(2)} s`);
  render();
}

async function loadInfo() {
  try {
    const [health, classes] = await Promise.all([
      fetch("/api/health").then((r) => r.json()),
      fetch("/api/classes").then((r) => r.json()),
    ]);
    state.classes = classes.classes;
    state.maxBytes = health.max_upload_bytes;
    $("model").textContent = health.model;
    $("server-state").textContent = `ready · detkit ${health.version}`;
    $("min-prob").value = String(health.min_prob);
    $("limits").textContent = `up to ${(health.max_upload_bytes / 1048576).toFixed(0)} MB and ` +
                              `${(health.max_pixels / 1e6).toFixed(0)} megapixels`;
    $("classes").replaceChildren(...state.classes.map((name) => {
      const swatch = el("span", { className: "swatch" });
      swatch.style.setProperty("--c", css(colorOf(name)));
      return el("li", {}, [swatch, name]);
    }));
    render();
  } catch (err) {
    $("server-state").textContent = `server unreachable (${err.message})`;
    $("server-state").classList.add("bad");
  }
}

// Show the photo as large as the column and the window allow (small photos enlarged up to 4x); the boxes
// are in percent of it, so they follow.
function fitPhoto() {
  const photo = $("photo");
  if (!photo.naturalWidth) return;
  const width = $("viewer").parentElement.clientWidth;
  const scale = Math.min(width / photo.naturalWidth, (0.78 * window.innerHeight) / photo.naturalHeight, 4);
  photo.style.width = `${Math.floor(photo.naturalWidth * scale)}px`;
}

function setUp() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => {
    const file = e.target.files[0];
    e.target.value = "";  // choosing the same file again still fires "change"
    detect(file);
  });
  $("min-prob").addEventListener("input", render);
  $("photo").addEventListener("load", fitPhoto);
  window.addEventListener("resize", fitPhoto);
  $("photo").addEventListener("error", () => {
    if ($("photo").src) setStatus("This browser cannot display the image; its detections are listed in the table.");
  });
  // Accept drops anywhere on the page, so a missed target does not open the file in the tab.
  for (const type of ["dragenter", "dragover"]) {
    document.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  document.addEventListener("dragleave", (e) => { if (!e.relatedTarget) drop.classList.remove("over"); });
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (file) detect(file);
  });
  loadInfo();
}

setUp();
