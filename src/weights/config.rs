//! Model configuration: inferred from tensor names and shapes, completed and checked by the
//! diffusers layout's `config.json` files when there are any, and the reverse: the complete list of
//! canonical tensor names and shapes a configuration implies. That list is the one source of truth
//! used to validate a checkpoint (missing, unexpected or mis-shaped tensors), to allocate GPU
//! buffers, to count parameters and to write the random full-size checkpoint.
//!
//! # What the weights cannot tell
//!
//! Shapes give every width, depth and count, but not: attention heads (a [C, C] projection splits
//! into any number of heads), norm groups and epsilons, the text encoders' activation, the VAE's
//! latent scaling factor, and how label_emb's input splits into pooled text and the six size/crop
//! sinusoids. A diffusers folder declares these in each component's `config.json`, which is read
//! ([`ConfigFile`]) and must agree with the weights on every number both carry. The single-file
//! layout carries no config, so these `FALLBACK_*` values (SDXL's) are assumed there, and for a
//! separate `--vae` file: a single-file model whose real heads are not 64 wide loads, runs and
//! gives different images (tests/model_config.rs shows it on tests/fixtures/tiny-custom).
//!
//! The split of label_emb is derived rather than assumed wherever the pooled width is known: it is
//! text_encoder_2's projection width, so `addition_time_embed_dim` = (label_emb input − pooled) / 6
//! ([`UnetConfig::resolve_addition`], applied once per model in [`ModelConfig::assemble`]).
//!
//! Names here are relative to each component's single-file prefix (see [`Component::prefix`]).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::Value;

use super::Component;
use crate::{Error, Result};

/// Attention head width assumed without a config (SDXL's, in the UNet and both text encoders):
/// heads = width / 64, at least one.
pub const FALLBACK_HEAD_DIM: usize = 64;
/// GroupNorm groups in the UNet and the VAE without a config.
pub const FALLBACK_NORM_GROUPS: usize = 32;
/// The UNet's ResBlock and output GroupNorm epsilon without a config (diffusers' `norm_eps`).
pub const FALLBACK_UNET_NORM_EPS: f32 = 1e-5;
/// The text encoders' LayerNorm epsilon without a config (`layer_norm_eps`).
pub const FALLBACK_CLIP_EPS: f32 = 1e-5;
/// SDXL's latent scaling factor (the sdxl_vae config's `scaling_factor`), assumed without a config.
pub const FALLBACK_VAE_SCALING: f32 = 0.13025;
/// SDXL's size/crop sinusoid width, assumed only for a UNet seen without its text encoders (a
/// UNet-only file): with text_encoder_2 present it is derived from the widths instead.
pub const FALLBACK_ADDITION_TIME_EMBED_DIM: usize = 256;
/// Size/crop conditions (original h, w, crop top, left, target h, w), each one sinusoid.
pub const TIME_IDS: usize = 6;

fn fallback_heads(channels: usize) -> usize {
    (channels / FALLBACK_HEAD_DIM).max(1)
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UnetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub model_channels: usize,
    pub channel_mult: Vec<usize>,
    pub num_res_blocks: usize,
    /// Transformer blocks per spatial transformer at each level (0: no attention there).
    pub transformer_depth: Vec<usize>,
    pub transformer_depth_middle: usize,
    /// Attention heads per level (the up path uses its level's) and in the middle block: the
    /// config's (`attention_head_dim`, which diffusers uses as the head count), else channels / 64.
    pub num_heads: Vec<usize>,
    pub num_heads_middle: usize,
    pub context_dim: usize,
    pub time_embed_dim: usize,
    /// Input width of the addition embedding (pooled text + 6 × `addition_time_embed_dim`).
    pub adm_in_channels: usize,
    /// Width of each size/crop sinusoid: declared by the config, else derived by
    /// [`UnetConfig::resolve_addition`] (0 until then).
    pub addition_time_embed_dim: usize,
    /// Pooled text width: `adm_in_channels - 6 * addition_time_embed_dim` (0 until resolved).
    pub pooled_dim: usize,
    /// GroupNorm groups of the ResBlocks, transformers and output norm.
    pub norm_num_groups: usize,
    /// Epsilon of the ResBlock and output GroupNorms (the transformers' are fixed by diffusers).
    pub norm_eps: f32,
}

/// A text encoder's MLP activation (`hidden_act`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// x·sigmoid(1.702x): OpenAI CLIP ViT-L.
    QuickGelu,
    /// Exact (erf) GELU: OpenCLIP bigG.
    Gelu,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClipConfig {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub vocab: usize,
    pub max_positions: usize,
    /// Width of `text_projection` (OpenCLIP bigG only).
    pub projection: Option<usize>,
    pub activation: Activation,
    pub layer_norm_eps: f32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VaeConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub ch: usize,
    pub ch_mult: Vec<usize>,
    pub num_res_blocks: usize,
    pub z_channels: usize,
    pub embed_dim: usize,
    pub norm_num_groups: usize,
    /// Latents are divided by this before decoding (`scaling_factor`).
    pub scaling_factor: f32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelConfig {
    pub unet: UnetConfig,
    pub vae: VaeConfig,
    pub text_encoder: ClipConfig,
    pub text_encoder_2: ClipConfig,
}

/// The configuration of one component.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ComponentConfig {
    Unet(UnetConfig),
    Vae(VaeConfig),
    Clip(ClipConfig),
}

impl ModelConfig {
    /// SDXL 1.0 base (sd_xl_base.yaml and the diffusers configs), for the random checkpoint
    /// writer and tests.
    pub fn sdxl_base() -> ModelConfig {
        let unet = UnetConfig {
            in_channels: 4,
            out_channels: 4,
            model_channels: 320,
            channel_mult: vec![1, 2, 4],
            num_res_blocks: 2,
            transformer_depth: vec![0, 2, 10],
            transformer_depth_middle: 10,
            num_heads: vec![5, 10, 20],
            num_heads_middle: 20,
            context_dim: 2048,
            time_embed_dim: 1280,
            adm_in_channels: 2816,
            addition_time_embed_dim: 256,
            pooled_dim: 1280,
            norm_num_groups: 32,
            norm_eps: 1e-5,
        };
        ModelConfig {
            unet,
            vae: VaeConfig {
                in_channels: 3,
                out_channels: 3,
                ch: 128,
                ch_mult: vec![1, 2, 4, 4],
                num_res_blocks: 2,
                z_channels: 4,
                embed_dim: 4,
                norm_num_groups: 32,
                scaling_factor: 0.13025,
            },
            text_encoder: ClipConfig {
                hidden: 768,
                layers: 12,
                heads: 12,
                intermediate: 3072,
                vocab: 49408,
                max_positions: 77,
                projection: None,
                activation: Activation::QuickGelu,
                layer_norm_eps: 1e-5,
            },
            text_encoder_2: ClipConfig {
                hidden: 1280,
                layers: 32,
                heads: 20,
                intermediate: 5120,
                vocab: 49408,
                max_positions: 77,
                projection: Some(1280),
                activation: Activation::Gelu,
                layer_norm_eps: 1e-5,
            },
        }
    }

    /// The model from its components' configs, as each file (and config.json) gave them: resolves
    /// the UNet's label_emb split against text_encoder_2's projection width (the one place that
    /// happens), then checks the components fit together. `unet_config_file` names the UNet's
    /// config.json, if it had one, for messages.
    pub fn assemble(
        mut unet: UnetConfig,
        vae: VaeConfig,
        text_encoder: ClipConfig,
        text_encoder_2: ClipConfig,
        unet_config_file: Option<&str>,
    ) -> Result<ModelConfig> {
        let pooled = text_encoder_2.projection.ok_or_else(|| {
            Error::Weights("text_encoder_2 has no text projection, so there is no pooled text for the UNet".into())
        })?;
        unet.resolve_addition(Some(pooled), unet_config_file)?;
        let c = ModelConfig { unet, vae, text_encoder, text_encoder_2 };
        c.check()?;
        Ok(c)
    }

    /// Cross-component consistency (the UNet's context is both encoders' hidden states side by
    /// side; its pooled input is bigG's projection; its latents are the VAE's).
    pub fn check(&self) -> Result<()> {
        let ctx = self.text_encoder.hidden + self.text_encoder_2.hidden;
        if self.unet.context_dim != ctx {
            return Err(Error::Weights(format!(
                "the UNet's context dim is {} but the text encoders' hidden sizes add up to {} + {} = {ctx}",
                self.unet.context_dim, self.text_encoder.hidden, self.text_encoder_2.hidden
            )));
        }
        if Some(self.unet.pooled_dim) != self.text_encoder_2.projection {
            return Err(Error::Weights(format!(
                "the UNet expects pooled text of width {} but text_encoder_2's projection is {:?}",
                self.unet.pooled_dim, self.text_encoder_2.projection
            )));
        }
        if self.unet.in_channels != self.vae.z_channels {
            return Err(Error::Weights(format!(
                "the UNet takes {} latent channels but the VAE has {}",
                self.unet.in_channels, self.vae.z_channels
            )));
        }
        Ok(())
    }
}

impl UnetConfig {
    /// Channels of each level.
    pub fn level_channels(&self) -> Vec<usize> {
        self.channel_mult.iter().map(|m| m * self.model_channels).collect()
    }

    /// Split label_emb's input into pooled text and 6 size/crop sinusoids, the one place
    /// `addition_time_embed_dim` and `pooled_dim` are decided:
    /// - declared by the config (non-zero already): checked against the pooled width when known;
    /// - else, with the pooled width (text_encoder_2's projection): (input − pooled) / 6;
    /// - else (a UNet seen alone): SDXL's [`FALLBACK_ADDITION_TIME_EMBED_DIM`], pooled the rest.
    ///
    /// `config_file` names the config.json that declared it, for messages.
    pub fn resolve_addition(&mut self, pooled: Option<usize>, config_file: Option<&str>) -> Result<()> {
        let adm = self.adm_in_channels;
        let what = "the UNet's label_emb.0.0.weight (diffusers add_embedding.linear_1)";
        let declared = self.addition_time_embed_dim;
        let atd = if declared != 0 {
            let from = config_file.unwrap_or("the UNet's config");
            let rest = adm.checked_sub(TIME_IDS * declared).filter(|&r| r > 0).ok_or_else(|| {
                Error::Weights(format!(
                    "{from}: addition_time_embed_dim is {declared} but {what} takes {adm} inputs, not more than {TIME_IDS} × {declared} = {}",
                    TIME_IDS * declared
                ))
            })?;
            if let Some(p) = pooled.filter(|&p| p != rest) {
                return Err(Error::Weights(format!(
                    "{from}: addition_time_embed_dim is {declared}, which leaves {adm} − {TIME_IDS} × {declared} = {rest} of the {adm} inputs of {what} for pooled text, but the weights' pooled width (text_encoder_2's projection) is {p}"
                )));
            }
            declared
        } else if let Some(p) = pooled {
            let rest = adm.checked_sub(p).filter(|&r| r > 0).ok_or_else(|| {
                Error::Weights(format!(
                    "{what} takes {adm} inputs, not more than text_encoder_2's pooled width {p}: no room for the {TIME_IDS} size/crop embeddings"
                ))
            })?;
            if !rest.is_multiple_of(TIME_IDS) {
                return Err(Error::Weights(format!(
                    "{what} takes {adm} inputs; less text_encoder_2's pooled width {p} that leaves {rest}, which does not split into {TIME_IDS} equal size/crop embeddings (addition_time_embed_dim would be {rest}/{TIME_IDS})"
                )));
            }
            rest / TIME_IDS
        } else {
            let a = FALLBACK_ADDITION_TIME_EMBED_DIM;
            if adm <= TIME_IDS * a {
                return Err(Error::Weights(format!(
                    "{what} takes {adm} inputs; without text_encoder_2 the pooled width is unknown and SDXL's {TIME_IDS} × {a} size/crop embeddings are assumed, which leaves nothing for pooled text"
                )));
            }
            a
        };
        if atd < 2 {
            return Err(Error::Weights(format!(
                "{what}: size/crop embeddings {atd} wide are not supported (at least 2: one sine, one cosine)"
            )));
        }
        self.addition_time_embed_dim = atd;
        self.pooled_dim = adm - TIME_IDS * atd;
        Ok(())
    }
}

impl ComponentConfig {
    pub fn tensors(&self, c: Component) -> Vec<(String, Vec<usize>)> {
        match (self, c) {
            (ComponentConfig::Unet(u), _) => unet_tensors(u),
            (ComponentConfig::Vae(v), _) => vae_tensors(v),
            (ComponentConfig::Clip(t), Component::TextEncoder) => clip_l_tensors(t),
            (ComponentConfig::Clip(t), _) => open_clip_tensors(t),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Canonical tensor lists (names relative to the component prefix).

struct List(Vec<(String, Vec<usize>)>);

impl List {
    fn add(&mut self, name: impl Into<String>, shape: &[usize]) {
        self.0.push((name.into(), shape.to_vec()));
    }
    fn wb(&mut self, p: &str, w: &[usize], b: usize) {
        self.add(format!("{p}.weight"), w);
        self.add(format!("{p}.bias"), &[b]);
    }
    fn norm(&mut self, p: &str, c: usize) {
        self.wb(p, &[c], c);
    }
    fn conv3(&mut self, p: &str, o: usize, i: usize) {
        self.wb(p, &[o, i, 3, 3], o);
    }
    fn conv1(&mut self, p: &str, o: usize, i: usize) {
        self.wb(p, &[o, i, 1, 1], o);
    }
    fn linear(&mut self, p: &str, o: usize, i: usize) {
        self.wb(p, &[o, i], o);
    }
}

fn unet_res(l: &mut List, p: &str, i: usize, o: usize, emb: usize) {
    l.norm(&format!("{p}.in_layers.0"), i);
    l.conv3(&format!("{p}.in_layers.2"), o, i);
    l.linear(&format!("{p}.emb_layers.1"), o, emb);
    l.norm(&format!("{p}.out_layers.0"), o);
    l.conv3(&format!("{p}.out_layers.3"), o, o);
    if i != o {
        l.conv1(&format!("{p}.skip_connection"), o, i);
    }
}

fn unet_transformer(l: &mut List, p: &str, c: usize, depth: usize, ctx: usize) {
    l.norm(&format!("{p}.norm"), c);
    // SDXL uses linear proj_in/proj_out (use_linear_in_transformer).
    l.linear(&format!("{p}.proj_in"), c, c);
    for k in 0..depth {
        let b = format!("{p}.transformer_blocks.{k}");
        for a in ["attn1", "attn2"] {
            let kv = if a == "attn1" { c } else { ctx };
            l.add(format!("{b}.{a}.to_q.weight"), &[c, c]);
            l.add(format!("{b}.{a}.to_k.weight"), &[c, kv]);
            l.add(format!("{b}.{a}.to_v.weight"), &[c, kv]);
            l.linear(&format!("{b}.{a}.to_out.0"), c, c);
        }
        // GEGLU: one projection to twice the 4c inner width, then the output linear.
        l.linear(&format!("{b}.ff.net.0.proj"), 8 * c, c);
        l.linear(&format!("{b}.ff.net.2"), c, 4 * c);
        for n in ["norm1", "norm2", "norm3"] {
            l.norm(&format!("{b}.{n}"), c);
        }
    }
    l.linear(&format!("{p}.proj_out"), c, c);
}

/// The sgm/ldm `UNetModel` tensors, in the order its constructor creates them.
pub fn unet_tensors(u: &UnetConfig) -> Vec<(String, Vec<usize>)> {
    let mut l = List(Vec::new());
    let (mc, ted) = (u.model_channels, u.time_embed_dim);
    l.linear("time_embed.0", ted, mc);
    l.linear("time_embed.2", ted, ted);
    l.linear("label_emb.0.0", ted, u.adm_in_channels);
    l.linear("label_emb.0.2", ted, ted);
    l.conv3("input_blocks.0.0", mc, u.in_channels);
    let levels = u.channel_mult.len();
    let mut chans = vec![mc];
    let mut ch = mc;
    let mut idx = 1;
    for lv in 0..levels {
        let out = mc * u.channel_mult[lv];
        for _ in 0..u.num_res_blocks {
            unet_res(&mut l, &format!("input_blocks.{idx}.0"), ch, out, ted);
            ch = out;
            if u.transformer_depth[lv] > 0 {
                unet_transformer(&mut l, &format!("input_blocks.{idx}.1"), ch, u.transformer_depth[lv], u.context_dim);
            }
            chans.push(ch);
            idx += 1;
        }
        if lv + 1 != levels {
            l.conv3(&format!("input_blocks.{idx}.0.op"), ch, ch);
            chans.push(ch);
            idx += 1;
        }
    }
    unet_res(&mut l, "middle_block.0", ch, ch, ted);
    unet_transformer(&mut l, "middle_block.1", ch, u.transformer_depth_middle, u.context_dim);
    unet_res(&mut l, "middle_block.2", ch, ch, ted);
    let mut idx = 0;
    for lv in (0..levels).rev() {
        let out = mc * u.channel_mult[lv];
        for j in 0..=u.num_res_blocks {
            let skip = chans.pop().expect("one skip per output block");
            unet_res(&mut l, &format!("output_blocks.{idx}.0"), ch + skip, out, ted);
            ch = out;
            let mut sub = 1;
            if u.transformer_depth[lv] > 0 {
                unet_transformer(&mut l, &format!("output_blocks.{idx}.1"), ch, u.transformer_depth[lv], u.context_dim);
                sub = 2;
            }
            if lv > 0 && j == u.num_res_blocks {
                l.conv3(&format!("output_blocks.{idx}.{sub}.conv"), ch, ch);
            }
            idx += 1;
        }
    }
    l.norm("out.0", mc);
    l.conv3("out.2", u.out_channels, mc);
    l.0
}

fn vae_res(l: &mut List, p: &str, i: usize, o: usize) {
    l.norm(&format!("{p}.norm1"), i);
    l.conv3(&format!("{p}.conv1"), o, i);
    l.norm(&format!("{p}.norm2"), o);
    l.conv3(&format!("{p}.conv2"), o, o);
    if i != o {
        l.conv1(&format!("{p}.nin_shortcut"), o, i);
    }
}

fn vae_mid(l: &mut List, p: &str, c: usize) {
    vae_res(l, &format!("{p}.block_1"), c, c);
    l.norm(&format!("{p}.attn_1.norm"), c);
    // Stored as 1×1 convolutions in the original layout.
    for n in ["q", "k", "v", "proj_out"] {
        l.conv1(&format!("{p}.attn_1.{n}"), c, c);
    }
    vae_res(l, &format!("{p}.block_2"), c, c);
}

/// The ldm `AutoencoderKL` tensors (encoder, decoder, quant convs).
pub fn vae_tensors(v: &VaeConfig) -> Vec<(String, Vec<usize>)> {
    let mut l = List(Vec::new());
    let levels = v.ch_mult.len();
    l.conv3("encoder.conv_in", v.ch, v.in_channels);
    let mut ch = v.ch;
    for lv in 0..levels {
        let out = v.ch * v.ch_mult[lv];
        for j in 0..v.num_res_blocks {
            vae_res(&mut l, &format!("encoder.down.{lv}.block.{j}"), ch, out);
            ch = out;
        }
        if lv + 1 != levels {
            l.conv3(&format!("encoder.down.{lv}.downsample.conv"), ch, ch);
        }
    }
    vae_mid(&mut l, "encoder.mid", ch);
    l.norm("encoder.norm_out", ch);
    l.conv3("encoder.conv_out", 2 * v.z_channels, ch);
    l.conv1("quant_conv", 2 * v.embed_dim, 2 * v.z_channels);
    l.conv1("post_quant_conv", v.z_channels, v.embed_dim);
    let mut ch = v.ch * v.ch_mult[levels - 1];
    l.conv3("decoder.conv_in", ch, v.z_channels);
    vae_mid(&mut l, "decoder.mid", ch);
    // The decoder's `up` list is indexed by resolution level, built from the lowest resolution.
    for lv in (0..levels).rev() {
        let out = v.ch * v.ch_mult[lv];
        for j in 0..=v.num_res_blocks {
            vae_res(&mut l, &format!("decoder.up.{lv}.block.{j}"), ch, out);
            ch = out;
        }
        if lv != 0 {
            l.conv3(&format!("decoder.up.{lv}.upsample.conv"), ch, ch);
        }
    }
    l.norm("decoder.norm_out", ch);
    l.conv3("decoder.conv_out", v.out_channels, ch);
    l.0
}

/// HF `CLIPTextModel` tensors (CLIP-L is stored with transformers' names in SDXL files).
pub fn clip_l_tensors(t: &ClipConfig) -> Vec<(String, Vec<usize>)> {
    let mut l = List(Vec::new());
    let h = t.hidden;
    l.add("text_model.embeddings.token_embedding.weight", &[t.vocab, h]);
    l.add("text_model.embeddings.position_embedding.weight", &[t.max_positions, h]);
    for i in 0..t.layers {
        let p = format!("text_model.encoder.layers.{i}");
        for n in ["k_proj", "v_proj", "q_proj", "out_proj"] {
            l.linear(&format!("{p}.self_attn.{n}"), h, h);
        }
        l.norm(&format!("{p}.layer_norm1"), h);
        l.linear(&format!("{p}.mlp.fc1"), t.intermediate, h);
        l.linear(&format!("{p}.mlp.fc2"), h, t.intermediate);
        l.norm(&format!("{p}.layer_norm2"), h);
    }
    l.norm("text_model.final_layer_norm", h);
    l.0
}

/// OpenCLIP text tower tensors (fused q/k/v `in_proj`, `text_projection` used as x·P).
pub fn open_clip_tensors(t: &ClipConfig) -> Vec<(String, Vec<usize>)> {
    let mut l = List(Vec::new());
    let h = t.hidden;
    l.add("positional_embedding", &[t.max_positions, h]);
    l.add("text_projection", &[h, t.projection.unwrap_or(h)]);
    l.add("token_embedding.weight", &[t.vocab, h]);
    for i in 0..t.layers {
        let p = format!("transformer.resblocks.{i}");
        l.add(format!("{p}.attn.in_proj_weight"), &[3 * h, h]);
        l.add(format!("{p}.attn.in_proj_bias"), &[3 * h]);
        l.linear(&format!("{p}.attn.out_proj"), h, h);
        l.norm(&format!("{p}.ln_1"), h);
        l.linear(&format!("{p}.mlp.c_fc"), t.intermediate, h);
        l.linear(&format!("{p}.mlp.c_proj"), h, t.intermediate);
        l.norm(&format!("{p}.ln_2"), h);
    }
    l.norm("ln_final", h);
    l.0
}

// ---------------------------------------------------------------------------------------------
// Inference from canonical names (component-relative) and shapes.

/// Canonical names → shapes of one component, as seen in a file (after layout mapping).
pub type Shapes = HashMap<String, Vec<usize>>;

struct Ctx<'a> {
    file: &'a str,
    comp: Component,
    s: &'a Shapes,
}

impl Ctx<'_> {
    fn shape(&self, name: &str) -> Result<&[usize]> {
        self.s
            .get(name)
            .map(|v| v.as_slice())
            .ok_or_else(|| Error::Weights(format!("{}: missing tensor '{}{name}'", self.file, self.comp.prefix())))
    }
    fn dim(&self, name: &str, axis: usize) -> Result<usize> {
        let s = self.shape(name)?;
        s.get(axis).copied().ok_or_else(|| {
            Error::Weights(format!(
                "{}: tensor '{}{name}' has shape {s:?}, expected at least {} dimensions",
                self.file,
                self.comp.prefix(),
                axis + 1
            ))
        })
    }
    /// Number of consecutive indices `i` (from 0) for which `f(i)` names a tensor.
    fn count(&self, f: impl Fn(usize) -> String) -> usize {
        let mut n = 0;
        while self.s.contains_key(&f(n)) {
            n += 1;
        }
        n
    }
    fn multiple(&self, what: &str, v: usize, of: usize) -> Result<usize> {
        if of == 0 || !v.is_multiple_of(of) {
            return Err(Error::Weights(format!(
                "{}: {} {what} width {v} is not a multiple of the base width {of}",
                self.file,
                self.comp.name()
            )));
        }
        Ok(v / of)
    }
}

/// Infer one component's configuration from its tensors' shapes, completed by its diffusers
/// `config.json` when there is one (and checked against it), else by the `FALLBACK_*` values.
/// The UNet's `addition_time_embed_dim` stays 0 unless the config declares it: it is resolved
/// with the pooled width at the model level ([`ModelConfig::assemble`]).
pub fn infer(file: &str, comp: Component, shapes: &Shapes, declared: Option<&ConfigFile>) -> Result<ComponentConfig> {
    let c = Ctx { file, comp, s: shapes };
    if let Some(d) = declared {
        d.check_class(comp)?;
    }
    Ok(match comp {
        Component::Unet => ComponentConfig::Unet(infer_unet(&c, declared)?),
        Component::Vae => ComponentConfig::Vae(infer_vae(&c, declared)?),
        Component::TextEncoder => ComponentConfig::Clip(infer_clip_l(&c, declared)?),
        Component::TextEncoder2 => ComponentConfig::Clip(infer_open_clip(&c, declared)?),
    })
}

fn infer_unet(c: &Ctx, d: Option<&ConfigFile>) -> Result<UnetConfig> {
    let mc = c.dim("input_blocks.0.0.weight", 0)?;
    let in_channels = c.dim("input_blocks.0.0.weight", 1)?;
    let out_channels = c.dim("out.2.weight", 0)?;
    let time_embed_dim = c.dim("time_embed.0.weight", 0)?;
    let adm_in_channels = c.dim("label_emb.0.0.weight", 1)?;
    // The first downsampler sits right after the first level's res blocks.
    let first_down = (1..64).find(|i| c.s.contains_key(&format!("input_blocks.{i}.0.op.weight")));
    let n_input = (0..).take_while(|i| c.s.keys().any(|k| k.starts_with(&format!("input_blocks.{i}.")))).count();
    let num_res_blocks = match first_down {
        Some(d) => d - 1,
        None => n_input - 1,
    };
    if num_res_blocks == 0 {
        return Err(Error::Weights(format!("{}: the UNet has no res blocks in its first level", c.file)));
    }
    let levels = n_input / (num_res_blocks + 1);
    if levels == 0 || levels * (num_res_blocks + 1) != n_input {
        return Err(Error::Weights(format!(
            "{}: {n_input} UNet input blocks do not form whole levels of {num_res_blocks} res blocks plus a downsampler",
            c.file
        )));
    }
    let mut channel_mult = Vec::new();
    let mut transformer_depth = Vec::new();
    let mut context_dim = None;
    for lv in 0..levels {
        let idx = 1 + lv * (num_res_blocks + 1);
        let out = c.dim(&format!("input_blocks.{idx}.0.out_layers.3.weight"), 0)?;
        channel_mult.push(c.multiple("level channel", out, mc)?);
        let d = c.count(|k| format!("input_blocks.{idx}.1.transformer_blocks.{k}.attn1.to_q.weight"));
        if d > 0 && context_dim.is_none() {
            context_dim = Some(c.dim(&format!("input_blocks.{idx}.1.transformer_blocks.0.attn2.to_k.weight"), 1)?);
        }
        transformer_depth.push(d);
    }
    let transformer_depth_middle = c.count(|k| format!("middle_block.1.transformer_blocks.{k}.attn1.to_q.weight"));
    if transformer_depth_middle == 0 {
        return Err(Error::Weights(format!(
            "{}: the UNet middle block has no transformer (middle_block.1); not an SDXL UNet",
            c.file
        )));
    }
    let context_dim = match context_dim {
        Some(d) => d,
        None => c.dim("middle_block.1.transformer_blocks.0.attn2.to_k.weight", 1)?,
    };
    let chans: Vec<usize> = channel_mult.iter().map(|m| m * mc).collect();
    let top = *chans.last().expect("levels > 0");
    let mut u = UnetConfig {
        in_channels,
        out_channels,
        model_channels: mc,
        num_heads: chans.iter().map(|&ch| fallback_heads(ch)).collect(),
        num_heads_middle: fallback_heads(top),
        channel_mult,
        num_res_blocks,
        transformer_depth,
        transformer_depth_middle,
        context_dim,
        time_embed_dim,
        adm_in_channels,
        addition_time_embed_dim: 0,
        pooled_dim: 0,
        norm_num_groups: FALLBACK_NORM_GROUPS,
        norm_eps: FALLBACK_UNET_NORM_EPS,
    };
    let Some(d) = d else { return Ok(u) };
    let w = c.file;
    d.same("in_channels", in_channels, w, "conv_in's input channels")?;
    d.same("out_channels", out_channels, w, "conv_out's output channels")?;
    d.same_list("block_out_channels", &chans, w, "the level widths")?;
    d.same_all("layers_per_block", levels, num_res_blocks, w, "res blocks per down level")?;
    d.same_all("cross_attention_dim", levels, context_dim, w, "the cross-attention context width")?;
    d.same("projection_class_embeddings_input_dim", adm_in_channels, w, "label_emb's input width")?;
    if let Some(depths) = d.per_level("transformer_layers_per_block", levels)? {
        let mut want = depths.clone();
        for (lv, &t) in u.transformer_depth.iter().enumerate() {
            if t == 0 {
                want[lv] = 0; // a level without attention ignores it (DownBlock2D)
            }
        }
        let mut got = u.transformer_depth.clone();
        got.push(u.transformer_depth_middle);
        want.push(depths[levels - 1]);
        if got != want {
            return Err(d.contradicts(
                "transformer_layers_per_block",
                &format!("{depths:?}"),
                w,
                &format!(
                    "have {:?} transformer blocks per level and {} in the middle block",
                    u.transformer_depth, u.transformer_depth_middle
                ),
            ));
        }
    }
    // What the UNet code implements (SDXL's); a config asking for something else is refused.
    d.only("act_fn", &["silu"])?;
    d.only("addition_embed_type", &["text_time"])?;
    d.only("time_embedding_type", &["positional"])?;
    d.only("resnet_time_scale_shift", &["default"])?;
    d.fixed("flip_sin_to_cos", &Value::Bool(true))?;
    d.fixed("freq_shift", &Value::from(0))?;
    // diffusers' legacy naming: `attention_head_dim` is the number of heads per level when
    // `num_attention_heads` is null (UNet2DConditionModel: num_attention_heads or attention_head_dim).
    let key = if d.get("num_attention_heads").is_some() { "num_attention_heads" } else { "attention_head_dim" };
    if let Some(heads) = d.per_level(key, levels)? {
        for (lv, (&h, &ch)) in heads.iter().zip(&chans).enumerate() {
            let attends = u.transformer_depth[lv] > 0 || lv + 1 == levels;
            if attends && (h == 0 || !ch.is_multiple_of(h)) {
                return Err(d.contradicts(
                    key,
                    &format!("{heads:?} (heads per level)"),
                    w,
                    &format!("have {ch} channels at level {lv}, which do not split into {h} heads"),
                ));
            }
        }
        u.num_heads_middle = heads[levels - 1];
        u.num_heads = heads;
    }
    if let Some(g) = d.usize("norm_num_groups")? {
        let widths: Vec<usize> = chans.iter().copied().chain([mc]).collect();
        if let Some(ch) = widths.iter().find(|&&ch| g == 0 || !ch.is_multiple_of(g)) {
            return Err(d.contradicts("norm_num_groups", &g.to_string(), w, &format!("have a {ch}-channel GroupNorm")));
        }
        u.norm_num_groups = g;
    }
    if let Some(e) = d.f32("norm_eps")? {
        u.norm_eps = e;
    }
    if let Some(a) = d.usize("addition_time_embed_dim")? {
        u.addition_time_embed_dim = a;
        // Checked against label_emb now; against the pooled width at the model level.
        u.resolve_addition(None, Some(&d.file))?;
    }
    Ok(u)
}

fn infer_vae(c: &Ctx, d: Option<&ConfigFile>) -> Result<VaeConfig> {
    let ch = c.dim("encoder.conv_in.weight", 0)?;
    let in_channels = c.dim("encoder.conv_in.weight", 1)?;
    let out_channels = c.dim("decoder.conv_out.weight", 0)?;
    let levels = c.count(|i| format!("encoder.down.{i}.block.0.conv1.weight"));
    if levels == 0 {
        return Err(Error::Weights(format!(
            "{}: missing tensor '{}encoder.down.0.block.0.conv1.weight'",
            c.file,
            c.comp.prefix()
        )));
    }
    let num_res_blocks = c.count(|j| format!("encoder.down.0.block.{j}.conv1.weight"));
    let mut ch_mult = Vec::new();
    for lv in 0..levels {
        let out = c.dim(&format!("encoder.down.{lv}.block.0.conv2.weight"), 0)?;
        ch_mult.push(c.multiple("level channel", out, ch)?);
    }
    let z_channels = c.dim("decoder.conv_in.weight", 1)?;
    let embed_dim = c.dim("post_quant_conv.weight", 1)?;
    let mut v = VaeConfig {
        in_channels,
        out_channels,
        ch,
        ch_mult,
        num_res_blocks,
        z_channels,
        embed_dim,
        norm_num_groups: FALLBACK_NORM_GROUPS,
        scaling_factor: FALLBACK_VAE_SCALING,
    };
    let Some(d) = d else { return Ok(v) };
    let w = c.file;
    let chans: Vec<usize> = v.ch_mult.iter().map(|m| m * ch).collect();
    d.same("in_channels", in_channels, w, "encoder.conv_in's input channels")?;
    d.same("out_channels", out_channels, w, "decoder.conv_out's output channels")?;
    d.same("latent_channels", z_channels, w, "decoder.conv_in's input channels")?;
    d.same_list("block_out_channels", &chans, w, "the level widths")?;
    d.same_all("layers_per_block", levels, num_res_blocks, w, "res blocks per encoder level")?;
    d.only("act_fn", &["silu"])?;
    for key in ["shift_factor", "latents_mean", "latents_std"] {
        if let Some(x) = d.get(key) {
            return Err(Error::Weights(format!(
                "{}: {key} is {x}; latent shift and per-channel latent statistics are not supported (only scaling_factor)",
                d.file
            )));
        }
    }
    if let Some(g) = d.usize("norm_num_groups")? {
        if let Some(c) = chans.iter().find(|&&c| g == 0 || !c.is_multiple_of(g)) {
            return Err(d.contradicts("norm_num_groups", &g.to_string(), w, &format!("have a {c}-channel GroupNorm")));
        }
        v.norm_num_groups = g;
    }
    if let Some(s) = d.f32("scaling_factor")? {
        if !(s.is_finite() && s > 0.0) {
            return Err(Error::Weights(format!("{}: scaling_factor is {s}; it must be a positive number", d.file)));
        }
        v.scaling_factor = s;
    }
    Ok(v)
}

fn infer_clip_l(c: &Ctx, d: Option<&ConfigFile>) -> Result<ClipConfig> {
    let vocab = c.dim("text_model.embeddings.token_embedding.weight", 0)?;
    let hidden = c.dim("text_model.embeddings.token_embedding.weight", 1)?;
    let max_positions = c.dim("text_model.embeddings.position_embedding.weight", 0)?;
    let layers = c.count(|i| format!("text_model.encoder.layers.{i}.mlp.fc1.weight"));
    if layers == 0 {
        return Err(Error::Weights(format!(
            "{}: missing tensor '{}text_model.encoder.layers.0.mlp.fc1.weight'",
            c.file,
            c.comp.prefix()
        )));
    }
    let intermediate = c.dim("text_model.encoder.layers.0.mlp.fc1.weight", 0)?;
    let t = ClipConfig {
        hidden,
        layers,
        heads: fallback_heads(hidden),
        intermediate,
        vocab,
        max_positions,
        projection: None,
        activation: Activation::QuickGelu,
        layer_norm_eps: FALLBACK_CLIP_EPS,
    };
    apply_clip(c, t, d)
}

fn infer_open_clip(c: &Ctx, d: Option<&ConfigFile>) -> Result<ClipConfig> {
    let vocab = c.dim("token_embedding.weight", 0)?;
    let hidden = c.dim("token_embedding.weight", 1)?;
    let max_positions = c.dim("positional_embedding", 0)?;
    let layers = c.count(|i| format!("transformer.resblocks.{i}.mlp.c_fc.weight"));
    if layers == 0 {
        return Err(Error::Weights(format!(
            "{}: missing tensor '{}transformer.resblocks.0.mlp.c_fc.weight'",
            c.file,
            c.comp.prefix()
        )));
    }
    let intermediate = c.dim("transformer.resblocks.0.mlp.c_fc.weight", 0)?;
    let projection = Some(c.dim("text_projection", 1)?);
    let t = ClipConfig {
        hidden,
        layers,
        heads: fallback_heads(hidden),
        intermediate,
        vocab,
        max_positions,
        projection,
        activation: Activation::Gelu,
        layer_norm_eps: FALLBACK_CLIP_EPS,
    };
    apply_clip(c, t, d)
}

/// A transformers `CLIPTextConfig`: checked against the shapes, heads / activation / eps taken.
fn apply_clip(c: &Ctx, mut t: ClipConfig, d: Option<&ConfigFile>) -> Result<ClipConfig> {
    let Some(d) = d else { return Ok(t) };
    let w = c.file;
    d.same("hidden_size", t.hidden, w, "the token embedding width")?;
    d.same("num_hidden_layers", t.layers, w, "the layer count")?;
    d.same("intermediate_size", t.intermediate, w, "the MLP width")?;
    d.same("vocab_size", t.vocab, w, "token embedding rows")?;
    d.same("max_position_embeddings", t.max_positions, w, "position embedding rows")?;
    // CLIPTextModel configs carry a projection_dim too (768 in SDXL's), unused without a projection.
    if let Some(p) = t.projection {
        d.same("projection_dim", p, w, "the text projection width")?;
    }
    if let Some(h) = d.usize("num_attention_heads")? {
        if h == 0 || !t.hidden.is_multiple_of(h) {
            return Err(d.contradicts(
                "num_attention_heads",
                &h.to_string(),
                w,
                &format!("have hidden width {}, which does not split into {h} heads", t.hidden),
            ));
        }
        t.heads = h;
    }
    if let Some(a) = d.string("hidden_act")? {
        t.activation = match a {
            "quick_gelu" => Activation::QuickGelu,
            // transformers' "gelu" is the exact erf GELU.
            "gelu" => Activation::Gelu,
            other => {
                return Err(Error::Weights(format!(
                    "{}: hidden_act \"{other}\" is not supported (only \"quick_gelu\" and \"gelu\")",
                    d.file
                )))
            }
        };
    }
    if let Some(e) = d.f32("layer_norm_eps")? {
        t.layer_norm_eps = e;
    }
    Ok(t)
}

// ---------------------------------------------------------------------------------------------
// diffusers / transformers config.json

/// One component's `config.json` (diffusers `UNet2DConditionModel` / `AutoencoderKL`, transformers
/// `CLIPTextConfig`), as text parsed into JSON; fields are read, with errors that name the file
/// and the field, by [`infer`].
#[derive(Clone, Debug)]
pub struct ConfigFile {
    /// The path or name, for messages.
    pub file: String,
    json: serde_json::Map<String, Value>,
}

/// The config.json of each component that has one.
#[derive(Clone, Debug, Default)]
pub struct ConfigFiles(BTreeMap<Component, ConfigFile>);

impl ConfigFiles {
    /// Parse `text` as `comp`'s config.json (`file` names it in messages).
    pub fn add(&mut self, comp: Component, file: impl Into<String>, text: &str) -> Result<()> {
        let f = ConfigFile::parse(file, text)?;
        self.0.insert(comp, f);
        Ok(())
    }
    pub fn get(&self, comp: Component) -> Option<&ConfigFile> {
        self.0.get(&comp)
    }
}

impl ConfigFile {
    pub fn parse(file: impl Into<String>, text: &str) -> Result<ConfigFile> {
        let file = file.into();
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(json)) => Ok(ConfigFile { file, json }),
            Ok(_) => Err(Error::Weights(format!("{file}: not a JSON object"))),
            Err(e) => Err(Error::Weights(format!("{file}: not valid JSON: {e}"))),
        }
    }

    /// A diffusers config names its class: refuse another component's config (a swapped folder).
    fn check_class(&self, comp: Component) -> Result<()> {
        let want: &[&str] = match comp {
            Component::Unet => &["UNet2DConditionModel"],
            Component::Vae => &["AutoencoderKL"],
            Component::TextEncoder => &["CLIPTextModel", "CLIPTextModelWithProjection"],
            Component::TextEncoder2 => &["CLIPTextModelWithProjection"],
        };
        let key = match comp {
            Component::Unet | Component::Vae => "_class_name",
            _ => "architectures",
        };
        let class = self.get(key).and_then(|v| v.as_str().or_else(|| v.get(0).and_then(Value::as_str)));
        match class {
            Some(c) if !want.contains(&c) => Err(Error::Weights(format!(
                "{}: {key} says {c}, but the {} must be a {}",
                self.file,
                comp.name(),
                want.join(" or ")
            ))),
            _ => Ok(()),
        }
    }

    /// The field, unless absent or null.
    fn get(&self, key: &str) -> Option<&Value> {
        self.json.get(key).filter(|v| !v.is_null())
    }

    fn bad(&self, key: &str, v: &Value, want: &str) -> Error {
        Error::Weights(format!("{}: {key} is {v}, expected {want}", self.file))
    }

    fn usize(&self, key: &str) -> Result<Option<usize>> {
        self.get(key)
            .map(|v| v.as_u64().map(|n| n as usize).ok_or_else(|| self.bad(key, v, "a non-negative integer")))
            .transpose()
    }

    fn f32(&self, key: &str) -> Result<Option<f32>> {
        self.get(key).map(|v| v.as_f64().map(|x| x as f32).ok_or_else(|| self.bad(key, v, "a number"))).transpose()
    }

    fn string(&self, key: &str) -> Result<Option<&str>> {
        self.get(key).map(|v| v.as_str().ok_or_else(|| self.bad(key, v, "a string"))).transpose()
    }

    /// An int (the same at every level) or a list of one int per level.
    fn per_level(&self, key: &str, levels: usize) -> Result<Option<Vec<usize>>> {
        let Some(v) = self.get(key) else { return Ok(None) };
        if let Some(n) = v.as_u64() {
            return Ok(Some(vec![n as usize; levels]));
        }
        let want = format!("an integer or a list of {levels} integers (one per level)");
        let list = v.as_array().filter(|a| a.len() == levels).ok_or_else(|| self.bad(key, v, &want))?;
        list.iter()
            .map(|x| x.as_u64().map(|n| n as usize).ok_or_else(|| self.bad(key, v, &want)))
            .collect::<Result<_>>()
            .map(Some)
    }

    /// "{config}: {key} is {value} but the weights ({weights file}) {what they say}".
    fn contradicts(&self, key: &str, value: &str, weights: &str, says: &str) -> Error {
        Error::Weights(format!("{}: {key} is {value} but the weights ({weights}) {says}", self.file))
    }

    /// The field, if given, equals what the weights say (`what`: where they say it).
    fn same(&self, key: &str, got: usize, weights: &str, what: &str) -> Result<()> {
        match self.usize(key)? {
            Some(v) if v != got => Err(self.contradicts(key, &v.to_string(), weights, &format!("say {got} ({what})"))),
            _ => Ok(()),
        }
    }

    /// An int or per-level list, every entry equal to what the weights say.
    fn same_all(&self, key: &str, levels: usize, got: usize, weights: &str, what: &str) -> Result<()> {
        match self.per_level(key, levels)? {
            Some(v) if v.iter().any(|&x| x != got) => {
                let value = self.get(key).expect("present").to_string();
                Err(self.contradicts(key, &value, weights, &format!("say {got} ({what})")))
            }
            _ => Ok(()),
        }
    }

    fn same_list(&self, key: &str, got: &[usize], weights: &str, what: &str) -> Result<()> {
        let Some(v) = self.get(key) else { return Ok(()) };
        let list: Option<Vec<usize>> =
            v.as_array().and_then(|a| a.iter().map(|x| x.as_u64().map(|n| n as usize)).collect());
        match list {
            Some(l) if l == got => Ok(()),
            Some(_) => Err(self.contradicts(key, &v.to_string(), weights, &format!("say {got:?} ({what})"))),
            None => Err(self.bad(key, v, "a list of integers")),
        }
    }

    /// A non-string field whose other values the engine does not implement.
    fn fixed(&self, key: &str, want: &Value) -> Result<()> {
        match self.get(key) {
            Some(v) if v != want && v.as_f64().is_none_or(|x| Some(x) != want.as_f64()) => {
                Err(Error::Weights(format!("{}: {key} is {v}, which is not supported (only {want})", self.file)))
            }
            _ => Ok(()),
        }
    }

    /// A field whose other values the engine does not implement.
    fn only(&self, key: &str, allowed: &[&str]) -> Result<()> {
        match self.string(key)? {
            Some(v) if !allowed.contains(&v) => Err(Error::Weights(format!(
                "{}: {key} \"{v}\" is not supported (only \"{}\")",
                self.file,
                allowed.join("\", \"")
            ))),
            _ => Ok(()),
        }
    }
}

/// Parameter count of a canonical list.
pub fn param_count(list: &[(String, Vec<usize>)]) -> u64 {
    list.iter().map(|(_, s)| s.iter().map(|&d| d as u64).product::<u64>()).sum()
}

/// A deterministic ordering helper: canonical list as a name → shape map.
pub fn to_map(list: &[(String, Vec<usize>)]) -> BTreeMap<&str, &[usize]> {
    list.iter().map(|(n, s)| (n.as_str(), s.as_slice())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shapes(list: &[(String, Vec<usize>)]) -> Shapes {
        list.iter().cloned().collect()
    }

    #[test]
    fn sdxl_base_parameter_counts() {
        let c = ModelConfig::sdxl_base();
        // The published SDXL 1.0 base counts (diffusers' modules, sd_xl_base_1.0.safetensors).
        assert_eq!(param_count(&unet_tensors(&c.unet)), 2_567_463_684);
        assert_eq!(param_count(&open_clip_tensors(&c.text_encoder_2)), 694_659_840);
        assert_eq!(param_count(&clip_l_tensors(&c.text_encoder)), 123_060_480);
        assert_eq!(param_count(&vae_tensors(&c.vae)), 83_653_863);
        c.check().unwrap();
    }

    #[test]
    fn inference_inverts_the_canonical_lists() {
        let c = ModelConfig::sdxl_base();
        let f = "test";
        let ComponentConfig::Unet(mut u) = infer(f, Component::Unet, &shapes(&unet_tensors(&c.unet)), None).unwrap()
        else {
            panic!("a UNet config")
        };
        // label_emb's split needs the pooled width (text_encoder_2's projection) or SDXL's 256.
        assert_eq!((u.addition_time_embed_dim, u.pooled_dim), (0, 0));
        let mut alone = u.clone();
        u.resolve_addition(c.text_encoder_2.projection, None).unwrap();
        assert_eq!(u, c.unet);
        alone.resolve_addition(None, None).unwrap();
        assert_eq!(alone, c.unet);
        assert_eq!(
            infer(f, Component::Vae, &shapes(&vae_tensors(&c.vae)), None).unwrap(),
            ComponentConfig::Vae(c.vae.clone())
        );
        assert_eq!(
            infer(f, Component::TextEncoder, &shapes(&clip_l_tensors(&c.text_encoder)), None).unwrap(),
            ComponentConfig::Clip(c.text_encoder.clone())
        );
        assert_eq!(
            infer(f, Component::TextEncoder2, &shapes(&open_clip_tensors(&c.text_encoder_2)), None).unwrap(),
            ComponentConfig::Clip(c.text_encoder_2.clone())
        );
    }

    #[test]
    fn sdxl_unet_has_the_known_block_layout() {
        let l = unet_tensors(&ModelConfig::sdxl_base().unet);
        let m = to_map(&l);
        // Spot checks against sd_xl_base_1.0.safetensors.
        assert_eq!(m["input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight"], &[640, 2048]);
        assert_eq!(m["input_blocks.8.1.transformer_blocks.9.ff.net.0.proj.weight"], &[10240, 1280]);
        assert_eq!(m["input_blocks.6.0.op.weight"], &[640, 640, 3, 3]);
        assert_eq!(m["output_blocks.2.2.conv.weight"], &[1280, 1280, 3, 3]);
        assert_eq!(m["output_blocks.5.2.conv.weight"], &[640, 640, 3, 3]);
        assert_eq!(m["output_blocks.6.0.skip_connection.weight"], &[320, 960, 1, 1]);
        assert_eq!(m["output_blocks.8.0.skip_connection.weight"], &[320, 640, 1, 1]);
        assert_eq!(m["label_emb.0.0.weight"], &[1280, 2816]);
        assert!(!m.contains_key("output_blocks.8.1.norm.weight"));
        assert_eq!(l.len(), 1680);
    }
}
