// The init image (drop, paste, pick, or "send to img2img / inpaint" from the gallery), the
// inpainting mask painted over it with Pointer Events (mouse, pen and touch), the strength and
// the hires-fix section. app.js reads the state through imageSettings() / imageInputs().
//
// For tests and embedding pages: document.body.dataset.initImage is "WxH" once an image is
// shown; window.sdxlImages.maskPng() is the painted mask as a PNG data URL (white = repaint).
import { createMask, fillMask, invertMask, maskCoverage, maskToRgba, renderOverlay, strokeSegment, toImagePoint } from "./mask.js";
import { IMAGE_DEFAULTS, sizeForImage, sniff, stepsRun } from "./images.js";
import { $ } from "./dom.js";

const OVERLAY = [255, 40, 80, 140];

const state = {
  init: null, // {bytes} | {width, height, rgba}: what the engine gets
  width: 0,
  height: 0,
  mask: null, // mask.js mask at the image's size
  overlay: null, // ImageData of the mask canvas
  stroke: null, // {id, x, y, value}
};
let hooks = { onSize: () => {}, onError: () => {}, steps: () => 25 };

/** The image fields of the settings (the hires fix is off while an init image is set). */
export function imageSettings() {
  const hires = $("hires").checked && !state.init;
  const num = (id, dflt) => {
    const v = Number($(id).value);
    return $(id).value.trim() === "" ? NaN : Number.isFinite(v) ? v : dflt;
  };
  return {
    strength: num("strength", IMAGE_DEFAULTS.strength),
    hires_scale: hires ? num("hires-scale", NaN) : 0,
    hires_strength: num("hires-strength", IMAGE_DEFAULTS.hires_strength),
    hires_steps: num("hires-steps", 0),
  };
}

/** The current init image and mask (null when unset or inpainting is off). */
export function imageInputs() {
  const inpaint = Boolean(state.init && state.mask && $("inpaint").checked);
  const mask = inpaint ? { width: state.mask.width, height: state.mask.height, rgba: maskToRgba(state.mask) } : null;
  return {
    init: state.init,
    mask,
    flags: { init: Boolean(state.init), mask: inpaint, maskEmpty: inpaint && maskCoverage(state.mask) === 0 },
  };
}

/** Fill the image fields from a result's settings ("Use settings"). */
export function setImageSettings(s) {
  if (typeof s.strength === "number") $("strength").value = String(s.strength);
  if (typeof s.hires_scale === "number") {
    $("hires").checked = s.hires_scale !== 0;
    if (s.hires_scale) $("hires-scale").value = String(s.hires_scale);
  }
  if (typeof s.hires_strength === "number") $("hires-strength").value = String(s.hires_strength);
  if (typeof s.hires_steps === "number") $("hires-steps").value = String(s.hires_steps);
  sync();
}

/** Make a PNG (a gallery result) the init image; with `inpaint`, turn mask painting on. */
export async function useImage(png, name, inpaint) {
  await setImage(new Blob([png], { type: "image/png" }), name);
  $("inpaint").checked = Boolean(inpaint);
  sync();
  $("image-section").scrollIntoView({ block: "nearest", behavior: "smooth" });
}

async function setImage(blob, name) {
  const bytes = new Uint8Array(await blob.arrayBuffer());
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob);
  } catch (e) {
    throw new Error(`${name || "image"}: the browser cannot read it as an image (${e.message || e})`);
  }
  const { width, height } = bitmap;
  const canvas = $("init-canvas");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  // PNG and JPEG go to the engine as the file (decoded as the CLI decodes it); other formats as
  // the pixels the browser decoded.
  state.init = sniff(bytes) ? { bytes } : { width, height, rgba: new Uint8Array(ctx.getImageData(0, 0, width, height).data.buffer) };
  state.width = width;
  state.height = height;
  state.mask = createMask(width, height);
  const mc = $("mask-canvas");
  mc.width = width;
  mc.height = height;
  state.overlay = new ImageData(width, height);
  $("brush").max = String(Math.max(8, Math.ceil(Math.max(width, height) / 2)));
  $("brush").value = String(Math.max(1, Math.round(Math.max(width, height) / 16)));
  redrawMask();
  document.body.dataset.initImage = `${width}x${height}`;
  hooks.onSize(...sizeForImage(width, height));
  sync();
}

function clearImage() {
  state.init = null;
  state.mask = null;
  state.overlay = null;
  delete document.body.dataset.initImage;
  $("inpaint").checked = false;
  sync();
}

function redrawMask(rect) {
  if (!state.mask) return;
  renderOverlay(state.mask, state.overlay.data, OVERLAY, rect);
  const ctx = $("mask-canvas").getContext("2d");
  if (rect) ctx.putImageData(state.overlay, 0, 0, rect.x, rect.y, rect.w, rect.h);
  else ctx.putImageData(state.overlay, 0, 0);
  const c = maskCoverage(state.mask);
  $("mask-coverage").textContent = `${(c * 100).toFixed(c && c < 0.01 ? 2 : 0)}% to repaint`;
}

/** Enable, show and label what the current state allows. */
function sync() {
  const has = Boolean(state.init);
  $("image-stage").hidden = !has;
  $("image-hint").hidden = has;
  $("image-clear").disabled = !has;
  $("inpaint").disabled = !has;
  const painting = has && $("inpaint").checked;
  $("mask-tools").hidden = !painting;
  $("mask-canvas").hidden = !painting;
  $("image-stage").classList.toggle("painting", painting);
  $("strength").disabled = !has;
  const s = Number($("strength").value);
  const steps = hooks.steps();
  $("strength-out").textContent = Number.isInteger(steps) && steps > 0 ? `${s.toFixed(2)} → ${stepsRun(steps, s)} of ${steps} steps` : s.toFixed(2);
  $("brush-out").textContent = $("brush").value;
  const hs = Number($("hires-strength").value);
  $("hires-strength-out").textContent = hs.toFixed(2);
  $("hires").disabled = has;
  for (const id of ["hires-scale", "hires-steps", "hires-strength"]) $(id).disabled = has || !$("hires").checked;
  $("hires-note").textContent = has ? "off while an init image is set (set the size instead)" : "";
}

// ---------------------------------------------------------------------------------------------
// Mask painting: Pointer Events, so mouse, pen and touch all paint; the pen's eraser end and
// the right mouse button erase.

function pointerPoint(ev) {
  return toImagePoint(ev.clientX, ev.clientY, $("mask-canvas").getBoundingClientRect(), state.width, state.height);
}

function paintTo(ev) {
  const s = state.stroke;
  const p = pointerPoint(ev);
  const rect = strokeSegment(state.mask, s.x, s.y, p.x, p.y, Number($("brush").value) / 2, s.value);
  s.x = p.x;
  s.y = p.y;
  if (rect) redrawMask(rect);
}

function wirePainting() {
  const mc = $("mask-canvas");
  mc.addEventListener("pointerdown", (ev) => {
    if (!state.mask || state.stroke) return;
    if (ev.pointerType === "mouse" && ev.button !== 0 && ev.button !== 2) return;
    ev.preventDefault();
    try {
      mc.setPointerCapture(ev.pointerId);
    } catch {
      // a synthetic or already-released pointer: painting works without capture
    }
    const erase = $("erase").checked || ev.button === 2 || ev.button === 5 || (ev.buttons & 32) !== 0;
    const p = pointerPoint(ev);
    state.stroke = { id: ev.pointerId, x: p.x, y: p.y, value: erase ? 0 : 255 };
    paintTo(ev);
  });
  mc.addEventListener("pointermove", (ev) => {
    if (!state.stroke || ev.pointerId !== state.stroke.id) return;
    ev.preventDefault();
    const events = typeof ev.getCoalescedEvents === "function" ? ev.getCoalescedEvents() : [];
    for (const e of events.length ? events : [ev]) paintTo(e);
  });
  const end = (ev) => {
    if (!state.stroke || ev.pointerId !== state.stroke.id) return;
    state.stroke = null;
  };
  mc.addEventListener("pointerup", end);
  mc.addEventListener("pointercancel", end);
  mc.addEventListener("lostpointercapture", end);
  mc.addEventListener("contextmenu", (ev) => ev.preventDefault());
  $("mask-clear").addEventListener("click", () => {
    if (!state.mask) return;
    fillMask(state.mask, 0);
    redrawMask();
  });
  $("mask-invert").addEventListener("click", () => {
    if (!state.mask) return;
    invertMask(state.mask);
    redrawMask();
  });
}

// ---------------------------------------------------------------------------------------------
// Image sources: drop, paste, pick.

function load(blob, name) {
  if (!blob) return;
  if (blob.type && !blob.type.startsWith("image/")) {
    hooks.onError(`${name || "file"}: not an image (${blob.type})`);
    return;
  }
  setImage(blob, name).catch((e) => hooks.onError(e.message || String(e)));
}

function wireSources() {
  $("image-file").addEventListener("change", () => {
    const f = $("image-file").files[0];
    $("image-file").value = "";
    if (f) load(f, f.name);
  });
  $("image-clear").addEventListener("click", clearImage);
  const zone = $("image-section");
  zone.addEventListener("dragover", (e) => {
    if (e.dataTransfer && [...e.dataTransfer.types].includes("Files")) {
      e.preventDefault();
      $("image-drop").classList.add("over");
    }
  });
  zone.addEventListener("dragleave", () => $("image-drop").classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    $("image-drop").classList.remove("over");
    const f = e.dataTransfer && e.dataTransfer.files[0];
    if (!f) return;
    e.preventDefault();
    load(f, f.name);
  });
  document.addEventListener("paste", (e) => {
    const items = e.clipboardData ? [...e.clipboardData.items] : [];
    const item = items.find((i) => i.kind === "file" && i.type.startsWith("image/"));
    if (!item) return; // text pastes into the prompt as usual
    e.preventDefault();
    load(item.getAsFile(), "pasted image");
  });
}

/**
 * Wire the section. `onSize(w, h)` sets the form's size for a new init image; `onError(message)`
 * reports a bad image; `steps()` reads the form's step count (for the strength label).
 */
export function setupImageInput(h) {
  hooks = { ...hooks, ...h };
  wireSources();
  wirePainting();
  for (const id of ["strength", "brush", "hires-strength", "hires", "inpaint"]) {
    $(id).addEventListener("input", sync);
    $(id).addEventListener("change", sync);
  }
  $("steps").addEventListener("input", sync);
  window.sdxlImages = {
    maskPng() {
      if (!state.mask) return null;
      const c = document.createElement("canvas");
      c.width = state.mask.width;
      c.height = state.mask.height;
      c.getContext("2d").putImageData(new ImageData(maskToRgba(state.mask), c.width, c.height), 0, 0);
      return c.toDataURL("image/png");
    },
    coverage: () => (state.mask ? maskCoverage(state.mask) : 0),
  };
  sync();
}
