//! The SDXL single-file layout (A1111/ComfyUI finetunes, `sd_xl_base_1.0.safetensors`): already
//! the canonical naming, so routing is a prefix split. Also recognises what a wrong file looks
//! like (SD 1.x/2.x, the SDXL refiner, LoRAs, a lone diffusers component) to say so clearly.

use super::{diffusers, Component, Header, Route};
use crate::{Error, Result};

/// Tensors the single-file layout carries that inference does not use.
const IGNORED: [&str; 2] = [
    // An I64 (sometimes F32) buffer 0..77; positions are implicit.
    "conditioner.embedders.0.transformer.text_model.embeddings.position_ids",
    // OpenCLIP's contrastive temperature, unused for text conditioning.
    "conditioner.embedders.1.model.logit_scale",
];

fn any(h: &Header, f: impl Fn(&str) -> bool) -> Option<&str> {
    h.tensors.iter().map(|t| t.name.as_str()).find(|n| f(n))
}

/// A LoRA / LyCORIS file, in either kohya or diffusers/PEFT naming.
pub fn lora_key(h: &Header) -> Option<&str> {
    any(h, |n| {
        n.starts_with("lora_unet_")
            || n.starts_with("lora_te")
            || n.contains(".lora_down.")
            || n.contains(".lora_up.")
            || n.contains(".lora_A.")
            || n.contains(".lora_B.")
            || n.contains(".lora.down.")
            || n.ends_with(".hada_w1_a")
            || n.ends_with(".lokr_w1")
    })
}

/// The UNet cross-attention context width, if an attention is present (768 SD1, 1024 SD2, 2048 SDXL).
fn context_dim(h: &Header) -> Option<usize> {
    h.tensors
        .iter()
        .find(|t| t.name.starts_with("model.diffusion_model.") && t.name.ends_with("attn2.to_k.weight"))
        .and_then(|t| t.shape.get(1).copied())
}

/// Explain a file that is not an SDXL single-file checkpoint.
fn not_sdxl(file: &str, h: &Header) -> Error {
    let ctx = context_dim(h).map(|d| format!(", context dim {d}")).unwrap_or_default();
    if let Some(k) = lora_key(h) {
        return Error::Weights(format!(
            "{file} looks like a LoRA (keys like '{k}'), not a model checkpoint; pass a full SDXL checkpoint as the model"
        ));
    }
    if any(h, |n| n.starts_with("cond_stage_model.transformer.")).is_some() {
        return Error::Weights(format!(
            "{file} looks like a Stable Diffusion 1.x checkpoint (CLIP ViT-L text encoder only{}) — only SDXL is supported",
            if ctx.is_empty() { ", context dim 768".to_string() } else { ctx }
        ));
    }
    if any(h, |n| n.starts_with("cond_stage_model.model.")).is_some() {
        return Error::Weights(format!(
            "{file} looks like a Stable Diffusion 2.x checkpoint (OpenCLIP ViT-H text encoder{}) — only SDXL is supported",
            if ctx.is_empty() { ", context dim 1024".to_string() } else { ctx }
        ));
    }
    if any(h, |n| n.starts_with("conditioner.embedders.0.model.")).is_some() {
        return Error::Weights(format!(
            "{file} looks like the SDXL refiner (OpenCLIP bigG as its only text encoder{ctx}) — only SDXL base-style checkpoints are supported"
        ));
    }
    if let Some(c) = diffusers::guess_component(h) {
        return Error::Weights(format!(
            "{file} looks like a single diffusers {} file, not a full checkpoint; pass the diffusers model folder (with unet/, vae/, text_encoder/, text_encoder_2/) or an SDXL single-file checkpoint",
            c.name()
        ));
    }
    let example = h.tensors.first().map(|t| format!(" (its first tensor is '{}')", t.name)).unwrap_or_default();
    Error::Weights(format!(
        "{file} is not an SDXL checkpoint: it has no 'model.diffusion_model.' UNet tensors{example}"
    ))
}

/// Routes for an SDXL single-file checkpoint.
pub fn routes(file: &str, h: &Header, with_vae: bool) -> Result<Vec<Option<Route>>> {
    let has = |p: &str| any(h, |n| n.starts_with(p)).is_some();
    if lora_key(h).is_some() || !has(Component::Unet.prefix()) || !has(Component::TextEncoder2.prefix()) {
        return Err(not_sdxl(file, h));
    }
    Ok(h.tensors
        .iter()
        .map(|t| {
            if IGNORED.contains(&t.name.as_str()) {
                return None;
            }
            let comp = Component::ALL.into_iter().find(|c| t.name.starts_with(c.prefix()))?;
            if comp == Component::Vae && !with_vae {
                return None;
            }
            let rel = &t.name[comp.prefix().len()..];
            let name = if comp == Component::TextEncoder { diffusers::with_text_model(rel) } else { rel.to_string() };
            Some(Route { comp, name, elem_offset: 0, shape: t.shape.clone(), transpose: false })
        })
        .collect())
}

/// VAE key prefixes a separate VAE file may use (none, the checkpoint's, or diffusers' `vae.`).
const VAE_PREFIXES: [&str; 2] = ["first_stage_model.", "vae."];

/// Routes for a separate VAE file: ldm naming (with or without prefix) or diffusers naming.
pub fn vae_routes(file: &str, h: &Header) -> Result<Vec<Option<Route>>> {
    if let Some(k) = lora_key(h) {
        return Err(Error::Weights(format!("{file} looks like a LoRA (keys like '{k}'), not a VAE")));
    }
    let prefix = VAE_PREFIXES.into_iter().find(|p| any(h, |n| n.starts_with(p)).is_some()).unwrap_or("");
    if any(h, |n| n.starts_with(&format!("{prefix}encoder.down_blocks."))).is_some()
        || any(h, |n| n.starts_with(&format!("{prefix}decoder.up_blocks."))).is_some()
    {
        return diffusers::vae_routes_prefixed(h, prefix);
    }
    if any(h, |n| n.starts_with(&format!("{prefix}decoder.up."))).is_none() {
        let example = h.tensors.first().map(|t| format!(" (its first tensor is '{}')", t.name)).unwrap_or_default();
        return Err(Error::Weights(format!(
            "{file} is not an SDXL VAE: no 'decoder.up.' or 'decoder.up_blocks.' tensors{example}"
        )));
    }
    Ok(h.tensors
        .iter()
        .map(|t| {
            let rel = t.name.strip_prefix(prefix)?;
            // Training leftovers (loss.*, model_ema.*) sit beside the autoencoder; skip them.
            let keep = ["encoder.", "decoder.", "quant_conv.", "post_quant_conv."].iter().any(|p| rel.starts_with(p));
            keep.then(|| Route {
                comp: Component::Vae,
                name: rel.to_string(),
                elem_offset: 0,
                shape: t.shape.clone(),
                transpose: false,
            })
        })
        .collect())
}
