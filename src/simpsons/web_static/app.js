// The page of `simpsons serve`: picture (with the detector's boxes), clip, review and about panels over the JSON API.
"use strict";

const $ = (selector) => document.querySelector(selector);
const pretty = (name) => name.replace(/_/g, " ").replace(/\b\w/g, (c) => c.toUpperCase());
const percent = (value) => `${(100 * value).toFixed(1)} %`;
let about = null;
const shown = { file: null, heatmap: null }; // the picture on show and its heat map, fetched when first switched on

function element(tag, properties = {}, children = []) {
  const node = Object.assign(document.createElement(tag), properties);
  node.append(...children);
  return node;
}

function showError(target, message) {
  target.textContent = message || "";
  target.hidden = !message;
}

async function errorText(response) {
  try {
    const body = await response.json();
    return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

// ------------------------------------------------------------------ panels

function showPanel(name) {
  for (const button of document.querySelectorAll("nav button")) {
    button.setAttribute("aria-pressed", String(button.dataset.panel === name));
  }
  for (const panel of document.querySelectorAll(".panel")) {
    panel.hidden = panel.id !== `${name}-panel`;
  }
  if (name === "review") loadReview();
}

function dropZone(zone, input, onFile) {
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer.files.length) onFile(event.dataTransfer.files[0]);
  });
  input.addEventListener("change", () => { if (input.files.length) onFile(input.files[0]); input.value = ""; });
}

function tooLarge(file, limit, what) {
  return limit && file.size > limit ? `the ${what} is larger than the limit of ${limit / 1048576} MB` : null;
}

// ------------------------------------------------------------------ picture

async function sendPicture(file) {
  const error = $("#picture-error");
  const refusal = tooLarge(file, about && about.limits.picture_bytes, "picture");
  showError(error, refusal);
  if (refusal) return;
  const response = await postPicture(file, false);
  if (!response.ok) {
    $("#picture-result").hidden = true;
    showError(error, await errorText(response));
    return;
  }
  const answer = await response.json();
  const picture = $("#picture");
  URL.revokeObjectURL(picture.src);
  picture.src = URL.createObjectURL(file);
  await picture.decode().catch(() => {});
  Object.assign(shown, { file, heatmap: null });
  showAnswer(answer);
  showHeatmap();
  showBoxes();
}

function postPicture(file, heatmap) {
  const form = new FormData();
  form.append("file", file, "picture");
  return fetch(`/api/predict?heatmap=${heatmap}`, { method: "POST", body: form });
}

function showAnswer(answer) {
  const unknown = answer.character === "unknown";
  const title = $("#answer");
  title.textContent = unknown ? "unknown" : pretty(answer.character);
  title.dataset.character = answer.character;
  title.classList.toggle("unknown", unknown);
  $("#probability").textContent = `probability ${percent(answer.probability)}`;
  const guess = $("#best-guess");
  guess.hidden = !unknown;
  const familiarity = answer.familiarity == null ? "" : `; familiarity ${percent(answer.familiarity)}`;
  guess.textContent = unknown ? `best guess: ${pretty(answer.best_guess)} (the model is not sure enough${familiarity})` : "";
  $("#top5").replaceChildren(...answer.top_k.map(([name, probability]) => {
    const fill = element("div", { className: "fill" });
    fill.style.width = percent(probability).replace(" ", "");
    return element("li", {}, [element("span", { textContent: pretty(name) }),
      element("div", { className: "track" }, [fill]), element("span", { className: "value", textContent: percent(probability) })]);
  }));
  $("#picture-result").hidden = false;
}

async function showHeatmap() {
  const canvas = $("#heatmap");
  canvas.hidden = true;
  if (!$("#heatmap-toggle").checked || !shown.file) return;
  if (!shown.heatmap) {
    const file = shown.file;
    const response = await postPicture(file, true);
    if (!response.ok || shown.file !== file) return;
    shown.heatmap = (await response.json()).heatmap;
  }
  drawHeatmap(shown.heatmap);
  canvas.hidden = !$("#heatmap-toggle").checked;
}

function drawHeatmap(grid) {
  const canvas = $("#heatmap");
  const size = grid.length;
  canvas.width = canvas.height = size;
  const context = canvas.getContext("2d");
  const image = context.createImageData(size, size);
  grid.flat().forEach((value, index) => {
    // transparent where the model did not look, through orange to red where it looked most
    image.data.set([255, Math.round(200 * (1 - value)), 0, Math.round(230 * value)], 4 * index);
  });
  context.putImageData(image, 0, 0);
}

// The detector's boxes over the picture on show, when the server has a detector.
async function showBoxes() {
  const overlay = $("#boxes");
  const summary = $("#detections");
  overlay.hidden = summary.hidden = true;
  overlay.replaceChildren();
  if (!about || !about.detector || !shown.file) return;
  const file = shown.file;
  const form = new FormData();
  form.append("file", file, "picture");
  const response = await fetch("/api/detect", { method: "POST", body: form });
  if (shown.file !== file) return;
  if (!response.ok) {
    summary.textContent = `the detector could not answer: ${await errorText(response)}`;
    summary.hidden = false;
    return;
  }
  drawBoxes(await response.json());
}

// One box per detection, placed in shares of the picture so that it follows the picture's displayed size.
function drawBoxes(answer) {
  const { width, height, detections } = answer;
  const share = (value, whole) => `${(100 * value) / whole}%`;
  const boxes = detections.map(({ character, probability, box: [x1, y1, x2, y2] }, index) => {
    const label = `${pretty(character)} ${percent(probability)}`;
    const box = element("li", { className: "box", title: label }, [element("span", { textContent: label })]);
    box.setAttribute("aria-label", label);
    box.dataset.character = character;
    Object.assign(box.style, { left: share(x1, width), top: share(y1, height), width: share(x2 - x1, width),
      height: share(y2 - y1, height), zIndex: String(detections.length - index) }); // the most probable on top
    return box;
  });
  $("#boxes").replaceChildren(...boxes);
  $("#boxes").hidden = !boxes.length;
  const summary = $("#detections");
  summary.textContent = boxes.length ? `The detector finds: ${boxes.map((box) => box.title).join(", ")}`
    : "The detector finds nobody";
  summary.hidden = false;
}

// ------------------------------------------------------------------ clip

function sendClip(file) {
  const error = $("#clip-error");
  const refusal = tooLarge(file, about && about.limits.clip_bytes, "clip");
  showError(error, refusal);
  if (refusal) return;
  $("#clip-result").hidden = true;
  $("#clip-running").hidden = false;
  setProgress(0, "uploading");
  const form = new FormData();
  form.append("file", file, "clip");
  const request = new XMLHttpRequest();
  request.open("POST", "/api/videos");
  request.upload.onprogress = (event) => {
    if (event.lengthComputable) setProgress(event.loaded / event.total, "uploading");
  };
  request.onload = () => {
    const body = JSON.parse(request.responseText || "{}");
    if (request.status !== 202) {
      $("#clip-running").hidden = true;
      showError(error, typeof body.detail === "string" ? body.detail : `upload failed (${request.status})`);
      return;
    }
    pollJob(body.status_url);
  };
  request.onerror = () => { $("#clip-running").hidden = true; showError(error, "the upload failed"); };
  request.send(form);
}

function setProgress(value, what) {
  $("#clip-progress").value = value;
  $("#clip-status").textContent = `${what} ${Math.round(100 * value)} %`;
}

async function pollJob(url) {
  const response = await fetch(url);
  const job = await response.json();
  if (!response.ok || job.status === "failed") {
    $("#clip-running").hidden = true;
    showError($("#clip-error"), response.ok ? job.error : await errorText(response));
    return;
  }
  if (job.status !== "done") {
    setProgress(job.progress, job.stage);
    setTimeout(() => pollJob(url), 500);
    return;
  }
  setProgress(1, "done");
  showClip(job.result);
}

function showClip(result) {
  const files = result.files;
  $("#clip-chart").src = files["chart.png"];
  $("#clip-chart-link").href = files["chart.png"];
  $("#clip-timeline").href = files["timeline.json"];
  $("#clip-subtitles").href = files["subtitles.srt"];
  const annotated = $("#clip-annotated");
  annotated.hidden = !files["annotated.mp4"];
  annotated.href = files["annotated.mp4"] || "";
  const rows = result.screen_time.map((row) => element("tr", {}, [
    element("td", { textContent: pretty(row.character) }),
    element("td", { className: "number", textContent: row.seconds.toFixed(1) }),
    element("td", { className: "number", textContent: row.share === null ? "" : percent(row.share) }),
    element("td", { className: "number", textContent: String(row.segments) }),
    element("td", { className: "number", textContent: row.mean_probability.toFixed(2) }),
  ]));
  if (!rows.length) rows.push(element("tr", {}, [element("td", { colSpan: 5, textContent: "nobody recognised" })]));
  $("#screen-time tbody").replaceChildren(...rows);
  $("#clip-running").hidden = true;
  $("#clip-result").hidden = false;
}

// ------------------------------------------------------------------ review

const review = { items: [], selected: 0 };

async function loadReview() {
  const response = await fetch("/api/review");
  if (response.ok) showReview(await response.json());
  else showError($("#review-error"), await errorText(response));
}

function showReview(listing) {
  review.items = listing.items;
  review.selected = Math.min(review.selected, Math.max(0, review.items.length - 1));
  $("#names").replaceChildren(...listing.names.map((name) => element("option", { value: name })));
  $("#review-grid").replaceChildren(...review.items.map((item, index) => {
    const card = element("div", { className: "crop", title: `${item.folder}/${item.name}` }, [
      element("img", { src: item.url, alt: `crop suggested as ${item.folder}`, loading: "lazy" }),
      element("p", { textContent: item.folder === "_unsure" ? "unsure" : pretty(item.folder) }),
    ]);
    card.dataset.item = `${item.folder}/${item.name}`;
    card.addEventListener("click", () => select(index));
    return card;
  }));
  $("#review-empty").hidden = review.items.length > 0;
  $("#review-counts tbody").replaceChildren(...Object.entries(listing.counts).map(([name, count]) => {
    const row = element("tr", {}, [element("td", { textContent: pretty(name) }),
      element("td", { className: "number", textContent: String(count) })]);
    row.dataset.character = name;
    return row;
  }));
  select(review.selected);
}

function select(index) {
  review.selected = index;
  document.querySelectorAll(".crop").forEach((card, i) => card.classList.toggle("selected", i === index));
  const card = document.querySelectorAll(".crop")[index];
  if (card) card.scrollIntoView({ block: "nearest" });
}

async function act(action, name = null, create = false) {
  const item = review.items[review.selected];
  if (!item) return;
  const response = await postReview(`/api/review/${item.folder}/${item.name}`, { action, name, create });
  if (response.status === 409) { // no such character: create it once confirmed
    if (confirm(`${await errorText(response)}?`)) act(action, name, true);
    return;
  }
  if (await reviewOutcome(response)) closeRelabel();
}

async function undo() {
  const outcome = await reviewOutcome(await postReview("/api/review/undo"));
  if (!outcome) return;
  const { folder, name } = outcome.restored;
  const index = review.items.findIndex((item) => item.folder === folder && item.name === name);
  if (index >= 0) select(index);
}

function postReview(url, body = {}) {
  return fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}

// The answer to a review request: its error, or the server's message and the new listing (null on error).
async function reviewOutcome(response) {
  if (!response.ok) {
    showError($("#review-error"), await errorText(response));
    return null;
  }
  const outcome = await response.json();
  showError($("#review-error"), null);
  const message = $("#review-message");
  message.textContent = outcome.message;
  message.hidden = false;
  message.classList.toggle("warning", Boolean(outcome.duplicate_of));
  showReview(outcome);
  return outcome;
}

function startRelabel() {
  if (!review.items.length) return;
  $("#relabel-form").hidden = false;
  $("#relabel-name").value = "";
  $("#relabel-name").focus();
}

// Hides the name form and gives the keys back to the review (a hidden input would keep them for a moment).
function closeRelabel() {
  $("#relabel-form").hidden = true;
  $("#relabel-name").blur();
}

function reviewKeys(event) {
  if ($("#review-panel").hidden || event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.target.matches("input")) {
    if (event.key === "Escape") closeRelabel();
    return;
  }
  const moves = { ArrowRight: 1, ArrowDown: 1, j: 1, ArrowLeft: -1, ArrowUp: -1, k: -1 };
  if (event.key in moves) {
    select(Math.max(0, Math.min(review.items.length - 1, review.selected + moves[event.key])));
  } else if (event.key === "a") {
    act("accept");
  } else if (event.key === "r") {
    startRelabel();
  } else if (event.key === "x" || event.key === "Delete") {
    act("reject");
  } else if (event.key === "u") {
    undo();
  } else {
    return;
  }
  event.preventDefault();
}

// ------------------------------------------------------------------ about

function showAbout() {
  const metrics = about.metrics || {};
  const facts = [
    ["model", about.model], ["architecture", about.arch || "?"], ["recipe", about.recipe || "?"],
    ["input", `${about.image_size} × ${about.image_size} px`],
    ["threshold", about.threshold === null ? "none (always answers)" : about.threshold],
    ["stranger detector", about.familiarity_threshold == null ? "none"
      : `unknown below familiarity ${about.familiarity_threshold.toFixed(3)}`],
    ["mirror image", about.test_time_flip ? "each picture is answered with its mirror image" : "no"],
    ["prior correction", about.prior_correction_strength == null ? "none"
      : `strength ${about.prior_correction_strength}: every character counted as equally likely`],
    ["test accuracy", metrics.test_accuracy === undefined ? "not measured"
      : `${percent(metrics.test_accuracy)} on ${metrics.test_images} pictures`],
    ["validation accuracy", metrics.validation_accuracy === undefined ? "not measured" : percent(metrics.validation_accuracy)],
    ["detector", about.detector ? `${about.detector.model}: boxes for ${about.detector.characters.length} characters`
      : "none (start the server with --detector BUNDLE to see every character's box)"],
  ];
  $("#about-model").replaceChildren(...facts.flatMap(([term, value]) =>
    [element("dt", { textContent: term }), element("dd", { textContent: String(value) })]));
  $("#about-characters").replaceChildren(...about.characters.map((name) => element("li", { textContent: pretty(name) })));
  document.querySelector('nav button[data-panel="review"]').hidden = !about.review;
}

// ------------------------------------------------------------------ start

async function start() {
  for (const button of document.querySelectorAll("nav button")) {
    button.addEventListener("click", () => showPanel(button.dataset.panel));
  }
  dropZone($("#picture-drop"), $("#picture-input"), sendPicture);
  dropZone($("#clip-drop"), $("#clip-input"), sendClip);
  document.addEventListener("paste", (event) => {
    const file = [...event.clipboardData.files].find((f) => f.type.startsWith("image/"));
    if (file) { showPanel("picture"); sendPicture(file); }
  });
  $("#heatmap-toggle").addEventListener("change", showHeatmap);
  $("#relabel-form").addEventListener("submit", (event) => { event.preventDefault(); act("relabel", $("#relabel-name").value); });
  $("#relabel-cancel").addEventListener("click", closeRelabel);
  $("#review-undo").addEventListener("click", undo);
  document.addEventListener("keydown", reviewKeys);
  about = await (await fetch("/api/about")).json();
  showAbout();
  document.body.dataset.ready = "true";
}

start();
