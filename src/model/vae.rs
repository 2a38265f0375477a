//! SDXL VAE decoder (ldm naming under `first_stage_model.`). Activations are F32 on both compute
//! paths: the SDXL VAE's activations exceed f16's range (the reason diffusers upcasts it).
//!
//! Shapes in comments are SDXL at 1024² (latent 128², ch 128, ch_mult [1, 2, 4, 4]).

use super::layers::{conv, group_norm, Scope};
use super::Params;
use crate::gpu::{DType, Gpu, Tensor};
use crate::ops::{attention, elementwise as ew};
use crate::{Error, Result};

/// GroupNorm epsilon everywhere in the VAE (diffusers' AutoencoderKL fixes it; the group count is
/// the config's `norm_num_groups`).
const EPS: f32 = 1e-6;

/// The VAE's architecture and latent scaling are what the loader found:
/// [`crate::weights::VaeConfig`] (shapes, plus config.json or the documented fallbacks).
pub use crate::weights::VaeConfig;

impl VaeConfig {
    /// Pixels per latent: 2^(levels − 1) (8 for SDXL).
    pub fn factor(&self) -> usize {
        1 << self.ch_mult.len().saturating_sub(1)
    }
}

/// diffusers `enable_tiling()` parameters.
///
/// `tile_px` is `tile_sample_min_size` (diffusers' default: the VAE's `sample_size`, 1024 for SDXL),
/// so `tile_latent_min_size` = `tile_px / factor`; `overlap` is `tile_overlap_factor` (default 0.25).
/// The overlap is read as the shortest decimal that gives this f32 (0.2f32 → 0.2), as Python would
/// hold the number a user typed, so the integer tile arithmetic matches diffusers'.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct VaeTiling {
    pub tile_px: usize,
    pub overlap: f32,
}

impl VaeTiling {
    /// Whether diffusers with `enable_tiling()` would tile a latent of h×w: its `_decode` calls
    /// `tiled_decode` only when h or w exceeds `tile_latent_min_size` and decodes in one piece
    /// otherwise. `decode_tiled` always tiles; callers that want `enable_tiling()`'s behaviour
    /// choose between `decode` and `decode_tiled` with this.
    pub fn diffusers_tiles(&self, cfg: &VaeConfig, latent_h: usize, latent_w: usize) -> bool {
        let t = self.tile_px / cfg.factor();
        latent_h > t || latent_w > t
    }
}

/// The integers of diffusers' `tiled_decode`, all in latents except where named px.
#[derive(Debug)]
struct TilePlan {
    /// `tile_latent_min_size`
    tile: usize,
    /// `overlap_size`: the stride between tile starts.
    step: usize,
    /// `blend_extent` (px)
    blend: usize,
    /// `row_limit` (px): each tile is cropped to this before concatenation.
    row_limit: usize,
}

impl TilePlan {
    /// The length (px) of the image `tiled_decode` concatenates along an axis of n latents: every
    /// tile starting at 0, step, 2·step, … < n is min(tile, n − start) latents, decoded to
    /// factor× that and cropped to row_limit.
    fn out_len(&self, n: usize, factor: usize) -> usize {
        (0..n).step_by(self.step).map(|i| self.row_limit.min(factor * self.tile.min(n - i))).sum()
    }
}

fn tile_plan(cfg: &VaeConfig, latent_h: usize, latent_w: usize, tiling: VaeTiling) -> Result<TilePlan> {
    let VaeTiling { tile_px, overlap } = tiling;
    let f = cfg.factor();
    if tile_px == 0 || !tile_px.is_multiple_of(f) {
        return Err(Error::Input(format!(
            "VAE tiling: tile size {tile_px} px must be a positive multiple of the VAE factor {f}"
        )));
    }
    if !(overlap.is_finite() && (0.0..1.0).contains(&overlap)) {
        return Err(Error::Input(format!("VAE tiling: overlap {overlap} must be in [0, 1)")));
    }
    // Python's float for the decimal the f32 was written as.
    let ov: f64 = overlap.to_string().parse().expect("f32 Display parses as f64");
    let tile = tile_px / f;
    // int(tile_latent_min_size * (1 - tile_overlap_factor)), int(tile_sample_min_size * tile_overlap_factor)
    let step = (tile as f64 * (1.0 - ov)) as usize;
    let blend = (tile_px as f64 * ov) as usize;
    let plan = TilePlan { tile, step, blend, row_limit: tile_px - blend };
    if step == 0 {
        return Err(Error::Input(format!(
            "VAE tiling: {tile_px} px tiles ({tile} latents) with overlap {overlap} give a tile step of \
             int({tile}·(1 − {overlap})) = 0 latents (diffusers' tiled_decode fails on range(…, 0))"
        )));
    }
    let (h, w) = (plan.out_len(latent_h, f), plan.out_len(latent_w, f));
    if (h, w) != (f * latent_h, f * latent_w) {
        return Err(Error::Input(format!(
            "VAE tiling: {tile_px} px tiles with overlap {overlap} on a {latent_h}×{latent_w} latent: diffusers' \
             tiled_decode would return a {h}×{w} image instead of {}×{} (tiles start every {} px but each keeps \
             {tile_px} − int({tile_px}·{overlap}) = {} px); pick a tile size and overlap where these agree, \
             e.g. overlap 0.25 with tiles a multiple of {} px",
            f * latent_h,
            f * latent_w,
            f * step,
            plan.row_limit,
            4 * f
        )));
    }
    Ok(plan)
}

/// Checks the image size diffusers' tiled_decode returns for a latent of h×w (factor·h × factor·w,
/// simulated with its arithmetic); an `Error::Input` with a clear
/// message when diffusers would return a wrongly sized image (e.g. 48 px tiles, overlap 0.25, 128×64
/// image → diffusers gives 140×68), or tile_px is not a positive multiple of the VAE factor, or overlap
/// not in [0, 1). Only the sizes are checked: it holds whether or not diffusers' `_decode` would tile
/// this latent at all (see `VaeTiling::diffusers_tiles`).
pub fn check_tiling(cfg: &VaeConfig, latent_h: usize, latent_w: usize, tiling: VaeTiling) -> Result<()> {
    tile_plan(cfg, latent_h, latent_w, tiling).map(|_| ())
}

/// A decoded tile on the host: 3 planes of h×w, blended in place as diffusers does.
struct TileImage {
    h: usize,
    w: usize,
    v: Vec<f32>,
}

/// `b = a·(1 − t) + b·t`, t = i / extent, as torch computes it: the weights in f64 (Python floats)
/// rounded to f32, then an f32 multiply for each term and an f32 add.
fn lerp_weights(i: usize, extent: usize) -> (f32, f32) {
    let t = i as f64 / extent as f64;
    ((1.0 - t) as f32, t as f32)
}

/// diffusers' `blend_v(a, b, extent)`: b's top rows from a's bottom ones. `a_h` is a's full height
/// (`a` may hold only its last rows).
fn blend_v(a: &TileImage, a_h: usize, b: &mut TileImage, extent: usize) {
    let e = a_h.min(b.h).min(extent);
    debug_assert!(e <= a.h && a.w == b.w);
    for y in 0..e {
        let (wa, wb) = lerp_weights(y, e);
        for c in 0..3 {
            let ar = &a.v[(c * a.h + a.h - e + y) * a.w..][..a.w];
            let br = &mut b.v[(c * b.h + y) * b.w..][..b.w];
            for (bv, &av) in br.iter_mut().zip(ar) {
                *bv = av * wa + *bv * wb;
            }
        }
    }
}

/// diffusers' `blend_h(a, b, extent)`: b's left columns from a's right ones.
fn blend_h(a: &TileImage, b: &mut TileImage, extent: usize) {
    let e = a.w.min(b.w).min(extent);
    debug_assert!(a.h == b.h);
    for x in 0..e {
        let (wa, wb) = lerp_weights(x, e);
        for c in 0..3 {
            for y in 0..b.h {
                let av = a.v[(c * a.h + y) * a.w + a.w - e + x];
                let bv = &mut b.v[(c * b.h + y) * b.w + x];
                *bv = av * wa + *bv * wb;
            }
        }
    }
}

fn level_ch(cfg: &VaeConfig, level: usize) -> usize {
    cfg.ch * cfg.ch_mult[level]
}

pub struct VaeDecoder<'a> {
    pub config: VaeConfig,
    params: &'a dyn Params,
}

const PREFIX: &str = "first_stage_model.";

/// ResnetBlock: norm1+SiLU → conv1 → norm2+SiLU → conv2, plus x (through nin_shortcut, a 1×1
/// conv, when the channel count changes).
fn resnet(gpu: &Gpu, s: Scope, x: &Tensor, out_ch: usize, groups: usize) -> Result<Tensor> {
    let in_ch = x.shape()[1];
    // Reassigned, not shadowed: each intermediate is freed once the next exists (at 1024² the
    // 256-channel ones are 1 GiB each).
    let mut h = group_norm(gpu, s.sub("norm1").scope(), x, groups, EPS, true)?;
    h = conv(gpu, s.sub("conv1").scope(), &h, out_ch, 3, 1)?;
    h = group_norm(gpu, s.sub("norm2").scope(), &h, groups, EPS, true)?;
    h = conv(gpu, s.sub("conv2").scope(), &h, out_ch, 3, 1)?;
    let skip = if in_ch != out_ch { conv(gpu, s.sub("nin_shortcut").scope(), x, out_ch, 1, 1)? } else { x.clone() };
    ew::add(gpu, &skip, &h)
}

/// Mid-block attention: one head over all H·W positions; q/k/v/proj_out are stored as [C, C, 1, 1]
/// 1×1 convs and run as linears on tokens.
fn attn(gpu: &Gpu, s: Scope, x: &Tensor, groups: usize) -> Result<Tensor> {
    let (c, h, w) = (x.shape()[1], x.shape()[2], x.shape()[3]);
    let n = group_norm(gpu, s.sub("norm").scope(), x, groups, EPS, false)?;
    let tokens = ew::nchw_to_tokens(gpu, &n)?; // [B, H·W, C]
    let proj = |name: &str, t: &Tensor| -> Result<Tensor> {
        let sub = s.sub(name);
        let sc = sub.scope();
        let w4 = sc.get("weight", &[c, c, 1, 1])?;
        let b = sc.get("bias", &[c])?;
        crate::ops::linear::linear(gpu, t, &w4.reshape(&[c, c])?, Some(b), t.dtype())
    };
    let q = proj("q", &tokens)?;
    let k = proj("k", &tokens)?;
    let v = proj("v", &tokens)?;
    let a = attention::attention(gpu, &q, &k, &v, 1, false)?;
    let o = proj("proj_out", &a)?;
    ew::add(gpu, x, &ew::tokens_to_nchw(gpu, &o, h, w)?)
}

impl<'a> VaeDecoder<'a> {
    pub fn new(config: VaeConfig, params: &'a dyn Params) -> Result<Self> {
        if config.ch_mult.is_empty() || config.ch == 0 || config.norm_num_groups == 0 {
            return Err(Error::Input("VAE config: empty ch_mult, zero channels or zero norm groups".into()));
        }
        Ok(VaeDecoder { config, params })
    }

    /// Latents [B, z, h, w] (as the sampler leaves them, F16 or F32) → image [B, 3, 8h, 8w] F32 in
    /// about [-1, 1] (for SDXL; 2^(levels-1)× in general).
    pub fn decode(&self, gpu: &Gpu, latents: &Tensor) -> Result<Tensor> {
        let cfg = &self.config;
        let ls = latents.shape();
        if ls.len() != 4 || ls[1] != cfg.z_channels || ls[2] == 0 || ls[3] == 0 {
            return Err(Error::Input(format!("VAE decode: latents must be [B, {}, h, w], got {ls:?}", cfg.z_channels)));
        }
        let root = Scope::new(self.params, PREFIX);
        // z / scaling_factor, in F32 from here on.
        let z = ew::unary(gpu, latents, ew::Unary::Affine(1.0 / cfg.scaling_factor, 0.0), DType::F32)?;
        let z = conv(gpu, root.sub("post_quant_conv").scope(), &z, cfg.z_channels, 1, 1)?;
        let dec = root.sub("decoder");
        let d = dec.scope();
        let (top, g) = (cfg.ch_mult.len() - 1, cfg.norm_num_groups);
        // [B, 512, 128, 128]
        let mut h = conv(gpu, d.sub("conv_in").scope(), &z, level_ch(cfg, top), 3, 1)?;
        h = resnet(gpu, d.sub("mid.block_1").scope(), &h, level_ch(cfg, top), g)?;
        h = attn(gpu, d.sub("mid.attn_1").scope(), &h, g)?;
        h = resnet(gpu, d.sub("mid.block_2").scope(), &h, level_ch(cfg, top), g)?;
        // up.3 (lowest resolution) first; every level but 0 ends in a 2× upsample.
        for level in (0..=top).rev() {
            let out_ch = level_ch(cfg, level);
            for j in 0..=cfg.num_res_blocks {
                h = resnet(gpu, d.sub(&format!("up.{level}.block.{j}")).scope(), &h, out_ch, g)?;
            }
            if level != 0 {
                h = ew::upsample_nearest_2x(gpu, &h)?;
                h = conv(gpu, d.sub(&format!("up.{level}.upsample.conv")).scope(), &h, out_ch, 3, 1)?;
            }
        }
        // [B, 128, 1024, 1024] → [B, 3, 1024, 1024]
        h = group_norm(gpu, d.sub("norm_out").scope(), &h, g, EPS, true)?;
        conv(gpu, d.sub("conv_out").scope(), &h, 3, 3, 1)
    }

    /// diffusers' tiled_decode: latents [1, z, h, w] → image [1, 3, H, W] F32 (same as `decode`).
    ///
    /// Always tiles (diffusers' `enable_tiling()` tiles only latents larger than one tile: see
    /// `VaeTiling::diffusers_tiles`). Each tile of `tile_px / factor` latents, starting every
    /// int(tile·(1 − overlap)) latents and clipped at the edges, is decoded on its own by `decode`
    /// (post_quant_conv + decoder, so GroupNorm statistics are per tile) and read back; its
    /// intermediates are freed before the next tile, so GPU memory is one tile's decode plus the
    /// output. On the host, tiles are blended in place with the (already blended) tile above and to
    /// the left over int(tile_px·overlap) px, cropped to tile_px − that, and concatenated, exactly
    /// as diffusers does in f32. Fails with `Error::Input` where `check_tiling` does, and for B ≠ 1.
    pub async fn decode_tiled(&self, gpu: &Gpu, latents: &Tensor, tiling: VaeTiling) -> Result<Tensor> {
        let cfg = &self.config;
        let ls = latents.shape();
        if ls.len() != 4 || ls[1] != cfg.z_channels || ls[2] == 0 || ls[3] == 0 {
            return Err(Error::Input(format!(
                "VAE tiled decode: latents must be [1, {}, h, w], got {ls:?}",
                cfg.z_channels
            )));
        }
        if ls[0] != 1 {
            return Err(Error::Input(format!(
                "VAE tiled decode: one image at a time (batch 1), got a batch of {}",
                ls[0]
            )));
        }
        let (zc, h, w) = (ls[1], ls[2], ls[3]);
        let plan = tile_plan(cfg, h, w, tiling)?;
        let f = cfg.factor();
        let (oh, ow) = (f * h, f * w);
        let z = latents.to_vec_f32(gpu).await?;
        let mut out = vec![0f32; 3 * oh * ow];
        // The previous row of tiles, blended; only their last `blend` rows (all blend_v reads) with
        // their full heights.
        let mut above: Vec<(TileImage, usize)> = Vec::new();
        let mut oy = 0;
        for i in (0..h).step_by(plan.step) {
            let th = plan.tile.min(h - i);
            let mut row: Vec<(TileImage, usize)> = Vec::new();
            let mut left: Option<TileImage> = None;
            let mut ox = 0;
            for (col, j) in (0..w).step_by(plan.step).enumerate() {
                let tw = plan.tile.min(w - j);
                let mut zt = Vec::with_capacity(zc * th * tw);
                for c in 0..zc {
                    for y in i..i + th {
                        zt.extend_from_slice(&z[(c * h + y) * w + j..][..tw]);
                    }
                }
                // The latents' own dtype: the values read back are exactly representable in it.
                let v = {
                    let tile = Tensor::from_f32(gpu, &[1, zc, th, tw], latents.dtype(), &zt)?;
                    let img = self.decode(gpu, &tile)?;
                    img.to_vec_f32(gpu).await?
                };
                let mut t = TileImage { h: f * th, w: f * tw, v };
                if let Some((a, a_h)) = above.get(col) {
                    blend_v(a, *a_h, &mut t, plan.blend);
                }
                if let Some(a) = &left {
                    blend_h(a, &mut t, plan.blend);
                }
                let (ch, cw) = (t.h.min(plan.row_limit), t.w.min(plan.row_limit));
                for c in 0..3 {
                    for y in 0..ch {
                        out[(c * oh + oy + y) * ow + ox..][..cw].copy_from_slice(&t.v[(c * t.h + y) * t.w..][..cw]);
                    }
                }
                ox += cw;
                let keep = t.h.min(plan.blend);
                let bottom =
                    (0..3).flat_map(|c| t.v[(c * t.h + t.h - keep) * t.w..][..keep * t.w].iter().copied()).collect();
                row.push((TileImage { h: keep, w: t.w, v: bottom }, t.h));
                left = Some(t);
            }
            debug_assert_eq!(ox, ow);
            oy += (f * th).min(plan.row_limit);
            above = row;
        }
        debug_assert_eq!(oy, oh);
        Tensor::from_f32(gpu, &[1, 3, oh, ow], DType::F32, &out)
    }
}

/// The VAE encoder (ldm `encoder.*` + `quant_conv`), F32 activations like the decoder. Shapes in
/// comments are SDXL at 1024² (image [1, 3, 1024, 1024] → moments [1, 8, 128, 128]).
pub struct VaeEncoder<'a> {
    pub config: VaeConfig,
    params: &'a dyn Params,
}

impl<'a> VaeEncoder<'a> {
    pub fn new(config: VaeConfig, params: &'a dyn Params) -> Result<Self> {
        if config.ch_mult.is_empty() || config.ch == 0 || config.norm_num_groups == 0 {
            return Err(Error::Input("VAE config: empty ch_mult, zero channels or zero norm groups".into()));
        }
        Ok(VaeEncoder { config, params })
    }

    /// Image [B, in_channels, H, W] in [-1, 1] (H, W multiples of the factor) → the latent
    /// distribution's parameters [B, 2·embed_dim, H/f, W/f] F32 (mean ++ logvar, diffusers'
    /// `vae.encode(x).latent_dist.parameters`), unscaled.
    pub fn encode(&self, gpu: &Gpu, image: &Tensor) -> Result<Tensor> {
        let cfg = &self.config;
        let f = cfg.factor();
        let s = image.shape();
        if s.len() != 4
            || s[1] != cfg.in_channels
            || s[2] == 0
            || s[3] == 0
            || !s[2].is_multiple_of(f)
            || !s[3].is_multiple_of(f)
        {
            return Err(Error::Input(format!(
                "VAE encode: image must be [B, {}, H, W] with H and W multiples of {f}, got {s:?}",
                cfg.in_channels
            )));
        }
        let root = Scope::new(self.params, PREFIX);
        let enc = root.sub("encoder");
        let e = enc.scope();
        let (top, g) = (cfg.ch_mult.len() - 1, cfg.norm_num_groups);
        let x = if image.dtype() == DType::F32 { image.clone() } else { ew::cast(gpu, image, DType::F32)? };
        // [B, 128, 1024, 1024]
        let mut h = conv(gpu, e.sub("conv_in").scope(), &x, cfg.ch, 3, 1)?;
        drop(x);
        // down.0 (full resolution) first; every level but the last ends in a 2× downsample.
        for level in 0..=top {
            let out_ch = level_ch(cfg, level);
            for j in 0..cfg.num_res_blocks {
                h = resnet(gpu, e.sub(&format!("down.{level}.block.{j}")).scope(), &h, out_ch, g)?;
            }
            if level != top {
                // diffusers' Downsample2D(padding=0): F.pad(x, (0, 1, 0, 1)), 3×3 stride 2.
                let sub = e.sub(&format!("down.{level}.downsample.conv"));
                let sc = sub.scope();
                let w = sc.get("weight", &[out_ch, out_ch, 3, 3])?;
                let b = sc.get("bias", &[out_ch])?;
                h = crate::ops::conv::conv2d_padded(gpu, &h, w, Some(b), 2, (0, 1), DType::F32)?;
            }
        }
        // [B, 512, 128, 128]
        h = resnet(gpu, e.sub("mid.block_1").scope(), &h, level_ch(cfg, top), g)?;
        h = attn(gpu, e.sub("mid.attn_1").scope(), &h, g)?;
        h = resnet(gpu, e.sub("mid.block_2").scope(), &h, level_ch(cfg, top), g)?;
        h = group_norm(gpu, e.sub("norm_out").scope(), &h, g, EPS, true)?;
        // [B, 8, 128, 128]: double_z
        h = conv(gpu, e.sub("conv_out").scope(), &h, 2 * cfg.z_channels, 3, 1)?;
        conv(gpu, root.sub("quant_conv").scope(), &h, 2 * cfg.embed_dim, 1, 1)
    }
}

/// diffusers' `DiagonalGaussianDistribution(moments).sample(generator)` times the scaling
/// factor, on the host in f32: mean, logvar = moments.chunk(2, dim=1); logvar clamped to
/// [-30, 20]; std = exp(0.5·logvar); `scaling_factor · (mean + std · randn(mean.shape))`. One
/// image: moments [1, 2c, h, w] flat → latents [1, c, h, w] flat. Draws c·h·w normals from `rng`.
pub fn sample_latents(moments: &[f32], rng: &mut crate::rng::TorchRng, scaling_factor: f32) -> Vec<f32> {
    let n = moments.len() / 2;
    let (mean, logvar) = moments.split_at(n);
    let eps = rng.randn(n);
    mean.iter()
        .zip(logvar)
        .zip(&eps)
        .map(|((&m, &lv), &e)| {
            let std = (0.5 * lv.clamp(-30.0, 20.0)).exp();
            scaling_factor * (m + std * e)
        })
        .collect()
}

/// Image [B, 3, H, W] in [-1, 1] → interleaved RGB u8 per image, as diffusers' image processor:
/// `(x / 2 + 0.5).clamp(0, 1)`, then `(x · 255).round()` (numpy: ties to even). Fails with `Error::Numeric` on any
/// non-finite value (an overflow upstream) instead of returning a black image.
pub async fn to_rgb8(gpu: &Gpu, image: &Tensor) -> Result<Vec<Vec<u8>>> {
    let s = image.shape();
    if s.len() != 4 || s[1] != 3 {
        return Err(Error::Input(format!("to_rgb8: needs [B, 3, H, W], got {s:?}")));
    }
    let (b, h, w) = (s[0], s[2], s[3]);
    let v = image.to_vec_f32(gpu).await?;
    rgb8_from_f32(&v, b, h, w)
}

/// The CPU half of `to_rgb8` (NCHW f32 → per-image HWC u8).
pub fn rgb8_from_f32(v: &[f32], b: usize, h: usize, w: usize) -> Result<Vec<Vec<u8>>> {
    let plane = h * w;
    if v.len() != b * 3 * plane {
        return Err(Error::Input(format!("rgb8: {} values for {b}×3×{h}×{w}", v.len())));
    }
    let bad = v.iter().filter(|x| !x.is_finite()).count();
    if bad > 0 {
        let first = v.iter().position(|x| !x.is_finite()).unwrap_or(0);
        let (bi, c, p) = (first / (3 * plane), first / plane % 3, first % plane);
        return Err(Error::Numeric(format!(
            "VAE output has {bad} non-finite values of {} (first: image {bi}, channel {c}, pixel ({}, {}) = {})",
            v.len(),
            p / w,
            p % w,
            v[first]
        )));
    }
    Ok((0..b)
        .map(|bi| {
            let mut out = vec![0u8; plane * 3];
            for c in 0..3 {
                let src = &v[(bi * 3 + c) * plane..][..plane];
                for (p, &x) in src.iter().enumerate() {
                    out[p * 3 + c] = ((x / 2.0 + 0.5).clamp(0.0, 1.0) * 255.0).round_ties_even() as u8;
                }
            }
            out
        })
        .collect())
}
