//! sdxl-web: SDXL text-to-image on the user's GPU through wgpu (native Vulkan, browser WebGPU).

pub mod embedding;
pub mod error;
pub mod gpu;
pub mod image;
pub mod lora;
pub mod model;
pub mod ops;
pub mod pipeline;
pub mod prompt;
pub mod rng;
pub mod sampler;
pub mod selfcheck;
pub mod sha256;
pub mod timing;
pub mod tokenizer;
pub mod weights;

pub use error::{Error, Result};

#[cfg(target_arch = "wasm32")]
pub mod web;
