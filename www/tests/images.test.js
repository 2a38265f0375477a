import { test } from "node:test";
import assert from "node:assert/strict";
import {
  stepsRun, sniff, sizeForImage, validateImageSettings, hiresSize, describeRun, checkInputImage, imagesMessage, applyImages,
} from "../images.js";

const base = { width: 64, height: 64, steps: 5, strength: 0.75, hires_scale: 0, hires_strength: 0.5, hires_steps: 0 };

test("strength runs int(steps × strength) steps, as diffusers", () => {
  assert.equal(stepsRun(25, 0.75), 18);
  assert.equal(stepsRun(5, 0.85), 4);
  assert.equal(stepsRun(5, 1), 5);
  assert.equal(stepsRun(10, 0.05), 0);
});

test("file signatures", () => {
  assert.equal(sniff(new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0])), "png");
  assert.equal(sniff(new Uint8Array([0xff, 0xd8, 0xff, 0xe0])), "jpeg");
  assert.equal(sniff(new Uint8Array([0x52, 0x49, 0x46, 0x46])), null);
  assert.equal(sniff(new Uint8Array([])), null);
});

test("an init image's size: its own rounded down to 8, else the nearest-aspect bucket", () => {
  assert.deepEqual(sizeForImage(64, 64), [64, 64]);
  assert.deepEqual(sizeForImage(1023, 771), [1016, 768]);
  assert.deepEqual(sizeForImage(4000, 3000), [1152, 896]);
  assert.deepEqual(sizeForImage(3000, 4000), [896, 1152]);
  assert.deepEqual(sizeForImage(30, 30), [1024, 1024]);
});

test("image settings are validated with clear messages", () => {
  assert.deepEqual(validateImageSettings(base), []);
  assert.deepEqual(validateImageSettings(base, { init: true }), []);
  assert.deepEqual(validateImageSettings({ ...base, strength: 2 }), [], "strength only matters with an init image");
  assert.match(validateImageSettings({ ...base, strength: 0 }, { init: true })[0], /strength 0: must be above 0/);
  assert.match(validateImageSettings({ ...base, strength: 1.5 }, { init: true })[0], /at most 1/);
  assert.match(validateImageSettings({ ...base, strength: 0.1 }, { init: true })[0], /runs no step/);
  assert.match(validateImageSettings(base, { mask: true }).join(), /needs an init image/);
  assert.match(validateImageSettings(base, { init: true, mask: true, maskEmpty: true })[0], /mask is empty/);
  const hires = { ...base, hires_scale: 2 };
  assert.deepEqual(validateImageSettings(hires), []);
  assert.match(validateImageSettings(hires, { init: true })[0], /text-to-image/);
  assert.match(validateImageSettings({ ...hires, hires_scale: 5 })[0], /hires scale 5: must be from 1 to 4/);
  assert.deepEqual(validateImageSettings({ ...hires, width: 1024, height: 1024 }), []);
  assert.match(validateImageSettings({ ...hires, width: 1536, hires_scale: 1.5 })[0], /2304×96 is outside/);
  assert.match(validateImageSettings({ ...hires, hires_strength: 0 })[0], /hires strength 0/);
  assert.match(validateImageSettings({ ...hires, hires_steps: 1.5 })[0], /hires steps 1.5/);
});

test("hires size and run descriptions", () => {
  assert.deepEqual(hiresSize({ width: 64, height: 72, hires_scale: 1.5 }), [96, 104]);
  assert.equal(describeRun(base), "text-to-image");
  assert.equal(describeRun({ ...base, strength: 0.85 }, { init: true, mask: true }), "inpaint · strength 0.85 (4 of 5 steps)");
  assert.equal(describeRun(base, { init: true }), "img2img · strength 0.75 (3 of 5 steps)");
  assert.equal(describeRun({ ...base, hires_scale: 2 }), "hires fix ×2 → 128×128 · strength 0.5 (2 of 5 steps)");
});

test("input images are checked", () => {
  checkInputImage(null, "x");
  checkInputImage({ bytes: new Uint8Array(3) }, "x");
  checkInputImage({ width: 1, height: 1, rgba: new Uint8ClampedArray(4) }, "x");
  assert.throws(() => checkInputImage({ bytes: [1, 2] }, "init image"), /init image: bytes must be a Uint8Array/);
  assert.throws(() => checkInputImage({ width: 2, height: 2, rgba: new Uint8Array(4) }, "mask"), /mask: 4 RGBA bytes do not make a 2x2 image/);
  assert.throws(() => checkInputImage({ width: 0, height: 2, rgba: new Uint8Array(0) }, "mask"), /positive integers/);
  assert.throws(() => checkInputImage(7, "mask"), /not an image object/);
});

test("images are copied for transfer and handed to the engine's setters", () => {
  const init = { bytes: new Uint8Array([1, 2, 3]) };
  const mask = { width: 1, height: 1, rgba: new Uint8ClampedArray([9, 9, 9, 255]) };
  const { images, transfer } = imagesMessage(init, mask);
  assert.notEqual(images.init.bytes.buffer, init.bytes.buffer, "the page keeps its own copy");
  assert.deepEqual([...images.init.bytes], [1, 2, 3]);
  assert.ok(images.mask.rgba instanceof Uint8Array);
  assert.equal(transfer.length, 2);
  assert.deepEqual(imagesMessage(null, null), { images: { init: null, mask: null }, transfer: [] });
  // structuredClone with transfer, as postMessage does it.
  const sent = structuredClone(images, { transfer });
  assert.equal(images.init.bytes.byteLength, 0, "transferred, not copied");
  const calls = [];
  const engine = { setInitImage: (...a) => calls.push(["init", ...a]), setMask: (...a) => calls.push(["mask", ...a]) };
  applyImages(engine, sent);
  assert.deepEqual(calls[0], ["init", sent.init.bytes]);
  assert.deepEqual(calls[1].slice(2), [1, 1]);
  assert.deepEqual([...calls[1][1]], [9, 9, 9, 255]);
  calls.length = 0;
  applyImages(engine, undefined);
  assert.deepEqual(calls, [["init", undefined], ["mask", undefined]]);
  assert.throws(() => applyImages(engine, { init: { bytes: "x" } }), /init image: bytes/);
});
