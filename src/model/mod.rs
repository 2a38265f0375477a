//! Models written against `crate::ops` only: the SDXL text encoders (CLIP-L, OpenCLIP bigG), the
//! UNet and the VAE decoder. Module and parameter names mirror the single-file checkpoint keys.

pub mod clip;
pub mod layers;
pub mod unet;
pub mod vae;

use std::collections::HashMap;

use crate::gpu::Tensor;
use crate::{Error, Result};

/// Named weights on the GPU. Names are canonical: full single-file checkpoint keys, e.g.
/// `model.diffusion_model.input_blocks.0.0.weight` or
/// `conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight`.
pub trait Params {
    /// The tensor called `name`; an error naming it when absent.
    fn get(&self, name: &str) -> Result<&Tensor>;

    /// Low-rank updates of the layer whose weight is `key` (canonical name; `#j` for row block j
    /// of bigG's fused `in_proj_weight`): (A, B, weight · scale) per active LoRA ([`crate::lora`]).
    fn lora(&self, _key: &str) -> Vec<(&Tensor, &Tensor, f32)> {
        Vec::new()
    }

    /// Rows appended to the token-embedding table `name` (textual-inversion vectors, token ids
    /// from the table's size on): [n, hidden] F16.
    fn added_rows(&self, _name: &str) -> Option<&Tensor> {
        None
    }
}

impl Params for HashMap<String, Tensor> {
    fn get(&self, name: &str) -> Result<&Tensor> {
        HashMap::get(self, name).ok_or_else(|| Error::Weights(format!("checkpoint has no tensor `{name}`")))
    }
}
