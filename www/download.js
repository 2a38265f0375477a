// Model bytes for the worker: downloads (cached in the Origin Private File System, resumable)
// and user-picked files, as readers that yield the whole file from byte 0 in order.
// No DOM: runs in the module Web Worker and in node (tests inject fetch, store and estimate).
//
// A store holds one entry per model URL: a data file and a metadata object
//   {key, url, name, size, stored, complete, etag, lastModified, created}.
// Store interface (memoryStore and opfsStore implement it):
//   list() -> Promise<meta[]>            getMeta(key) -> Promise<meta|null>
//   putMeta(meta) -> Promise<void>       dataSize(key) -> Promise<number> (0 if absent)
//   delete(key) -> Promise<void>         open(key) -> Promise<DataHandle> (created if absent)
// DataHandle: size(), read(offset, length) -> Uint8Array (shorter at the end), write(offset,
//   bytes), truncate(n), flush(), close() — all returning promises.
// The data file's size is the truth for how much is stored (meta.stored is for listings).

import { formatBytes } from "./format.js";

const MODELS_DIR = "models";
const PROGRESS_INTERVAL_MS = 200;
const RATE_WINDOW_MS = 3000;
const META_SAVE_INTERVAL_MS = 2000;

function abortError() {
  const e = new Error("cancelled");
  e.name = "AbortError";
  return e;
}

function throwIfAborted(signal) {
  if (signal && signal.aborted) throw abortError();
}

const isAbort = (e, signal) => Boolean((signal && signal.aborted) || (e && e.name === "AbortError"));

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal && signal.aborted) return reject(abortError());
    const onAbort = () => {
      clearTimeout(t);
      reject(abortError());
    };
    const t = setTimeout(() => {
      if (signal) signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    if (signal) signal.addEventListener("abort", onAbort, { once: true });
  });
}

const now = () => (globalThis.performance ? performance.now() : Date.now());

function baseName(s) {
  const n = String(s || "").replace(/\.safetensors$/i, "");
  return n || "model";
}

/** The URL path's last segment without `.safetensors`, percent-decoded; "model" if empty. */
export function modelName(url) {
  let seg = "";
  try {
    seg = new URL(url).pathname.split("/").filter(Boolean).pop() || "";
  } catch {
    return "model";
  }
  try {
    seg = decodeURIComponent(seg);
  } catch {
    // keep it encoded
  }
  return baseName(seg);
}

function fnv1a(str, seed) {
  let h = seed >>> 0;
  for (let i = 0; i < str.length; i++) {
    h ^= str.charCodeAt(i);
    h = Math.imul(h, 16777619) >>> 0;
  }
  return h.toString(16).padStart(8, "0");
}

/** A stable, file-name-safe cache key for a URL: 16 hex digits of hash, then the model name. */
export function cacheKey(url) {
  const name = modelName(url).replace(/[^A-Za-z0-9._-]+/g, "_").slice(0, 80);
  return `${fnv1a(url, 0x811c9dc5)}${fnv1a(url, 0x9e3779b9)}-${name}`;
}

/** Throttled progress with a rate smoothed over the last few seconds. */
function meter(onProgress, total) {
  let phase = null;
  let samples = [];
  let lastReport = -Infinity;
  let rate = 0;
  return (loaded, ph, final = false) => {
    if (!onProgress) return;
    const t = now();
    if (ph !== phase) {
      phase = ph;
      samples = [];
      rate = 0;
    }
    if (!samples.length || t - samples[samples.length - 1][0] >= 50 || final) samples.push([t, loaded]);
    while (samples.length > 2 && t - samples[1][0] >= RATE_WINDOW_MS) samples.shift();
    if (!final && t - lastReport < PROGRESS_INTERVAL_MS) return;
    lastReport = t;
    const [t0, l0] = samples[0];
    if (t - t0 > 0) rate = ((loaded - l0) * 1000) / (t - t0);
    const eta = total != null ? (loaded >= total ? 0 : rate > 0 ? (total - loaded) / rate : null) : null;
    try {
      onProgress({ loaded, total: total ?? null, rate, eta, phase: ph });
    } catch {
      // a failing observer must not break the download
    }
  };
}

/** Regroups arbitrary pieces into chunks of exactly `size` bytes (the last one shorter). */
function chunker(size) {
  let buf = null;
  let len = 0;
  return {
    push(piece) {
      const out = [];
      let off = 0;
      while (off < piece.length) {
        if (!buf) {
          if (len === 0 && off === 0 && piece.length === size) return [piece];
          buf = new Uint8Array(size);
        }
        const n = Math.min(size - len, piece.length - off);
        buf.set(piece.subarray(off, off + n), len);
        len += n;
        off += n;
        if (len === size) {
          out.push(buf);
          buf = null;
          len = 0;
        }
      }
      return out;
    },
    flush() {
      const rest = buf && len ? buf.subarray(0, len) : null;
      buf = null;
      len = 0;
      return rest;
    },
  };
}

function contentLength(res) {
  const enc = res.headers.get("content-encoding");
  if (enc && enc.toLowerCase() !== "identity") return null;
  const v = res.headers.get("content-length");
  return v && /^\s*\d+\s*$/.test(v) ? Number(v) : null;
}

function contentRange(res) {
  const m = /^\s*bytes\s+(\d+)-(\d+)\/(\d+|\*)\s*$/i.exec(res.headers.get("content-range") || "");
  if (!m) return null;
  return { start: Number(m[1]), end: Number(m[2]), total: m[3] === "*" ? null : Number(m[3]) };
}

const normTag = (t) => (t ? t.replace(/^W\//, "") : t);

function validators(res) {
  return { etag: res.headers.get("etag") || null, lastModified: res.headers.get("last-modified") || null };
}

function sameValidators(a, b) {
  if (a.etag && b.etag && normTag(a.etag) !== normTag(b.etag)) return false;
  if (a.lastModified && b.lastModified && a.lastModified !== b.lastModified) return false;
  return true;
}

/** Does a response to `Range: bytes=<from>-` continue the same `size`-byte file? */
function continues(res, from, size, v) {
  if (res.status !== 206 || size == null) return false;
  const cr = contentRange(res);
  const len = contentLength(res);
  if (cr) {
    if (cr.start !== from) return false;
    if (cr.total != null ? cr.total !== size : cr.end !== size - 1) return false;
  } else if (len == null || from + len !== size) {
    return false;
  }
  return sameValidators(v, validators(res));
}

async function cancelBody(res) {
  try {
    if (res && res.body && !res.bodyUsed) await res.body.cancel();
  } catch {
    // already closed or errored
  }
}

let persistAsked = false;
function requestPersistence() {
  if (persistAsked) return;
  persistAsked = true;
  try {
    const p = globalThis.navigator?.storage?.persist?.();
    if (p && typeof p.catch === "function") p.catch(() => {});
  } catch {
    // not available; the cache still works, it just may be evicted
  }
}

const defaultEstimate = () => globalThis.navigator?.storage?.estimate?.() ?? null;

function reasonOf(e) {
  let m = (e && e.message) || String(e);
  if (e && e.cause && e.cause.message) m += ` (${e.cause.message})`;
  if (/failed to fetch|fetch failed|networkerror|load failed/i.test(m)) {
    m += " — a network error, or the server does not allow cross-origin requests (CORS)";
  }
  return m;
}

/**
 * Open a model by URL: from the cache if completely stored, else download it (resuming a
 * partial cached download with a Range request), writing to the cache as bytes arrive.
 * The reader yields the whole file from byte 0 in order.
 */
export async function openUrl(
  url,
  {
    onProgress,
    signal,
    store = null,
    fetchImpl = globalThis.fetch,
    estimate = defaultEstimate,
    chunk = 16 << 20,
    retries = 2,
    retryDelayMs = 1000,
  } = {},
) {
  let parsed;
  try {
    parsed = new URL(url);
  } catch (e) {
    throw new Error(`invalid model URL "${url}": ${(e && e.message) || e}`);
  }
  if (!["http:", "https:", "blob:"].includes(parsed.protocol)) {
    throw new Error(`invalid model URL "${url}": only http:, https: and blob: URLs can be loaded`);
  }
  throwIfAborted(signal);
  const name = modelName(url);
  const key = cacheKey(url);
  const canCache = Boolean(store) && parsed.protocol !== "blob:";

  let meta = canCache ? await store.getMeta(key) : null;
  if (meta && meta.url !== url) meta = null;
  let stored = 0;
  if (meta) {
    stored = await store.dataSize(key);
    if (meta.size == null || stored > meta.size) stored = 0;
    if (meta.size > 0 && stored === meta.size) return openCached(store, key, meta, { onProgress, signal, chunk });
  }

  const fetchAt = async (from) => {
    const headers = from > 0 ? { Range: `bytes=${from}-` } : {};
    try {
      return await fetchImpl(url, { headers, signal, cache: "no-store" });
    } catch (e) {
      if (isAbort(e, signal)) throw abortError();
      throw new Error(`could not reach ${url}: ${reasonOf(e)}`);
    }
  };
  const check = async (res) => {
    if (!res.ok) {
      await cancelBody(res);
      throw new Error(`${url} returned HTTP ${res.status} ${res.statusText || ""}`.trim());
    }
    if (/^\s*text\/html/i.test(res.headers.get("content-type") || "")) {
      await cancelBody(res);
      throw new Error(`${url} is an HTML page, not a safetensors file`);
    }
    if (!res.body) throw new Error(`${url} returned no body`);
  };

  // Ask the network first: only then is it known whether the cached prefix can be used.
  let res = await fetchAt(stored);
  let size;
  if (stored > 0) {
    if (res.status === 206 || res.status === 416) {
      if (res.status === 206) await check(res);
      if (!continues(res, stored, meta.size, meta)) {
        await cancelBody(res);
        stored = 0;
        res = await fetchAt(0);
      }
    } else {
      stored = 0; // the server ignored Range (200): this body is the file from byte 0
    }
  }
  await check(res);
  const v = validators(res);
  if (stored > 0) {
    size = meta.size;
    v.etag = v.etag || meta.etag || null;
    v.lastModified = v.lastModified || meta.lastModified || null;
  } else {
    size = contentLength(res);
  }

  let data = null;
  if (canCache && size != null) {
    let est = null;
    try {
      est = estimate ? await estimate() : null;
    } catch {
      est = null;
    }
    if (est && Number.isFinite(est.quota) && Number.isFinite(est.usage)) {
      const need = size - stored;
      const free = Math.max(0, est.quota - est.usage);
      if (free < need) {
        await cancelBody(res);
        throw new Error(
          `not enough storage for ${name}: needs ${formatBytes(need)} more, ${formatBytes(free)} free ` +
            "(delete cached models or free disk space)",
        );
      }
    }
    requestPersistence();
    try {
      data = await store.open(key);
      if (stored === 0) await data.truncate(0);
      meta = {
        key, url, name, size, stored, complete: false,
        etag: v.etag, lastModified: v.lastModified, created: (meta && meta.created) || Date.now(),
      };
      await store.putMeta(meta);
    } catch (e) {
      await cancelBody(res);
      if (data) await data.close().catch(() => {});
      throw new Error(`could not write the model cache for ${name}: ${(e && e.message) || e}`);
    }
  }

  const report = meter(onProgress, size);
  let netPos = stored; // bytes received (and stored, when caching)
  let lastSave = now();
  let cleaned = false;
  const saveMeta = async () => {
    if (!data) return;
    meta = { ...meta, stored: netPos, complete: size != null && netPos === size };
    await store.putMeta(meta);
  };
  const cleanup = async () => {
    if (cleaned) return;
    cleaned = true;
    await cancelBody(res);
    if (data) {
      try {
        await data.flush();
        await saveMeta();
      } catch {
        // the data file's size stays the truth for a later resume
      }
      await data.close().catch(() => {});
    }
  };

  async function* bytes() {
    try {
      // 1. The cached prefix.
      let pos = 0;
      while (pos < stored) {
        throwIfAborted(signal);
        const b = await data.read(pos, Math.min(chunk, stored - pos));
        if (!b.length) throw new Error(`the cached copy of ${name} ends at ${pos} of ${stored} bytes`);
        pos += b.length;
        report(pos, "cache");
        yield b;
      }
      // 2. The network, retrying a broken connection with a Range request.
      const out = chunker(chunk);
      let attempt = 0;
      let retriedAt = -1;
      for (;;) {
        const reader = res.body.getReader();
        const onAbort = () => reader.cancel().catch(() => {});
        if (signal) signal.addEventListener("abort", onAbort, { once: true });
        let failure = null;
        let ended = false;
        try {
          for (;;) {
            const { done, value } = await reader.read();
            throwIfAborted(signal);
            if (done) {
              ended = true;
              break;
            }
            if (!value || !value.length) continue;
            if (size != null && netPos + value.length > size) {
              const e = new Error(`${url} sent more than the announced ${size} bytes`);
              e.fatal = true;
              throw e;
            }
            if (data) await data.write(netPos, value);
            netPos += value.length;
            if (data && netPos === size) {
              await data.flush();
              await saveMeta();
            } else if (data && now() - lastSave >= META_SAVE_INTERVAL_MS) {
              lastSave = now();
              await saveMeta();
            }
            report(netPos, "download", netPos === size);
            for (const c of out.push(value)) yield c;
          }
        } catch (e) {
          if (isAbort(e, signal)) throw abortError();
          if (e && e.fatal) throw e;
          failure = e;
        } finally {
          if (signal) signal.removeEventListener("abort", onAbort);
          // Left early (closed by the consumer, an error, a cancel): stop the network stream.
          if (!ended) reader.cancel().catch(() => {});
          try {
            reader.releaseLock();
          } catch {
            // a pending read
          }
        }
        if (!failure && (size == null || netPos === size)) break;
        // Interrupted (an error, or the body ended early): resume from netPos if we can.
        if (netPos > retriedAt) attempt = 0;
        if (size != null && attempt < retries) {
          attempt++;
          retriedAt = netPos;
          await sleep(retryDelayMs * attempt, signal);
          let r = null;
          try {
            r = await fetchAt(netPos);
          } catch (e) {
            if (isAbort(e, signal)) throw abortError();
            failure = e;
          }
          if (r && continues(r, netPos, size, v)) {
            await cancelBody(res);
            res = r;
            continue;
          }
          await cancelBody(r);
        }
        await saveMeta().catch(() => {});
        const why = failure ? `: ${(failure && failure.message) || failure}` : "";
        throw new Error(
          size != null
            ? `download of ${name} stopped at ${netPos} of ${size} bytes${why}`
            : `download of ${name} stopped at ${netPos} bytes${why}`,
        );
      }
      const rest = out.flush();
      if (size == null) report(netPos, "download", true);
      if (rest) yield rest;
    } finally {
      await cleanup();
    }
  }

  const it = bytes();
  return {
    name,
    url,
    size,
    source: "network",
    resumedFrom: stored,
    read: async () => {
      const r = await it.next();
      return r.done ? undefined : r.value;
    },
    close: async () => {
      await it.return(undefined);
      await cleanup();
    },
  };
}

async function openCached(store, key, meta, { onProgress, signal, chunk }) {
  const data = await store.open(key);
  const size = meta.size;
  if (!meta.complete || meta.stored !== size) {
    meta = { ...meta, stored: size, complete: true };
    await store.putMeta(meta);
  }
  const report = meter(onProgress, size);
  let pos = 0;
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await data.close();
  };
  return {
    name: meta.name || modelName(meta.url),
    url: meta.url,
    size,
    source: "cache",
    read: async () => {
      try {
        throwIfAborted(signal);
        if (pos >= size) {
          await close();
          return undefined;
        }
        const b = await data.read(pos, Math.min(chunk, size - pos));
        if (!b.length) throw new Error(`the cached copy of ${meta.name} ends at ${pos} of ${size} bytes`);
        pos += b.length;
        report(pos, "cache", pos >= size);
        return b;
      } catch (e) {
        await close().catch(() => {});
        throw e;
      }
    },
    close,
  };
}

/** A reader over a user-picked File (or any Blob), reading ahead one chunk. */
export function openFile(file, { onProgress, signal, chunk = 16 << 20 } = {}) {
  const size = file.size;
  const name = baseName(file.name);
  const label = file.name || "the file";
  const report = meter(onProgress, size);
  let pos = 0;
  let pending = null;
  let closed = false;
  const slice = (from) => {
    if (from >= size) return null;
    const p = file.slice(from, Math.min(size, from + chunk)).arrayBuffer();
    p.catch(() => {}); // awaited later; never an unhandled rejection
    return p;
  };
  return {
    name,
    url: null,
    size,
    source: "file",
    read: async () => {
      throwIfAborted(signal);
      if (closed) throw new Error(`${label} is closed`);
      if (pos >= size) return undefined;
      let buf;
      try {
        buf = new Uint8Array(await (pending || slice(pos)));
      } catch (e) {
        throw new Error(`could not read ${label}: ${(e && e.message) || e}`);
      }
      throwIfAborted(signal);
      if (!buf.length) throw new Error(`could not read ${label}: it ends at ${pos} of ${size} bytes`);
      pos += buf.length;
      pending = slice(pos);
      report(pos, "file", pos >= size);
      return buf;
    },
    close: async () => {
      closed = true;
      pending = null;
    },
  };
}

/** The store's entries, [{key, url, name, size, stored, complete}], sorted by name. */
export async function listCached(store) {
  if (!store) return [];
  const out = [];
  for (const m of await store.list()) {
    let stored = 0;
    try {
      stored = await store.dataSize(m.key);
    } catch {
      stored = m.stored || 0;
    }
    if (m.size != null) stored = Math.min(stored, m.size);
    out.push({
      key: m.key,
      url: m.url,
      name: m.name || modelName(m.url),
      size: m.size ?? null,
      stored,
      complete: m.size != null && stored === m.size,
    });
  }
  return out.sort((a, b) => a.name.localeCompare(b.name) || a.key.localeCompare(b.key));
}

export async function deleteCached(key, store) {
  if (!store) throw new Error("there is no model cache in this browser");
  await store.delete(key);
}

/** An in-memory store with the OPFS store's interface, for tests. */
export function memoryStore() {
  const entries = new Map(); // key -> {meta, data: Uint8Array, length}
  const entry = (key) => {
    let e = entries.get(key);
    if (!e) {
      e = { meta: null, data: new Uint8Array(0), length: 0 };
      entries.set(key, e);
    }
    return e;
  };
  const reserve = (e, n) => {
    if (n <= e.data.length) return;
    const grown = new Uint8Array(Math.max(n, e.data.length * 2, 1024));
    grown.set(e.data.subarray(0, e.length));
    e.data = grown;
  };
  return {
    kind: "memory",
    entries,
    async list() {
      return [...entries.values()].filter((e) => e.meta).map((e) => ({ ...e.meta }));
    },
    async getMeta(key) {
      const e = entries.get(key);
      return e && e.meta ? { ...e.meta } : null;
    },
    async putMeta(meta) {
      entry(meta.key).meta = { ...meta };
    },
    async dataSize(key) {
      const e = entries.get(key);
      return e ? e.length : 0;
    },
    async open(key) {
      const e = entry(key);
      return {
        async size() {
          return e.length;
        },
        async read(offset, length) {
          const end = Math.min(e.length, offset + length);
          return e.data.slice(offset, Math.max(offset, end));
        },
        async write(offset, bytes) {
          reserve(e, offset + bytes.length);
          if (offset > e.length) e.data.fill(0, e.length, offset);
          e.data.set(bytes, offset);
          e.length = Math.max(e.length, offset + bytes.length);
        },
        async truncate(n) {
          reserve(e, n);
          if (n > e.length) e.data.fill(0, e.length, n);
          e.length = n;
        },
        async flush() {},
        async close() {},
      };
    },
    async delete(key) {
      entries.delete(key);
    },
  };
}

/**
 * The Origin Private File System store in directory `dirName` ("models"; the worker keeps LoRAs
 * in "loras" and embeddings in "embeddings"); null where OPFS is unavailable.
 */
export async function opfsStore(dirName = MODELS_DIR) {
  try {
    const storage = globalThis.navigator && globalThis.navigator.storage;
    if (!storage || typeof storage.getDirectory !== "function") return null;
    const root = await storage.getDirectory();
    return directoryStore(await root.getDirectoryHandle(dirName, { create: true }));
  } catch {
    return null;
  }
}

/** A store over a FileSystemDirectoryHandle: `<key>.bin` (bytes) and `<key>.json` (metadata). */
export function directoryStore(dir) {
  const openData = new Map(); // key -> open DataHandle, for dataSize while downloading
  const notFound = (e) => e && (e.name === "NotFoundError" || e.name === "TypeMismatchError");

  async function readJson(name) {
    try {
      const f = await (await dir.getFileHandle(name)).getFile();
      return JSON.parse(await f.text());
    } catch {
      return null;
    }
  }

  async function writeJson(name, value) {
    const bytes = new TextEncoder().encode(JSON.stringify(value));
    const fh = await dir.getFileHandle(name, { create: true });
    if (typeof fh.createSyncAccessHandle === "function") {
      const h = await fh.createSyncAccessHandle();
      try {
        await h.truncate(0);
        await h.write(bytes, { at: 0 });
        await h.flush();
      } finally {
        await h.close();
      }
    } else {
      const w = await fh.createWritable();
      await w.write(bytes);
      await w.close();
    }
  }

  function syncHandle(h) {
    return {
      size: async () => h.getSize(),
      read: async (offset, length) => {
        const buf = new Uint8Array(length);
        const n = await h.read(buf, { at: offset });
        return n < length ? buf.subarray(0, n) : buf;
      },
      write: async (offset, bytes) => {
        let done = 0;
        while (done < bytes.length) {
          const n = await h.write(done ? bytes.subarray(done) : bytes, { at: offset + done });
          if (!(n > 0)) throw new Error("could not write to the model cache (disk full?)");
          done += n;
        }
      },
      truncate: async (n) => h.truncate(n),
      flush: async () => h.flush(),
      close: async () => h.close(),
    };
  }

  // Where sync access handles are unavailable (not a dedicated worker): a writable stream for
  // writes (committed on close) and File slices for reads.
  function streamHandle(fh) {
    let writable = null;
    let size = null;
    const h = {
      size: async () => {
        if (size == null) size = (await fh.getFile()).size;
        return size;
      },
      read: async (offset, length) =>
        new Uint8Array(await (await fh.getFile()).slice(offset, offset + length).arrayBuffer()),
      write: async (offset, bytes) => {
        const cur = await h.size();
        if (!writable) writable = await fh.createWritable({ keepExistingData: true });
        await writable.write({ type: "write", position: offset, data: bytes });
        size = Math.max(cur, offset + bytes.length);
      },
      truncate: async (n) => {
        if (!writable) writable = await fh.createWritable({ keepExistingData: true });
        await writable.truncate(n);
        size = n;
      },
      flush: async () => {},
      close: async () => {
        if (writable) await writable.close();
        writable = null;
      },
    };
    return h;
  }

  return {
    kind: "opfs",
    async list() {
      const out = [];
      for await (const [name, handle] of dir.entries()) {
        if (handle.kind !== "file" || !name.endsWith(".json")) continue;
        const m = await readJson(name);
        if (m && typeof m.key === "string" && typeof m.url === "string") out.push(m);
      }
      return out;
    },
    getMeta: (key) => readJson(`${key}.json`),
    putMeta: (meta) => writeJson(`${meta.key}.json`, meta),
    async dataSize(key) {
      const open = openData.get(key);
      if (open) return open.size();
      try {
        return (await (await dir.getFileHandle(`${key}.bin`)).getFile()).size;
      } catch {
        return 0;
      }
    },
    async open(key) {
      if (openData.has(key)) throw new Error(`the cached copy of ${key} is already open`);
      const fh = await dir.getFileHandle(`${key}.bin`, { create: true });
      let h = null;
      if (typeof fh.createSyncAccessHandle === "function") {
        try {
          h = syncHandle(await fh.createSyncAccessHandle());
        } catch (e) {
          if (e && e.name === "NoModificationAllowedError") {
            throw new Error(`the cached copy of ${key} is in use (by another tab?)`);
          }
          h = null;
        }
      }
      if (!h) h = streamHandle(fh);
      const close = h.close;
      h.close = async () => {
        openData.delete(key);
        await close();
      };
      openData.set(key, h);
      return h;
    },
    async delete(key) {
      if (openData.has(key)) throw new Error("this model is being read; cancel the load first");
      for (const name of [`${key}.bin`, `${key}.json`]) {
        try {
          await dir.removeEntry(name);
        } catch (e) {
          if (!notFound(e)) throw new Error(`could not delete ${name}: ${(e && e.message) || e}`);
        }
      }
    },
  };
}

/**
 * `readRange(start, end)` for `Engine.load`: reads bytes [start, end) of a loaded model again, so
 * the engine may release the text encoders during sampling and stream them back for a new prompt.
 * A `File` is sliced; a URL is read from the cache when stored there completely, else with a
 * Range request. Each call opens and closes what it reads (an OPFS handle is exclusive).
 */
export function rangeReader(source, { store = null, fetchImpl = globalThis.fetch } = {}) {
  if (source.kind === "file") {
    const file = source.file;
    return async (start, end) => {
      const b = new Uint8Array(await file.slice(start, end).arrayBuffer());
      if (b.length !== end - start) throw new Error(`${file.name || "the file"} changed: bytes ${start}..${end} are missing`);
      return b;
    };
  }
  const url = String(source.url);
  const key = cacheKey(url);
  return async (start, end) => {
    const meta = store ? await store.getMeta(key) : null;
    if (meta && meta.url === url && meta.complete) {
      const h = await store.open(key);
      try {
        const b = await h.read(start, end - start);
        if (b.length !== end - start) throw new Error(`the cached copy of ${meta.name} ends before byte ${end}`);
        return b;
      } finally {
        await h.close();
      }
    }
    let res;
    try {
      res = await fetchImpl(url, { headers: { Range: `bytes=${start}-${end - 1}` }, cache: "no-store" });
    } catch (e) {
      throw new Error(`could not reach ${url}: ${reasonOf(e)}`);
    }
    if (res.status !== 206) {
      await cancelBody(res);
      throw new Error(`${url} answered a Range request with HTTP ${res.status}: the server must support Range requests to reload the text encoders`);
    }
    const b = new Uint8Array(await res.arrayBuffer());
    if (b.length !== end - start) throw new Error(`${url}: asked for ${end - start} bytes at ${start}, got ${b.length}`);
    return b;
  };
}
