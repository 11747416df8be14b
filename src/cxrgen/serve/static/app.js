// cxrgen page: upload one or two views, POST /v1/reports, draw the answer. No libraries, works offline.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const files = { frontal: null, lateral: null };
// The access token lives in this tab's sessionStorage only: never a cookie, never the URL.
const TOKEN_KEY = "cxrgen-token";

// fetch() with the token as a Bearer header; a 401 asks for the token (again).
async function api(path, options = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = { ...(options.headers || {}), ...(token ? { Authorization: `Bearer ${token}` } : {}) };
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) {
    await response.text();  // read the refusal to its end: callers only look at the status
    sessionStorage.removeItem(TOKEN_KEY);
    askForToken(token ? "That token was not accepted: check it and enter it again."
      : "This server needs an access token.");
  }
  return response;
}

function askForToken(message) {
  $("token-form").hidden = false;
  $("token-status").textContent = message;
  $("token-status").className = "status error";
  $("token-input").focus();
}

async function useToken(event) {
  event.preventDefault();
  const token = $("token-input").value.trim();
  if (!/^[\x21-\x7e]+$/.test(token)) {
    askForToken("A token is letters, digits and punctuation, without spaces.");
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $("token-input").value = "";
  if (await info()) {
    $("token-form").hidden = true;
    if (files.frontal) setStatus("Ready.");
  }
}

function setStatus(text, kind = "") {
  $("status").textContent = text;
  $("status").className = "status " + kind;
}

function choose(view, file) {
  files[view] = file || null;
  $(view + "-name").textContent = file ? `${file.name} (${(file.size / 1048576).toFixed(1)} MB)` : "";
  $("drop-" + view).classList.toggle("chosen", !!file);
  $("submit").disabled = !files.frontal;
  if (files.frontal) setStatus("Ready.");
}

function wireDrop(view) {
  const zone = $("drop-" + view);
  const input = $(view + "-input");
  input.addEventListener("change", () => choose(view, input.files[0]));
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer.files.length) choose(view, e.dataTransfer.files[0]);
  });
}

function el(tag, attrs = {}, text = "") {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
}

// Horizontal bar chart of the 14 probabilities, in plain SVG.
// A called finding's side, where the model reads one, follows its name: "Pleural Effusion (right)".
// Below the 14, the findings outside them that the model reads (called at 0.5), in the labeler's terms.
function drawChart(probabilities, calls, sides, extras) {
  const called = [...calls, ...Object.keys(extras).filter((name) => extras[name] >= 0.5)];
  const entries = [...Object.entries(probabilities), ...Object.entries(extras)];
  const row = 24, labelW = 215, barW = 260, width = labelW + barW + 50;
  const svg = el("svg:svg", { viewBox: `0 0 ${width} ${entries.length * row + 22}`, role: "img",
    "aria-label": "finding probabilities" });
  entries.forEach(([name, p], i) => {
    const y = i * row;
    const g = el("svg:g", { class: called.includes(name) ? "bar high" : "bar" });
    const label = sides[name] ? `${name} (${sides[name]})` : name;
    g.append(el("svg:text", { x: labelW - 8, y: y + 16, "text-anchor": "end", class: "label" }, label));
    g.append(el("svg:rect", { x: labelW, y: y + 4, width: barW, height: row - 8, class: "track", rx: 3 }));
    g.append(el("svg:rect", { x: labelW, y: y + 4, width: Math.max(1, p * barW), height: row - 8, class: "fill", rx: 3 }));
    g.append(el("svg:text", { x: labelW + barW + 6, y: y + 16, class: "value" }, `${Math.round(p * 100)}%`));
    g.append(el("svg:title", {}, `${name}: ${(p * 100).toFixed(1)}%`));
    svg.append(g);
  });
  $("chart").replaceChildren(svg);
}

function drawSimilar(cases) {
  const box = $("similar");
  if (!cases) {
    box.replaceChildren(el("p", { class: "note" },
      "Not available: the server was started without a CLIP model (cxrgen serve --clip DIR)."));
    return;
  }
  const list = el("ol", { class: "cases" });
  for (const c of cases) {
    const item = el("li");
    item.append(el("div", { class: "case-head" }, `Study ${c.study_id} · similarity ${c.score.toFixed(2)}`));
    item.append(el("p", { class: "report" }, c.report));
    list.append(item);
  }
  box.replaceChildren(cases.length ? list : el("p", { class: "note" }, "No similar cases found."));
}

// Whether the draft states what the classifier calls; where it does not, say which findings differ.
function drawAgreement(data) {
  const parts = [];
  if (data.unstated.length) parts.push(`The classifier calls ${data.unstated.join(", ")}, which the draft does not state.`);
  if (data.uncalled.length) parts.push(`The draft states ${data.uncalled.join(", ")}, which the classifier does not call.`);
  $("agreement").textContent = parts.length ? parts.join(" ") + " Read the draft and the probabilities with care."
    : "The draft states the findings the classifier calls, and no others.";
  $("agreement").className = "guard " + (parts.length ? "bad" : "good");
}

function drawGuard(guard) {
  const ok = guard.passed;
  // It compares the two texts: it says nothing about whether the draft itself is right.
  const text = ok === true ? "The plain version says the same as the draft (same findings, negations and sides). "
      + "This compares the two texts; it does not check the draft."
    : ok === false ? "Warning: the plain version could not be checked against the draft; read the draft."
    : "";
  $("guard").textContent = text;
  $("guard").className = ok === false ? "guard bad" : "guard";
}

// The OOD verdict: a red banner over the draft when any view is flagged; a note when there is no check.
function drawOod(ood) {
  const flagged = (ood || []).filter((v) => v.flag);
  $("ood-banner").hidden = flagged.length === 0;
  $("ood-detail").textContent = flagged.map((v) =>
    `${v.view} view: score ${v.score.toFixed(1)}, above the threshold ${v.threshold.toFixed(1)}`).join("; ");
  $("ood-none").hidden = ood !== null && ood !== undefined;
}

function show(data) {
  $("frontal-img").src = data.images.frontal;
  $("heatmap").hidden = !data.heatmap || !$("heat-toggle").checked;
  if (data.heatmap) $("heatmap").src = data.heatmap;
  $("heat-controls").hidden = !data.heatmap;
  $("lateral-figure").hidden = !data.images.lateral;
  if (data.images.lateral) $("lateral-img").src = data.images.lateral;
  $("findings").textContent = data.report || "(the model wrote nothing)";
  $("plain").textContent = data.plain;
  $("plain-note").textContent = data.plain_note;
  drawGuard(data.guard || {});
  drawAgreement(data);
  drawChart(data.probabilities, data.calls, data.sides || {}, data.extras || {});
  drawSimilar(data.similar_cases);
  drawOod(data.ood);
  const t = data.timing;
  $("timing").textContent = `Answered in ${(t.total_ms / 1000).toFixed(2)} s ` +
    `(model ${(t.model_ms / 1000).toFixed(2)} s, batch of ${t.batch_size}).`;
  $("results").hidden = false;
}

async function submit(event) {
  event.preventDefault();
  if (!files.frontal) return;
  const form = new FormData();
  form.append("frontal", files.frontal);
  if (files.lateral) form.append("lateral", files.lateral);
  $("submit").disabled = true;
  setStatus("Writing the draft report…", "busy");
  try {
    const response = await api("/v1/reports", { method: "POST", body: form });
    if (response.status === 401) {
      setStatus("Enter the access token above, then write the draft again.", "error");
      return;
    }
    const data = await response.json().catch(() => ({ detail: `HTTP ${response.status}` }));
    if (!response.ok) {
      const detail = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail);
      const refused = response.status === 422 && detail.startsWith("This image is unlike");
      setStatus(refused ? `No draft: ${detail}` : `Could not read the upload: ${detail}`, "error");
      return;
    }
    show(data);
    setStatus("Done. Review the draft below.", "done");
  } catch (err) {
    setStatus(`The server did not answer (${err.message}).`, "error");
  } finally {
    $("submit").disabled = !files.frontal;
  }
}

function clearAll() {
  $("upload").reset();
  choose("frontal", null);
  choose("lateral", null);
  $("results").hidden = true;
  setStatus("Choose a frontal image to start.");
}

// What the server runs; true when the API answered (so the token, if any, is right).
async function info() {
  try {
    const response = await api("/v1/info");
    if (!response.ok) {
      $("server").textContent = response.status === 401 ? "access token needed" : `server answered ${response.status}`;
      return false;
    }
    const i = await response.json();
    $("server").textContent = `model ${i.model} · similar cases ${i.clip ? "on" : "off"} · v${i.version}`;
    await modelCard();
    return true;
  } catch {
    $("server").textContent = "server not reachable";
    return false;
  }
}

// The model card in the header: what the model was trained on, when, its test metrics, its OOD check.
async function modelCard() {
  const response = await api("/v1/model");
  if (!response.ok) return;
  const c = await response.json();
  const d = c.data;
  const kind = d.phantom === true ? "phantom (rendered) images" : d.phantom === false ? "real radiographs" : "unrecorded data";
  const layout = d.layout ? ` (${d.layout} layout` + (d.studies.train ? `, ${d.studies.train} training studies)` : ")") : "";
  const metrics = c.test_metrics ? Object.entries(c.test_metrics).filter(([, v]) => typeof v === "number")
    .map(([k, v]) => `${k} ${v.toFixed(3)}`).join(", ") : "not recorded";
  $("model-card").textContent = `Trained on ${kind}${layout} · ${c.trained_at || "date not recorded"} · ` +
    `test metrics: ${metrics} · image check ${c.ood_check ? "on" : "off (no training statistics)"}`;
}

wireDrop("frontal");
wireDrop("lateral");
$("upload").addEventListener("submit", submit);
$("clear").addEventListener("click", clearAll);
$("token-form").addEventListener("submit", useToken);
$("heat-toggle").addEventListener("change", (e) => { $("heatmap").hidden = !e.target.checked; });
$("heat-opacity").addEventListener("input", (e) => { $("heatmap").style.opacity = e.target.value / 100; });
info();
