import { test } from "node:test";
import assert from "node:assert/strict";
import { check, TO_PAGE, TO_WORKER } from "../protocol.js";
import { checkSummary, checkTable, estimateLine, reportText, timingSummary, timingTable } from "../gpucheck.js";

const selfcheck = {
  adapter: "Test GPU",
  compute_path: "f16",
  passed: false,
  failures: 1,
  total_seconds: 2.25,
  checks: [
    {
      family: "matmul", name: "tiled f16 act", shape: "[67, 129] x [65, 129]", tolerance: { name: "dot-f16", abs: 0, rel: 0, arith: 0.002 },
      max_abs_err: 1.5e-4, worst_ratio: 0.12, pass: true, seconds: 0.0012, clock: "gpu", error: null,
    },
    {
      family: "conv", name: "3x3 s1", shape: "[1, 5, 9, 11]", tolerance: { name: "dot-f16", abs: 0, rel: 0, arith: 0.002 },
      max_abs_err: 0.5, worst_ratio: 40, pass: false, seconds: 0.002, clock: "gpu", error: null,
    },
  ],
};

const timing = {
  model: "nekoray-xl-v0.7", adapter: "Test GPU", compute_path: "f16", clock: "gpu", width: 1024, height: 1024, batch: 2, capped: false,
  dispatch_overhead_ms: 0.004, unet_gflop: 13522.5, dispatches: 2120, step_seconds: 1.234, total_seconds: 3.1,
  families: [
    { family: "linear", shape: "8192x640 -> 5120 f16", timed_shape: "8192x640 -> 5120 f16", ms: 2.5, rate: 21000, unit: "GFLOP/s", calls: 743, dispatches: 743, work: 5000, step_ms: 300 },
    { family: "attn_self", shape: "b2 h10 q4096 k4096 d64 f16", timed_shape: "b1 h10 q64 k4096 d64 f16", ms: 12.25, rate: 7000, unit: "GFLOP/s", calls: 70, dispatches: 70, work: 6000, step_ms: 857 },
  ],
};

test("the page may send gpuCheck; the worker answers with progress and a result", () => {
  assert.deepEqual(check(TO_WORKER, { type: "gpuCheck" }), { type: "gpuCheck" });
  for (const phase of ["selfcheck", "timing"]) check(TO_PAGE, { type: "gpuCheckProgress", phase });
  check(TO_PAGE, { type: "gpuCheckResult", selfcheck, timing, timingError: null });
  check(TO_PAGE, { type: "gpuCheckResult", selfcheck, timing: null, timingError: "out of memory" });
  check(TO_PAGE, { type: "error", message: "busy: a generate is running (cancel it first)", during: "check", deviceLost: false });
});

test("malformed GPU-check messages are errors", () => {
  assert.throws(() => check(TO_PAGE, { type: "gpuCheckProgress", phase: "warmup" }), /phase "warmup"/);
  assert.throws(() => check(TO_PAGE, { type: "gpuCheckProgress" }), /lacks field "phase"/);
  assert.throws(() => check(TO_PAGE, { type: "gpuCheckResult", selfcheck, timing }), /lacks field "timingError"/);
  assert.throws(() => check(TO_PAGE, { type: "gpuCheckResult", selfcheck: {}, timing, timingError: null }), /not a self-check report/);
  assert.throws(() => check(TO_PAGE, { type: "gpuCheckResult", selfcheck, timing: { families: [] }, timingError: null }), /timing report/);
  assert.throws(() => check(TO_PAGE, { type: "gpuCheckResult", selfcheck, timing: null, timingError: null }), /timingError must say why/);
});

test("summaries and tables carry the real figures", () => {
  assert.equal(checkSummary(selfcheck), "2 checks, 1 failed, 2.3 s");
  const table = checkTable(selfcheck).split("\n");
  assert.equal(table.length, 3);
  assert.match(table[1], /^matmul\s+tiled f16 act\s+\[67, 129\] x \[65, 129\]\s+1\.50e-4\s+0\.120\s+1\.200\s+gpu\s+ok$/);
  assert.match(table[2], /^conv .* 40\.000 .*FAIL$/);
  assert.equal(estimateLine(timing), "estimated 1.23 s per UNet step at 1024x1024 (batch 2, CFG) of nekoray-xl-v0.7");
  const s = timingSummary(timing);
  assert.equal(s.kernels, "linear 2.50 ms · attn_self 12.3 ms");
  assert.equal(s.note, "");
  assert.match(timingSummary({ ...timing, capped: true }).note, /extrapolated/);
  const tt = timingTable(timing);
  assert.match(tt, /linear\s+8192x640 -> 5120 f16\s+\(same\)\s+2\.500\s+21000\.00 GFLOP\/s\s+743\s+300\.0/);
  assert.match(tt, /attn_self\s+b2 h10 q4096 k4096 d64 f16\s+b1 h10 q64 k4096 d64 f16/);
  assert.match(tt, /13523 GFLOP and 2120 dispatches per step/);
});

test("the plain-text report has the adapter, user agent, both tables and the estimate", () => {
  const info = { backend: "BrowserWebGpu", device_type: "Other", driver: "", driver_info: "", shader_f16: true, timestamp_query: false };
  const text = reportText({ selfcheck, timing, timingError: null }, { info, userAgent: "TestAgent/1.0" });
  assert.match(text, /^sdxl-web GPU check\nadapter: Test GPU\ncompute path: f16\n/);
  assert.match(text, /user agent: TestAgent\/1\.0/);
  assert.match(text, /shader-f16: yes, timestamps: no/);
  assert.match(text, /self-check: FAILED, 2 checks, 1 failed/);
  assert.ok(text.includes(checkTable(selfcheck)));
  assert.ok(text.includes(timingTable(timing)));
  assert.match(text, /estimated 1\.23 s per UNet step at 1024x1024/);
  const noTiming = reportText({ selfcheck: { ...selfcheck, passed: true, failures: 0 }, timing: null, timingError: "device too slow" });
  assert.match(noTiming, /self-check: PASSED/);
  assert.match(noTiming, /timing: not available \(device too slow\)/);
  assert.match(noTiming, /user agent: \?/);
});
