// Module worker: owns the wasm engine, the GPU and the model cache; the page only sends messages
// (see protocol.js). One job (load or generate) runs at a time; "cancel" stops it between chunks
// or between denoising steps.
import init, { Engine } from "./pkg/sdxl_web.js";
import { check, TO_WORKER } from "./protocol.js";
import { applyImages } from "./images.js";
import { openUrl, openFile, listCached, deleteCached, opfsStore, rangeReader, cacheKey } from "./download.js";

let engine = null;
const stores = new Map(); // OPFS directory -> Promise<store | null>
let job = null; // {kind: "load"|"adapter"|"generate", id, abort: AbortController, cancelled: bool}
// LoRAs and embeddings: their OPFS directory, the engine's loader, a label for messages.
const ADAPTERS = {
  lora: { dir: "loras", load: "loadLora", unload: "unloadLora", label: "LoRA" },
  embedding: { dir: "embeddings", load: "loadEmbedding", unload: "unloadEmbedding", label: "embedding" },
};
const STORE_DIRS = { model: "models", lora: "loras", embedding: "embeddings" };
const ready = init();

const post = (msg, transfer) => self.postMessage(msg, transfer || []);

function fail(during, e) {
  const lost = engine && engine.deviceLost();
  const message = lost ? `the GPU device was lost (${lost}); reload the page to start again` : String((e && e.message) || e);
  post({ type: "error", message, during, deviceLost: Boolean(lost) });
}

async function getStore(dir = "models") {
  if (!stores.has(dir)) stores.set(dir, opfsStore(dir).catch(() => null));
  return (await stores.get(dir)) || null;
}

async function sendCache() {
  const list = async (dir) => {
    const s = await getStore(dir);
    return s ? listCached(s) : [];
  };
  post({
    type: "cache",
    entries: await list("models"),
    adapters: { lora: await list(ADAPTERS.lora.dir), embedding: await list(ADAPTERS.embedding.dir) },
  });
}

/** A downloaded file the engine refused (`InvalidFileError`) leaves the cache: a bad file must
 * not be listed or loaded from there again. Call after the reader is closed. */
async function dropInvalid(source, dir, e) {
  if (!e || e.name !== "InvalidFileError" || source.kind !== "url") return;
  const s = await getStore(dir);
  if (s) await deleteCached(cacheKey(String(source.url)), s).catch(() => {});
}

async function load(source) {
  if (!engine) throw new Error("load before the GPU was acquired");
  const abort = new AbortController();
  job = { kind: "load", id: null, abort, cancelled: false };
  let file = null;
  let failure = null;
  try {
    const onProgress = (p) => post({ type: "loadProgress", ...p });
    if (source.kind === "url") {
      file = await openUrl(String(source.url), { onProgress, signal: abort.signal, store: await getStore() });
    } else if (source.kind === "file") {
      file = openFile(source.file, { onProgress, signal: abort.signal });
    } else {
      throw new Error(`unknown model source kind ${JSON.stringify(source.kind)}`);
    }
    // readRange lets the engine release the text encoders and stream them back (cache/File/Range).
    const readRange = rangeReader(source, { store: await getStore() });
    const inspection = JSON.parse(await engine.load(file.name, file.size ?? undefined, file.read, undefined, readRange));
    post({ type: "loaded", name: file.name, source: file.source, inspection, wasmMemory: Engine.wasmMemory() });
  } catch (e) {
    failure = e;
  } finally {
    if (file) await file.close().catch(() => {});
    if (failure && !job.cancelled) await dropInvalid(source, "models", failure);
    const cancelled = job.cancelled;
    job = null;
    if (source.kind === "url") await sendCache().catch(() => {});
    if (failure && cancelled) post({ type: "cancelled", id: null });
    else if (failure) fail("load", failure);
  }
}

async function loadAdapter(kind, name, source) {
  const a = ADAPTERS[kind];
  if (!a) throw new Error(`unknown adapter kind ${JSON.stringify(kind)}: "lora" or "embedding"`);
  if (!engine || !engine.hasModel()) throw new Error(`load a model before adding a ${a.label}`);
  name = String(name);
  const abort = new AbortController();
  job = { kind: "adapter", id: null, abort, cancelled: false };
  let file = null;
  let failure = null;
  try {
    const onProgress = (p) => post({ type: "adapterProgress", kind, name, ...p });
    if (source.kind === "url") {
      file = await openUrl(String(source.url), { onProgress, signal: abort.signal, store: await getStore(a.dir) });
    } else if (source.kind === "file") {
      file = openFile(source.file, { onProgress, signal: abort.signal });
    } else {
      throw new Error(`unknown ${a.label} source kind ${JSON.stringify(source.kind)}`);
    }
    const info = JSON.parse(await engine[a.load](name, file.size ?? undefined, file.read));
    post({ type: "adapterLoaded", kind, name, hash: info.hash, source: file.source });
  } catch (e) {
    failure = e;
  } finally {
    if (file) await file.close().catch(() => {});
    if (failure && !job.cancelled) await dropInvalid(source, a.dir, failure);
    const cancelled = job.cancelled;
    job = null;
    if (source.kind === "url") await sendCache().catch(() => {});
    const lost = engine.deviceLost();
    if (failure && lost) fail("adapter", failure);
    else if (failure) {
      const message = cancelled ? "cancelled" : String((failure && failure.message) || failure);
      post({ type: "adapterFailed", kind, name, message, cancelled });
    }
  }
}

async function generate(id, settings, images) {
  if (!engine || !engine.hasModel()) throw new Error("load a model before generating");
  job = { kind: "generate", id, abort: null, cancelled: false };
  const t0 = performance.now();
  try {
    const onStep = (p) => {
      post({ type: "step", id, step: p.step, total: p.total, preview: { width: p.width, height: p.height, rgba: p.rgba } }, [p.rgba.buffer]);
      return !job.cancelled;
    };
    applyImages(engine, images); // the init image and mask (null: cleared)
    const img = await engine.generate(JSON.stringify(settings), onStep);
    const png = img.png;
    post(
      {
        type: "result", id, png, parameters: img.parameters, seed: img.seed, width: img.width, height: img.height,
        ms: performance.now() - t0, report: JSON.parse(img.report),
      },
      [png.buffer],
    );
    img.free();
  } catch (e) {
    if (job.cancelled) post({ type: "cancelled", id });
    else fail("generate", e);
  } finally {
    job = null;
  }
}

/** "Check this GPU": the self-check, then the timing (a timing failure still returns the checks). */
async function gpuCheck() {
  if (!engine) throw new Error("the GPU is not acquired yet (or WebGPU failed to start)");
  job = { kind: "check", id: null, abort: null, cancelled: false };
  try {
    post({ type: "gpuCheckProgress", phase: "selfcheck" });
    const selfcheck = JSON.parse(await engine.selfCheck());
    post({ type: "gpuCheckProgress", phase: "timing" });
    let timing = null;
    let timingError = null;
    try {
      timing = JSON.parse(await engine.timing());
    } catch (e) {
      if (engine.deviceLost()) throw e;
      timingError = String((e && e.message) || e);
    }
    post({ type: "gpuCheckResult", selfcheck, timing, timingError });
  } finally {
    job = null;
  }
}

self.onmessage = async (ev) => {
  let msg;
  try {
    msg = check(TO_WORKER, ev.data);
  } catch (e) {
    return fail("protocol", e);
  }
  if (msg.type === "cancel") {
    if (job) {
      job.cancelled = true;
      if (job.abort) job.abort.abort();
    }
    return;
  }
  const during =
    { init: "init", selfTest: "init", load: "load", generate: "generate", loadAdapter: "adapter", unloadAdapter: "adapter", gpuCheck: "check" }[msg.type] ||
    "cache";
  try {
    await ready;
    if (msg.type === "init") {
      if (!("gpu" in navigator)) {
        throw new Error("this browser has no WebGPU (navigator.gpu is missing): use a recent Chrome or Edge, or Firefox/Safari with WebGPU enabled");
      }
      engine = await Engine.create(Boolean(msg.forceF32));
      post({ type: "ready", info: JSON.parse(engine.info()) });
    } else if (msg.type === "selfTest") {
      if (!engine) throw new Error("selfTest before init");
      post({ type: "selfTest", values: Array.from(await engine.selfTest(new Float32Array(msg.values))) });
    } else if (job) {
      throw new Error(`busy: a ${job.kind} is running (cancel it first)`);
    } else if (msg.type === "gpuCheck") {
      await gpuCheck();
    } else if (msg.type === "load") {
      await load(msg.source);
    } else if (msg.type === "generate") {
      await generate(msg.id, msg.settings, msg.images);
    } else if (msg.type === "loadAdapter") {
      await loadAdapter(msg.kind, msg.name, msg.source);
    } else if (msg.type === "unloadAdapter") {
      const a = ADAPTERS[msg.kind];
      if (!a) throw new Error(`unknown adapter kind ${JSON.stringify(msg.kind)}: "lora" or "embedding"`);
      const found = Boolean(engine && engine.hasModel() && engine[a.unload](String(msg.name)));
      post({ type: "adapterUnloaded", kind: msg.kind, name: String(msg.name), found });
    } else if (msg.type === "listCache") {
      await sendCache();
    } else if (msg.type === "deleteCache") {
      const dir = STORE_DIRS[msg.store || "model"];
      if (!dir) throw new Error(`unknown cache ${JSON.stringify(msg.store)}: "model", "lora" or "embedding"`);
      const s = await getStore(dir);
      if (s) await deleteCached(String(msg.key), s);
      await sendCache();
    }
  } catch (e) {
    fail(during, e);
  }
};
