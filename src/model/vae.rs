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
    let h = group_norm(gpu, s.sub("norm1").scope(), x, groups, EPS, true)?;
    let h = conv(gpu, s.sub("conv1").scope(), &h, out_ch, 3, 1)?;
    let h = group_norm(gpu, s.sub("norm2").scope(), &h, groups, EPS, true)?;
    let h = conv(gpu, s.sub("conv2").scope(), &h, out_ch, 3, 1)?;
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
