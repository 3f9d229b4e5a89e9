// vidprune live video QA page: camera -> JPEG frames over a WebSocket; questions, streamed answers, stats.
// Protocol: see vidprune/demo/server.py. Frames are numbered by their order on the socket, from 0.
"use strict";

const $ = (id) => document.getElementById(id);
// Frames kept here so the overlay can draw the frame a "frame" message is about (older ones are closed).
const RECENT_FRAMES = 24;
// Skip a capture while this much is still unsent on the socket (a slow link must not pile up frames).
const MAX_BUFFERED_BYTES = 1 << 20;
const ERROR_SHOW_MS = 8000;

const state = {
  ws: null,
  hello: null,
  rate: 1,
  timer: null,
  sent: 0,            // binary messages sent = the next frame's seq
  skipped: 0,         // captures skipped because the socket was still busy
  recent: new Map(),  // seq -> Promise<ImageBitmap> of frames sent (browser source)
  preview: null,      // Promise<ImageBitmap> of the last server preview (server source)
  answers: new Map(), // answer id -> element
  stream: null,
  closeExplained: false, // the server said why before it closed the socket
};

function showError(message, sticky) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
  clearTimeout(showError.timer);
  if (!sticky) showError.timer = setTimeout(() => { box.hidden = true; }, ERROR_SHOW_MS);
}

function setState(name, label) {
  document.body.dataset.state = name;
  $("conn-status").textContent = label;
}

function pct(x) { return (100 * x).toFixed(1) + "%"; }

// ---------------------------------------------------------------- socket
function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  // The access token (if any) rides along as a cookie the server set with the page; the query covers
  // browsers that refuse the cookie.
  const token = new URLSearchParams(location.search).get("token");
  const query = token ? "?token=" + encodeURIComponent(token) : "";
  const ws = new WebSocket(`${scheme}://${location.host}/ws${query}`);
  ws.binaryType = "blob";
  state.ws = ws;
  ws.onmessage = (ev) => {
    if (typeof ev.data !== "string") { onPreview(ev.data); return; }
    const msg = JSON.parse(ev.data);
    const handler = handlers[msg.type];
    if (handler) handler(msg);
  };
  ws.onclose = (ev) => {
    setState("closed", "disconnected");
    stopCapture();
    if (ev.code === 1009) showError("the server closed the connection: a message was too big", true);
    else if (ev.reason && !state.closeExplained) showError("the server closed the connection: " + ev.reason, true);
  };
}

const handlers = {
  hello(msg) {
    state.hello = msg;
    $("model-name").textContent = msg.model.split("/").slice(-2).join("/") + " (" + msg.family + ")";
    $("tiny-warning").hidden = !msg.tiny;
    $("question").maxLength = msg.limits.max_question_chars;
    $("window").textContent = `· last ${msg.plan.window_s} s, budget ${msg.plan.budget} tokens`;
    state.rate = msg.capture.frame_rate;
    ensureRateOption(state.rate);
    $("reset").hidden = msg.source === "server";  // one memory shared by every tab: not this tab's to reset
    if (msg.source === "server") {
      $("camera-title").textContent = "Server source: " + (msg.source_name || "");
      $("preview").hidden = true;
      $("server-preview").hidden = false;
      $("rate-label").hidden = true;
      $("camera-status").textContent = "frames come from the server";
      setState("streaming", "streaming (server source)");
    } else {
      startCamera();
    }
  },
  frame(msg) {
    updateStats(msg.stats, msg.load);
    drawOverlay(msg);
  },
  stats(msg) {
    updateStats(msg.stats, msg.load);
    if (msg.source && msg.source.error) showError("source: " + msg.source.error, true);
  },
  answer_start(msg) {
    const el = document.createElement("div");
    el.className = "answer";
    el.dataset.done = "0";
    el.dataset.id = msg.id;
    el.innerHTML = '<div class="q"></div><div class="a"></div><div class="meta"></div>';
    el.querySelector(".q").textContent = msg.question;
    el.querySelector(".meta").textContent =
      `from ${msg.stats.frames} frames in memory: ${msg.visual_tokens} visual tokens`;
    $("answers").appendChild(el);
    state.answers.set(msg.id, el);
  },
  token(msg) {
    const el = state.answers.get(msg.id);
    if (el) el.querySelector(".a").textContent += msg.text;
  },
  answer_end(msg) {
    const el = state.answers.get(msg.id);
    if (!el) return;
    el.querySelector(".a").textContent = msg.text || "(empty answer)";
    el.dataset.done = "1";
    const ttft = msg.ttft_s == null ? "–" : msg.ttft_s.toFixed(2) + " s";
    el.querySelector(".meta").textContent =
      `first token after ${ttft} · ${msg.new_tokens} tokens in ${msg.generate_s.toFixed(2)} s · ` +
      `${msg.visual_tokens} visual tokens (the stock model: ${msg.stock_tokens})`;
    $("stat-ttft").textContent = ttft;
    $("ask").disabled = false;
  },
  error(msg) {
    // This page keeps to the server's rate; a frame its timer sent early is only counted (in the stats).
    if (msg.code === "frames_over_rate") return;
    const where = msg.seq == null ? "" : ` (frame ${msg.seq})`;
    showError(`${msg.code}${where}: ${msg.message}`, msg.code === "too_many_sessions");
    if (["question_refused", "memory_empty", "busy", "internal"].includes(msg.code)) $("ask").disabled = false;
    if (msg.code === "too_many_sessions") setState("closed", "refused");
    // These come just before the server closes the socket: the close need not say it again.
    if (["too_many_sessions", "evicted_idle", "bad_origin"].includes(msg.code)) state.closeExplained = true;
  },
};

function updateStats(s, load) {
  $("stat-frames").textContent = `${s.frames} (${s.span_s.toFixed(1)} s of ${s.window_s} s)`;
  $("stat-tokens").textContent = `${s.tokens} / ${s.tokens_seen}` + (s.tokens_seen ? ` (${pct(s.kept_share)})` : "");
  $("stat-dups").textContent = s.candidates ? `${pct(s.duplicate_share)} of VisPruner's picks` : "–";
  $("stat-budget").textContent = `${s.tokens} of ${s.budget}`;
  if (load) {
    $("stat-dropped").textContent = `${load.dropped} of ${load.received}` +
      (load.over_rate ? `, ${load.over_rate} over the frame rate` : "") +
      (state.skipped ? ` (+${state.skipped} not sent)` : "");
  }
}

// ---------------------------------------------------------------- camera
function ensureRateOption(rate) {
  // The server holds frames to its --fps: faster rates would only be thinned, so they are not offered.
  const select = $("rate");
  for (const o of [...select.options]) if (Number(o.value) > rate) o.remove();
  if (![...select.options].some((o) => Number(o.value) === rate)) {
    const opt = document.createElement("option");
    opt.value = String(rate); opt.textContent = String(rate);
    select.appendChild(opt);
  }
  select.value = String([...select.options].find((o) => Number(o.value) === rate).value);
  select.onchange = () => { state.rate = Number(select.value); scheduleCapture(); };
}

async function startCamera() {
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (err) {
    $("camera-status").textContent = "no camera: " + err.message;
    showError("camera unavailable: " + err.message + " (allow camera access and reload)", true);
    return;
  }
  const video = $("preview");
  video.srcObject = state.stream;
  await video.play().catch(() => {});
  $("camera-status").textContent = "camera on";
  setState("streaming", "streaming");
  scheduleCapture();
}

function stopCapture() {
  clearTimeout(state.timer);
  state.timer = null;
}

function scheduleCapture() {
  stopCapture();
  const tick = () => {
    captureFrame();
    state.timer = setTimeout(tick, 1000 / state.rate);
  };
  state.timer = setTimeout(tick, 0);
}

function captureFrame() {
  const ws = state.ws, video = $("preview");
  if (!ws || ws.readyState !== WebSocket.OPEN || !video.videoWidth) return;
  if (ws.bufferedAmount > MAX_BUFFERED_BYTES) { state.skipped += 1; return; }
  const maxSide = state.hello.capture.max_side;
  const scale = Math.min(1, maxSide / Math.max(video.videoWidth, video.videoHeight));
  const canvas = $("capture");
  canvas.width = Math.round(video.videoWidth * scale);
  canvas.height = Math.round(video.videoHeight * scale);
  canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
  const bitmap = createImageBitmap(canvas);
  canvas.toBlob((blob) => {
    if (!blob || ws.readyState !== WebSocket.OPEN) return;
    const seq = state.sent++;
    ws.send(blob);
    state.recent.set(seq, bitmap);
    for (const key of state.recent.keys()) {
      if (state.recent.size <= RECENT_FRAMES) break;
      state.recent.get(key).then((bmp) => bmp.close());
      state.recent.delete(key);
    }
  }, "image/jpeg", state.hello.capture.quality);
}

// ---------------------------------------------------------------- overlay
function onPreview(blob) {
  const img = $("server-preview");
  if (img.dataset.url) URL.revokeObjectURL(img.dataset.url);
  img.dataset.url = URL.createObjectURL(blob);
  img.src = img.dataset.url;
  state.preview = createImageBitmap(blob);
}

function hatchPattern(ctx) {
  const tile = document.createElement("canvas");
  tile.width = tile.height = 8;
  const t = tile.getContext("2d");
  t.fillStyle = "rgba(40,40,40,0.55)";
  t.fillRect(0, 0, 8, 8);
  t.strokeStyle = "rgba(230,230,230,0.7)";
  t.lineWidth = 2;
  t.beginPath(); t.moveTo(-2, 10); t.lineTo(10, -2); t.stroke();
  return ctx.createPattern(tile, "repeat");
}

async function drawOverlay(msg) {
  const pending = state.recent.has(msg.seq) ? state.recent.get(msg.seq) : state.preview;
  if (!pending) return;
  const bitmap = await pending;
  const canvas = $("overlay"), ctx = canvas.getContext("2d");
  const W = bitmap.width, H = bitmap.height;
  canvas.width = W; canvas.height = H;
  ctx.drawImage(bitmap, 0, 0);
  const [gh, gw] = msg.grid;
  const [x0, y0, x1, y1] = [msg.region[0] * W, msg.region[1] * H, msg.region[2] * W, msg.region[3] * H];
  // Outside the model's center crop: hatched.
  ctx.fillStyle = hatchPattern(ctx);
  ctx.fillRect(0, 0, W, y0); ctx.fillRect(0, y1, W, H - y1);
  ctx.fillRect(0, y0, x0, y1 - y0); ctx.fillRect(x1, y0, W - x1, y1 - y0);
  const cw = (x1 - x0) / gw, ch = (y1 - y0) / gh;
  const kept = new Set(msg.kept), dups = new Set(msg.duplicates);
  for (let i = 0; i < gh * gw; i++) {
    const x = x0 + (i % gw) * cw, y = y0 + Math.floor(i / gw) * ch;
    if (dups.has(i)) { ctx.fillStyle = "rgba(59,130,246,0.55)"; ctx.fillRect(x, y, cw, ch); }
    else if (!kept.has(i)) { ctx.fillStyle = "rgba(15,20,30,0.6)"; ctx.fillRect(x, y, cw, ch); }
  }
  ctx.strokeStyle = "#22c55e";
  ctx.lineWidth = Math.max(1, Math.round(W / 320));
  for (const i of kept) {
    ctx.strokeRect(x0 + (i % gw) * cw + 0.5, y0 + Math.floor(i / gw) * ch + 0.5, cw - 1, ch - 1);
  }
  canvas.dataset.seq = String(msg.seq);
  $("overlay-seq").textContent =
    `· frame ${msg.seq}: ${msg.kept.length} kept, ${msg.duplicates.length} duplicates, ` +
    `${gh * gw - msg.candidates} pruned`;
}

// ---------------------------------------------------------------- memory
$("reset").addEventListener("click", () => {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return;
  state.ws.send(JSON.stringify({ type: "reset" }));
});

// ---------------------------------------------------------------- questions
$("ask-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const question = $("question").value.trim();
  if (!question || !state.ws || state.ws.readyState !== WebSocket.OPEN) return;
  state.ws.send(JSON.stringify({ type: "ask", question }));
  $("ask").disabled = true;
});

connect();
