import { test } from "node:test";
import assert from "node:assert/strict";
import { check, TO_WORKER, TO_PAGE } from "../protocol.js";

const settings = {
  prompt: "a cat", negative: null, width: 1024, height: 1024, steps: 25, cfg: 7, seed: 1,
  sampler: "euler_a", karras: false, rating: "none", clip_skip: 0, v_prediction: false,
};

const toWorker = [
  { type: "init", forceF32: false },
  { type: "selfTest", values: [0, 1] },
  { type: "load", source: { kind: "url", url: "https://h.test/m.safetensors" } },
  { type: "load", source: { kind: "file", file: new Blob([]) } },
  { type: "generate", id: 1, settings },
  {
    type: "generate", id: 2, settings: { ...settings, strength: 0.6 },
    images: { init: { bytes: new Uint8Array(8) }, mask: { width: 1, height: 1, rgba: new Uint8Array(4) } },
  },
  { type: "loadAdapter", kind: "lora", name: "style", source: { kind: "url", url: "https://h.test/style.safetensors" } },
  { type: "loadAdapter", kind: "embedding", name: "negemb", source: { kind: "file", file: new Blob([]) } },
  { type: "unloadAdapter", kind: "lora", name: "style" },
  { type: "gpuCheck" },
  { type: "cancel" },
  { type: "listCache" },
  { type: "deleteCache", key: "0123456789abcdef-m" },
  { type: "deleteCache", key: "0123456789abcdef-negemb", store: "embedding" },
];

const toPage = [
  { type: "ready", info: { name: "gpu", backend: "webgpu", shader_f16: true, limits: {} } },
  { type: "selfTest", values: [1.5] },
  { type: "loadProgress", loaded: 1, total: null, rate: 0, eta: null, phase: "download" },
  { type: "loaded", name: "m", source: "cache", inspection: {}, wasmMemory: 1 << 20 },
  { type: "step", id: 1, step: 1, total: 25, preview: { width: 8, height: 8, rgba: new Uint8ClampedArray(256) } },
  { type: "result", id: 1, png: new Uint8Array(8), parameters: "a cat", seed: 1, width: 64, height: 64, ms: 10, report: {} },
  { type: "gpuCheckProgress", phase: "timing" },
  {
    type: "gpuCheckResult", selfcheck: { adapter: "gpu", compute_path: "f32", passed: true, failures: 0, total_seconds: 1, checks: [] },
    timing: null, timingError: "timing failed",
  },
  { type: "cancelled", id: null },
  { type: "adapterProgress", kind: "lora", name: "style", loaded: 1, total: 2, rate: 0, eta: null, phase: "cache" },
  { type: "adapterLoaded", kind: "embedding", name: "negemb", hash: "0123456789ab", source: "network" },
  { type: "adapterFailed", kind: "lora", name: "style", message: "bad key", cancelled: false },
  { type: "adapterUnloaded", kind: "lora", name: "style", found: true },
  { type: "cache", entries: [] },
  { type: "cache", entries: [], adapters: { lora: [], embedding: [] } },
  { type: "error", message: "boom", during: "load", deviceLost: false },
];

test("every documented message passes check", () => {
  for (const m of toWorker) assert.equal(check(TO_WORKER, m), m);
  for (const m of toPage) assert.equal(check(TO_PAGE, m), m);
  assert.deepEqual(Object.keys(TO_WORKER).sort(), [...new Set(toWorker.map((m) => m.type))].sort());
  assert.deepEqual(Object.keys(TO_PAGE).sort(), [...new Set(toPage.map((m) => m.type))].sort());
});

test("unknown types, missing fields and non-objects are rejected", () => {
  assert.throws(() => check(TO_WORKER, { type: "explode" }), /unknown message "explode"/);
  assert.throws(() => check(TO_WORKER, { type: "toString" }), /unknown message/);
  assert.throws(() => check(TO_PAGE, { type: "init", forceF32: true }), /unknown message "init"/);
  assert.throws(() => check(TO_WORKER, { type: "ready", info: {} }), /unknown message "ready"/);
  for (const bad of [null, undefined, 3, "init", [], true]) {
    assert.throws(() => check(TO_WORKER, bad), /unknown message/);
    assert.throws(() => check(TO_PAGE, bad), /unknown message/);
  }
  for (const m of [...toWorker.map((m) => [TO_WORKER, m]), ...toPage.map((m) => [TO_PAGE, m])]) {
    const [table, msg] = m;
    for (const f of table[msg.type]) {
      const copy = { ...msg };
      delete copy[f];
      assert.throws(() => check(table, copy), new RegExp(`message "${msg.type}" lacks field "${f}"`));
    }
  }
});

test("adapter messages need a known kind", () => {
  assert.throws(
    () => check(TO_WORKER, { type: "loadAdapter", kind: "hypernet", name: "x", source: { kind: "url", url: "https://h.test/x" } }),
    /message "loadAdapter": kind "hypernet" is not one of lora, embedding/,
  );
  assert.throws(() => check(TO_PAGE, { type: "adapterLoaded", kind: undefined, name: "x", hash: "", source: "file" }), /kind undefined/);
  assert.equal(check(TO_WORKER, { type: "unloadAdapter", kind: "embedding", name: "x" }).kind, "embedding");
});
