//! Tiled VAE decode against diffusers' `AutoencoderKL.tiled_decode` (`enable_tiling()` with the
//! case's tile size and overlap; tests/fixtures/gen_vae_tiled.py) on the fixture VAE of tests/vae.rs,
//! on both compute paths; and `check_tiling` against a transcription of diffusers' loops.

mod common;

use common::{f32_tensor, fixture, gpu, max_abs_err, nchw, upload_weights};
use sdxl_web::gpu::{DType, Tensor};
use sdxl_web::model::vae::{check_tiling, to_rgb8, VaeConfig, VaeDecoder, VaeTiling};
use sdxl_web::Error;

/// Each tile is `decode` of a slice (F32 activations on both paths, ~2e-6 from torch in
/// tests/vae.rs) and the blend is torch's f32 arithmetic, so the VAE test's bound applies.
const F32_ABS: f32 = 1e-4;
/// RGB8 bounds, in levels: mean ≤ 1/255 and max ≤ 4/255. Looser than the f32 bound implies (a
/// level flips only at a .5 rounding boundary); they are the acceptance bound for "the same image
/// as diffusers", and tiled vs untiled differs by far more (asserted below).
const RGB_MEAN_LEVELS: f64 = 1.0;
const RGB_MAX_LEVELS: u8 = 4;

fn config() -> VaeConfig {
    common::fixture_vae_config()
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    latent_h: usize,
    latent_w: usize,
    tile_px: usize,
    overlap: f32,
}

/// (mean, max) level difference between planar f32 levels and interleaved u8 RGB.
fn rgb_diff(planar: &[f32], rgb: &[u8], h: usize, w: usize) -> (f64, u8) {
    let (mut sum, mut worst) = (0u64, 0u8);
    for p in 0..h * w {
        for c in 0..3 {
            let d = rgb[p * 3 + c].abs_diff(planar[c * h * w + p] as u8);
            worst = worst.max(d);
            sum += d as u64;
        }
    }
    (sum as f64 / (3 * h * w) as f64, worst)
}

fn run(force_f32: bool) {
    let gpu = gpu(force_f32);
    let weights = upload_weights(&gpu, &fixture("vae.safetensors"));
    let io = fixture("vae_tiled.safetensors");
    let cases: Vec<Case> = serde_json::from_slice(&fixture("vae_tiled.json")).unwrap();
    assert!(cases.len() >= 3);
    let cfg = config();
    let vae = VaeDecoder::new(cfg.clone(), &weights).unwrap();
    // The f16 path gets F16 latents, as its sampler leaves them (the fixture's are f16-exact).
    let dt = if force_f32 { DType::F32 } else { DType::F16 };
    for case in &cases {
        let name = &case.name;
        let tiling = VaeTiling { tile_px: case.tile_px, overlap: case.overlap };
        let (zs, z) = f32_tensor(&io, &format!("{name}.latent"));
        assert_eq!(zs, [1, 4, case.latent_h, case.latent_w]);
        assert!(tiling.diffusers_tiles(&cfg, case.latent_h, case.latent_w), "{name}: enable_tiling() tiles it");
        check_tiling(&cfg, case.latent_h, case.latent_w, tiling).unwrap();
        let (is, want) = f32_tensor(&io, &format!("{name}.image"));
        let (_, want_rgb) = f32_tensor(&io, &format!("{name}.rgb"));
        let (_, untiled) = f32_tensor(&io, &format!("{name}.untiled"));
        let (_, untiled_rgb) = f32_tensor(&io, &format!("{name}.untiled_rgb"));

        let latent = Tensor::from_f32(&gpu, &zs, dt, &z).unwrap();
        let img = pollster::block_on(vae.decode_tiled(&gpu, &latent, tiling)).unwrap();
        assert_eq!(img.shape(), is.as_slice(), "{name}");
        assert_eq!(img.dtype(), DType::F32);
        let got = img.to_vec_f32_blocking(&gpu).unwrap();
        let (err, at, scale) = max_abs_err(&got, &want);
        let rgb = pollster::block_on(to_rgb8(&gpu, &img)).unwrap().remove(0);
        let (h, w) = (is[2], is[3]);
        let (mean, max) = rgb_diff(&want_rgb, &rgb, h, w);
        // How far diffusers' own untiled decode is from its tiled one.
        let (u_err, _, _) = max_abs_err(&untiled, &want);
        let (u_mean, u_max) = rgb_diff(&untiled_rgb, &rgb, h, w);
        println!(
            "{name} f32={force_f32} ({h}×{w}, {} px, overlap {}): vs diffusers f32 max {err:.3e} at {:?} \
             (max |ref| {scale:.3}), rgb8 mean {mean:.4} max {max}; diffusers untiled vs tiled f32 max {u_err:.3}, \
             ours vs untiled rgb8 mean {u_mean:.2} max {u_max}",
            case.tile_px,
            case.overlap,
            nchw(at, &is)
        );
        assert!(err <= F32_ABS, "{name}: tiled decode differs from diffusers by {err} > {F32_ABS}");
        assert!(mean <= RGB_MEAN_LEVELS && max <= RGB_MAX_LEVELS, "{name}: RGB8 mean {mean} max {max}");
        // Tiling really happened: the untiled image is far outside every tolerance.
        assert!(u_err > 10.0 * F32_ABS, "{name}: tiled ≈ untiled (f32 {u_err})");
        assert!(u_mean > RGB_MEAN_LEVELS && u_max > RGB_MAX_LEVELS, "{name}: tiled ≈ untiled (rgb8)");
    }
}

#[test]
fn tiled_decode_matches_diffusers_f32_path() {
    run(true);
}

#[test]
fn tiled_decode_matches_diffusers_f16_path() {
    run(false);
}

/// diffusers' tiled_decode output size, transcribed loop by loop (Python's int() and floats; the
/// overlap as the decimal it was written as): `None` where `range(0, n, 0)` would raise.
fn diffusers_size(factor: usize, h: usize, w: usize, tile_px: usize, overlap: f64) -> Option<(usize, usize)> {
    let tile_latent = tile_px / factor;
    let overlap_size = (tile_latent as f64 * (1.0 - overlap)).trunc() as usize;
    let blend_extent = (tile_px as f64 * overlap).trunc() as usize;
    let row_limit = tile_px - blend_extent;
    if overlap_size == 0 {
        return None;
    }
    // tile = z[:, :, i:i+T, j:j+T] → decoded factor× → tile[:, :, :row_limit, :row_limit]; cat.
    let mut rows_h = 0;
    let mut i = 0;
    let mut width = None;
    while i < h {
        let tile_h = factor * (h.min(i + tile_latent) - i);
        let mut row_w = 0;
        let mut j = 0;
        while j < w {
            let tile_w = factor * (w.min(j + tile_latent) - j);
            row_w += tile_w.min(row_limit);
            j += overlap_size;
        }
        width = Some(row_w);
        rows_h += tile_h.min(row_limit);
        i += overlap_size;
    }
    Some((rows_h, width.unwrap()))
}

fn input_error(r: sdxl_web::Result<()>) -> String {
    match r {
        Err(Error::Input(m)) => m,
        other => panic!("expected an input error, got {other:?}"),
    }
}

#[test]
fn check_tiling_rejects_what_diffusers_gets_wrong() {
    let sdxl = sdxl_web::weights::ModelConfig::sdxl_base().vae;
    assert_eq!(sdxl.factor(), 8);
    assert_eq!(config().factor(), 4);
    let t = |tile_px, overlap| VaeTiling { tile_px, overlap };

    // 48 px tiles, overlap 0.25, latent 16×8 (128×64 image): tiles start every int(6·0.75) = 4
    // latents = 32 px but keep 48 − 12 = 36 px, so diffusers returns 140×68.
    assert_eq!(diffusers_size(8, 16, 8, 48, 0.25), Some((140, 68)));
    let m = input_error(check_tiling(&sdxl, 16, 8, t(48, 0.25)));
    assert!(m.contains("140×68") && m.contains("128×64"), "{m}");
    // The same at the fixture's factor 4: 24 px tiles on a 64×32 image → 70×34.
    assert_eq!(diffusers_size(4, 16, 8, 24, 0.25), Some((70, 34)));
    let m = input_error(check_tiling(&config(), 16, 8, t(24, 0.25)));
    assert!(m.contains("70×34") && m.contains("64×32"), "{m}");

    // Tile sizes: a positive multiple of the factor.
    for px in [0, 30, 1020] {
        let m = input_error(check_tiling(&sdxl, 128, 128, t(px, 0.25)));
        assert!(m.contains("multiple of the VAE factor 8"), "{m}");
    }
    let m = input_error(check_tiling(&config(), 16, 16, t(26, 0.25)));
    assert!(m.contains("multiple of the VAE factor 4"), "{m}");
    // Overlap in [0, 1).
    for ov in [-0.25, 1.0, 1.5, f32::NAN, f32::INFINITY] {
        let m = input_error(check_tiling(&sdxl, 128, 128, t(512, ov)));
        assert!(m.contains("must be in [0, 1)"), "{m}");
    }
    // A zero tile step (8 px tiles = 1 latent, int(1·0.75) = 0): Python's range() would raise.
    let m = input_error(check_tiling(&sdxl, 16, 16, t(8, 0.25)));
    assert!(m.contains("step"), "{m}");

    // Fine: diffusers' SDXL default (1024 px, 0.25), 512 px tiles, no overlap, overlap 0.5.
    for (px, ov, h, w) in
        [(1024, 0.25, 128, 128), (1024, 0.25, 192, 136), (512, 0.25, 128, 96), (512, 0.0, 100, 60), (256, 0.5, 72, 40)]
    {
        check_tiling(&sdxl, h, w, t(px, ov)).unwrap_or_else(|e| panic!("{px} px {ov} on {h}×{w}: {e}"));
        assert_eq!(diffusers_size(8, h, w, px, ov as f64), Some((8 * h, 8 * w)));
    }

    // check_tiling accepts exactly what the transcription sizes right, over a sweep (overlaps as
    // the decimals they are written as: 0.2 is Python's 0.2, not 0.2f32 widened).
    let overlaps = ["0", "0.1", "0.125", "0.2", "0.25", "0.3", "0.375", "0.5", "0.6", "0.75", "0.9"];
    let (mut ok, mut wrong) = (0, 0);
    for cfg in [&sdxl, &config()] {
        let f = cfg.factor();
        for ov in overlaps {
            let (o32, o64): (f32, f64) = (ov.parse().unwrap(), ov.parse().unwrap());
            for tl in 1..=12 {
                for (h, w) in [(1, 1), (3, 5), (8, 8), (12, 7), (16, 8), (17, 31), (40, 24)] {
                    let want = diffusers_size(f, h, w, tl * f, o64);
                    let got = check_tiling(cfg, h, w, t(tl * f, o32));
                    assert_eq!(got.is_ok(), want == Some((f * h, f * w)), "{} px {ov} {h}×{w}: {got:?}", tl * f);
                    if got.is_ok() {
                        ok += 1
                    } else {
                        wrong += 1
                    }
                }
            }
        }
    }
    assert!(ok > 100 && wrong > 100, "the sweep covers both outcomes ({ok} ok, {wrong} rejected)");
}

#[test]
fn tiled_decode_input_errors() {
    let gpu = gpu(true);
    let weights = upload_weights(&gpu, &fixture("vae.safetensors"));
    let vae = VaeDecoder::new(config(), &weights).unwrap();
    let tiling = VaeTiling { tile_px: 32, overlap: 0.25 };
    let two = Tensor::zeros(&gpu, &[2, 4, 16, 16], DType::F32).unwrap();
    let e = pollster::block_on(vae.decode_tiled(&gpu, &two, tiling)).unwrap_err();
    assert!(matches!(&e, Error::Input(m) if m.contains("batch 1")), "{e}");
    let bad = Tensor::zeros(&gpu, &[1, 4, 16, 8], DType::F32).unwrap();
    let e = pollster::block_on(vae.decode_tiled(&gpu, &bad, VaeTiling { tile_px: 24, overlap: 0.25 })).unwrap_err();
    assert!(matches!(&e, Error::Input(m) if m.contains("70×34")), "{e}");
    // diffusers' _decode tiles only latents larger than one tile.
    assert!(!tiling.diffusers_tiles(&config(), 8, 8));
    assert!(tiling.diffusers_tiles(&config(), 8, 9));
}
