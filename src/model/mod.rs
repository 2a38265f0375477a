//! Models (CLIP, UNet, VAE) written against `crate::ops` only; module and parameter names mirror
//! the original single-file checkpoint keys.

pub mod layers;
pub mod unet;

pub mod vae;

use std::collections::HashMap;

use crate::gpu::Tensor;
use crate::{Error, Result};

/// Weights by canonical name: the full single-file key (e.g.
/// `model.diffusion_model.input_blocks.0.0.weight`).
pub trait Params {
    fn get(&self, name: &str) -> Result<&Tensor>;
}

impl Params for HashMap<String, Tensor> {
    fn get(&self, name: &str) -> Result<&Tensor> {
        HashMap::get(self, name).ok_or_else(|| Error::Weights(format!("missing tensor `{name}`")))
    }
}
