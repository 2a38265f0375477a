//! The SDXL text encoders: CLIP ViT-L/14 (transformers `CLIPTextModel` naming under
//! `conditioner.embedders.0.transformer.text_model.`) and OpenCLIP ViT-bigG/14 (OpenCLIP naming
//! under `conditioner.embedders.1.model.`), and the prompt → (context, pooled) conditioning.
//!
//! Both are pre-LN transformers with a causal mask. The residual stream is kept in F32 on both
//! compute paths (cheap at 77 tokens; bigG has 32 layers of additions); matmul inputs and
//! attention run in the path's activation dtype (F16 on the f16 path).

use super::layers::lora_linear;
use super::Params;
use crate::gpu::{DType, Gpu, Tensor};
use crate::ops::attention::attention;
use crate::ops::elementwise::{
    add, cast, concat_channels, embed_tokens, gelu, quick_gelu, slice_rows, transpose_last2,
};
use crate::ops::linear::linear;
use crate::ops::norm::layer_norm;
use crate::prompt::{Chunk, PromptTokens};
use crate::tokenizer::CONTEXT_LEN;
use crate::{Error, Result};

/// Checkpoint naming scheme of one encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Naming {
    /// transformers `CLIPTextModel` keys (`embeddings.*`, `encoder.layers.N.self_attn.q_proj`, ...).
    Hf,
    /// OpenCLIP keys (`token_embedding`, `transformer.resblocks.N.attn.in_proj_weight`, ...).
    OpenClip,
}

/// MLP activation (the config's `hidden_act`).
pub use crate::weights::config::Activation;

/// Shape and naming of one text encoder.
#[derive(Clone, Debug, PartialEq)]
pub struct ClipConfig {
    pub naming: Naming,
    /// Key prefix, ending in '.', e.g. `conditioner.embedders.1.model.`.
    pub prefix: String,
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    /// MLP width (4·hidden in both SDXL encoders).
    pub mlp: usize,
    pub vocab: usize,
    /// Position-table rows (77).
    pub positions: usize,
    /// Text projection width (bigG: 1280); `None` when the encoder has no projection.
    pub projection: Option<usize>,
    pub activation: Activation,
    pub eps: f32,
}

impl ClipConfig {
    /// The encoder the loader found (shapes, plus config.json or the documented fallbacks), under
    /// its single-file naming: CLIP-L (`Naming::Hf`) or OpenCLIP bigG (`Naming::OpenClip`).
    pub fn from_loaded(c: &crate::weights::ClipConfig, naming: Naming) -> Self {
        let prefix = match naming {
            Naming::Hf => "conditioner.embedders.0.transformer.text_model.",
            Naming::OpenClip => "conditioner.embedders.1.model.",
        };
        Self {
            naming,
            prefix: prefix.into(),
            layers: c.layers,
            hidden: c.hidden,
            heads: c.heads,
            mlp: c.intermediate,
            vocab: c.vocab,
            positions: c.max_positions,
            projection: c.projection,
            activation: c.activation,
            eps: c.layer_norm_eps,
        }
    }
}

/// What one encoder pass returns.
pub struct ClipOutput {
    /// hidden_states[-(2 + clip_skip)] (no final layer norm): [B, 77, hidden] F32.
    pub hidden: Tensor,
    /// Final layer norm at the eos (first argmax id) of sequence 0, times the text projection:
    /// [1, projection] F32. Only when asked for.
    pub pooled: Option<Tensor>,
}

/// One text encoder (config only; weights are passed to `forward`).
pub struct ClipText {
    pub cfg: ClipConfig,
}

impl ClipText {
    pub fn new(cfg: ClipConfig) -> Result<Self> {
        if cfg.heads == 0 || !cfg.hidden.is_multiple_of(cfg.heads) || cfg.layers < 2 || !cfg.hidden.is_multiple_of(2) {
            return Err(Error::Input(format!(
                "text encoder: {} layers of width {} over {} heads is not a valid CLIP shape",
                cfg.layers, cfg.hidden, cfg.heads
            )));
        }
        Ok(Self { cfg })
    }

    fn w<'a>(&self, p: &'a dyn Params, name: &str, shape: &[usize]) -> Result<&'a Tensor> {
        let full = format!("{}{name}", self.cfg.prefix);
        let t = p.get(&full)?;
        if t.shape() != shape || t.dtype() != DType::F16 {
            return Err(Error::Weights(format!(
                "{full}: expected F16 {shape:?}, found {:?} {:?}",
                t.dtype(),
                t.shape()
            )));
        }
        Ok(t)
    }

    /// Linear `name`.weight [n, k] + `name`.bias [n], plus the active LoRAs on it (key `lora_key`,
    /// the weight's full name unless it is a row block of a fused weight).
    #[allow(clippy::too_many_arguments)]
    fn lin(
        &self,
        gpu: &Gpu,
        p: &dyn Params,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        lora_key: &str,
        out: DType,
    ) -> Result<Tensor> {
        let y = linear(gpu, x, w, Some(b), out)?;
        lora_linear(gpu, p, lora_key, x, y)
    }

    /// Run B = ids.len() / 77 sequences. `clip_skip` layers are skipped beyond the penultimate
    /// (diffusers' `clip_skip`: 0 → hidden_states[-2]). `pooled` also runs the last layers, the
    /// final layer norm and the projection for sequence 0.
    pub fn forward(
        &self,
        gpu: &Gpu,
        p: &dyn Params,
        ids: &[u32],
        clip_skip: usize,
        pooled: bool,
    ) -> Result<ClipOutput> {
        let c = &self.cfg;
        let (h, t) = (c.hidden, CONTEXT_LEN);
        if clip_skip + 2 > c.layers {
            return Err(Error::Input(format!("clip skip {clip_skip} needs more than the {} layers", c.layers)));
        }
        if ids.is_empty() || !ids.len().is_multiple_of(t) {
            return Err(Error::Input(format!("text encoder: {} ids are not whole 77-token sequences", ids.len())));
        }
        let b = ids.len() / t;
        let act = if gpu.f16 { DType::F16 } else { DType::F32 };
        let (tok, pos) = match c.naming {
            Naming::Hf => ("embeddings.token_embedding.weight", "embeddings.position_embedding.weight"),
            Naming::OpenClip => ("token_embedding.weight", "positional_embedding"),
        };
        let tok_name = format!("{}{tok}", c.prefix);
        let tok = self.w(p, tok, &[c.vocab, h])?;
        let pos = self.w(p, pos, &[c.positions, h])?;
        // Textual-inversion tokens have ids from `vocab` on: when the prompt uses one, embed
        // from the table with their rows appended ([vocab + n, H], a transient copy).
        let extended;
        let tok = match p.added_rows(&tok_name) {
            Some(rows) if ids.iter().any(|&i| i as usize >= c.vocab) => {
                let n = rows.shape()[0];
                if rows.shape() != [n, h] || rows.dtype() != DType::F16 {
                    return Err(Error::Input(format!(
                        "text encoder: embedding rows {:?} {:?} do not fit the [{}, {h}] F16 token table",
                        rows.shape(),
                        rows.dtype(),
                        c.vocab
                    )));
                }
                extended = concat_channels(gpu, &[&tok.reshape(&[1, c.vocab, h])?, &rows.reshape(&[1, n, h])?])?
                    .reshape(&[c.vocab + n, h])?;
                &extended
            }
            _ => tok,
        };
        // x: [B, 77, H] F32 residual stream.
        let mut x = embed_tokens(gpu, ids, t, tok, pos, DType::F32)?;
        // hidden_states[k] is the output of k layers; we want k = layers - 1 - clip_skip.
        let keep = c.layers - 1 - clip_skip;
        let run = if pooled { c.layers } else { keep };
        let mut hidden = None;
        for i in 0..run {
            x = self.layer(gpu, p, i, &x, act)?;
            if i + 1 == keep {
                hidden = Some(x.clone());
            }
        }
        let hidden = hidden.ok_or_else(|| Error::Input("text encoder: no hidden state kept".into()))?;
        let pooled = if pooled { Some(self.pool(gpu, p, &x, ids, b)?) } else { None };
        Ok(ClipOutput { hidden, pooled })
    }

    /// Layer norm of the F32 stream, in the activation dtype.
    fn norm(&self, gpu: &Gpu, p: &dyn Params, name: &str, x: &Tensor, act: DType) -> Result<Tensor> {
        let h = self.cfg.hidden;
        let y = layer_norm(
            gpu,
            x,
            self.w(p, &format!("{name}.weight"), &[h])?,
            self.w(p, &format!("{name}.bias"), &[h])?,
            self.cfg.eps,
        )?;
        if act == DType::F32 {
            Ok(y)
        } else {
            cast(gpu, &y, act)
        }
    }

    /// One pre-LN residual block: x + attn(ln_1(x)), then + mlp(ln_2(·)). x [B, 77, H] F32.
    fn layer(&self, gpu: &Gpu, p: &dyn Params, i: usize, x: &Tensor, act: DType) -> Result<Tensor> {
        let c = &self.cfg;
        let h = c.hidden;
        let (ln1, ln2, fc1, fc2, out) = match c.naming {
            Naming::Hf => {
                let l = format!("encoder.layers.{i}.");
                (
                    format!("{l}layer_norm1"),
                    format!("{l}layer_norm2"),
                    format!("{l}mlp.fc1"),
                    format!("{l}mlp.fc2"),
                    format!("{l}self_attn.out_proj"),
                )
            }
            Naming::OpenClip => {
                let l = format!("transformer.resblocks.{i}.");
                (
                    format!("{l}ln_1"),
                    format!("{l}ln_2"),
                    format!("{l}mlp.c_fc"),
                    format!("{l}mlp.c_proj"),
                    format!("{l}attn.out_proj"),
                )
            }
        };
        let mlp = c.mlp;
        // Attention: [B, 77, H] in the activation dtype.
        let n = self.norm(gpu, p, &ln1, x, act)?;
        let (q, k, v) = match c.naming {
            Naming::Hf => {
                let l = format!("encoder.layers.{i}.self_attn.");
                let proj = |w: &str| -> Result<Tensor> {
                    let name = format!("{l}{w}_proj.weight");
                    self.lin(
                        gpu,
                        p,
                        &n,
                        self.w(p, &name, &[h, h])?,
                        self.w(p, &format!("{l}{w}_proj.bias"), &[h])?,
                        &format!("{}{name}", c.prefix),
                        act,
                    )
                };
                (proj("q")?, proj("k")?, proj("v")?)
            }
            Naming::OpenClip => {
                // in_proj_weight [3H, H] holds the q, k, v rows in that order.
                let l = format!("transformer.resblocks.{i}.attn.");
                let w = self.w(p, &format!("{l}in_proj_weight"), &[3 * h, h])?;
                let bias = self.w(p, &format!("{l}in_proj_bias"), &[3 * h])?.reshape(&[3, h])?;
                let proj = |j: usize| -> Result<Tensor> {
                    let wj = slice_rows(gpu, w, j * h, (j + 1) * h)?;
                    let bj = slice_rows(gpu, &bias, j, j + 1)?.reshape(&[h])?;
                    // LoRAs on q/k/v target row block j of the fused weight.
                    self.lin(gpu, p, &n, &wj, &bj, &format!("{}{l}in_proj_weight#{j}", c.prefix), act)
                };
                (proj(0)?, proj(1)?, proj(2)?)
            }
        };
        let a = attention(gpu, &q, &k, &v, c.heads, true)?;
        let o = self.lin(
            gpu,
            p,
            &a,
            self.w(p, &format!("{out}.weight"), &[h, h])?,
            self.w(p, &format!("{out}.bias"), &[h])?,
            &format!("{}{out}.weight", c.prefix),
            DType::F32,
        )?;
        let x = add(gpu, x, &o)?;
        // MLP: [B, 77, 4H] hidden.
        let n = self.norm(gpu, p, &ln2, &x, act)?;
        let m = self.lin(
            gpu,
            p,
            &n,
            self.w(p, &format!("{fc1}.weight"), &[mlp, h])?,
            self.w(p, &format!("{fc1}.bias"), &[mlp])?,
            &format!("{}{fc1}.weight", c.prefix),
            act,
        )?;
        let m = match c.activation {
            Activation::QuickGelu => quick_gelu(gpu, &m)?,
            Activation::Gelu => gelu(gpu, &m)?,
        };
        let o = self.lin(
            gpu,
            p,
            &m,
            self.w(p, &format!("{fc2}.weight"), &[h, mlp])?,
            self.w(p, &format!("{fc2}.bias"), &[h])?,
            &format!("{}{fc2}.weight", c.prefix),
            DType::F32,
        )?;
        add(gpu, &x, &o)
    }

    /// ln_final(x)[0, argmax ids[0..77]] · P → [1, projection] F32.
    fn pool(&self, gpu: &Gpu, p: &dyn Params, x: &Tensor, ids: &[u32], b: usize) -> Result<Tensor> {
        let c = &self.cfg;
        let h = c.hidden;
        let proj = c
            .projection
            .ok_or_else(|| Error::Input(format!("text encoder {}: no text projection to pool with", c.prefix)))?;
        let ln = match c.naming {
            Naming::Hf => "final_layer_norm",
            Naming::OpenClip => "ln_final",
        };
        let f = layer_norm(
            gpu,
            x,
            self.w(p, &format!("{ln}.weight"), &[h])?,
            self.w(p, &format!("{ln}.bias"), &[h])?,
            c.eps,
        )?;
        // transformers and OpenCLIP pool at argmax(ids): eos (49407) is the largest id, and its
        // first occurrence wins; a textual-inversion token (ids from 49408 on) outranks it, and
        // diffusers then pools there: so do we.
        let seq = &ids[..CONTEXT_LEN];
        let max = seq.iter().copied().max().unwrap_or(0);
        let eos = seq.iter().position(|&i| i == max).unwrap_or(0) as u32;
        // Row gather as a one-token "embedding" of the normed rows (+ a zero position).
        let zero = Tensor::zeros(gpu, &[1, h], DType::F32)?;
        let row = embed_tokens(gpu, &[eos], 1, &f.reshape(&[b * CONTEXT_LEN, h])?, &zero, DType::F32)?;
        // OpenCLIP stores P [H, proj] (x·P); linear wants [proj, H]. transformers stores [proj, H].
        let pt = match c.naming {
            Naming::OpenClip => transpose_last2(gpu, self.w(p, "text_projection", &[h, proj])?)?,
            Naming::Hf => self.w(p, "text_projection.weight", &[proj, h])?.clone(),
        };
        linear(gpu, &row, &pt, None, DType::F32)?.reshape(&[1, proj])
    }
}

/// A1111 emphasis (`process_tokens`) on z [chunks, 77, C] (row-major): each token's hidden
/// state times its weight, then each chunk rescaled to its original mean. A chunk whose
/// weighted mean is 0 is left weighted only (A1111 would divide by zero).
pub fn apply_emphasis(z: &mut [f32], c: usize, weights: &[[f32; CONTEXT_LEN]]) -> Result<()> {
    let per = CONTEXT_LEN * c;
    if c == 0 || z.len() != per * weights.len() {
        return Err(Error::Input(format!("emphasis: {} values are not {} chunks of 77 x {c}", z.len(), weights.len())));
    }
    for (zc, w) in z.chunks_exact_mut(per).zip(weights) {
        let old: f64 = zc.iter().map(|&v| v as f64).sum::<f64>() / per as f64;
        for (row, &wt) in zc.chunks_exact_mut(c).zip(w) {
            row.iter_mut().for_each(|v| *v *= wt);
        }
        let new: f64 = zc.iter().map(|&v| v as f64).sum::<f64>() / per as f64;
        if new != 0.0 && new.is_finite() {
            let r = (old / new) as f32;
            zc.iter_mut().for_each(|v| *v *= r);
        }
    }
    Ok(())
}

/// UNet conditioning for one prompt.
pub struct Conditioning {
    /// [1, 77·chunks, hidden_l + hidden_g] F32 (2048 at full size).
    pub context: Tensor,
    /// [1, projection_g] F32 (1280).
    pub pooled: Tensor,
}

impl Conditioning {
    /// The "no negative prompt" conditioning (diffusers' force_zeros_for_empty_prompt).
    pub fn zeros(gpu: &Gpu, chunks: usize, l: &ClipText, g: &ClipText) -> Result<Self> {
        let proj = g.cfg.projection.ok_or_else(|| Error::Input("bigG config has no projection".into()))?;
        Ok(Self {
            context: Tensor::zeros(gpu, &[1, CONTEXT_LEN * chunks, l.cfg.hidden + g.cfg.hidden], DType::F32)?,
            pooled: Tensor::zeros(gpu, &[1, proj], DType::F32)?,
        })
    }
}

/// One encoder over a prompt's chunks, emphasis applied: [chunks·77, C] F32 (+ pooled).
async fn encode_chunks(
    gpu: &Gpu,
    p: &dyn Params,
    enc: &ClipText,
    chunks: &[Chunk],
    clip_skip: usize,
    pooled: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let ids: Vec<u32> = chunks.iter().flat_map(|c| c.ids).collect();
    let out = enc.forward(gpu, p, &ids, clip_skip, pooled)?;
    let c = enc.cfg.hidden;
    let n = chunks.len() * CONTEXT_LEN;
    let mut hidden = out.hidden.reshape(&[n, c])?;
    if chunks.iter().any(|ch| ch.weights.iter().any(|&w| w != 1.0)) {
        // The mean restore needs the whole chunk's mean: 77·C values, read back and redone on
        // the host (once per prompt, small next to the UNet).
        let mut z = hidden.to_vec_f32(gpu).await?;
        let w: Vec<[f32; CONTEXT_LEN]> = chunks.iter().map(|ch| ch.weights).collect();
        apply_emphasis(&mut z, c, &w)?;
        hidden = Tensor::from_f32(gpu, &[n, c], DType::F32, &z)?;
    }
    Ok((hidden, out.pooled))
}

/// Prompt → conditioning: both encoders' hidden states concatenated along channels, chunks
/// along the sequence; pooled from bigG's first chunk. `tokens` = `None` means no prompt at
/// all (zeros; see [`Conditioning::zeros`]), which needs `chunks` to match the other prompt.
pub async fn encode_prompt(
    gpu: &Gpu,
    p: &dyn Params,
    l: &ClipText,
    g: &ClipText,
    tokens: Option<&PromptTokens>,
    chunks: usize,
    clip_skip: usize,
) -> Result<Conditioning> {
    let Some(t) = tokens else { return Conditioning::zeros(gpu, chunks, l, g) };
    if t.clip_l.len() != t.clip_g.len() || t.clip_l.is_empty() {
        return Err(Error::Input(format!(
            "prompt: {} CLIP-L chunks but {} bigG chunks",
            t.clip_l.len(),
            t.clip_g.len()
        )));
    }
    let (zl, _) = encode_chunks(gpu, p, l, &t.clip_l, clip_skip, false).await?;
    let (zg, pooled) = encode_chunks(gpu, p, g, &t.clip_g, clip_skip, true).await?;
    let pooled = pooled.ok_or_else(|| Error::Input("bigG produced no pooled output".into()))?;
    let n = t.clip_l.len() * CONTEXT_LEN;
    // [n, C_l] ++ [n, C_g] along dim 1 = channels.
    let context = concat_channels(gpu, &[&zl, &zg])?.reshape(&[1, n, l.cfg.hidden + g.cfg.hidden])?;
    Ok(Conditioning { context, pooled })
}
