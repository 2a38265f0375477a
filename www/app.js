// UI thread: renders state and forwards user intent to the worker. Never blocks: the engine,
// the GPU, downloads and the model cache all live in the worker (worker.js).
//
// Page state for tests and embedding pages: document.body.dataset.state is one of
// starting | ready | loading | loaded | generating | done | cancelled | error (message in
// dataset.error). window.sdxlDevice (ready's info), window.sdxlLoaded (the "loaded" message),
// window.sdxlGpuCheck ("Check this GPU"'s result and plain text; dataset.gpuCheck running |
// passed | failed | error),
// window.sdxlLoadSource, window.sdxlResult (the last PNG as a data: URL, set before "done").
import { check, TO_PAGE, TO_WORKER } from "./protocol.js";
import { BUCKETS, DEFAULTS, absUrl, isBucket, parseParams, randomSeed, toQuery, validateSettings } from "./params.js";
import { formatBytes, progressText } from "./format.js";
import { describeRun, imagesMessage, validateImageSettings } from "./images.js";
import { imageInputs, imageSettings, setImageSettings, setupImageInput, useImage } from "./imageinput.js";
import { createAdapters } from "./adapters.js";
import { $, el } from "./dom.js";
import { copyReport, showError as showCheckError, showProgress as showCheckProgress, showReport as showCheckReport } from "./gpucheck.js";

const STATES = ["starting", "ready", "loading", "loaded", "generating", "done", "cancelled", "error"];

const url = parseParams(location.search, location.href);
const ui = {
  ready: false, // device acquired
  loaded: false, // a model is in the engine
  busy: null, // null | "load" | "generate" | "adapter" | "check" (the GPU check; no cancel)
  deviceLost: false,
  gpuMissing: !("gpu" in navigator),
  autorun: url.autorun && url.errors.length === 0 && "gpu" in navigator,
  nextId: 1,
  gen: null, // {id, settings, firstStep: {step, t} | null}
  model: null, // {name, url|null, source}
  pendingLoad: null, // {url|null, label}
  started: false,
};

// ---------------------------------------------------------------------------------------------
// State, banner, buttons

function setState(state, error) {
  if (!STATES.includes(state)) throw new Error(`unknown state ${state}`);
  const b = document.body;
  if (state === "error") {
    const message = String(error || "unknown error");
    b.dataset.error = message;
    showBanner(message);
  } else {
    delete b.dataset.error;
    hideBanner();
  }
  b.dataset.state = state;
  $("status").textContent = statusText(state, error);
  $("status").title = $("status").textContent;
  updateControls();
}

function statusText(state, error) {
  switch (state) {
    case "starting": return "starting…";
    case "ready": return "ready — load a model";
    case "loading": return ui.busy === "adapter" ? "loading LoRA / embedding…" : "loading model…";
    case "loaded": return ui.model ? `model: ${ui.model.name}` : "model loaded";
    case "generating": return "generating…";
    case "done": return "done";
    case "cancelled": return "cancelled";
    default: return `error: ${error}`;
  }
}

function showBanner(message) {
  $("banner-text").textContent = message;
  $("reload").hidden = !ui.deviceLost;
  $("banner").hidden = false;
}

function hideBanner() {
  $("banner").hidden = true;
}

function updateControls() {
  const idle = ui.ready && !ui.busy && !ui.deviceLost;
  $("load").disabled = !idle;
  $("model-file").disabled = !idle;
  $("generate").disabled = !(idle && ui.loaded);
  $("cancel").disabled = !ui.busy || ui.busy === "check";
  // The check times the whole device: never alongside a load or a generation (those disable it).
  $("gpu-check").disabled = !idle;
  for (const b of $("cache-list").querySelectorAll("button")) {
    b.disabled = b.dataset.act === "load" ? !idle : Boolean(ui.busy);
  }
  adapters.updateControls();
}

// ---------------------------------------------------------------------------------------------
// The form

function fillSizes(width, height) {
  const sel = $("size");
  sel.textContent = "";
  const custom = !isBucket(width, height);
  if (custom) sel.append(new Option(`custom ${width}×${height}`, `${width}x${height}`));
  for (const [w, h] of BUCKETS) {
    const r = w / h;
    const shape = r === 1 ? "square" : r > 1 ? "landscape" : "portrait";
    sel.append(new Option(`${w} × ${h}  (${shape} ${r.toFixed(2)})`, `${w}x${h}`));
  }
  sel.value = `${width}x${height}`;
  $("size-note").hidden = !custom;
}

function fillForm(model, s) {
  if (model !== undefined && model !== null) $("model-url").value = model;
  $("prompt").value = s.prompt;
  $("use-negative").checked = s.negative !== null;
  $("negative").value = s.negative ?? $("negative").value;
  fillSizes(s.width, s.height);
  $("steps").value = String(s.steps);
  $("cfg").value = String(s.cfg);
  $("sampler").value = s.sampler;
  $("karras").checked = s.karras;
  $("rating").value = s.rating;
  $("clip-skip").value = String(s.clip_skip);
  $("v-prediction").checked = s.v_prediction;
  setSelect("gpu-memory", s.gpu_memory);
  setSelect("vae-tile", String(s.vae_tile));
  $("seed").value = String(s.seed);
  setImageSettings(s);
  syncDependent();
}

/** Select `value`, adding it as an option first when the list lacks it (a URL parameter). */
function setSelect(id, value) {
  const sel = $(id);
  if (![...sel.options].some((o) => o.value === value)) sel.append(el("option", { value, textContent: value }));
  sel.value = value;
}

function syncDependent() {
  $("negative").disabled = !$("use-negative").checked;
  const ddim = $("sampler").value === "ddim";
  if (ddim) $("karras").checked = false;
  $("karras").disabled = ddim;
  $("size-note").hidden = isBucket(...$("size").value.split("x").map(Number));
}

const num = (id) => {
  const v = $(id).value.trim();
  return v === "" ? NaN : Number(v);
};

function readForm() {
  const [width, height] = $("size").value.split("x").map(Number);
  return {
    prompt: $("prompt").value,
    negative: $("use-negative").checked ? $("negative").value : null,
    width,
    height,
    steps: num("steps"),
    cfg: num("cfg"),
    seed: /^\d+$/.test($("seed").value.trim()) ? Number($("seed").value.trim()) : NaN,
    sampler: $("sampler").value,
    karras: $("karras").checked && $("sampler").value !== "ddim",
    rating: $("rating").value,
    clip_skip: num("clip-skip"),
    v_prediction: $("v-prediction").checked,
    gpu_memory: $("gpu-memory").value,
    vae_tile: Number($("vae-tile").value),
    vae_tile_overlap: 0.25,
    ...imageSettings(),
  };
}

// ---------------------------------------------------------------------------------------------
// Worker

let worker = null;

function post(msg, transfer) {
  check(TO_WORKER, msg);
  if (!worker) throw new Error("the worker is not running");
  worker.postMessage(msg, transfer || []);
}

function startWorker() {
  try {
    worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
  } catch (e) {
    return failWorker(e && e.message);
  }
  worker.onmessage = (ev) => {
    let msg;
    try {
      msg = check(TO_PAGE, ev.data);
    } catch (e) {
      return fail(`bad message from the worker: ${e.message}`);
    }
    Promise.resolve()
      .then(() => HANDLERS[msg.type](msg))
      .catch((e) => fail(`page error handling "${msg.type}": ${e.message}`));
  };
  worker.onerror = (ev) => {
    if (ev && ev.preventDefault) ev.preventDefault();
    failWorker(ev && ev.message);
  };
  worker.onmessageerror = () => fail("a message from the worker could not be read");
  post({ type: "init", forceF32: url.f32 });
  post({ type: "listCache" });
}

// LoRAs and embeddings (adapters.js): loaded after each model load, one job at a time.
const adapters = createAdapters({
  post,
  fail,
  canRun: () => ui.ready && ui.loaded && !ui.busy && !ui.deviceLost,
  busy: () => Boolean(ui.busy) || !ui.ready || ui.deviceLost,
  begin: () => {
    ui.busy = "adapter";
    setState("loading");
  },
  end: (state) => {
    ui.busy = null;
    setState(state);
  },
});

function failWorker(message) {
  const what = ui.started ? "worker failed" : "worker failed to start";
  ui.ready = false;
  fail(`${what}: ${message || "could not load worker.js or its imports"} (is www/pkg built? run ./x wasm)`);
}

function fail(message) {
  ui.busy = null;
  ui.autorun = false;
  setState("error", message);
}

const HANDLERS = {
  ready(msg) {
    ui.started = true;
    ui.ready = true;
    window.sdxlDevice = msg.info;
    showDevice(msg.info);
    if (document.body.dataset.state === "starting") setState("ready");
    else updateControls();
    if (ui.autorun) loadUrl($("model-url").value);
  },

  selfTest(msg) {
    window.sdxlSelfTest = msg.values;
  },

  gpuCheckProgress(msg) {
    showCheckProgress(msg.phase);
  },

  gpuCheckResult(msg) {
    if (ui.busy === "check") ui.busy = null;
    const text = showCheckReport(msg, { info: window.sdxlDevice, userAgent: navigator.userAgent });
    window.sdxlGpuCheck = { ...msg, text };
    updateControls();
  },

  loadProgress(msg) {
    showLoadProgress(msg);
  },

  loaded(msg) {
    window.sdxlLoaded = msg;
    window.sdxlLoadSource = msg.source;
    ui.loaded = true;
    ui.busy = null;
    ui.model = { name: msg.name, source: msg.source, url: msg.source === "file" ? null : ui.pendingLoad?.url ?? null };
    ui.pendingLoad = null;
    showLoaded(msg);
    setState("loaded");
    post({ type: "listCache" });
    adapters.modelLoaded(() => {
      if (ui.autorun) {
        ui.autorun = false;
        generate();
      }
    });
  },

  step(msg) {
    if (!ui.gen || msg.id !== ui.gen.id) return;
    drawPreview(msg.preview);
    const t = performance.now();
    if (!ui.gen.firstStep) ui.gen.firstStep = { step: msg.step, t };
    const f = ui.gen.firstStep;
    const rate = msg.step > f.step && t > f.t ? ((msg.step - f.step) * 1000) / (t - f.t) : null;
    $("progress").max = msg.total;
    $("progress").value = msg.step;
    // Tests and embedding pages follow the run here (the last finished step).
    document.body.dataset.step = String(msg.step);
    $("progress-text").textContent =
      `step ${msg.step} / ${msg.total}` + (rate ? ` · ${rate.toFixed(rate < 10 ? 2 : 1)} it/s` : "");
  },

  async result(msg) {
    const settings = ui.gen && ui.gen.id === msg.id ? ui.gen.settings : { ...readForm(), seed: msg.seed };
    const blob = new Blob([msg.png], { type: "image/png" });
    const href = URL.createObjectURL(blob);
    showResult(msg, settings, href, ui.gen && ui.gen.id === msg.id ? ui.gen.run : null);
    $("progress").max = 1;
    $("progress").value = 1;
    $("progress-text").textContent = `done in ${(msg.ms / 1000).toFixed(1)} s`;
    let dataUrl;
    try {
      dataUrl = await blobToDataUrl(blob);
    } catch (e) {
      return fail(`could not read the result: ${e.message}`);
    }
    window.sdxlResult = dataUrl;
    ui.busy = null;
    ui.gen = null;
    setState("done");
  },

  cancelled(msg) {
    if (ui.busy === "load" || msg.id === null) {
      ui.loaded = false;
      ui.pendingLoad = null;
      $("load-text").textContent = "load cancelled";
    } else {
      $("progress-text").textContent = "cancelled";
      restoreStage();
      ui.gen = null;
    }
    ui.busy = null;
    ui.autorun = false;
    setState("cancelled");
  },

  cache(msg) {
    renderCache(msg.entries);
    adapters.renderCache(msg.adapters);
  },

  ...adapters.handlers,

  error(msg) {
    if (msg.during === "check") {
      if (ui.busy === "check") ui.busy = null;
      showCheckError(msg.message);
      // A failed check leaves the model and the page usable; only a lost device goes further.
      if (!msg.deviceLost) {
        updateControls();
        return;
      }
    }
    if (msg.during === "adapter" || ui.busy === "adapter" || msg.deviceLost) adapters.workerError();
    if (msg.deviceLost) {
      ui.deviceLost = true;
      ui.ready = false;
    }
    if (msg.during === "init") ui.ready = false;
    if (msg.during === "load" || ui.busy === "load") {
      ui.loaded = false;
      ui.pendingLoad = null;
      $("load-text").textContent = "load failed";
    }
    if (ui.busy === "generate" || msg.during === "generate") {
      $("progress-text").textContent = "failed";
      restoreStage();
      ui.gen = null;
    }
    ui.started = true;
    // The page already explains a missing WebGPU better than the worker can.
    if (ui.gpuMissing && msg.during === "init" && document.body.dataset.state === "error") return;
    if (msg.during === "cache" && ui.busy) {
      showBanner(msg.message); // a failed cache listing must not abort a running job
      return;
    }
    fail(msg.message);
  },
};

// ---------------------------------------------------------------------------------------------
// Actions

function loadUrl(raw) {
  const text = String(raw || "").trim();
  let href;
  try {
    href = absUrl(text, location.href);
  } catch (e) {
    return fail(`invalid model URL "${text}": ${e.message}`);
  }
  startLoad({ kind: "url", url: href }, href);
}

function startLoad(source, label) {
  ui.busy = "load";
  ui.loaded = false;
  ui.pendingLoad = { url: source.kind === "url" ? source.url : null, label };
  adapters.modelUnloaded();
  $("model-info").hidden = true;
  $("load-progress").hidden = false;
  $("load-bar").removeAttribute("value");
  $("load-text").textContent = `opening ${label}…`;
  post({ type: "load", source });
  setState("loading");
}

function generate() {
  if (!$("seed-lock").checked) $("seed").value = String(randomSeed());
  const settings = readForm();
  settings.loras = adapters.loras(settings.prompt);
  const inputs = imageInputs();
  const errors = [...validateSettings(settings), ...validateImageSettings(settings, inputs.flags)];
  if (errors.length) return fail(errors.join("; "));
  const id = ui.nextId++;
  ui.gen = { id, settings, firstStep: null, run: describeRun(settings, inputs.flags) };
  ui.busy = "generate";
  const stage = $("stage");
  stage.classList.remove("empty");
  $("stage-img").hidden = true;
  const canvas = $("preview");
  canvas.hidden = false;
  canvas.style.setProperty("--ar", String(settings.width / settings.height));
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  $("progress").max = settings.steps;
  $("progress").value = 0;
  $("progress-text").textContent = "encoding the prompt…";
  const { images, transfer } = imagesMessage(inputs.init, inputs.mask);
  post({ type: "generate", id, settings, images }, transfer);
  setState("generating");
}

/** After a generation that drew nothing: back to the last result (or the empty stage). */
/** "Check this GPU": runs in the worker between jobs (the button is disabled during them). */
function startCheck() {
  if ($("gpu-check").disabled) return;
  ui.busy = "check";
  showCheckProgress("selfcheck");
  updateControls();
  post({ type: "gpuCheck" });
}

function restoreStage() {
  if (!ui.gen || ui.gen.firstStep) return;
  if ($("stage-img").getAttribute("src")) {
    $("stage-img").hidden = false;
    $("preview").hidden = true;
  } else {
    $("stage").classList.add("empty");
  }
}

function drawPreview(p) {
  if (!p || !p.width || !p.height || !p.rgba) return;
  const canvas = $("preview");
  if (canvas.width !== p.width || canvas.height !== p.height) {
    canvas.width = p.width;
    canvas.height = p.height;
  }
  const rgba = p.rgba instanceof Uint8ClampedArray ? p.rgba : new Uint8ClampedArray(p.rgba.buffer, p.rgba.byteOffset, p.rgba.byteLength);
  if (rgba.length !== p.width * p.height * 4) return;
  canvas.getContext("2d").putImageData(new ImageData(rgba, p.width, p.height), 0, 0);
}

function blobToDataUrl(blob) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(r.result);
    r.onerror = () => reject(r.error || new Error("FileReader failed"));
    r.readAsDataURL(blob);
  });
}

/** One line on the run's GPU memory: peak, budget and what the planner did to fit it. */
function memoryLine(r) {
  if (!r) return "";
  const gib = (b) => `${(b / 2 ** 30).toFixed(2)} GiB`;
  const p = r.plan;
  const how = [
    p.text_encoders === "streamed" ? (r.text_encoders_reloaded ? "text encoders streamed back" : "text encoders released") : null,
    r.conditioning_cached ? "prompt cached" : null,
    p.vae_tile ? `VAE in ${p.vae_tile} px tiles` : null,
  ].filter(Boolean);
  return `GPU memory peak ${gib(r.peak_gpu_bytes)} of ${gib(p.gpu_memory)}${how.length ? ` · ${how.join(" · ")}` : ""}`;
}

function showResult(msg, settings, href, run) {
  const w = msg.width;
  const h = msg.height;
  // The stage: the latest result, big.
  const stageImg = $("stage-img");
  stageImg.src = href;
  stageImg.title = msg.parameters;
  stageImg.style.setProperty("--ar", String(w / h));
  stageImg.classList.toggle("pixel", w < 512);
  stageImg.hidden = false;
  $("preview").hidden = true;
  $("stage").classList.remove("empty");

  const file = `sdxl-${msg.seed}.png`;
  const img = el("img", { src: href, alt: settings.prompt || "result", title: msg.parameters, width: w, height: h });
  if (w < 256) img.classList.add("pixel");
  const query = toQuery(ui.model && ui.model.url, settings, adapters.shareable());
  const reuse = el("button", { type: "button", class: "small", textContent: "Use settings" });
  reuse.addEventListener("click", () => {
    fillForm(undefined, settings);
    $("seed-lock").checked = true;
  });
  const png = new Uint8Array(msg.png);
  const send = (label, inpaint) => {
    const b = el("button", { type: "button", class: "small", textContent: label });
    b.addEventListener("click", () => useImage(png, file, inpaint).catch((e) => fail(e.message)));
    return b;
  };
  const fig = el(
    "figure",
    { class: "result" },
    el("a", { class: "thumb", href, target: "_blank", rel: "noopener" }, img),
    el(
      "figcaption",
      {},
      el("div", { class: "muted" }, `seed ${msg.seed} · ${w}×${h} · ${(msg.ms / 1000).toFixed(1)} s`),
      run ? el("div", { class: "run" }, run) : null,
      el("div", { class: "muted memory" }, memoryLine(msg.report)),
      el(
        "div",
        { class: "links" },
        el("a", { href, download: file, textContent: `Download ${file}` }),
        el("a", { href: `?${query}`, textContent: "Link", title: "a link that fills the form with these settings" }),
        reuse,
        send("Send to img2img", false),
        send("Send to inpaint", true),
      ),
      el("details", {}, el("summary", { textContent: "Parameters" }), el("pre", { textContent: msg.parameters })),
    ),
  );
  $("gallery").prepend(fig);
}

function showLoadProgress(p) {
  $("load-progress").hidden = false;
  const bar = $("load-bar");
  if (p.total) {
    bar.max = p.total;
    bar.value = Math.min(p.loaded, p.total);
  } else {
    bar.removeAttribute("value");
  }
  const what = { download: "downloading", cache: "reading the cache", file: "reading the file" }[p.phase] || p.phase;
  $("load-text").textContent = `${what}: ${progressText(p)}`;
}

function showLoaded(msg) {
  $("load-progress").hidden = true;
  const from = { network: "downloaded", cache: "from the cache", file: "from a file" }[msg.source] || msg.source;
  const info = $("model-info");
  info.textContent = "";
  info.append(el("strong", { textContent: msg.name }), ` · ${from}`);
  if (typeof msg.wasmMemory === "number") info.append(` · wasm memory ${formatBytes(msg.wasmMemory)}`);
  const ins = msg.inspection;
  if (ins && typeof ins === "object") {
    const parts = [];
    if (ins.layout) parts.push(`layout ${ins.layout}`);
    if (ins.components && typeof ins.components === "object") {
      for (const [name, c] of Object.entries(ins.components)) {
        if (c && typeof c.params === "number") parts.push(`${name} ${formatCount(c.params)} ${c.dtype || ""}`.trim());
      }
    }
    if (parts.length) info.append(el("div", { class: "muted", textContent: parts.join(" · ") }));
  }
  info.hidden = false;
}

function formatCount(n) {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(n < 1e7 ? 2 : 0)} M`;
  return `${(n / 1e3).toFixed(0)} K`;
}

function renderCache(entries) {
  const list = $("cache-list");
  list.textContent = "";
  if (!entries.length) {
    list.append(el("li", { class: "empty muted", textContent: "No cached models. Downloads are kept in this browser for the next visit." }));
    return;
  }
  for (const e of entries) {
    const size = e.complete
      ? el("span", { class: "size", textContent: formatBytes(e.size) })
      : el("span", {
          class: "size partial",
          textContent: e.size ? `partial ${formatBytes(e.stored)} of ${formatBytes(e.size)}` : `partial ${formatBytes(e.stored)}`,
        });
    const load = el("button", { type: "button", class: "small", textContent: e.complete ? "Load" : "Resume", dataset: { act: "load" } });
    load.addEventListener("click", () => {
      $("model-url").value = e.url;
      startLoad({ kind: "url", url: e.url }, e.name);
    });
    const del = el("button", { type: "button", class: "small", textContent: "Delete", dataset: { act: "delete" } });
    del.addEventListener("click", () => post({ type: "deleteCache", key: e.key }));
    list.append(el("li", { title: e.url }, el("span", { class: "name", textContent: e.name }), size, load, del));
  }
  updateControls();
}

function showDevice(info) {
  const dl = $("device");
  dl.textContent = "";
  const row = (k, v) => {
    if (v === undefined || v === null || v === "") return;
    dl.append(el("dt", { textContent: k }), el("dd", { textContent: String(v) }));
  };
  const yn = (v) => (v === undefined ? undefined : v ? "yes" : "no");
  info = info && typeof info === "object" ? info : {};
  row("adapter", info.name);
  row("backend", [info.backend, info.device_type].filter(Boolean).join(", "));
  row("driver", [info.driver, info.driver_info].filter(Boolean).join(" "));
  row("shader-f16", yn(info.shader_f16));
  row("subgroups", yn(info.subgroup));
  row("timestamps", yn(info.timestamp_query));
  row("compute path", info.compute_path);
  const limits = info.limits && typeof info.limits === "object" ? info.limits : {};
  for (const [k, v] of Object.entries(limits)) {
    const big = typeof v === "number" && v >= 1 << 20;
    row(k.replace(/^max_/, "max ").replace(/_/g, " "), big ? `${(v / 2 ** 20).toFixed(0)} MiB` : v);
  }
  if (!dl.children.length) row("device", "no details reported");
}

// ---------------------------------------------------------------------------------------------
// Wiring

function wire() {
  adapters.wire();
  $("use-negative").addEventListener("change", syncDependent);
  $("sampler").addEventListener("change", syncDependent);
  $("size").addEventListener("change", syncDependent);
  $("dice").addEventListener("click", () => {
    $("seed").value = String(randomSeed());
  });
  $("load").addEventListener("click", () => loadUrl($("model-url").value));
  $("model-url").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !$("load").disabled) loadUrl($("model-url").value);
  });
  $("model-file").addEventListener("change", () => {
    const file = $("model-file").files[0];
    $("model-file").value = "";
    if (file) startLoad({ kind: "file", file }, file.name);
  });
  const section = $("model-section");
  section.addEventListener("dragover", (e) => {
    if (!$("model-file").disabled) e.preventDefault();
  });
  section.addEventListener("drop", (e) => {
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (!file || $("model-file").disabled) return;
    e.preventDefault();
    startLoad({ kind: "file", file }, file.name);
  });
  $("generate").addEventListener("click", generate);
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && !$("generate").disabled) generate();
  });
  $("cancel").addEventListener("click", () => {
    if (!ui.busy) return;
    post({ type: "cancel" });
    $("status").textContent = "cancelling…";
  });
  $("gpu-check").addEventListener("click", startCheck);
  $("gpu-check-copy").addEventListener("click", copyReport);
  $("reload").addEventListener("click", () => location.reload());
  $("banner-close").addEventListener("click", hideBanner);
}

function webgpuMissingMessage() {
  const insecure = window.isSecureContext === false
    ? "This page is not a secure context (it needs https:// or http://localhost), and browsers only offer WebGPU to secure pages. "
    : "";
  return (
    insecure +
    "WebGPU is unavailable in this browser (navigator.gpu is missing). It is on by default in Chrome and Edge 113+ " +
    "(Windows, macOS, ChromeOS, Android), Safari 26+ and Firefox 141+ on Windows. On Linux, start Chrome with " +
    "--enable-unsafe-webgpu --enable-features=Vulkan (or enable chrome://flags/#enable-unsafe-webgpu); in older Safari " +
    "turn on Develop › Feature Flags › WebGPU; in other Firefox versions set dom.webgpu.enabled in about:config."
  );
}

function main() {
  wire();
  setupImageInput({
    onSize: (w, h) => {
      fillSizes(w, h);
      syncDependent();
    },
    onError: (m) => fail(m),
    steps: () => num("steps"),
  });
  const seed = url.seedGiven ? url.settings.seed : randomSeed();
  fillForm(url.model ?? DEFAULTS.model, { ...url.settings, seed });
  $("seed-lock").checked = url.seedGiven;
  adapters.init(url.loras, url.embeddings);
  setState("starting");
  const problems = [...url.errors, ...(ui.gpuMissing ? [webgpuMissingMessage()] : [])];
  if (problems.length) fail(problems.join("\n"));
  startWorker();
}

main();
