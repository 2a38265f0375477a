// Module worker: owns the wasm engine, the GPU and the model cache; the page only sends messages
// (see protocol.js). One job (load or generate) runs at a time; "cancel" stops it between chunks
// or between denoising steps.
import init, { Engine } from "./pkg/sdxl_web.js";
import { check, TO_WORKER } from "./protocol.js";
import { applyImages } from "./images.js";
import { openUrl, openFile, listCached, deleteCached, opfsStore, rangeReader } from "./download.js";

let engine = null;
let store = null;
let job = null; // {kind: "load"|"generate", id, abort: AbortController, cancelled: bool}
const ready = init();

const post = (msg, transfer) => self.postMessage(msg, transfer || []);

function fail(during, e) {
  const lost = engine && engine.deviceLost();
  const message = lost ? `the GPU device was lost (${lost}); reload the page to start again` : String((e && e.message) || e);
  post({ type: "error", message, during, deviceLost: Boolean(lost) });
}

async function getStore() {
  if (store === null) store = (await opfsStore().catch(() => null)) || false;
  return store || null;
}

async function sendCache() {
  const s = await getStore();
  post({ type: "cache", entries: s ? await listCached(s) : [] });
}

async function load(source) {
  if (!engine) throw new Error("load before the GPU was acquired");
  const abort = new AbortController();
  job = { kind: "load", id: null, abort, cancelled: false };
  let file = null;
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
    if (job.cancelled) post({ type: "cancelled", id: null });
    else fail("load", e);
  } finally {
    if (file) await file.close().catch(() => {});
    job = null;
    if (source.kind === "url") await sendCache().catch(() => {});
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
  const during = { init: "init", selfTest: "init", load: "load", generate: "generate" }[msg.type] || "cache";
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
    } else if (msg.type === "load") {
      await load(msg.source);
    } else if (msg.type === "generate") {
      await generate(msg.id, msg.settings, msg.images);
    } else if (msg.type === "listCache") {
      await sendCache();
    } else if (msg.type === "deleteCache") {
      const s = await getStore();
      if (s) await deleteCached(String(msg.key), s);
      await sendCache();
    }
  } catch (e) {
    fail(during, e);
  }
};
