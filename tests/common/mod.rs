//! Shared by the GPU tests: device setup, deterministic inputs, tolerance checks, safetensors
//! fixtures, error reports.

#![allow(dead_code)]

pub mod golden;

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

/// Inputs and their stored values: shared with the library's self-check.
#[allow(unused_imports)]
pub use sdxl_web::selfcheck::{rand, stored};

/// Upload `x` as `dt`, with what the GPU then holds (for references).
pub fn upload(gpu: &Gpu, shape: &[usize], dt: DType, x: &[f32]) -> (Tensor, Vec<f64>) {
    (Tensor::from_f32(gpu, shape, dt, x).unwrap(), stored(x, dt))
}

/// Assert |got - want| <= abs + rel·|want| everywhere; on failure report the worst element.
pub fn check_close(what: &str, gpu: &Gpu, got: &[f32], want: &[f64], (abs, rel): (f64, f64)) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let (mut worst, mut at, mut max_abs, mut max_rel) = (0f64, 0usize, 0f64, 0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        // Equal infinities (f16 overflow) are no error.
        let e = if g as f64 == w { 0.0 } else { (g as f64 - w).abs() };
        let excess = if e.is_nan() { f64::INFINITY } else { e / (abs + rel * w.abs()) };
        max_abs = max_abs.max(e);
        max_rel = max_rel.max(e / w.abs().max(1e-30));
        if excess > worst {
            worst = excess;
            at = i;
        }
    }
    assert!(
        worst <= 1.0,
        "{what} [{} path]: max abs err {max_abs:.3e}, max rel err {max_rel:.3e}; worst at {at}: got {}, want {} (tol {abs:e} + {rel:e}·|want|)",
        gpu.info.compute_path,
        got[at],
        want[at]
    );
}

// ---- f64 references ---------------------------------------------------------------------------

/// The unet_vae fixture's AutoencoderKL (tests/fixtures/gen_unet_vae.py): block_out_channels
/// [32, 64, 128] (factor 4), layers_per_block 2, 32 groups, SDXL's scaling factor.
pub fn fixture_vae_config() -> sdxl_web::model::vae::VaeConfig {
    sdxl_web::model::vae::VaeConfig {
        in_channels: 3,
        out_channels: 3,
        ch: 32,
        ch_mult: vec![1, 2, 4],
        num_res_blocks: 2,
        z_channels: 4,
        embed_dim: 4,
        norm_num_groups: 32,
        scaling_factor: 0.13025,
    }
}

/// Tolerances of a stage-by-stage comparison of two `--dump` files (`compare_dumps`).
pub struct StageTol {
    /// Text embeddings (`context`, `pooled`), absolute.
    pub embed_abs: f64,
    /// The first UNet output, relative to its standard deviation.
    pub unet_rel_std: f64,
    /// Every later tensor (latents, decoded image), relative to its standard deviation.
    pub latent_rel_std: f64,
}

/// Every tensor of the CLI's `--dump` (`cli`) against another host's dump of the same run:
/// token ids, initial latents and time ids must be equal, the rest within `tol`. Prints each
/// tensor's error; returns the failures.
pub fn compare_dumps(host: &str, other: &[u8], cli: &[u8], tol: &StageTol) -> Vec<String> {
    let (other, cli) = (SafeTensors::deserialize(other).unwrap(), SafeTensors::deserialize(cli).unwrap());
    let vals = |t: &safetensors::tensor::TensorView| -> Vec<f64> {
        match t.dtype() {
            Dtype::F32 => t.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
            _ => t.data().chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        }
    };
    let mut names = cli.names();
    names.sort();
    let mut failures = Vec::new();
    for name in names {
        let Ok(o) = other.tensor(name) else {
            failures.push(format!("{name}: missing from the {host} dump"));
            continue;
        };
        let (w, c) = (vals(&o), vals(&cli.tensor(name).unwrap()));
        if w.len() != c.len() {
            failures.push(format!("{name}: {} values from {host}, {} from the CLI", w.len(), c.len()));
            continue;
        }
        let err = w.iter().zip(&c).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        let m = c.iter().sum::<f64>() / c.len() as f64;
        let sd = (c.iter().map(|x| (x - m).powi(2)).sum::<f64>() / c.len() as f64).sqrt();
        eprintln!("{name}: max |{host} - cli| {err:.3e} (std {sd:.3}, {:.2e} of std)", err / sd.max(1e-30));
        let ok = match name {
            "ids_l" | "ids_g" | "init_latents" | "add_time_ids" => err == 0.0,
            "context" | "pooled" => err <= tol.embed_abs,
            "unet_out_0" => err <= tol.unet_rel_std * sd,
            _ => err <= tol.latent_rel_std * sd,
        };
        if !ok {
            failures.push(format!("{name}: {host} differs from the CLI by {err:.3e} (std {sd:.3})"));
        }
    }
    failures
}
