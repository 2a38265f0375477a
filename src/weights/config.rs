//! Model configuration inferred from tensor names and shapes, and the reverse: the complete list
//! of canonical tensor names and shapes a configuration implies. That list is the one source of
//! truth used to validate a checkpoint (missing, unexpected or mis-shaped tensors), to allocate
//! GPU buffers, to count parameters and to write the random full-size checkpoint.
//!
//! Names here are relative to each component's single-file prefix (see [`Component::prefix`]).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::Component;
use crate::{Error, Result};

/// Attention head width of every SDXL attention (UNet and both text encoders): the number of
/// heads cannot be read from weights, so it is channels / 64 (at least one head).
pub const HEAD_DIM: usize = 64;

pub fn heads_for(channels: usize) -> usize {
    (channels / HEAD_DIM).max(1)
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub model_channels: usize,
    pub channel_mult: Vec<usize>,
    pub num_res_blocks: usize,
    /// Transformer blocks per spatial transformer at each level (0: no attention there).
    pub transformer_depth: Vec<usize>,
    pub transformer_depth_middle: usize,
    /// Heads per level (channels / 64) and in the middle block.
    pub num_heads: Vec<usize>,
    pub num_heads_middle: usize,
    pub head_dim: usize,
    pub context_dim: usize,
    pub time_embed_dim: usize,
    /// Input width of the addition embedding (pooled text + 6 × `addition_time_embed_dim`).
    pub adm_in_channels: usize,
    pub addition_time_embed_dim: usize,
    /// Pooled text width: `adm_in_channels - 6 * addition_time_embed_dim`.
    pub pooled_dim: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClipConfig {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub vocab: usize,
    pub max_positions: usize,
    /// Width of `text_projection` (OpenCLIP bigG only).
    pub projection: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VaeConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub ch: usize,
    pub ch_mult: Vec<usize>,
    pub num_res_blocks: usize,
    pub z_channels: usize,
    pub embed_dim: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ModelConfig {
    pub unet: UnetConfig,
    pub vae: VaeConfig,
    pub text_encoder: ClipConfig,
    pub text_encoder_2: ClipConfig,
}

/// The configuration of one component.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ComponentConfig {
    Unet(UnetConfig),
    Vae(VaeConfig),
    Clip(ClipConfig),
}

impl ModelConfig {
    /// SDXL 1.0 base (sd_xl_base.yaml), for the random checkpoint writer and tests.
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
            head_dim: HEAD_DIM,
            context_dim: 2048,
            time_embed_dim: 1280,
            adm_in_channels: 2816,
            addition_time_embed_dim: 256,
            pooled_dim: 1280,
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
            },
            text_encoder: ClipConfig {
                hidden: 768,
                layers: 12,
                heads: 12,
                intermediate: 3072,
                vocab: 49408,
                max_positions: 77,
                projection: None,
            },
            text_encoder_2: ClipConfig {
                hidden: 1280,
                layers: 32,
                heads: 20,
                intermediate: 5120,
                vocab: 49408,
                max_positions: 77,
                projection: Some(1280),
            },
        }
    }

    /// Cross-component consistency (the UNet's context is both encoders' hidden states side by
    /// side; its pooled input is bigG's projection).
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

pub fn infer(file: &str, comp: Component, shapes: &Shapes) -> Result<ComponentConfig> {
    let c = Ctx { file, comp, s: shapes };
    Ok(match comp {
        Component::Unet => ComponentConfig::Unet(infer_unet(&c)?),
        Component::Vae => ComponentConfig::Vae(infer_vae(&c)?),
        Component::TextEncoder => ComponentConfig::Clip(infer_clip_l(&c)?),
        Component::TextEncoder2 => ComponentConfig::Clip(infer_open_clip(&c)?),
    })
}

fn infer_unet(c: &Ctx) -> Result<UnetConfig> {
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
    const ADD_TIME: usize = 256; // SDXL's 6 size/crop conditions × 256-channel sinusoids
    if adm_in_channels <= 6 * ADD_TIME {
        return Err(Error::Weights(format!(
            "{}: label_emb input width {adm_in_channels} is too small for SDXL's 6 × {ADD_TIME} size conditions plus pooled text",
            c.file
        )));
    }
    let chans: Vec<usize> = channel_mult.iter().map(|m| m * mc).collect();
    Ok(UnetConfig {
        in_channels,
        out_channels,
        model_channels: mc,
        num_heads: chans.iter().map(|&ch| heads_for(ch)).collect(),
        num_heads_middle: heads_for(*chans.last().expect("levels > 0")),
        channel_mult,
        num_res_blocks,
        transformer_depth,
        transformer_depth_middle,
        head_dim: HEAD_DIM,
        context_dim,
        time_embed_dim,
        adm_in_channels,
        addition_time_embed_dim: ADD_TIME,
        pooled_dim: adm_in_channels - 6 * ADD_TIME,
    })
}

fn infer_vae(c: &Ctx) -> Result<VaeConfig> {
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
    Ok(VaeConfig { in_channels, out_channels, ch, ch_mult, num_res_blocks, z_channels, embed_dim })
}

fn infer_clip_l(c: &Ctx) -> Result<ClipConfig> {
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
    Ok(ClipConfig { hidden, layers, heads: heads_for(hidden), intermediate, vocab, max_positions, projection: None })
}

fn infer_open_clip(c: &Ctx) -> Result<ClipConfig> {
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
    Ok(ClipConfig { hidden, layers, heads: heads_for(hidden), intermediate, vocab, max_positions, projection })
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
        assert_eq!(
            infer(f, Component::Unet, &shapes(&unet_tensors(&c.unet))).unwrap(),
            ComponentConfig::Unet(c.unet.clone())
        );
        assert_eq!(
            infer(f, Component::Vae, &shapes(&vae_tensors(&c.vae))).unwrap(),
            ComponentConfig::Vae(c.vae.clone())
        );
        assert_eq!(
            infer(f, Component::TextEncoder, &shapes(&clip_l_tensors(&c.text_encoder))).unwrap(),
            ComponentConfig::Clip(c.text_encoder.clone())
        );
        assert_eq!(
            infer(f, Component::TextEncoder2, &shapes(&open_clip_tensors(&c.text_encoder_2))).unwrap(),
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
