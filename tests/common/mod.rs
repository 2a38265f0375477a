//! Shared by the model tests: GPU setup, safetensors fixtures, error reports.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use safetensors::{Dtype, SafeTensors};
use sdxl_web::gpu::{DType, Gpu, GpuOptions, Tensor};

pub fn gpu(force_f32: bool) -> Gpu {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        std::env::set_var("XDG_RUNTIME_DIR", "/tmp");
    }
    let g = Gpu::new_blocking(GpuOptions { force_f32 }).expect("a GPU adapter (lavapipe in CI)");
    assert!(force_f32 || g.f16, "lavapipe offers shader-f16; the f16 path must be tested");
    g
}

pub fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/unet_vae").join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every tensor of a safetensors file uploaded as F16 (the checkpoint's dtype).
pub fn upload_weights(gpu: &Gpu, bytes: &[u8]) -> HashMap<String, Tensor> {
    let st = SafeTensors::deserialize(bytes).expect("safetensors");
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), Dtype::F16, "{name}");
            let t = Tensor::from_bytes(gpu, view.shape(), DType::F16, view.data()).expect("upload");
            (name, t)
        })
        .collect()
}

/// A f32 tensor of a safetensors file: (shape, values).
pub fn f32_tensor(bytes: &[u8], name: &str) -> (Vec<usize>, Vec<f32>) {
    let st = SafeTensors::deserialize(bytes).expect("safetensors");
    let v = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(v.dtype(), Dtype::F32, "{name}");
    (v.shape().to_vec(), bytemuck::pod_collect_to_vec::<u8, f32>(v.data()))
}

/// (max |a - b|, its flat index, max |b|).
pub fn max_abs_err(a: &[f32], b: &[f32]) -> (f32, usize, f32) {
    assert_eq!(a.len(), b.len());
    let mut worst = (0f32, 0usize);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let d = (x - y).abs();
        if d > worst.0 || d.is_nan() {
            worst = (d, i);
        }
    }
    (worst.0, worst.1, b.iter().fold(0f32, |m, x| m.max(x.abs())))
}

/// NCHW coordinates of a flat index.
pub fn nchw(i: usize, s: &[usize]) -> [usize; 4] {
    [i / (s[1] * s[2] * s[3]), i / (s[2] * s[3]) % s[1], i / s[3] % s[2], i % s[3]]
}
