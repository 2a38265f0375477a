// The page <-> worker message protocol. Every message is a plain object with a `type`; both
// sides validate with `check`, so a malformed message is an error, never silence.
//
// Settings (the generation settings; field names of the Rust `pipeline::Settings`):
//   {prompt: string, negative: string|null, width, height, steps, cfg, seed,
//    sampler: "euler"|"euler_a"|"dpmpp_2m"|"ddim", karras: bool,
//    rating: "none"|"sensitive"|"questionable"|"explicit", clip_skip: number, v_prediction: bool,
//    gpu_memory: "7.5G"|bytes, vae_tile: px (0 = automatic), vae_tile_overlap,
//    strength, hires_scale (0 = off), hires_strength, hires_steps (0 = steps),
//    loras: [{name, weight}] (names of loaded LoRAs; `<lora:NAME:WEIGHT>` prompt tags too)}
//   negative null = no negative prompt (zero conditioning); "" = the empty string encoded.
//
// Page -> worker:
//   {type: "init", forceF32: boolean}              acquire WebGPU -> "ready" | "error"
//   {type: "selfTest", values: number[]}           smoke kernel -> "selfTest"
//   {type: "load", source}                         source = {kind: "url", url} | {kind: "file", file: File}
//                                                  -> "loadProgress"* then "loaded" | "error"
//   {type: "generate", id: number, settings, images?}
//                                                  -> "step"* then "result" | "cancelled" | "error"
//       images = {init: InputImage|null, mask: InputImage|null} (absent: text-to-image), where
//       InputImage = {bytes: Uint8Array} (PNG/JPEG file) | {width, height, rgba: Uint8Array};
//       sent with their buffers transferred (images.js: imagesMessage / applyImages)
//   {type: "loadAdapter", kind, name, source}     kind "lora" | "embedding"; name = what settings and
//                                                  prompts use; source as for "load"; needs a loaded model
//                                                  -> "adapterProgress"* then "adapterLoaded" | "adapterFailed"
//   {type: "unloadAdapter", kind, name}            -> "adapterUnloaded"
//   {type: "gpuCheck"}                             "Check this GPU": engine.selfCheck() then engine.timing(),
//                                                  no model needed; refused (busy) while another job runs
//                                                  -> "gpuCheckProgress"* then "gpuCheckResult" | "error" (during "check")
//   {type: "cancel"}                               stop the running download, adapter load or generation
//   {type: "listCache"}                            -> "cache"
//   {type: "deleteCache", key: string, store?}     store "model" (default) | "lora" | "embedding" -> "cache"
// Worker -> page:
//   {type: "ready", info}                          info = the JSON of `sdxl info --json`
//   {type: "selfTest", values: number[]}
//   {type: "loadProgress", loaded, total, rate, eta, phase}
//       bytes so far, total bytes (null if unknown), bytes/s, seconds left (null if unknown);
//       phase "download" (network, also written to the cache), "cache" (from disk), "file"
//   {type: "loaded", name, source, inspection, wasmMemory}
//       source "network" | "cache" | "file"; inspection = `sdxl inspect --json`'s object;
//       wasmMemory = the wasm memory's size in bytes after the load
//   {type: "step", id, step, total, preview: {width, height, rgba: Uint8ClampedArray}}
//   {type: "result", id, png: Uint8Array, parameters: string, seed, width, height, ms, report}
//       report = `sdxl generate --json`'s object: peak_gpu_bytes, stages, plan, ...
//   {type: "gpuCheckProgress", phase}              phase "selfcheck" | "timing" (starting)
//   {type: "gpuCheckResult", selfcheck, timing, timingError}
//       selfcheck = SelfCheckReport (pkg/sdxl_web.d.ts); timing = TimingReport, or null with
//       timingError (string) when the timing pass failed after the self-check ran
//   {type: "cancelled", id}                        id null when a load was cancelled
//   {type: "adapterProgress", kind, name, loaded, total, rate, eta, phase}   as loadProgress
//   {type: "adapterLoaded", kind, name, hash, source}   hash = A1111's short hash; source as "loaded"
//   {type: "adapterFailed", kind, name, message, cancelled}   the model is unchanged; a downloaded
//       file the engine refused was removed from the cache
//   {type: "adapterUnloaded", kind, name, found}
//   {type: "cache", entries: [{key, url, name, size, stored, complete}], adapters?: {lora: [...], embedding: [...]}}
//       entries: cached models; adapters: cached LoRAs and embeddings (same entry shape). A file
//       that failed validation is never listed (it is deleted).
//   {type: "error", message: string, during: "init"|"load"|"generate"|"adapter"|"check"|"cache"|"protocol",
//    deviceLost: boolean}

export const TO_WORKER = {
  init: ["forceF32"],
  selfTest: ["values"],
  load: ["source"],
  generate: ["id", "settings"],
  loadAdapter: ["kind", "name", "source"],
  unloadAdapter: ["kind", "name"],
  gpuCheck: [],
  cancel: [],
  listCache: [],
  deleteCache: ["key"],
};

export const TO_PAGE = {
  ready: ["info"],
  selfTest: ["values"],
  loadProgress: ["loaded", "total", "rate", "eta", "phase"],
  loaded: ["name", "source", "inspection", "wasmMemory"],
  step: ["id", "step", "total", "preview"],
  result: ["id", "png", "parameters", "seed", "width", "height", "ms", "report"],
  gpuCheckProgress: ["phase"],
  gpuCheckResult: ["selfcheck", "timing", "timingError"],
  cancelled: ["id"],
  adapterProgress: ["kind", "name", "loaded", "total", "rate", "eta", "phase"],
  adapterLoaded: ["kind", "name", "hash", "source"],
  adapterFailed: ["kind", "name", "message", "cancelled"],
  adapterUnloaded: ["kind", "name", "found"],
  cache: ["entries"],
  error: ["message", "during", "deviceLost"],
};

/** The kinds of `loadAdapter` / `unloadAdapter`. */
export const ADAPTER_KINDS = ["lora", "embedding"];
const WITH_KIND = new Set(["loadAdapter", "unloadAdapter", "adapterProgress", "adapterLoaded", "adapterFailed", "adapterUnloaded"]);

/** The phases of "gpuCheckProgress", in order. */
export const CHECK_PHASES = ["selfcheck", "timing"];

/** Throws unless `msg` is one of `table`'s types and carries its fields. */
export function check(table, msg) {
  if (!msg || typeof msg !== "object" || !Object.hasOwn(table, msg.type)) {
    throw new Error(`unknown message ${JSON.stringify(msg && msg.type)}`);
  }
  for (const f of table[msg.type]) {
    if (!(f in msg)) throw new Error(`message "${msg.type}" lacks field "${f}"`);
  }
  if (WITH_KIND.has(msg.type) && !ADAPTER_KINDS.includes(msg.kind)) {
    throw new Error(`message "${msg.type}": kind ${JSON.stringify(msg.kind)} is not one of ${ADAPTER_KINDS.join(", ")}`);
  }
  if (msg.type === "gpuCheckProgress" && !CHECK_PHASES.includes(msg.phase)) {
    throw new Error(`message "gpuCheckProgress": phase ${JSON.stringify(msg.phase)} is not one of ${CHECK_PHASES.join(", ")}`);
  }
  if (msg.type === "gpuCheckResult") {
    const sc = msg.selfcheck;
    if (!sc || typeof sc !== "object" || !Array.isArray(sc.checks) || typeof sc.passed !== "boolean") {
      throw new Error(`message "gpuCheckResult": selfcheck is not a self-check report`);
    }
    const t = msg.timing;
    if (t !== null && (typeof t !== "object" || !Array.isArray(t.families) || typeof t.step_seconds !== "number")) {
      throw new Error(`message "gpuCheckResult": timing is neither null nor a timing report`);
    }
    if (t === null && typeof msg.timingError !== "string") {
      throw new Error(`message "gpuCheckResult": without timing, timingError must say why`);
    }
  }
  return msg;
}
