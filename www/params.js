// Generation settings: defaults, the model card's resolution buckets, URL parameters and
// validation (the same rules as the Rust `pipeline::Settings::validate`). Pure; no DOM.

/** Nekoray-XL's training buckets as [width, height], 1024² first. */
export const BUCKETS = [
  [1024, 1024], [960, 1024], [1024, 960], [960, 1088], [1088, 960], [896, 1088], [1088, 896],
  [896, 1152], [1152, 896], [832, 1152], [1152, 832], [832, 1216], [1216, 832], [768, 1280],
  [1280, 768], [768, 1344], [1344, 768], [704, 1344], [1344, 704], [704, 1408], [1408, 704],
  [704, 1472], [1472, 704], [640, 1536], [1536, 640], [640, 1600], [1600, 640], [576, 1664],
  [1664, 576], [576, 1728], [1728, 576], [576, 1792], [1792, 576], [512, 1856], [1856, 512],
  [512, 1920], [1920, 512], [512, 1984], [1984, 512], [512, 2048], [2048, 512],
];

export const SAMPLERS = ["euler", "euler_a", "dpmpp_2m", "ddim"];
/** LoRA weights: the engine's bound (`lora::MAX_LORA_WEIGHT`) and the UI slider's range. */
export const LORA_WEIGHT = { max: 20, sliderMin: -2, sliderMax: 2, step: 0.05 };
export const RATINGS = ["none", "sensitive", "questionable", "explicit"];
export const LIMITS = {
  sideMin: 64, sideMax: 2048, sideMultiple: 8,
  stepsMax: 500, cfgMax: 100, seedMax: Number.MAX_SAFE_INTEGER, clipSkipMax: 10,
};

export const DEFAULT_MODEL =
  "https://huggingface.co/trojblue/nekoray-xl-fulldan-bench-1.5m/resolve/main/nekoray-xl-1.5m-fp16mixed_e02.safetensors";

/** `settings` has exactly the fields of the Rust `Settings` (it denies unknown fields). */
export const DEFAULTS = Object.freeze({
  model: DEFAULT_MODEL,
  settings: Object.freeze({
    prompt: "",
    negative: null,
    width: 1024,
    height: 1024,
    steps: 25,
    cfg: 7,
    seed: 0,
    sampler: "euler_a",
    karras: false,
    rating: "none",
    clip_skip: 0,
    v_prediction: false,
    gpu_memory: "7.5G",
    vae_tile: 0,
    vae_tile_overlap: 0.25,
  }),
});

export function isBucket(width, height) {
  return BUCKETS.some(([w, h]) => w === width && h === height);
}

/** A uniformly random integer in 0..2^32-1. */
export function randomSeed() {
  const a = new Uint32Array(1);
  globalThis.crypto.getRandomValues(a);
  return a[0];
}

const isInt = (v) => typeof v === "number" && Number.isInteger(v);
const SIDE_RULE = `a multiple of ${LIMITS.sideMultiple} from ${LIMITS.sideMin} to ${LIMITS.sideMax}`;
const RULES = {
  width: SIDE_RULE,
  height: SIDE_RULE,
  steps: `an integer from 1 to ${LIMITS.stepsMax}`,
  cfg: `a number from 0 to ${LIMITS.cfgMax}`,
  seed: `an integer from 0 to ${LIMITS.seedMax}`,
  sampler: `one of ${SAMPLERS.join(", ")}`,
  rating: `one of ${RATINGS.join(", ")}`,
  clip_skip: `an integer from 0 to ${LIMITS.clipSkipMax}`,
  gpu_memory: "a size like 7.5G, 12G or 6144M",
  vae_tile: "0 (automatic) or a multiple of 8 from 64 px",
};

const okSide = (v) => isInt(v) && v % LIMITS.sideMultiple === 0 && v >= LIMITS.sideMin && v <= LIMITS.sideMax;
const CHECKS = {
  width: okSide,
  height: okSide,
  steps: (v) => isInt(v) && v >= 1 && v <= LIMITS.stepsMax,
  cfg: (v) => typeof v === "number" && Number.isFinite(v) && v >= 0 && v <= LIMITS.cfgMax,
  seed: (v) => isInt(v) && v >= 0 && v <= LIMITS.seedMax,
  sampler: (v) => SAMPLERS.includes(v),
  rating: (v) => RATINGS.includes(v),
  clip_skip: (v) => isInt(v) && v >= 0 && v <= LIMITS.clipSkipMax,
  gpu_memory: (v) => typeof v === "string" && /^\s*\d+(\.\d+)?\s*(k|m|g|t)?(i?b)?\s*$/i.test(v) && parseFloat(v) > 0,
  vae_tile: (v) => isInt(v) && (v === 0 || (v >= 64 && v % 8 === 0)),
};

/** Every problem with a Settings object, as user-facing sentences; [] when it is valid. */
export function validateSettings(s) {
  if (!s || typeof s !== "object") return ["settings: not an object"];
  const errors = [];
  if (typeof s.prompt !== "string") errors.push("prompt: must be a string");
  if (s.negative !== null && typeof s.negative !== "string") errors.push("negative prompt: must be a string or null");
  for (const [field, ok] of Object.entries(CHECKS)) {
    const v = s[field];
    if (!ok(v)) errors.push(`${field} ${typeof v === "string" ? JSON.stringify(v) : String(v)}: must be ${RULES[field]}`);
  }
  if (typeof s.karras !== "boolean") errors.push("karras: must be true or false");
  if (typeof s.v_prediction !== "boolean") errors.push("v_prediction: must be true or false");
  if (s.sampler === "ddim" && s.karras === true) errors.push("karras: the Karras schedule is not available with ddim");
  if (s.loras !== undefined) {
    if (!Array.isArray(s.loras)) errors.push("loras: must be a list of {name, weight}");
    else {
      for (const l of s.loras) {
        if (!l || typeof l.name !== "string" || !validAdapterName("lora", l.name)) {
          errors.push(`LoRA name ${JSON.stringify(l && l.name)}: must be non-empty without ':', '<' or '>'`);
        } else if (!okWeight(l.weight)) {
          errors.push(`LoRA '${l.name}': weight ${l.weight} must be from -${LORA_WEIGHT.max} to ${LORA_WEIGHT.max}`);
        }
      }
    }
  }
  return errors;
}

const okWeight = (w) => typeof w === "number" && Number.isFinite(w) && Math.abs(w) <= LORA_WEIGHT.max;

/** Whether `name` can name a LoRA (`Model::load_lora`) or an embedding (`Embedding::parse`). */
export function validAdapterName(kind, name) {
  if (typeof name !== "string" || name === "") return false;
  return kind === "lora" ? !/[:<>]/.test(name) : !/[\s()[\]{}<>:,\\|"']/.test(name);
}

/**
 * The name a LoRA or embedding file is used by (A1111: the file's stem): the URL path's last
 * segment (percent-decoded) or the file name, without `.safetensors`.
 */
export function adapterName(urlOrFileName) {
  let seg = String(urlOrFileName || "");
  try {
    seg = new URL(seg).pathname;
  } catch {
    // a plain file name
  }
  seg = seg.split("/").filter(Boolean).pop() || "";
  try {
    seg = decodeURIComponent(seg);
  } catch {
    // keep it encoded
  }
  return seg.replace(/\.safetensors$/i, "");
}

/** The LoRA names of a prompt's A1111 tags `<lora:NAME>` / `<lora:NAME:WEIGHT>` (the engine's
 * `lora::take_lora_tags` reads the same syntax). */
export function loraTagNames(prompt) {
  const out = [];
  for (const m of String(prompt).matchAll(/<(\w+):([^>]+)>/g)) if (m[1] === "lora") out.push(m[2].split(":")[0].trim());
  return out;
}

/** `lora=URL[:WEIGHT]` -> {url, weight} (weight 1 when the part after the last ':' is no number). */
function parseLoraParam(raw, base) {
  let spec = raw.trim();
  let weight = 1;
  const i = spec.lastIndexOf(":");
  if (i > 0) {
    const w = parseNum(spec.slice(i + 1));
    if (w !== undefined) {
      if (!okWeight(w)) throw new Error(`weight ${spec.slice(i + 1)} must be from -${LORA_WEIGHT.max} to ${LORA_WEIGHT.max}`);
      weight = w;
      spec = spec.slice(0, i);
    }
  }
  return { url: absUrl(spec, base), weight };
}

/** `spec` resolved against `base` as an absolute http, https or blob URL; throws saying what is wrong. */
export function absUrl(spec, base) {
  if (!spec) throw new Error("empty URL");
  let u;
  try {
    u = new URL(spec, base);
  } catch {
    throw new Error("not a valid URL");
  }
  if (!["http:", "https:", "blob:"].includes(u.protocol)) throw new Error("only http, https and blob URLs");
  return u.href;
}

// URL parameter -> [settings field, parser]. A parser returns undefined for an invalid value.
const INT = /^\d+$/;
const parseInt10 = (v) => (INT.test(v) ? Number(v) : undefined);
const parseNum = (v) => (/^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(v.trim()) ? Number(v) : undefined);
const parseFlag = (v) => (v === "1" || v === "true" ? true : v === "0" || v === "false" || v === "" ? false : undefined);
const PARAMS = [
  ["w", "width", parseInt10],
  ["h", "height", parseInt10],
  ["steps", "steps", parseInt10],
  ["cfg", "cfg", parseNum],
  ["seed", "seed", parseInt10],
  ["sampler", "sampler", (v) => v],
  ["rating", "rating", (v) => v],
  ["clip_skip", "clip_skip", parseInt10],
  ["gpu_memory", "gpu_memory", (v) => v],
  ["vae_tile", "vae_tile", parseInt10],
];
const FLAG_RULE = "1 or 0";

/**
 * Read the page's URL parameters (`search` is location.search, a URLSearchParams or a string;
 * `base` resolves a relative `model`). Unknown parameters are ignored.
 */
export function parseParams(search, base) {
  const q = search instanceof URLSearchParams ? search : new URLSearchParams(search || "");
  const settings = { ...DEFAULTS.settings };
  const errors = [];
  const bad = new Set();
  let model = null;
  const m = q.get("model");
  if (m !== null && m.trim() !== "") {
    try {
      model = new URL(m.trim(), base).href;
    } catch {
      errors.push(`model=${m}: not a valid URL`);
    }
  }
  if (q.has("prompt")) settings.prompt = q.get("prompt");
  if (q.has("negative")) settings.negative = q.get("negative");
  for (const [name, field, parse] of PARAMS) {
    if (!q.has(name)) continue;
    const raw = q.get(name);
    const v = parse(raw);
    if (v === undefined || !CHECKS[field](v)) {
      errors.push(`invalid URL parameter ${name}=${raw}: ${field} must be ${RULES[field]}`);
      bad.add(name);
    } else {
      settings[field] = v;
    }
  }
  const flags = {};
  for (const [name, field] of [["karras", "karras"], ["v_prediction", "v_prediction"], ["autorun"], ["f32"]]) {
    if (!q.has(name)) continue;
    const v = parseFlag(q.get(name));
    if (v === undefined) errors.push(`invalid URL parameter ${name}=${q.get(name)}: must be ${FLAG_RULE}`);
    else if (field) settings[field] = v;
    else flags[name] = v;
  }
  if (settings.sampler === "ddim" && settings.karras) {
    errors.push("invalid URL parameters sampler=ddim&karras=1: the Karras schedule is not available with ddim");
  }
  const loras = [];
  const embeddings = [];
  const names = { lora: new Set(), embedding: new Set() };
  const add = (kind, raw, entry) => {
    const name = adapterName(entry.url);
    if (!validAdapterName(kind, name)) throw new Error(`the file name '${name}' cannot name ${kind === "lora" ? "a LoRA" : "an embedding"}`);
    if (names[kind].has(name)) throw new Error(`a second ${kind === "lora" ? "LoRA" : "embedding"} named '${name}'`);
    names[kind].add(name);
    (kind === "lora" ? loras : embeddings).push({ ...entry, name });
  };
  for (const raw of q.getAll("lora")) {
    try {
      add("lora", raw, parseLoraParam(raw, base));
    } catch (e) {
      errors.push(`invalid URL parameter lora=${raw}: ${e.message} (lora=URL or lora=URL:WEIGHT)`);
    }
  }
  for (const raw of q.getAll("embedding")) {
    try {
      add("embedding", raw, { url: absUrl(raw.trim(), base) });
    } catch (e) {
      errors.push(`invalid URL parameter embedding=${raw}: ${e.message}`);
    }
  }
  return {
    model,
    loras,
    embeddings,
    settings,
    seedGiven: q.has("seed") && !bad.has("seed"),
    autorun: Boolean(flags.autorun),
    f32: Boolean(flags.f32),
    errors,
  };
}

/**
 * The query string (no leading "?") that `parseParams` reads back as `model`, `settings` and
 * `adapters` ({loras: [{url, weight}], embeddings: [{url}]}; entries without a URL, such as
 * local files, are left out).
 */
export function toQuery(model, settings, adapters = {}) {
  const q = new URLSearchParams();
  if (model) q.set("model", model);
  q.set("prompt", settings.prompt);
  if (settings.negative !== null && settings.negative !== undefined) q.set("negative", settings.negative);
  q.set("seed", String(settings.seed));
  q.set("steps", String(settings.steps));
  q.set("cfg", String(settings.cfg));
  q.set("w", String(settings.width));
  q.set("h", String(settings.height));
  q.set("sampler", settings.sampler);
  if (settings.karras) q.set("karras", "1");
  if (settings.rating && settings.rating !== "none") q.set("rating", settings.rating);
  if (settings.clip_skip) q.set("clip_skip", String(settings.clip_skip));
  if (settings.v_prediction) q.set("v_prediction", "1");
  if (settings.gpu_memory && settings.gpu_memory !== DEFAULTS.settings.gpu_memory) q.set("gpu_memory", settings.gpu_memory);
  if (settings.vae_tile) q.set("vae_tile", String(settings.vae_tile));
  for (const l of adapters.loras || []) if (l.url) q.append("lora", l.weight === 1 ? l.url : `${l.url}:${l.weight}`);
  for (const e of adapters.embeddings || []) if (e.url) q.append("embedding", e.url);
  return q.toString();
}
