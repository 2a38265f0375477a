import { test } from "node:test";
import assert from "node:assert/strict";
import {
  createMask, strokeSegment, invertMask, fillMask, maskCoverage, maskToRgba, maskFromRgba, renderOverlay, toImagePoint,
} from "../mask.js";

const rows = (m) => Array.from({ length: m.height }, (_, y) => Array.from(m.data.slice(y * m.width, (y + 1) * m.width), (v) => (v ? "#" : ".")).join(""));

test("a dot paints the pixels whose centres are within the radius", () => {
  const m = createMask(6, 6);
  const r = strokeSegment(m, 3, 3, 3, 3, 1.6, 255);
  assert.deepEqual(rows(m), ["......", "..##..", ".####.", ".####.", "..##..", "......"]);
  assert.deepEqual(r, { x: 1, y: 1, w: 5, h: 5 });
  assert.equal(maskCoverage(m), 12 / 36);
});

test("a segment paints a gap-free capsule and erasing removes it", () => {
  const m = createMask(10, 4);
  strokeSegment(m, 1, 2, 9, 2, 1, 255);
  assert.deepEqual(rows(m), ["..........", "##########", "##########", ".........."]);
  strokeSegment(m, 4, 2, 6, 2, 1, 0);
  assert.deepEqual(rows(m)[1], "###....###");
});

test("strokes are clipped to the mask; misses and bad input change nothing", () => {
  const m = createMask(4, 4);
  assert.equal(strokeSegment(m, -10, -10, -8, -8, 1, 255), null);
  assert.equal(strokeSegment(m, 1, 1, 2, 2, 0, 255), null);
  assert.equal(strokeSegment(m, NaN, 1, 2, 2, 1, 255), null);
  assert.equal(maskCoverage(m), 0);
  const r = strokeSegment(m, 0, 0, 0, 0, 100, 255);
  assert.deepEqual(r, { x: 0, y: 0, w: 4, h: 4 });
  assert.equal(maskCoverage(m), 1);
  assert.throws(() => createMask(0, 4), /must be positive integers/);
});

test("invert, clear, RGBA export and import round-trip", () => {
  const m = createMask(3, 1);
  m.data.set([255, 0, 255]);
  invertMask(m);
  assert.deepEqual([...m.data], [0, 255, 0]);
  const rgba = maskToRgba(m);
  assert.deepEqual([...rgba], [0, 0, 0, 255, 255, 255, 255, 255, 0, 0, 0, 255]);
  assert.deepEqual([...maskFromRgba(rgba, 3, 1).data], [...m.data]);
  // Luma at PIL's 0.5 threshold: 127 keeps, 128 repaints; colour counts by luma.
  const g = maskFromRgba(new Uint8Array([127, 127, 127, 255, 128, 128, 128, 255, 255, 0, 0, 255]), 3, 1);
  assert.deepEqual([...g.data], [0, 255, 0]);
  assert.throws(() => maskFromRgba(new Uint8Array(5), 3, 1), /do not make a 3x1 image/);
  fillMask(m, 0);
  assert.equal(maskCoverage(m), 0);
  fillMask(m, 1);
  assert.equal(maskCoverage(m), 1);
});

test("overlay rendering updates only the given rectangle", () => {
  const m = createMask(2, 2);
  m.data.set([255, 0, 0, 255]);
  const px = new Uint8ClampedArray(16).fill(7);
  renderOverlay(m, px, [1, 2, 3, 4], { x: 0, y: 0, w: 1, h: 1 });
  assert.deepEqual([...px.slice(0, 8)], [1, 2, 3, 4, 7, 7, 7, 7]);
  renderOverlay(m, px, [1, 2, 3, 4]);
  assert.deepEqual([...px], [1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
});

test("client coordinates map to image pixels through the displayed size", () => {
  const rect = { left: 10, top: 20, width: 200, height: 100 };
  assert.deepEqual(toImagePoint(110, 70, rect, 64, 32), { x: 32, y: 16 });
  assert.deepEqual(toImagePoint(10, 20, rect, 64, 32), { x: 0, y: 0 });
});
