// img2img / inpainting / hires-fix parameters and the images' trip to the engine. Pure; no DOM.
//
// An input image travels as {bytes: Uint8Array} (a PNG or JPEG file, decoded by the engine as the
// CLI decodes it) or {width, height, rgba: Uint8Array|Uint8ClampedArray} (pixels of a format the
// engine does not read, or a painted mask). The "generate" message carries
// images = {init: InputImage|null, mask: InputImage|null}; the buffers are transferred.
import { BUCKETS, LIMITS } from "./params.js";

export const IMAGE_DEFAULTS = Object.freeze({ strength: 0.75, hires_scale: 0, hires_strength: 0.5, hires_steps: 0 });
export const HIRES_SCALE_MAX = 4;

const isInt = (v) => Number.isInteger(v);
const unit = (v) => typeof v === "number" && Number.isFinite(v) && v > 0 && v <= 1;

/** diffusers' `int(steps × strength)` (at most steps): the denoising steps img2img runs. */
export function stepsRun(steps, strength) {
  return Math.min(steps, Math.floor(steps * strength));
}

/** The file's kind from its signature: "png", "jpeg" (the engine reads these) or null. */
export function sniff(bytes) {
  const b = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const png = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  if (b.length >= 8 && png.every((v, i) => b[i] === v)) return "png";
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return "jpeg";
  return null;
}

/**
 * The generation size for an init image of w×h: its own size rounded down to a multiple of 8
 * (what the engine does with width = height = 0) when that is a valid size, else the resolution
 * bucket of the nearest aspect ratio (the engine resizes the image to it).
 */
export function sizeForImage(w, h) {
  const m = LIMITS.sideMultiple;
  const [rw, rh] = [w - (w % m), h - (h % m)];
  const ok = (v) => v >= LIMITS.sideMin && v <= LIMITS.sideMax;
  if (ok(rw) && ok(rh)) return [rw, rh];
  const r = Math.log(w / h);
  let best = BUCKETS[0];
  for (const b of BUCKETS) if (Math.abs(Math.log(b[0] / b[1]) - r) < Math.abs(Math.log(best[0] / best[1]) - r)) best = b;
  return [...best];
}

/** Every problem with the image fields of `s` given which images are set, as sentences. */
export function validateImageSettings(s, { init = false, mask = false, maskEmpty = false } = {}) {
  const errors = [];
  if (init && !unit(s.strength)) errors.push(`strength ${s.strength}: must be above 0 and at most 1`);
  if (init && unit(s.strength) && stepsRun(s.steps, s.strength) < 1) {
    errors.push(`strength ${s.strength} × ${s.steps} steps runs no step (int(steps × strength) = 0): raise either`);
  }
  if (mask && !init) errors.push("a mask needs an init image to inpaint");
  if (mask && maskEmpty) errors.push("the mask is empty: paint the area to repaint, or turn inpainting off");
  if (s.hires_scale !== 0) {
    if (init) errors.push("the hires fix applies to text-to-image: remove the init image or turn the hires fix off");
    if (!(typeof s.hires_scale === "number" && s.hires_scale >= 1 && s.hires_scale <= HIRES_SCALE_MAX)) {
      errors.push(`hires scale ${s.hires_scale}: must be from 1 to ${HIRES_SCALE_MAX}`);
    } else {
      const [w, h] = hiresSize(s);
      if (w > LIMITS.sideMax || h > LIMITS.sideMax || w < LIMITS.sideMin || h < LIMITS.sideMin) {
        errors.push(`hires fix: ${s.width}×${s.height} × ${s.hires_scale} = ${w}×${h} is outside ${LIMITS.sideMin} to ${LIMITS.sideMax} px a side`);
      }
    }
    if (!unit(s.hires_strength)) errors.push(`hires strength ${s.hires_strength}: must be above 0 and at most 1`);
    if (!(isInt(s.hires_steps) && s.hires_steps >= 0 && s.hires_steps <= LIMITS.stepsMax)) {
      errors.push(`hires steps ${s.hires_steps}: must be an integer from 0 (= steps) to ${LIMITS.stepsMax}`);
    }
  }
  return errors;
}

/** The hires pass' size (A1111: int(side × scale) rounded down to a multiple of 8). */
export function hiresSize(s) {
  const f = (v) => Math.floor(Math.floor(v * s.hires_scale) / LIMITS.sideMultiple) * LIMITS.sideMultiple;
  return [f(s.width), f(s.height)];
}

/** One line saying how a result was made: "inpaint · strength 0.85 (4 of 5 steps)" etc. */
export function describeRun(s, { init = false, mask = false } = {}) {
  if (init) {
    const kind = mask ? "inpaint" : "img2img";
    return `${kind} · strength ${s.strength} (${stepsRun(s.steps, s.strength)} of ${s.steps} steps)`;
  }
  if (s.hires_scale) {
    const steps = s.hires_steps || s.steps;
    const [w, h] = hiresSize(s);
    return `hires fix ×${s.hires_scale} → ${w}×${h} · strength ${s.hires_strength} (${stepsRun(steps, s.hires_strength)} of ${steps} steps)`;
  }
  return "text-to-image";
}

/** Throws a clear error unless `img` is null or a valid input image (see the top of the file). */
export function checkInputImage(img, what) {
  if (img === null || img === undefined) return;
  if (typeof img !== "object") throw new Error(`${what}: not an image object`);
  if ("bytes" in img) {
    if (!(img.bytes instanceof Uint8Array)) throw new Error(`${what}: bytes must be a Uint8Array`);
    return;
  }
  const { width, height, rgba } = img;
  if (!isInt(width) || !isInt(height) || width <= 0 || height <= 0) throw new Error(`${what}: width and height must be positive integers`);
  if (!(rgba instanceof Uint8Array || rgba instanceof Uint8ClampedArray)) throw new Error(`${what}: rgba must be a Uint8Array`);
  if (rgba.length !== width * height * 4) throw new Error(`${what}: ${rgba.length} RGBA bytes do not make a ${width}x${height} image`);
}

/** The "generate" message's `images` (copies, so the page keeps its own) and their transfer list. */
export function imagesMessage(init, mask) {
  const copy = (img) => {
    if (!img) return null;
    if (img.bytes) return { bytes: new Uint8Array(img.bytes) };
    return { width: img.width, height: img.height, rgba: new Uint8Array(img.rgba) };
  };
  const images = { init: copy(init), mask: copy(mask) };
  const transfer = [images.init, images.mask].filter(Boolean).map((i) => (i.bytes || i.rgba).buffer);
  return { images, transfer };
}

/** Hand a message's images to the engine (`setInitImage` / `setMask`); null clears. */
export function applyImages(engine, images) {
  const { init = null, mask = null } = images || {};
  checkInputImage(init, "init image");
  checkInputImage(mask, "mask");
  const args = (img) => (!img ? [undefined] : img.bytes ? [img.bytes] : [new Uint8Array(img.rgba.buffer, img.rgba.byteOffset, img.rgba.length), img.width, img.height]);
  engine.setInitImage(...args(init));
  engine.setMask(...args(mask));
}
