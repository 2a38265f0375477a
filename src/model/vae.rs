//! SDXL VAE decoder (ldm naming under `first_stage_model.`). Activations are F32 on both compute
//! paths: the SDXL VAE's activations exceed f16's range (the reason diffusers upcasts it).
//!
//! Shapes in comments are SDXL at 1024² (latent 128², ch 128, ch_mult [1, 2, 4, 4]).

use super::layers::{conv, group_norm, Scope};
use super::Params;
use crate::gpu::{DType, Gpu, Tensor};
use crate::ops::{attention, elementwise as ew};
use crate::{Error, Result};

/// GroupNorm everywhere in the VAE: 32 groups, eps 1e-6.
const GROUPS: usize = 32;
const EPS: f32 = 1e-6;

#[derive(Clone, Debug)]
pub struct VaeConfig {
    /// Base channel count (`block_out_channels[0]`).
    pub ch: usize,
    /// Channel multiplier per resolution level, highest resolution first.
    pub ch_mult: Vec<usize>,
    /// Resnets per encoder level; the decoder has one more per level.
    pub num_res_blocks: usize,
    pub z_channels: usize,
    /// Latents are divided by this before decoding (the config's `scaling_factor`).
    pub scaling_factor: f32,
}

impl VaeConfig {
    /// SDXL 1.0's VAE (`sdxl_vae` config: block_out_channels [128, 256, 512, 512], scaling_factor 0.13025).
    pub fn sdxl() -> Self {
        VaeConfig { ch: 128, ch_mult: vec![1, 2, 4, 4], num_res_blocks: 2, z_channels: 4, scaling_factor: 0.13025 }
    }

    fn level_ch(&self, level: usize) -> usize {
        self.ch * self.ch_mult[level]
    }
}

pub struct VaeDecoder<'a> {
    pub config: VaeConfig,
    params: &'a dyn Params,
}

const PREFIX: &str = "first_stage_model.";

/// ResnetBlock: norm1+SiLU → conv1 → norm2+SiLU → conv2, plus x (through nin_shortcut, a 1×1
/// conv, when the channel count changes).
fn resnet(gpu: &Gpu, s: Scope, x: &Tensor, out_ch: usize) -> Result<Tensor> {
    let in_ch = x.shape()[1];
    let h = group_norm(gpu, s.sub("norm1").scope(), x, GROUPS, EPS, true)?;
    let h = conv(gpu, s.sub("conv1").scope(), &h, out_ch, 3, 1)?;
    let h = group_norm(gpu, s.sub("norm2").scope(), &h, GROUPS, EPS, true)?;
    let h = conv(gpu, s.sub("conv2").scope(), &h, out_ch, 3, 1)?;
    let skip = if in_ch != out_ch { conv(gpu, s.sub("nin_shortcut").scope(), x, out_ch, 1, 1)? } else { x.clone() };
    ew::add(gpu, &skip, &h)
}

/// Mid-block attention: one head over all H·W positions; q/k/v/proj_out are stored as [C, C, 1, 1]
/// 1×1 convs and run as linears on tokens.
fn attn(gpu: &Gpu, s: Scope, x: &Tensor) -> Result<Tensor> {
    let (c, h, w) = (x.shape()[1], x.shape()[2], x.shape()[3]);
    let n = group_norm(gpu, s.sub("norm").scope(), x, GROUPS, EPS, false)?;
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
        if config.ch_mult.is_empty() || config.ch == 0 {
            return Err(Error::Input("VAE config: empty ch_mult or zero channels".into()));
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
        let top = cfg.ch_mult.len() - 1;
        // [B, 512, 128, 128]
        let mut h = conv(gpu, d.sub("conv_in").scope(), &z, cfg.level_ch(top), 3, 1)?;
        h = resnet(gpu, d.sub("mid.block_1").scope(), &h, cfg.level_ch(top))?;
        h = attn(gpu, d.sub("mid.attn_1").scope(), &h)?;
        h = resnet(gpu, d.sub("mid.block_2").scope(), &h, cfg.level_ch(top))?;
        // up.3 (lowest resolution) first; every level but 0 ends in a 2× upsample.
        for level in (0..=top).rev() {
            let out_ch = cfg.level_ch(level);
            for j in 0..=cfg.num_res_blocks {
                h = resnet(gpu, d.sub(&format!("up.{level}.block.{j}")).scope(), &h, out_ch)?;
            }
            if level != 0 {
                h = ew::upsample_nearest_2x(gpu, &h)?;
                h = conv(gpu, d.sub(&format!("up.{level}.upsample.conv")).scope(), &h, out_ch, 3, 1)?;
            }
        }
        // [B, 128, 1024, 1024] → [B, 3, 1024, 1024]
        h = group_norm(gpu, d.sub("norm_out").scope(), &h, GROUPS, EPS, true)?;
        conv(gpu, d.sub("conv_out").scope(), &h, 3, 3, 1)
    }
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

// TEMP-VAETILE: replaced by the vaetile branch's implementation at merge.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct VaeTiling {
    pub tile_px: usize,
    pub overlap: f32,
}
impl VaeDecoder<'_> {
    pub async fn decode_tiled(&self, gpu: &Gpu, latents: &Tensor, tiling: VaeTiling) -> Result<Tensor> {
        let _ = tiling;
        self.decode(gpu, latents)
    }
}
pub fn check_tiling(cfg: &VaeConfig, latent_h: usize, latent_w: usize, tiling: VaeTiling) -> Result<()> {
    let _ = (cfg, latent_h, latent_w, tiling);
    Ok(())
}
