//! SDXL UNet (ldm naming under `model.diffusion_model.`), config-driven so the small test model
//! and SDXL share one code path. Activations are F16 on the f16 path, F32 otherwise.
//!
//! Shapes in comments are SDXL at 1024² with CFG (B = 2, latent 128², 320/640/1280 channels).

use super::layers::{conv, group_norm, layer_norm, lin, Scope};
use super::Params;
use crate::gpu::{DType, Gpu, Tensor};
use crate::ops::{attention, elementwise as ew};
use crate::{Error, Result};

/// The transformer's input group norm (diffusers' Transformer2DModel fixes it).
const TRANSFORMER_GN_EPS: f32 = 1e-6;
/// LayerNorms inside transformer blocks (BasicTransformerBlock's default).
const LN_EPS: f32 = 1e-5;

/// The UNet's architecture is what the loader found: [`crate::weights::UnetConfig`], inferred from
/// the checkpoint's shapes and completed by its config.json (or the documented fallbacks).
pub use crate::weights::UnetConfig as UNetConfig;

/// Per-call conditioning.
pub struct Cond<'t> {
    /// One timestep per batch element.
    pub timesteps: &'t [f32],
    /// [B, T, context_dim].
    pub context: &'t Tensor,
    /// [B, pooled_dim].
    pub pooled: &'t Tensor,
    /// B × (original h, w, crop top, left, target h, w), in pixels.
    pub time_ids: &'t [[f32; 6]],
}

pub struct UNet<'a> {
    pub config: UNetConfig,
    params: &'a dyn Params,
}

const PREFIX: &str = "model.diffusion_model.";

struct Ctx<'g> {
    gpu: &'g Gpu,
    groups: usize,
    eps: f32,
    /// SiLU(emb) [B, time_dim], shared by every ResBlock's emb_layers.
    emb: Tensor,
    context: Tensor,
}

impl Ctx<'_> {
    /// ResBlock: in_layers (GN+SiLU, conv) + emb_layers (SiLU, linear) → out_layers (GN+SiLU,
    /// dropout, conv) + skip (1×1 skip_connection when channels change).
    fn resblock(&self, s: Scope, x: &Tensor, out_ch: usize) -> Result<Tensor> {
        let gpu = self.gpu;
        let in_ch = x.shape()[1];
        let b = x.shape()[0];
        // Reassigning `h` (not shadowing it) frees each intermediate as soon as the next exists.
        let mut h = group_norm(gpu, s.sub("in_layers.0").scope(), x, self.groups, self.eps, true)?;
        h = conv(gpu, s.sub("in_layers.2").scope(), &h, out_ch, 3, 1)?;
        let e = lin(gpu, s.sub("emb_layers.1").scope(), &self.emb, out_ch, true)?; // [B, out]
        h = ew::add(gpu, &h, &e.reshape(&[b, out_ch, 1, 1])?)?;
        h = group_norm(gpu, s.sub("out_layers.0").scope(), &h, self.groups, self.eps, true)?;
        h = conv(gpu, s.sub("out_layers.3").scope(), &h, out_ch, 3, 1)?;
        let skip =
            if in_ch != out_ch { conv(gpu, s.sub("skip_connection").scope(), x, out_ch, 1, 1)? } else { x.clone() };
        ew::add(gpu, &skip, &h)
    }

    /// to_q/to_k/to_v (no bias) → attention over `heads` → to_out.0.
    fn attn(&self, s: Scope, x: &Tensor, kv: &Tensor, heads: usize) -> Result<Tensor> {
        let gpu = self.gpu;
        let c = *x.shape().last().unwrap_or(&0);
        let q = lin(gpu, s.sub("to_q").scope(), x, c, false)?;
        let k = lin(gpu, s.sub("to_k").scope(), kv, c, false)?;
        let v = lin(gpu, s.sub("to_v").scope(), kv, c, false)?;
        let a = attention::attention(gpu, &q, &k, &v, heads, false)?;
        lin(gpu, s.sub("to_out.0").scope(), &a, c, true)
    }

    /// SpatialTransformer with linear proj_in/out: GN → tokens → proj_in → blocks → proj_out →
    /// NCHW + x.
    fn transformer(&self, s: Scope, x: &Tensor, depth: usize, heads: usize) -> Result<Tensor> {
        let gpu = self.gpu;
        let (c, hh, ww) = (x.shape()[1], x.shape()[2], x.shape()[3]);
        if heads == 0 || !c.is_multiple_of(heads) {
            return Err(Error::Input(format!("UNet: {c} channels do not split into {heads} heads")));
        }
        let mut h = {
            let n = group_norm(gpu, s.sub("norm").scope(), x, self.groups, TRANSFORMER_GN_EPS, false)?;
            let t = ew::nchw_to_tokens(gpu, &n)?; // [B, H·W, C]
            lin(gpu, s.sub("proj_in").scope(), &t, c, true)?
        };
        for k in 0..depth {
            let sb = s.sub(&format!("transformer_blocks.{k}"));
            let b = sb.scope();
            let n1 = layer_norm(gpu, b.sub("norm1").scope(), &h, LN_EPS)?;
            h = ew::add(gpu, &h, &self.attn(b.sub("attn1").scope(), &n1, &n1, heads)?)?;
            let n2 = layer_norm(gpu, b.sub("norm2").scope(), &h, LN_EPS)?;
            h = ew::add(gpu, &h, &self.attn(b.sub("attn2").scope(), &n2, &self.context, heads)?)?;
            let n3 = layer_norm(gpu, b.sub("norm3").scope(), &h, LN_EPS)?;
            let ff = ew::geglu(gpu, &lin(gpu, b.sub("ff.net.0.proj").scope(), &n3, 8 * c, true)?)?; // GEGLU: [.., 2·4C]
            drop(n3);
            h = ew::add(gpu, &h, &lin(gpu, b.sub("ff.net.2").scope(), &ff, c, true)?)?;
        }
        let o = lin(gpu, s.sub("proj_out").scope(), &h, c, true)?;
        ew::add(gpu, &ew::tokens_to_nchw(gpu, &o, hh, ww)?, x)
    }
}

impl<'a> UNet<'a> {
    pub fn new(config: UNetConfig, params: &'a dyn Params) -> Result<Self> {
        let c = &config;
        let levels = c.channel_mult.len();
        if levels == 0 || c.transformer_depth.len() != levels || c.num_heads.len() != levels {
            return Err(Error::Input(format!(
                "UNet config: channel_mult {:?}, transformer_depth {:?} and num_heads {:?} must be non-empty and of equal length",
                c.channel_mult, c.transformer_depth, c.num_heads
            )));
        }
        if c.addition_time_embed_dim == 0 || c.pooled_dim == 0 || c.norm_num_groups == 0 {
            return Err(Error::Input(format!(
                "UNet config: addition_time_embed_dim {}, pooled_dim {} and norm_num_groups {} must be set (UnetConfig::resolve_addition)",
                c.addition_time_embed_dim, c.pooled_dim, c.norm_num_groups
            )));
        }
        Ok(UNet { config, params })
    }

    /// ε (or v) prediction for latents x [B, in, h, w] (F16 or F32): [B, out, h, w] in the
    /// activation dtype (F16 on the f16 path).
    pub fn forward(&self, gpu: &Gpu, x: &Tensor, cond: &Cond) -> Result<Tensor> {
        let cfg = &self.config;
        let act = if gpu.f16 { DType::F16 } else { DType::F32 };
        let xs = x.shape();
        let levels = cfg.channel_mult.len();
        if xs.len() != 4 || xs[1] != cfg.in_channels || xs[2] == 0 || xs[3] == 0 {
            return Err(Error::Input(format!("UNet: latents must be [B, {}, h, w], got {xs:?}", cfg.in_channels)));
        }
        let b = xs[0];
        let cs = cond.context.shape();
        if cond.timesteps.len() != b || cond.time_ids.len() != b {
            return Err(Error::Input(format!(
                "UNet: batch {b} needs {b} timesteps and time_ids, got {} and {}",
                cond.timesteps.len(),
                cond.time_ids.len()
            )));
        }
        if cs.len() != 3 || cs[0] != b || cs[2] != cfg.context_dim {
            return Err(Error::Input(format!("UNet: context must be [{b}, T, {}], got {cs:?}", cfg.context_dim)));
        }
        if cond.pooled.shape() != [b, cfg.pooled_dim] {
            return Err(Error::Input(format!(
                "UNet: pooled must be [{b}, {}], got {:?}",
                cfg.pooled_dim,
                cond.pooled.shape()
            )));
        }
        let root = Scope::new(self.params, PREFIX);
        let td = cfg.time_embed_dim;

        // Time embedding: sinusoid(t, 320) → linear, SiLU, linear. [B, 1280]
        let temb = ew::timestep_embedding(gpu, cond.timesteps, cfg.model_channels, act)?;
        let temb = lin(gpu, root.sub("time_embed.0").scope(), &temb, td, true)?;
        let temb = lin(gpu, root.sub("time_embed.2").scope(), &ew::silu(gpu, &temb)?, td, true)?;
        // Add embedding: [pooled, sinusoid(time_ids, 256) ×6] [B, 2816] → linear, SiLU, linear.
        let ids: Vec<f32> = cond.time_ids.iter().flatten().copied().collect();
        let atd = cfg.addition_time_embed_dim;
        let tid = ew::timestep_embedding(gpu, &ids, atd, act)?.reshape(&[b, 6 * atd])?;
        let pooled = ew::cast(gpu, cond.pooled, act)?;
        let adm = ew::concat_channels(gpu, &[&pooled, &tid])?;
        let aemb = lin(gpu, root.sub("label_emb.0.0").scope(), &adm, td, true)?;
        let aemb = lin(gpu, root.sub("label_emb.0.2").scope(), &ew::silu(gpu, &aemb)?, td, true)?;
        let emb = ew::add(gpu, &temb, &aemb)?;

        let ctx = Ctx {
            gpu,
            groups: cfg.norm_num_groups,
            eps: cfg.norm_eps,
            emb: ew::silu(gpu, &emb)?,
            context: ew::cast(gpu, cond.context, act)?,
        };
        let block = |i: usize, j: usize| root.sub(&format!("input_blocks.{i}.{j}"));

        // Down path; every block's output is kept for the skip connections.
        let x = ew::cast(gpu, x, act)?;
        let mut h = conv(gpu, block(0, 0).scope(), &x, cfg.model_channels, 3, 1)?; // [2, 320, 128, 128]
        let mut skips = vec![h.clone()];
        let mut idx = 1;
        for (level, &mult) in cfg.channel_mult.iter().enumerate() {
            let ch = cfg.model_channels * mult;
            for _ in 0..cfg.num_res_blocks {
                h = ctx.resblock(block(idx, 0).scope(), &h, ch)?;
                if cfg.transformer_depth[level] > 0 {
                    let (depth, heads) = (cfg.transformer_depth[level], cfg.num_heads[level]);
                    h = ctx.transformer(block(idx, 1).scope(), &h, depth, heads)?;
                }
                skips.push(h.clone());
                idx += 1;
            }
            if level + 1 != levels {
                // Downsample: 3×3 stride-2 conv ("op").
                h = conv(gpu, root.sub(&format!("input_blocks.{idx}.0.op")).scope(), &h, ch, 3, 2)?;
                skips.push(h.clone());
                idx += 1;
            }
        }

        // Middle: [2, 1280, 32, 32]
        let top = cfg.model_channels * cfg.channel_mult[levels - 1];
        h = ctx.resblock(root.sub("middle_block.0").scope(), &h, top)?;
        h = ctx.transformer(
            root.sub("middle_block.1").scope(),
            &h,
            cfg.transformer_depth_middle,
            cfg.num_heads_middle,
        )?;
        h = ctx.resblock(root.sub("middle_block.2").scope(), &h, top)?;

        // Up path: concatenate the matching skip, ResBlock (+ transformer), upsample at level ends.
        let mut idx = 0;
        for level in (0..levels).rev() {
            let ch = cfg.model_channels * cfg.channel_mult[level];
            let depth = cfg.transformer_depth[level];
            for j in 0..=cfg.num_res_blocks {
                let skip = skips.pop().ok_or_else(|| Error::Input("UNet: skip stack underflow".into()))?;
                h = ew::concat_channels(gpu, &[&h, &skip])?;
                let ob = |k: usize| root.sub(&format!("output_blocks.{idx}.{k}"));
                h = ctx.resblock(ob(0).scope(), &h, ch)?;
                if depth > 0 {
                    h = ctx.transformer(ob(1).scope(), &h, depth, cfg.num_heads[level])?;
                }
                if level != 0 && j == cfg.num_res_blocks {
                    // To the next skip's size: 2× unless a side was odd on the way down
                    // (diffusers' upsample_size, for latents not a multiple of 2^(levels-1)).
                    let next = skips.last().ok_or_else(|| Error::Input("UNet: skip stack underflow".into()))?;
                    let (sh, sw) = (next.shape()[2], next.shape()[3]);
                    h = ew::upsample_nearest_to(gpu, &h, sh, sw)?;
                    let k = if depth > 0 { 2 } else { 1 };
                    h = conv(gpu, root.sub(&format!("output_blocks.{idx}.{k}.conv")).scope(), &h, ch, 3, 1)?;
                }
                idx += 1;
            }
        }

        // out: GN + SiLU, conv → [2, 4, 128, 128]
        h = group_norm(gpu, root.sub("out.0").scope(), &h, cfg.norm_num_groups, cfg.norm_eps, true)?;
        conv(gpu, root.sub("out.2").scope(), &h, cfg.out_channels, 3, 1)
    }
}
