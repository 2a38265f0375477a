import { test } from "node:test";
import assert from "node:assert/strict";
import {
  openUrl, openFile, listCached, deleteCached, memoryStore, cacheKey, modelName, rangeReader,
} from "../download.js";

const URL1 = "https://example.test/models/tiny%20model.safetensors";

function makeBytes(n, seed = 1) {
  const b = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

/**
 * A fake server for `bytes`. Options: range (honor Range, default true), etag, contentType,
 * status/statusText (answer with that error), throws (fetch rejects with TypeError),
 * failAfter: array, one entry per request: after that many body bytes the stream errors
 * (undefined = no failure), piece (body piece size), noLength (no Content-Length).
 */
function server(bytes, opts = {}) {
  const calls = [];
  const failAfter = [...(opts.failAfter || [])];
  const fetchImpl = async (url, init = {}) => {
    const headers = new Headers(init.headers || {});
    calls.push({ url, range: headers.get("range") });
    if (opts.throws) throw new TypeError("Failed to fetch");
    if (opts.status) return new Response("<h1>nope</h1>", { status: opts.status, statusText: opts.statusText });
    const h = { "content-type": opts.contentType || "application/octet-stream" };
    if (opts.etag) h.etag = typeof opts.etag === "function" ? opts.etag(calls.length) : opts.etag;
    let start = 0;
    let status = 200;
    const m = /^bytes=(\d+)-$/.exec(headers.get("range") || "");
    if (m && opts.range !== false) {
      start = Number(m[1]);
      if (start >= bytes.length) return new Response(null, { status: 416, headers: h });
      status = 206;
      h["content-range"] = `bytes ${start}-${bytes.length - 1}/${bytes.length}`;
    }
    const body = bytes.subarray(start);
    if (!opts.noLength) h["content-length"] = String(body.length);
    const fail = failAfter.shift();
    const piece = opts.piece || 1000;
    let sent = 0;
    const stream = new ReadableStream({
      pull(c) {
        if (fail !== undefined && sent >= fail) {
          c.error(new TypeError("network error"));
          return;
        }
        if (sent >= body.length) {
          c.close();
          return;
        }
        let n = Math.min(piece, body.length - sent);
        if (fail !== undefined) n = Math.min(n, Math.max(1, fail - sent));
        c.enqueue(body.slice(sent, sent + n));
        sent += n;
      },
    });
    return new Response(stream, { status, headers: h });
  };
  return { fetchImpl, calls };
}

const plenty = async () => ({ quota: 1e12, usage: 0 });

async function readAll(r) {
  const parts = [];
  for (;;) {
    const b = await r.read();
    if (b === undefined) break;
    assert.ok(b instanceof Uint8Array);
    parts.push(b);
  }
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return { bytes: out, parts };
}

test("name and key from the URL", () => {
  assert.equal(modelName(URL1), "tiny model");
  assert.equal(modelName("https://h.test/"), "model");
  assert.equal(modelName("https://h.test/a/b.bin?x=1"), "b.bin");
  assert.equal(cacheKey(URL1), cacheKey(URL1));
  assert.notEqual(cacheKey(URL1), cacheKey(URL1 + "?v=2"));
  assert.match(cacheKey(URL1), /^[0-9a-f]{16}-tiny_model$/);
});

test("fresh download yields the exact bytes and stores them complete", async () => {
  const data = makeBytes(10_000);
  const { fetchImpl, calls } = server(data, { etag: '"abc"' });
  const store = memoryStore();
  const progress = [];
  const r = await openUrl(URL1, { store, fetchImpl, estimate: plenty, chunk: 4096, onProgress: (p) => progress.push(p) });
  assert.equal(r.source, "network");
  assert.equal(r.size, 10_000);
  assert.equal(r.name, "tiny model");
  assert.equal(r.url, URL1);
  const { bytes, parts } = await readAll(r);
  await r.close();
  assert.deepEqual(bytes, data);
  assert.deepEqual(parts.map((p) => p.length), [4096, 4096, 1808]);
  assert.equal(calls.length, 1);
  assert.equal(calls[0].range, null);
  const last = progress.at(-1);
  assert.equal(last.loaded, 10_000);
  assert.equal(last.total, 10_000);
  assert.equal(last.phase, "download");
  assert.equal(last.eta, 0);
  const list = await listCached(store);
  assert.equal(list.length, 1);
  assert.deepEqual(list[0], { key: cacheKey(URL1), url: URL1, name: "tiny model", size: 10_000, stored: 10_000, complete: true });
  const meta = await store.getMeta(cacheKey(URL1));
  assert.equal(meta.etag, '"abc"');
  assert.equal(meta.complete, true);
});

test("second open comes from the cache without fetching", async () => {
  const data = makeBytes(5000);
  const store = memoryStore();
  const s1 = server(data);
  const r1 = await openUrl(URL1, { store, fetchImpl: s1.fetchImpl, estimate: plenty });
  await readAll(r1);
  await r1.close();
  const progress = [];
  const noFetch = async () => assert.fail("no network request expected");
  const r2 = await openUrl(URL1, { store, fetchImpl: noFetch, estimate: plenty, chunk: 999, onProgress: (p) => progress.push(p) });
  assert.equal(r2.source, "cache");
  assert.equal(r2.size, 5000);
  assert.equal(r2.name, "tiny model");
  const { bytes } = await readAll(r2);
  await r2.close();
  assert.deepEqual(bytes, data);
  assert.equal(progress.at(-1).loaded, 5000);
  assert.equal(progress.at(-1).phase, "cache");
});

test("an interrupted download leaves a partial that the next open resumes with Range", async () => {
  const data = makeBytes(20_000);
  const store = memoryStore();
  const s1 = server(data, { failAfter: [7000], etag: '"v1"' });
  const r1 = await openUrl(URL1, { store, fetchImpl: s1.fetchImpl, estimate: plenty, retries: 0, chunk: 3000 });
  let got = 0;
  await assert.rejects(
    async () => {
      for (;;) {
        const b = await r1.read();
        if (!b) break;
        got += b.length;
      }
    },
    (e) => {
      assert.match(e.message, /^download of tiny model stopped at 7000 of 20000 bytes/);
      return true;
    },
  );
  await r1.close();
  assert.equal(got, 6000); // two whole chunks; the rest stays in the store
  const [entry] = await listCached(store);
  assert.equal(entry.stored, 7000);
  assert.equal(entry.complete, false);

  const s2 = server(data, { etag: '"v1"' });
  const phases = new Set();
  const r2 = await openUrl(URL1, { store, fetchImpl: s2.fetchImpl, estimate: plenty, chunk: 3000, onProgress: (p) => phases.add(p.phase) });
  assert.equal(s2.calls.length, 1);
  assert.equal(s2.calls[0].range, "bytes=7000-");
  assert.equal(r2.resumedFrom, 7000);
  const { bytes } = await readAll(r2);
  await r2.close();
  assert.deepEqual(bytes, data);
  const [done] = await listCached(store);
  assert.equal(done.complete, true);
  assert.equal(done.stored, 20_000);
  assert.ok(phases.has("download"));
});

test("a broken connection is retried with a Range request in the same open", async () => {
  const data = makeBytes(9000);
  const store = memoryStore();
  const s = server(data, { failAfter: [4000, 2000] });
  const r = await openUrl(URL1, { store, fetchImpl: s.fetchImpl, estimate: plenty, retries: 2, retryDelayMs: 1, chunk: 4096 });
  const { bytes } = await readAll(r);
  await r.close();
  assert.deepEqual(bytes, data);
  assert.deepEqual(s.calls.map((c) => c.range), [null, "bytes=4000-", "bytes=6000-"]);
  assert.equal((await listCached(store))[0].complete, true);
});

test("a server ignoring Range (200) restarts cleanly from byte 0", async () => {
  const data = makeBytes(8000);
  const store = memoryStore();
  const s1 = server(data, { failAfter: [3000] });
  const r1 = await openUrl(URL1, { store, fetchImpl: s1.fetchImpl, estimate: plenty, retries: 0 });
  await assert.rejects(readAll(r1), /stopped at 3000 of 8000/);
  await r1.close();
  const s2 = server(data, { range: false });
  const r2 = await openUrl(URL1, { store, fetchImpl: s2.fetchImpl, estimate: plenty, chunk: 1500 });
  assert.equal(s2.calls[0].range, "bytes=3000-");
  assert.equal(r2.resumedFrom, 0);
  const { bytes } = await readAll(r2);
  await r2.close();
  assert.deepEqual(bytes, data);
  const [e] = await listCached(store);
  assert.equal(e.stored, 8000);
  assert.equal(e.complete, true);
});

test("a changed file (new ETag) discards the partial and starts over", async () => {
  const old = makeBytes(8000, 1);
  const data = makeBytes(8000, 2);
  const store = memoryStore();
  const s1 = server(old, { failAfter: [3000], etag: '"v1"' });
  const r1 = await openUrl(URL1, { store, fetchImpl: s1.fetchImpl, estimate: plenty, retries: 0 });
  await assert.rejects(readAll(r1), /stopped at/);
  await r1.close();
  const s2 = server(data, { etag: '"v2"' });
  const r2 = await openUrl(URL1, { store, fetchImpl: s2.fetchImpl, estimate: plenty });
  assert.deepEqual(s2.calls.map((c) => c.range), ["bytes=3000-", null]);
  const { bytes } = await readAll(r2);
  await r2.close();
  assert.deepEqual(bytes, data);
  assert.equal((await store.getMeta(cacheKey(URL1))).etag, '"v2"');
});

test("not enough storage is a clear error", async () => {
  const data = makeBytes(6_940_000);
  const s = server(data);
  const store = memoryStore();
  await assert.rejects(
    openUrl(URL1, { store, fetchImpl: s.fetchImpl, estimate: async () => ({ quota: 2_000_000, usage: 500_000 }) }),
    {
      message: "not enough storage for tiny model: needs 6.94 MB more, 1.50 MB free (delete cached models or free disk space)",
    },
  );
  assert.deepEqual(await listCached(store), []);
});

test("without a store or a known size the file streams uncached", async () => {
  const data = makeBytes(3000);
  const r = await openUrl(URL1, { store: null, fetchImpl: server(data).fetchImpl, estimate: plenty });
  assert.equal(r.source, "network");
  assert.deepEqual((await readAll(r)).bytes, data);
  const store = memoryStore();
  const r2 = await openUrl(URL1, { store, fetchImpl: server(data, { noLength: true }).fetchImpl, estimate: plenty });
  assert.equal(r2.size, null);
  assert.deepEqual((await readAll(r2)).bytes, data);
  assert.deepEqual(await listCached(store), []);
});

test("HTTP errors, unreachable hosts, HTML pages and invalid URLs", async () => {
  const opts = { store: memoryStore(), estimate: plenty };
  await assert.rejects(openUrl(URL1, { ...opts, fetchImpl: server(null, { status: 404, statusText: "Not Found" }).fetchImpl }), {
    message: `${URL1} returned HTTP 404 Not Found`,
  });
  await assert.rejects(
    openUrl(URL1, { ...opts, fetchImpl: server(null, { throws: true }).fetchImpl }),
    (e) => e.message.startsWith(`could not reach ${URL1}: Failed to fetch`),
  );
  await assert.rejects(
    openUrl(URL1, { ...opts, fetchImpl: server(new TextEncoder().encode("<html>"), { contentType: "text/html; charset=utf-8" }).fetchImpl }),
    { message: `${URL1} is an HTML page, not a safetensors file` },
  );
  await assert.rejects(openUrl("not a url", { ...opts, fetchImpl: server(null).fetchImpl }), (e) =>
    e.message.startsWith('invalid model URL "not a url": '),
  );
  await assert.rejects(openUrl("ftp://h.test/a.safetensors", { ...opts, fetchImpl: server(null).fetchImpl }), (e) =>
    e.message.startsWith('invalid model URL "ftp://h.test/a.safetensors": '),
  );
});

test("abort gives an AbortError 'cancelled' and keeps the partial", async () => {
  const data = makeBytes(50_000);
  const store = memoryStore();
  const ac = new AbortController();
  const r = await openUrl(URL1, { store, fetchImpl: server(data).fetchImpl, estimate: plenty, signal: ac.signal, chunk: 1000 });
  assert.equal((await r.read()).length, 1000);
  ac.abort();
  await assert.rejects(r.read(), { name: "AbortError", message: "cancelled" });
  await r.close();
  const [e] = await listCached(store);
  assert.equal(e.complete, false);
  assert.ok(e.stored >= 1000);

  const ac2 = new AbortController();
  ac2.abort();
  await assert.rejects(openUrl(URL1, { store, fetchImpl: server(data).fetchImpl, signal: ac2.signal }), {
    name: "AbortError",
    message: "cancelled",
  });
  // resumes after the abort
  const s = server(data);
  const r2 = await openUrl(URL1, { store, fetchImpl: s.fetchImpl, estimate: plenty });
  assert.match(s.calls[0].range, /^bytes=\d+-$/);
  assert.deepEqual((await readAll(r2)).bytes, data);
});

test("listCached and deleteCached", async () => {
  const store = memoryStore();
  const urls = ["https://h.test/b.safetensors", "https://h.test/a.safetensors"];
  for (const u of urls) {
    const r = await openUrl(u, { store, fetchImpl: server(makeBytes(100)).fetchImpl, estimate: plenty });
    await readAll(r);
    await r.close();
  }
  const list = await listCached(store);
  assert.deepEqual(list.map((e) => e.name), ["a", "b"]);
  await deleteCached(list[0].key, store);
  assert.deepEqual((await listCached(store)).map((e) => e.name), ["b"]);
  assert.deepEqual(await listCached(null), []);
});

test("openFile over a Blob with odd chunk sizes yields the exact bytes", async () => {
  const data = makeBytes(10_007);
  for (const chunk of [1, 7, 4096, 10_007, 1 << 20]) {
    const file = new File([data.slice(0, 5000), data.slice(5000)], "picked.safetensors");
    const progress = [];
    const r = openFile(file, { chunk, onProgress: (p) => progress.push(p) });
    assert.equal(r.name, "picked");
    assert.equal(r.url, null);
    assert.equal(r.size, 10_007);
    assert.equal(r.source, "file");
    const { bytes, parts } = await readAll(r);
    await r.close();
    assert.deepEqual(bytes, data);
    assert.equal(parts.length, Math.ceil(10_007 / chunk));
    assert.equal(progress.at(-1).loaded, 10_007);
    assert.equal(progress.at(-1).phase, "file");
  }
  const blob = openFile(new Blob([data]));
  assert.equal(blob.name, "model");
  const ac = new AbortController();
  const r = openFile(new Blob([data]), { signal: ac.signal, chunk: 100 });
  await r.read();
  ac.abort();
  await assert.rejects(r.read(), { name: "AbortError" });
});

test("close() before the end cancels the network stream and keeps the partial", async () => {
  const data = makeBytes(30_000);
  let cancelled = false;
  const fetchImpl = async () =>
    new Response(
      new ReadableStream({
        sent: 0,
        pull(c) {
          if (this.sent >= data.length) return c.close();
          c.enqueue(data.slice(this.sent, this.sent + 1000));
          this.sent += 1000;
        },
        cancel() {
          cancelled = true;
        },
      }),
      { headers: { "content-length": String(data.length) } },
    );
  const store = memoryStore();
  const r = await openUrl(URL1, { store, fetchImpl, estimate: plenty, chunk: 2000 });
  assert.deepEqual(await r.read(), data.slice(0, 2000));
  await r.close();
  assert.equal(cancelled, true);
  const [e] = await listCached(store);
  assert.equal(e.complete, false);
  assert.ok(e.stored >= 2000);
  assert.equal(await r.read(), undefined);
});

test("rangeReader reads ranges again: from the cache, by Range request, from a File", async () => {
  const data = makeBytes(5000, 7);
  const { fetchImpl } = server(data);
  const store = memoryStore();
  const r = await openUrl(URL1, { store, fetchImpl, estimate: plenty, chunk: 1024 });
  await readAll(r);
  await r.close();
  const noNetwork = async () => {
    throw new TypeError("Failed to fetch");
  };
  const cached = rangeReader({ kind: "url", url: URL1 }, { store, fetchImpl: noNetwork });
  assert.deepEqual(await cached(100, 1300), data.subarray(100, 1300));

  const ranged = [];
  const rangeFetch = async (url, init) => {
    const m = /^bytes=(\d+)-(\d+)$/.exec(new Headers(init.headers).get("range"));
    ranged.push(m[0]);
    return new Response(data.slice(Number(m[1]), Number(m[2]) + 1), { status: 206 });
  };
  const net = rangeReader({ kind: "url", url: URL1 }, { store: null, fetchImpl: rangeFetch });
  assert.deepEqual(await net(10, 20), data.subarray(10, 20));
  assert.deepEqual(ranged, ["bytes=10-19"]);
  const ignoring = rangeReader({ kind: "url", url: URL1 }, { fetchImpl: async () => new Response(data, { status: 200 }) });
  await assert.rejects(ignoring(0, 10), /Range request with HTTP 200/);

  const file = new Blob([data]);
  file.name = "m.safetensors";
  const fr = rangeReader({ kind: "file", file });
  assert.deepEqual(await fr(4990, 5000), data.subarray(4990, 5000));
  await assert.rejects(fr(4990, 5010), /bytes 4990..5010 are missing/);
});
