//! SDXL-form VAE decoder against diffusers' AutoencoderKL (tests/fixtures/gen_unet_vae.py: random
//! weights, f16-rounded, reference decoded in f32), on both compute paths.

mod common;

use common::{f32_tensor, fixture, gpu, max_abs_err, nchw, upload_weights};
use sdxl_web::gpu::{DType, Tensor};
use sdxl_web::model::vae::{rgb8_from_f32, to_rgb8, VaeConfig, VaeDecoder};
use sdxl_web::Error;

/// F32 activations on both paths, so only accumulation order differs from torch's f32 CPU
/// convolutions (~20 layers, sums of ≤ 1,152 terms, outputs up to ±2): 1e-4 absolute leaves
/// ~40× margin over the observed 2.3e-6.
const F32_PATH_ABS: f32 = 1e-4;
/// The f16 path keeps the VAE in F32 activations (F16 would overflow on SDXL's VAE), so the
/// same bound applies.
const F16_PATH_ABS: f32 = 1e-4;
/// 8-bit images: rounding near a .5 boundary may flip one level.
const RGB_MAX_DIFF: u8 = 1;

fn config() -> VaeConfig {
    common::fixture_vae_config()
}

fn run(force_f32: bool) {
    let gpu = gpu(force_f32);
    let weights = upload_weights(&gpu, &fixture("vae.safetensors"));
    let io = fixture("vae_io.safetensors");
    let (zs, z) = f32_tensor(&io, "latent");
    let (is, want) = f32_tensor(&io, "image");
    let (_, want_rgb) = f32_tensor(&io, "rgb");
    let vae = VaeDecoder::new(config(), &weights).unwrap();
    let latent = Tensor::from_f32(&gpu, &zs, DType::F32, &z).unwrap();
    let img = vae.decode(&gpu, &latent).unwrap();
    assert_eq!(img.shape(), is.as_slice());
    assert_eq!(img.dtype(), DType::F32, "VAE activations stay F32");
    let got = img.to_vec_f32_blocking(&gpu).unwrap();
    let (err, at, scale) = max_abs_err(&got, &want);
    let tol = if force_f32 { F32_PATH_ABS } else { F16_PATH_ABS };
    println!(
        "vae f32={force_f32}: max abs err {err:.3e} at {:?} (got {}, want {}; max |ref| {scale:.3})",
        nchw(at, &is),
        got[at],
        want[at]
    );
    assert!(err <= tol, "VAE decode differs from diffusers by {err} > {tol}");

    let rgb = pollster::block_on(to_rgb8(&gpu, &img)).unwrap();
    let (h, w) = (is[2], is[3]);
    let mut worst = 0u8;
    let mut sum = 0u64;
    for p in 0..h * w {
        for c in 0..3 {
            let want = want_rgb[c * h * w + p] as u8;
            let d = rgb[0][p * 3 + c].abs_diff(want);
            worst = worst.max(d);
            sum += d as u64;
        }
    }
    println!("vae f32={force_f32}: rgb8 max diff {worst}, mean {:.4}", sum as f64 / (3 * h * w) as f64);
    assert!(worst <= RGB_MAX_DIFF, "RGB differs by {worst} levels");
}

#[test]
fn vae_decode_matches_diffusers_f32_path() {
    run(true);
}

#[test]
fn vae_decode_matches_diffusers_f16_path() {
    run(false);
}

#[test]
fn non_finite_output_is_a_numeric_error() {
    let mut v = vec![0.0f32; 2 * 3 * 4 * 5];
    v[3 * 20 + 20 + 7] = f32::NAN;
    match rgb8_from_f32(&v, 2, 4, 5) {
        Err(Error::Numeric(m)) => {
            assert!(m.contains("image 1, channel 1, pixel (1, 2)"), "{m}");
        }
        other => panic!("expected a numeric error, got {other:?}"),
    }
    // Rounding as numpy: 0 → 127.5 → 128 (ties to even), -1 → 0, 1 → 255, clamped beyond,
    // -0.5 → 63.75 → 64. Planar input (the same plane three times), interleaved output.
    let v = [0.0f32, -1.0, 1.0, 2.0, -3.0, -0.5];
    let v: Vec<f32> = v.iter().cycle().take(18).copied().collect();
    let rgb = rgb8_from_f32(&v, 1, 1, 6).unwrap();
    assert_eq!(&rgb[0][..18].iter().step_by(3).copied().collect::<Vec<_>>(), &[128, 0, 255, 255, 0, 64]);
}

#[test]
fn missing_weight_is_named() {
    let gpu = gpu(true);
    let mut weights = upload_weights(&gpu, &fixture("vae.safetensors"));
    weights.remove("first_stage_model.decoder.up.0.block.0.nin_shortcut.weight");
    let vae = VaeDecoder::new(config(), &weights).unwrap();
    let latent = Tensor::zeros(&gpu, &[1, 4, 4, 4], DType::F32).unwrap();
    let e = vae.decode(&gpu, &latent).unwrap_err();
    assert!(e.to_string().contains("decoder.up.0.block.0.nin_shortcut.weight"), "{e}");
}
