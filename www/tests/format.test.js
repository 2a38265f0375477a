import { test } from "node:test";
import assert from "node:assert/strict";
import { formatBytes, formatRate, formatDuration, progressText } from "../format.js";

test("formatBytes", () => {
  assert.equal(formatBytes(0), "0 B");
  assert.equal(formatBytes(999), "999 B");
  assert.equal(formatBytes(512_000), "512 KB");
  assert.equal(formatBytes(1_200_000_000), "1.20 GB");
  assert.equal(formatBytes(6_938_000_000), "6.94 GB");
  assert.equal(formatBytes(85_300_000), "85.3 MB");
  assert.equal(formatBytes(999_700), "1.00 MB");
  assert.equal(formatBytes(NaN), "?");
});

test("formatRate", () => {
  assert.equal(formatRate(85_300_000), "85.3 MB/s");
  assert.equal(formatRate(0), "0 B/s");
});

test("formatDuration", () => {
  assert.equal(formatDuration(42), "42 s");
  assert.equal(formatDuration(0.4), "0 s");
  assert.equal(formatDuration(67), "1 min 07 s");
  assert.equal(formatDuration(59.6), "1 min 00 s");
  assert.equal(formatDuration(7380), "2 h 03 min");
  assert.equal(formatDuration(null), "?");
  assert.equal(formatDuration(Infinity), "?");
});

test("progressText", () => {
  assert.equal(
    progressText({ loaded: 1_200_000_000, total: 6_940_000_000, rate: 85_300_000, eta: 67.3 }),
    "1.20 GB of 6.94 GB · 85.3 MB/s · 1 min 07 s left",
  );
  assert.equal(progressText({ loaded: 512_000, total: null, rate: 0, eta: null }), "512 KB");
  assert.equal(progressText({ loaded: 10, total: 10, rate: 5, eta: 0 }), "10 B of 10 B · 5 B/s");
});
