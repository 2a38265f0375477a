import { test } from "node:test";
import assert from "node:assert/strict";
import {
  BUCKETS, DEFAULTS, parseParams, validateSettings, toQuery, randomSeed, isBucket,
  adapterName, validAdapterName, loraTagNames,
} from "../params.js";

const BASE = "http://127.0.0.1:8080/index.html?x=1";

test("defaults", () => {
  const p = parseParams("", BASE);
  assert.deepEqual(p.errors, []);
  assert.equal(p.model, null);
  assert.equal(p.seedGiven, false);
  assert.equal(p.autorun, false);
  assert.equal(p.f32, false);
  assert.deepEqual(p.settings, {
    prompt: "", negative: null, width: 1024, height: 1024, steps: 25, cfg: 7, seed: 0,
    sampler: "euler_a", karras: false, rating: "none", clip_skip: 0, v_prediction: false,
    gpu_memory: "7.5G", vae_tile: 0, vae_tile_overlap: 0.25,
  });
  assert.deepEqual(validateSettings(p.settings), []);
  assert.match(DEFAULTS.model, /^https:\/\/huggingface\.co\/trojblue\/.*nekoray-xl-1\.5m-fp16mixed_e02\.safetensors$/);
  assert.deepEqual(BUCKETS[0], [1024, 1024]);
  assert.equal(BUCKETS.length, 41);
  assert.ok(isBucket(832, 1216) && !isBucket(64, 64));
});

test("every parameter is read", () => {
  const q = "?model=https%3A%2F%2Fh.test%2Fm.safetensors&prompt=a+cat%2C+1girl&negative=lowres&seed=42" +
    "&steps=30&cfg=5.5&w=832&h=1216&sampler=ddim&rating=sensitive&clip_skip=1&f32=1&autorun=1&v_prediction=1";
  const p = parseParams(q, BASE);
  assert.deepEqual(p.errors, []);
  assert.equal(p.model, "https://h.test/m.safetensors");
  assert.equal(p.seedGiven, true);
  assert.equal(p.autorun, true);
  assert.equal(p.f32, true);
  assert.deepEqual(p.settings, {
    prompt: "a cat, 1girl", negative: "lowres", width: 832, height: 1216, steps: 30, cfg: 5.5, seed: 42,
    sampler: "ddim", karras: false, rating: "sensitive", clip_skip: 1, v_prediction: true,
    gpu_memory: "7.5G", vae_tile: 0, vae_tile_overlap: 0.25,
  });
  const k = parseParams("sampler=dpmpp_2m&karras=1&seed=9007199254740991", BASE);
  assert.deepEqual(k.errors, []);
  assert.equal(k.settings.karras, true);
  assert.equal(k.settings.seed, Number.MAX_SAFE_INTEGER);
  assert.ok(parseParams(new URLSearchParams("w=64&h=64"), BASE).errors.length === 0);
});

test("a relative model URL is resolved against the page", () => {
  const p = parseParams("?model=/fixtures/tiny-sdxl/tiny-sdxl.safetensors", BASE);
  assert.equal(p.model, "http://127.0.0.1:8080/fixtures/tiny-sdxl/tiny-sdxl.safetensors");
  assert.equal(parseParams("?model=m.safetensors", "http://h.test/app/index.html").model, "http://h.test/app/m.safetensors");
});

test("negative: absent = off, empty = the empty string", () => {
  assert.equal(parseParams("?prompt=x", BASE).settings.negative, null);
  assert.equal(parseParams("?prompt=x&negative=", BASE).settings.negative, "");
  assert.equal(parseParams("?negative", BASE).settings.negative, "");
  assert.equal(parseParams("?negative=bad+hands", BASE).settings.negative, "bad hands");
});

test("autorun and f32 flags", () => {
  assert.equal(parseParams("?autorun=1", BASE).autorun, true);
  assert.equal(parseParams("?autorun=0", BASE).autorun, false);
  assert.equal(parseParams("?f32=1", BASE).f32, true);
  assert.match(parseParams("?autorun=yes", BASE).errors[0], /autorun=yes/);
});

test("each invalid value gives an error naming the parameter and the rule", () => {
  const cases = [
    ["w=100", /w=100: width must be a multiple of 8 from 64 to 2048/],
    ["h=4096", /h=4096: height must be a multiple of 8 from 64 to 2048/],
    ["w=56", /w=56/],
    ["w=abc", /w=abc/],
    ["steps=0", /steps=0: steps must be an integer from 1 to 500/],
    ["steps=501", /steps=501/],
    ["steps=2.5", /steps=2\.5/],
    ["cfg=abc", /cfg=abc: cfg must be a number from 0 to 100/],
    ["cfg=-1", /cfg=-1/],
    ["cfg=101", /cfg=101/],
    ["seed=-1", /seed=-1: seed must be an integer from 0 to 9007199254740991/],
    ["seed=9007199254740992", /seed=9007199254740992/],
    ["seed=1.5", /seed=1\.5/],
    ["sampler=foo", /sampler=foo: sampler must be one of euler, euler_a, dpmpp_2m, ddim/],
    ["rating=bad", /rating=bad: rating must be one of none, sensitive, questionable, explicit/],
    ["clip_skip=11", /clip_skip=11: clip_skip must be an integer from 0 to 10/],
    ["gpu_memory=lots", /gpu_memory=lots: gpu_memory must be a size like 7.5G/],
    ["vae_tile=30", /vae_tile=30: vae_tile must be 0 \(automatic\) or a multiple of 8 from 64 px/],
    ["karras=maybe", /karras=maybe/],
    ["sampler=ddim&karras=1", /Karras.*ddim/],
    ["model=http://[bad", /model=/],
  ];
  for (const [q, re] of cases) {
    const p = parseParams(q, BASE);
    assert.equal(p.errors.length, 1, q);
    assert.match(p.errors[0], re, q);
  }
  const p = parseParams("seed=-1", BASE);
  assert.equal(p.seedGiven, false);
  assert.equal(p.settings.seed, 0);
});

test("validateSettings", () => {
  const ok = { ...DEFAULTS.settings, prompt: "x" };
  assert.deepEqual(validateSettings(ok), []);
  assert.match(validateSettings({ ...ok, width: 100 })[0], /^width 100: must be a multiple of 8 from 64 to 2048$/);
  assert.match(validateSettings({ ...ok, steps: 0 })[0], /^steps 0/);
  assert.match(validateSettings({ ...ok, cfg: NaN })[0], /^cfg/);
  assert.match(validateSettings({ ...ok, seed: -1 })[0], /^seed -1/);
  assert.match(validateSettings({ ...ok, sampler: "foo" })[0], /^sampler "foo"/);
  assert.match(validateSettings({ ...ok, sampler: "ddim", karras: true })[0], /Karras.*ddim/);
  assert.match(validateSettings({ ...ok, negative: 3 })[0], /negative/);
  assert.equal(validateSettings({ ...ok, width: 100, height: 30, steps: 0 }).length, 3);
  assert.deepEqual(validateSettings(null), ["settings: not an object"]);
});

test("toQuery round-trips", () => {
  const all = [
    ["https://h.test/a b.safetensors", { ...DEFAULTS.settings }],
    [null, { ...DEFAULTS.settings, prompt: "a & b = c, 1girl?", negative: "", seed: 4294967295, cfg: 4.5 }],
    ["https://h.test/m.safetensors", {
      prompt: "x", negative: "lowres, bad", width: 64, height: 64, steps: 3, cfg: 0, seed: 123,
      sampler: "dpmpp_2m", karras: true, rating: "explicit", clip_skip: 2, v_prediction: true,
      gpu_memory: "12G", vae_tile: 512, vae_tile_overlap: 0.25,
    }],
  ];
  for (const [model, settings] of all) {
    const q = toQuery(model, settings);
    assert.ok(!q.startsWith("?"));
    const p = parseParams("?" + q, BASE);
    assert.deepEqual(p.errors, []);
    assert.equal(p.model, model === null ? null : new URL(model).href);
    assert.deepEqual(p.settings, settings);
    assert.equal(p.seedGiven, true);
  }
});

test("randomSeed is an integer in 0..2^32-1", () => {
  const seen = new Set();
  for (let i = 0; i < 100; i++) {
    const s = randomSeed();
    assert.ok(Number.isInteger(s) && s >= 0 && s <= 0xffffffff);
    seen.add(s);
  }
  assert.ok(seen.size > 90);
});

test("lora=URL:WEIGHT (repeatable) and embedding=URL", () => {
  const p = parseParams(
    "?lora=/fixtures/lora/kohya_locon.safetensors:0.8&lora=https%3A%2F%2Fh.test%2Fx%2Fstyle%2520v2.safetensors" +
      "&lora=https://h.test:8443/neg.safetensors:-0.5&embedding=/fixtures/lora/tinyemb.safetensors&embedding=negemb.safetensors",
    BASE,
  );
  assert.deepEqual(p.errors, []);
  assert.deepEqual(p.loras, [
    { url: "http://127.0.0.1:8080/fixtures/lora/kohya_locon.safetensors", weight: 0.8, name: "kohya_locon" },
    { url: "https://h.test/x/style%20v2.safetensors", weight: 1, name: "style v2" },
    { url: "https://h.test:8443/neg.safetensors", weight: -0.5, name: "neg" },
  ]);
  assert.deepEqual(p.embeddings, [
    { url: "http://127.0.0.1:8080/fixtures/lora/tinyemb.safetensors", name: "tinyemb" },
    { url: "http://127.0.0.1:8080/negemb.safetensors", name: "negemb" },
  ]);
  const none = parseParams("", BASE);
  assert.deepEqual([none.loras, none.embeddings], [[], []]);
});

test("bad lora= and embedding= parameters name the parameter", () => {
  const cases = [
    ["lora=x.safetensors:25", /lora=x\.safetensors:25: weight 25 must be from -20 to 20/],
    ["lora=", /lora=: empty URL/],
    ["lora=ftp://h/x.safetensors:1", /only http, https and blob URLs/],
    ["lora=http://[bad:1", /lora=http:\/\/\[bad:1: not a valid URL/],
    ["lora=a.safetensors&lora=sub/a.safetensors:0.5", /a second LoRA named 'a'/],
    ["lora=%3Cx%3E.safetensors", /cannot name a LoRA/],
    ["embedding=bad%20name.safetensors", /embedding=bad name\.safetensors: the file name 'bad name' cannot name an embedding/],
    ["embedding=", /embedding=: empty URL/],
  ];
  for (const [q, re] of cases) {
    const p = parseParams(q, BASE);
    assert.equal(p.errors.length, 1, q);
    assert.match(p.errors[0], re, q);
  }
});

test("adapter names: the file's stem", () => {
  assert.equal(adapterName("https://h.test/a/b/My%20Lora.safetensors?download=1"), "My Lora");
  assert.equal(adapterName("style.SAFETENSORS"), "style");
  assert.equal(adapterName("x.bin"), "x.bin");
  assert.ok(validAdapterName("lora", "My Lora") && !validAdapterName("lora", "a:b") && !validAdapterName("lora", ""));
  assert.ok(validAdapterName("embedding", "negemb") && !validAdapterName("embedding", "My Lora"));
  for (const c of "()[]{}<>:,\\|\"'") assert.ok(!validAdapterName("embedding", `a${c}b`), c);
});

test("lora tags in a prompt", () => {
  assert.deepEqual(loraTagNames("1girl, <lora:style:0.7>, <lora: detail >, <hypernet:h:1>, <lora:x:1:2>"), ["style", "detail", "x"]);
  assert.deepEqual(loraTagNames("no tags <lora>"), []);
});

test("validateSettings checks loras", () => {
  const ok = { ...DEFAULTS.settings, prompt: "x" };
  assert.deepEqual(validateSettings({ ...ok, loras: [{ name: "a", weight: -2 }, { name: "b c", weight: 20 }] }), []);
  assert.match(validateSettings({ ...ok, loras: [{ name: "a", weight: 21 }] })[0], /LoRA 'a': weight 21 must be from -20 to 20/);
  assert.match(validateSettings({ ...ok, loras: [{ name: "a", weight: NaN }] })[0], /weight NaN/);
  assert.match(validateSettings({ ...ok, loras: [{ name: "a:b", weight: 1 }] })[0], /LoRA name "a:b"/);
  assert.match(validateSettings({ ...ok, loras: {} })[0], /loras: must be a list/);
});

test("toQuery writes lora= and embedding= that parseParams reads back", () => {
  const adapters = {
    loras: [{ url: "https://h.test/a.safetensors", weight: 0.8 }, { url: "https://h.test/b%20c.safetensors", weight: 1 }, { url: null, weight: 2 }],
    embeddings: [{ url: "https://h.test/negemb.safetensors" }, { url: null }],
  };
  const p = parseParams("?" + toQuery(null, { ...DEFAULTS.settings }, adapters), BASE);
  assert.deepEqual(p.errors, []);
  assert.deepEqual(p.loras, [
    { url: "https://h.test/a.safetensors", weight: 0.8, name: "a" },
    { url: "https://h.test/b%20c.safetensors", weight: 1, name: "b c" },
  ]);
  assert.deepEqual(p.embeddings, [{ url: "https://h.test/negemb.safetensors", name: "negemb" }]);
});
