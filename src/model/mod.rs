//! Models written against `crate::ops` only: the SDXL text encoders (UNet and VAE to come).
//! Module and field names mirror the single-file checkpoint keys.

pub mod clip;

use std::collections::HashMap;

use crate::gpu::Tensor;
use crate::{Error, Result};

/// Named weights on the GPU. Names are full single-file checkpoint keys, e.g.
/// `conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight`.
pub trait Params {
    /// The tensor called `name`; an error naming it when absent.
    fn get(&self, name: &str) -> Result<&Tensor>;
}

impl Params for HashMap<String, Tensor> {
    fn get(&self, name: &str) -> Result<&Tensor> {
        HashMap::get(self, name).ok_or_else(|| Error::Weights(format!("checkpoint has no tensor {name}")))
    }
}
