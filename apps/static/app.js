// The search page: reads ?q= (and ?video=) from the URL, asks the JSON API, shows the hits as playing previews.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { k: 12, examples: [] };

const fileUrl = (prefix, rel) => prefix + rel.split("/").map(encodeURIComponent).join("/");

async function api(path) {
  const response = await fetch(path);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

// The sampled frames side by side (large view), or flipped through one at a time in a square (cards).
function frameStrip(rel, large) {
  const img = document.createElement("img");
  img.alt = `sampled frames of ${rel}`;
  img.src = fileUrl("/frames/", rel);
  if (large) { img.className = "media strip"; return img; }
  const box = document.createElement("div");
  box.className = "media flipbook";
  box.append(img);
  return box;
}

// A muted looping preview if the browser can play the file, else its sampled frames.
function media(hit, large) {
  if (!hit.playable) return frameStrip(hit.video, large);
  const video = document.createElement("video");
  Object.assign(video, { muted: true, loop: true, autoplay: true, playsInline: true, preload: "auto" });
  video.className = "media";
  video.src = fileUrl("/video/", hit.video);
  video.addEventListener("error", () => video.replaceWith(frameStrip(hit.video, large)));
  return video;
}

function card(hit, onClick) {
  const figure = document.createElement("figure");
  figure.className = "card";
  figure.style.margin = "0";
  figure.dataset.video = hit.video;
  const meta = document.createElement("figcaption");
  meta.className = "meta";
  for (const [cls, text] of [["name", hit.video], ["rank", `#${hit.rank}`], ["score", `cosine ${hit.score.toFixed(4)}`]]) {
    const span = document.createElement("span");
    span.className = cls;
    span.textContent = text;
    if (cls === "name") span.title = hit.video;
    meta.append(span);
  }
  figure.append(media(hit), meta);
  figure.addEventListener("click", () => onClick(hit));
  return figure;
}

function setUrl(q, video) {
  const params = new URLSearchParams();
  if (q) params.set("q", q);
  if (q && state.k !== 12) params.set("k", state.k);
  if (video) params.set("video", video);
  const url = params.toString() ? `?${params}` : location.pathname;
  if (url !== location.search) history.pushState(null, "", url);
}

function latency(answer, started) {
  return `server ${answer.ms.toFixed(1)} ms, round trip ${(performance.now() - started).toFixed(0)} ms`;
}

// Shown when every score of a query lies below the index's floor: the best of meaningless text (/api/info).
function showCue(answer) {
  const cue = $("cue");
  cue.hidden = !answer.low_confidence;
  $("results").classList.toggle("results-low", answer.low_confidence);
  if (!answer.low_confidence) return;
  const best = answer.results.length ? answer.results[0].score : 0;
  const floor = answer.score_floor;
  cue.textContent = `Low confidence: no video matches this query well. The best cosine, ${best.toFixed(4)}, is below ` +
    `what random text reaches on this index (${floor.threshold.toFixed(4)}, the ${floor.percentile}th percentile of ` +
    `the best scores of ${floor.probes} random word strings); these results are likely unrelated.`;
}

function showExamples(visible) {
  $("examples").hidden = !(visible && state.examples.length);
}

async function search(q) {
  const status = $("status");
  status.className = "muted";
  $("q").value = q;
  $("cue").hidden = true;
  showExamples(!q.trim());
  if (!q.trim()) { $("results").replaceChildren(); status.textContent = ""; return; }
  status.textContent = "Searching…";
  const started = performance.now();
  try {
    const answer = await api(`/api/search?q=${encodeURIComponent(q)}&k=${state.k}`);
    $("results").replaceChildren(...answer.results.map((hit) => card(hit, (h) => showVideo(h.video, true))));
    const cut = answer.truncated ? ` · query cut to its first ${answer.tokens_kept} of ${answer.tokens} tokens` : "";
    status.textContent = `${answer.results.length} of ${answer.videos} videos · ${latency(answer, started)}${cut}`;
    showCue(answer);
  } catch (err) {
    $("results").replaceChildren();
    status.className = "error";
    status.textContent = err.message;
  }
}

async function showVideo(rel, push) {
  if (push) setUrl($("q").value.trim(), rel);
  $("detail").hidden = false;
  $("detail-title").textContent = rel;
  $("similar").replaceChildren();
  $("similar-status").className = "muted";
  $("similar-status").textContent = "Finding similar videos…";
  const started = performance.now();
  try {
    const answer = await api(`/api/similar?video=${encodeURIComponent(rel)}&k=9`);
    const self = answer.results.find((hit) => hit.video === rel) || answer.results[0];
    $("detail-media").replaceChildren(media(self, true));
    const others = answer.results.filter((hit) => hit.video !== rel);
    $("similar").replaceChildren(...others.map((hit) => card(hit, (h) => showVideo(h.video, true))));
    $("similar-status").textContent = `nearest videos by the model's video features · ${latency(answer, started)}`;
  } catch (err) {
    $("detail-media").replaceChildren();
    $("similar-status").className = "error";
    $("similar-status").textContent = err.message;
  }
  $("detail").scrollIntoView({ behavior: "smooth", block: "start" });
}

function closeVideo() {
  $("detail").hidden = true;
  $("detail-media").replaceChildren();
  $("similar").replaceChildren();
  setUrl($("q").value.trim(), null);
}

function fromUrl() {
  const params = new URLSearchParams(location.search);
  state.k = Number(params.get("k")) || 12;
  if ([...$("k").options].some((option) => option.value === String(state.k))) $("k").value = String(state.k);
  search(params.get("q") || "");
  if (params.get("video")) showVideo(params.get("video"), false);
  else { $("detail").hidden = true; $("detail-media").replaceChildren(); }
}

$("search").addEventListener("submit", (event) => {
  event.preventDefault();
  const q = $("q").value.trim();
  if (!q) { $("status").className = "error"; $("status").textContent = "Type a few words to search."; return; }
  state.k = Number($("k").value);
  $("detail").hidden = true;
  setUrl(q, null);
  search(q);
});
$("close").addEventListener("click", closeVideo);
window.addEventListener("popstate", fromUrl);

// The sticky header's height, so that a view scrolled to (the detail) starts below it.
new ResizeObserver(() => {
  document.documentElement.style.setProperty("--header-height", `${document.querySelector("header").offsetHeight}px`);
}).observe(document.querySelector("header"));

function exampleButton(text) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = text;
  button.addEventListener("click", () => {
    state.k = Number($("k").value);
    setUrl(text, null);
    search(text);
  });
  return button;
}

api("/api/info").then((info) => {
  $("info").textContent = `${info.videos.toLocaleString()} videos · ${info.checkpoint} · ${info.method}, ` +
    `T=${info.frames}, ${info.resolution} px`;
  $("info").title = info.model;  // the full identity (prompt and backbone hashes), on hover
  document.documentElement.style.setProperty("--frames", info.frames);
  state.examples = info.examples;
  $("example-list").replaceChildren(...info.examples.map(exampleButton));
  showExamples(!$("q").value.trim());
}).catch((err) => { $("info").textContent = err.message; });
fromUrl();
