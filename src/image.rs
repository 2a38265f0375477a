//! Input images for img2img and inpainting: decoding (PNG, JPEG), and the preprocessing of
//! diffusers' `VaeImageProcessor` on PIL images, reproduced exactly: `Image.resize(…, LANCZOS)`
//! (Pillow's fixed-point two-pass resampler), `convert("L")` (ITU-R 601-2 luma in 16.16 fixed
//! point), `/ 255` in f32, then `2x − 1` (images) or binarisation at 0.5 (masks).

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The largest side accepted from a file (a decompression bomb guard; generation sizes are far
/// smaller and the image is resized to them).
pub const MAX_INPUT_SIDE: usize = 16384;

/// An image as the settings carry it: encoded file bytes (PNG or JPEG, told apart by their
/// signature) or raw RGBA pixels (a browser canvas' `ImageData`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum InputImage {
    Rgba { width: usize, height: usize, rgba: Vec<u8> },
    Encoded { bytes: Vec<u8> },
}

/// 8-bit pixels, interleaved: 1 channel (PIL mode "L") or 3 ("RGB").
#[derive(Clone, Debug, PartialEq)]
pub struct Pixels {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<u8>,
}

impl InputImage {
    /// Decoded pixels, `what` naming the input in errors. Alpha is dropped (as PIL's
    /// `convert("RGB")`, i.e. not composited); grayscale stays 1 channel; palettes are expanded;
    /// 16-bit samples keep their high byte (as PIL reads 16-bit PNGs into 8-bit modes).
    pub fn decode(&self, what: &str) -> Result<Pixels> {
        let p = match self {
            InputImage::Rgba { width, height, rgba } => {
                let n = width.checked_mul(*height).and_then(|n| n.checked_mul(4));
                if n != Some(rgba.len()) || *width == 0 || *height == 0 {
                    return Err(Error::Input(format!(
                        "{what}: {} RGBA bytes do not make a {width}x{height} image ({width}·{height}·4 expected)",
                        rgba.len()
                    )));
                }
                let data = rgba.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
                Pixels { width: *width, height: *height, channels: 3, data }
            }
            InputImage::Encoded { bytes } => decode_file(bytes, what)?,
        };
        if p.width > MAX_INPUT_SIDE || p.height > MAX_INPUT_SIDE {
            return Err(Error::Input(format!(
                "{what}: {}x{} is larger than {MAX_INPUT_SIDE} px on a side",
                p.width, p.height
            )));
        }
        Ok(p)
    }
}

/// PNG or JPEG bytes → pixels (see [`InputImage::decode`]).
pub fn decode_file(bytes: &[u8], what: &str) -> Result<Pixels> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        decode_png(bytes, what)
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        decode_jpeg(bytes, what)
    } else {
        Err(Error::Input(format!("{what}: not a PNG or JPEG file ({} bytes, unknown signature)", bytes.len())))
    }
}

fn decode_png(bytes: &[u8], what: &str) -> Result<Pixels> {
    let err = |e: png::DecodingError| Error::Input(format!("{what}: unreadable PNG ({e})"));
    let mut dec = png::Decoder::new(std::io::Cursor::new(bytes));
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = dec.read_info().map_err(err)?;
    let (w, h) = (reader.info().width as usize, reader.info().height as usize);
    if w > MAX_INPUT_SIDE || h > MAX_INPUT_SIDE {
        return Err(Error::Input(format!("{what}: {w}x{h} is larger than {MAX_INPUT_SIDE} px on a side")));
    }
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| Error::Input(format!("{what}: PNG of {w}x{h} is too large to decode")))?;
    let mut buf = vec![0u8; size];
    let frame = reader.next_frame(&mut buf).map_err(err)?;
    buf.truncate(frame.buffer_size());
    let src_ch = match frame.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => {
            return Err(Error::Input(format!("{what}: palette PNG was not expanded")));
        }
    };
    let line = frame.line_size;
    let out_ch = if src_ch <= 2 { 1 } else { 3 };
    let mut data = Vec::with_capacity(w * h * out_ch);
    for y in 0..h {
        let row = &buf[y * line..][..w * src_ch];
        for px in row.chunks_exact(src_ch) {
            data.extend_from_slice(&px[..out_ch]);
        }
    }
    Ok(Pixels { width: w, height: h, channels: out_ch, data })
}

fn decode_jpeg(bytes: &[u8], what: &str) -> Result<Pixels> {
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;
    let opts = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(MAX_INPUT_SIDE)
        .set_max_height(MAX_INPUT_SIDE);
    let mut dec = zune_jpeg::JpegDecoder::new_with_options(bytes, opts);
    let err = |e: zune_jpeg::errors::DecodeErrors| Error::Input(format!("{what}: unreadable JPEG ({e})"));
    dec.decode_headers().map_err(err)?;
    let (w, h) = dec.dimensions().unwrap_or((0, 0));
    if w == 0 || h == 0 {
        return Err(Error::Input(format!("{what}: JPEG without a size")));
    }
    let data = dec.decode().map_err(err)?;
    if data.len() != w * h * 3 {
        return Err(Error::Input(format!("{what}: JPEG decoded to {} bytes, not {w}x{h} RGB", data.len())));
    }
    Ok(Pixels { width: w, height: h, channels: 3, data })
}

impl Pixels {
    /// PIL `convert("L")`: L = (R·19595 + G·38470 + B·7471 + 0x8000) >> 16.
    pub fn to_gray(&self) -> Pixels {
        if self.channels == 1 {
            return self.clone();
        }
        let data = self
            .data
            .chunks_exact(3)
            .map(|p| ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16) as u8)
            .collect();
        Pixels { width: self.width, height: self.height, channels: 1, data }
    }

    /// PIL `convert("RGB")` of an "L" or "RGB" image.
    pub fn to_rgb(&self) -> Pixels {
        if self.channels == 3 {
            return self.clone();
        }
        let data = self.data.iter().flat_map(|&v| [v, v, v]).collect();
        Pixels { width: self.width, height: self.height, channels: 3, data }
    }

    /// PIL `Image.resize((width, height), Image.LANCZOS)` (reducing_gap None, no box): the
    /// image itself when the size is unchanged; else Pillow's `ImagingResample`, two separable
    /// passes with 22-bit fixed-point weights and u8 rounding between them. The pass order
    /// changes the bytes: Pillow 13 (the fixture's) runs the vertical pass first when the width
    /// grows and the height shrinks, else the horizontal one first (found by comparing both orders
    /// with Pillow on every combination of growing and shrinking sides; tests/img2img.rs).
    pub fn resize_lanczos(&self, width: usize, height: usize) -> Pixels {
        if (width, height) == (self.width, self.height) {
            return self.clone();
        }
        if width > self.width && height < self.height {
            self.pass_v(height).pass_h(width)
        } else {
            self.pass_h(width).pass_v(height)
        }
    }

    fn pass_h(&self, width: usize) -> Pixels {
        if width == self.width {
            return self.clone();
        }
        let ch = self.channels;
        let (k, bounds) = coeffs(self.width, width);
        let ks = k.len() / width;
        let mut out = vec![0u8; width * self.height * ch];
        for y in 0..self.height {
            let row = &self.data[y * self.width * ch..][..self.width * ch];
            for (x, &(xmin, n)) in bounds.iter().enumerate() {
                let kk = &k[x * ks..][..n];
                for c in 0..ch {
                    let mut ss: i32 = 1 << (PRECISION_BITS - 1);
                    for (i, &kw) in kk.iter().enumerate() {
                        ss = ss.wrapping_add(row[(xmin + i) * ch + c] as i32 * kw);
                    }
                    out[(y * width + x) * ch + c] = clip8(ss);
                }
            }
        }
        Pixels { width, height: self.height, channels: ch, data: out }
    }

    fn pass_v(&self, height: usize) -> Pixels {
        if height == self.height {
            return self.clone();
        }
        let (w, ch) = (self.width, self.channels);
        let (k, bounds) = coeffs(self.height, height);
        let ks = k.len() / height;
        let mut out = vec![0u8; w * height * ch];
        for (y, &(ymin, n)) in bounds.iter().enumerate() {
            let kk = &k[y * ks..][..n];
            for x in 0..w * ch {
                let mut ss: i32 = 1 << (PRECISION_BITS - 1);
                for (i, &kw) in kk.iter().enumerate() {
                    ss = ss.wrapping_add(self.data[(ymin + i) * w * ch + x] as i32 * kw);
                }
                out[y * w * ch + x] = clip8(ss);
            }
        }
        Pixels { width: w, height, channels: ch, data: out }
    }
}

/// Pillow's `PRECISION_BITS` for 8-bit images: 32 − 8 − 2.
const PRECISION_BITS: u32 = 22;

fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow's `lanczos_filter`: sinc(x)·sinc(x/3) on [−3, 3).
fn lanczos(x: f64) -> f64 {
    fn sinc(x: f64) -> f64 {
        if x == 0.0 {
            1.0
        } else {
            let x = x * std::f64::consts::PI;
            x.sin() / x
        }
    }
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for `in_size` → `out_size` (box 0 ..
/// in_size): per output pixel, (first input index, tap count) and `ksize` fixed-point weights.
fn coeffs(in_size: usize, out_size: usize) -> (Vec<i32>, Vec<(usize, usize)>) {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 3.0 * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut kk = vec![0i32; out_size * ksize];
    let mut bounds = Vec::with_capacity(out_size);
    let mut w = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's (int) truncates toward zero, then the clamp.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
        let mut ww = 0.0;
        for (x, wx) in w.iter_mut().enumerate().take(xmax) {
            *wx = lanczos((x as f64 + xmin as f64 - center + 0.5) * ss);
            ww += *wx;
        }
        for (x, &wx) in w.iter().enumerate().take(xmax) {
            let v = if ww != 0.0 { wx / ww } else { wx };
            let f = v * (1u32 << PRECISION_BITS) as f64;
            kk[xx * ksize + x] = if v < 0.0 { (-0.5 + f) as i32 } else { (0.5 + f) as i32 };
        }
        bounds.push((xmin, xmax));
    }
    (kk, bounds)
}

/// diffusers' `get_default_height_width` for an image of w×h with no size given: each side
/// rounded down to a multiple of `multiple`.
pub fn default_size(width: usize, height: usize, multiple: usize) -> (usize, usize) {
    (width - width % multiple, height - height % multiple)
}

/// `VaeImageProcessor.preprocess` of an RGB image at (width, height): resized (LANCZOS) when the
/// size differs, `/ 255` in f32, `2x − 1`: [3, height, width] (CHW) in [−1, 1].
pub fn preprocess_image(p: &Pixels, width: usize, height: usize) -> Vec<f32> {
    let p = p.to_rgb().resize_lanczos(width, height);
    let plane = width * height;
    let mut out = vec![0f32; 3 * plane];
    for (i, px) in p.data.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * plane + i] = 2.0 * (px[c] as f32 / 255.0) - 1.0;
        }
    }
    out
}

/// The inpainting pipeline's mask processor (`do_normalize=False, do_binarize=True,
/// do_convert_grayscale=True`): resized (LANCZOS, in the file's own channels) when the size
/// differs, then `convert("L")`, `/ 255` in f32, and 0 below 0.5, 1 from 0.5: [height, width].
pub fn preprocess_mask(p: &Pixels, width: usize, height: usize) -> Vec<f32> {
    let g = p.resize_lanczos(width, height).to_gray();
    g.data.iter().map(|&v| if (v as f32 / 255.0) < 0.5 { 0.0 } else { 1.0 }).collect()
}

/// `F.interpolate(mask, size=(out_h, out_w))` (mode "nearest"): source index
/// `min(floor(dst · (in / out)), in − 1)` with the scale in f32, as torch computes it.
pub fn nearest_resize(v: &[f32], h: usize, w: usize, out_h: usize, out_w: usize) -> Vec<f32> {
    let (sy, sx) = (h as f32 / out_h as f32, w as f32 / out_w as f32);
    let mut out = Vec::with_capacity(out_h * out_w);
    for y in 0..out_h {
        let iy = ((y as f32 * sy).floor() as usize).min(h - 1);
        for x in 0..out_w {
            let ix = ((x as f32 * sx).floor() as usize).min(w - 1);
            out.push(v[iy * w + ix]);
        }
    }
    out
}

/// `F.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=False,
/// antialias=False)` of [c, h, w] as torch's CPU kernel computes it in f32: source coordinate
/// `max((dst + 0.5)·(in / out) − 0.5, 0)`, i0 its floor, i1 = i0 + 1 except at the last row /
/// column, weights λ1 = src − i0 and λ0 = 1 − λ1; out = h0·(w0·x00 + w1·x01) + h1·(w0·x10 + w1·x11).
pub fn bilinear_resize(v: &[f32], c: usize, h: usize, w: usize, out_h: usize, out_w: usize) -> Vec<f32> {
    let axis = |inn: usize, out: usize| -> Vec<(usize, usize, f32, f32)> {
        let scale = inn as f32 / out as f32;
        (0..out)
            .map(|d| {
                let src = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
                let i0 = (src as usize).min(inn - 1);
                let i1 = if i0 < inn - 1 { i0 + 1 } else { i0 };
                let l1 = src - i0 as f32;
                (i0, i1, 1.0 - l1, l1)
            })
            .collect()
    };
    let (ay, ax) = (axis(h, out_h), axis(w, out_w));
    let mut out = Vec::with_capacity(c * out_h * out_w);
    for ch in 0..c {
        let p = &v[ch * h * w..][..h * w];
        for &(y0, y1, h0, h1) in &ay {
            for &(x0, x1, w0, w1) in &ax {
                let top = w0 * p[y0 * w + x0] + w1 * p[y0 * w + x1];
                let bottom = w0 * p[y1 * w + x0] + w1 * p[y1 * w + x1];
                out.push(h0 * top + h1 * bottom);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_2x_matches_hand_values() {
        // 1×2×2 → 4×4: torch gives rows [1, 1.25, 1.75, 2] for [[1, 2], [1, 2]].
        let out = bilinear_resize(&[1.0, 2.0, 1.0, 2.0], 1, 2, 2, 4, 4);
        assert_eq!(&out[..4], &[1.0, 1.25, 1.75, 2.0]);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let e = InputImage::Encoded { bytes: b"\x89PNG\r\n\x1a\n\0\0".to_vec() }.decode("init image").unwrap_err();
        assert!(e.to_string().contains("init image: unreadable PNG"), "{e}");
        let e = InputImage::Encoded { bytes: vec![1, 2, 3] }.decode("mask").unwrap_err();
        assert!(e.to_string().contains("not a PNG or JPEG"), "{e}");
        let e = InputImage::Encoded { bytes: vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 16] }.decode("x").unwrap_err();
        assert!(e.to_string().contains("unreadable JPEG"), "{e}");
        let e = InputImage::Rgba { width: 2, height: 2, rgba: vec![0; 15] }.decode("mask").unwrap_err();
        assert!(e.to_string().contains("2x2"), "{e}");
    }
}
