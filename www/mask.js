// Inpainting masks: one byte per pixel at the init image's size, 255 = repaint (white in the
// exported image), 0 = keep. Brush strokes are rasterised here, hard-edged (no antialiasing), so
// what the page shows is exactly what the engine binarises. Pure; no DOM.

/** An empty (all-keep) mask of `width`×`height`. */
export function createMask(width, height) {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width <= 0 || height <= 0) {
    throw new Error(`mask size ${width}x${height}: must be positive integers`);
  }
  return { width, height, data: new Uint8Array(width * height) };
}

/**
 * Paint a stroke segment (x0, y0) → (x1, y1) with a round brush of `radius` px (image pixels;
 * a single point when both ends are equal): every pixel whose centre lies within `radius` of the
 * segment becomes `value` (255 paint, 0 erase). Returns the changed area {x, y, w, h} (clipped to
 * the mask) or null when the stroke misses it.
 */
export function strokeSegment(mask, x0, y0, x1, y1, radius, value) {
  const { width, height, data } = mask;
  if (![x0, y0, x1, y1, radius].every(Number.isFinite) || radius <= 0) return null;
  const left = Math.max(0, Math.floor(Math.min(x0, x1) - radius));
  const top = Math.max(0, Math.floor(Math.min(y0, y1) - radius));
  const right = Math.min(width, Math.ceil(Math.max(x0, x1) + radius) + 1);
  const bottom = Math.min(height, Math.ceil(Math.max(y0, y1) + radius) + 1);
  if (left >= right || top >= bottom) return null;
  const dx = x1 - x0;
  const dy = y1 - y0;
  const len2 = dx * dx + dy * dy;
  const r2 = radius * radius;
  const v = value ? 255 : 0;
  for (let y = top; y < bottom; y++) {
    const py = y + 0.5;
    for (let x = left; x < right; x++) {
      const px = x + 0.5;
      // The closest point of the segment to the pixel centre.
      const t = len2 > 0 ? Math.min(1, Math.max(0, ((px - x0) * dx + (py - y0) * dy) / len2)) : 0;
      const ex = px - (x0 + t * dx);
      const ey = py - (y0 + t * dy);
      if (ex * ex + ey * ey <= r2) data[y * width + x] = v;
    }
  }
  return { x: left, y: top, w: right - left, h: bottom - top };
}

/** Swap repaint and keep everywhere. */
export function invertMask(mask) {
  const d = mask.data;
  for (let i = 0; i < d.length; i++) d[i] = 255 - d[i];
}

/** Set every pixel to `value` (0: keep everything). */
export function fillMask(mask, value = 0) {
  mask.data.fill(value ? 255 : 0);
}

/** The share of pixels marked for repainting, 0 to 1. */
export function maskCoverage(mask) {
  let n = 0;
  for (const v of mask.data) if (v >= 128) n++;
  return mask.data.length ? n / mask.data.length : 0;
}

/** The mask as opaque RGBA (white = repaint, black = keep): what the engine and the CLI read. */
export function maskToRgba(mask) {
  const out = new Uint8ClampedArray(mask.data.length * 4);
  for (let i = 0; i < mask.data.length; i++) {
    const v = mask.data[i];
    out[i * 4] = v;
    out[i * 4 + 1] = v;
    out[i * 4 + 2] = v;
    out[i * 4 + 3] = 255;
  }
  return out;
}

/**
 * A mask from RGBA pixels (a loaded mask image): grayscale ≥ 0.5 (PIL's convert("L") luma, as
 * the engine binarises it) = repaint.
 */
export function maskFromRgba(rgba, width, height) {
  const mask = createMask(width, height);
  if (rgba.length !== width * height * 4) {
    throw new Error(`mask: ${rgba.length} RGBA bytes do not make a ${width}x${height} image`);
  }
  for (let i = 0; i < mask.data.length; i++) {
    const l = (rgba[i * 4] * 19595 + rgba[i * 4 + 1] * 38470 + rgba[i * 4 + 2] * 7471 + 0x8000) >> 16;
    mask.data[i] = l / 255 >= 0.5 ? 255 : 0;
  }
  return mask;
}

/**
 * Update `rgba` (the overlay's ImageData.data, mask-sized) inside `rect` (default: everywhere):
 * `color` [r, g, b, a] where the mask paints, transparent elsewhere.
 */
export function renderOverlay(mask, rgba, color, rect) {
  const { x, y, w, h } = rect || { x: 0, y: 0, w: mask.width, h: mask.height };
  for (let yy = y; yy < y + h; yy++) {
    for (let xx = x; xx < x + w; xx++) {
      const i = yy * mask.width + xx;
      const on = mask.data[i] >= 128;
      rgba[i * 4] = on ? color[0] : 0;
      rgba[i * 4 + 1] = on ? color[1] : 0;
      rgba[i * 4 + 2] = on ? color[2] : 0;
      rgba[i * 4 + 3] = on ? color[3] : 0;
    }
  }
}

/** A pointer's client position → image pixel coordinates, given the element's client rect. */
export function toImagePoint(clientX, clientY, rect, width, height) {
  return {
    x: ((clientX - rect.left) * width) / rect.width,
    y: ((clientY - rect.top) * height) / rect.height,
  };
}
