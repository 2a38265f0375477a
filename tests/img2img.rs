//! img2img, inpainting and the hires fix on tiny-sdxl against diffusers'
//! StableDiffusionXLImg2ImgPipeline / StableDiffusionXLInpaintPipeline
//! (tests/fixtures/gen_img2img.py), on both compute paths, with text-to-image's tolerances
//! (tests/common/golden.rs); plus the VAE encoder and PIL's LANCZOS resize on their own.

mod common;

use std::path::PathBuf;

use common::golden::{dumped, image_diff, std_dev, F16_IMAGE_MEAN, F32_IMAGE_MAX, F32_IMAGE_MEAN, F32_LATENT_REL_STD};
use common::max_abs_err;
use safetensors::SafeTensors;
use sdxl_web::gpu::{DType, Tensor};
use sdxl_web::image::{decode_file, InputImage};
use sdxl_web::model::vae::VaeEncoder;
use sdxl_web::pipeline::{generate_with, Model, Settings};

/// The VAE encoder's output and the latents sampled from it (f32 activations on both paths,
/// ~14 layers on a 64² image): only summation order differs from torch, observed ~1e-6 of the
/// std; 1e-4 leaves margin.
const ENCODER_REL_STD: f64 = 1e-4;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/img2img")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn f32s(bytes: &[u8], name: &str) -> Vec<f32> {
    let st = SafeTensors::deserialize(bytes).expect("safetensors");
    let v = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    bytemuck::pod_collect_to_vec(v.data())
}

fn u8s(bytes: &[u8], name: &str) -> Vec<u8> {
    SafeTensors::deserialize(bytes).expect("safetensors").tensor(name).expect(name).data().to_vec()
}

fn load(gpu: &sdxl_web::gpu::Gpu) -> Model {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sdxl/tiny-sdxl.safetensors");
    Model::load(gpu, &p, None, |_| {}).expect("tiny model loads")
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    kind: String,
    sampler: String,
    karras: bool,
    steps: usize,
    cfg: f32,
    seed: u64,
    strength: f32,
    prompt: String,
    negative: Option<String>,
    hires_scale: Option<f32>,
    hires_steps: Option<usize>,
    width: usize,
    height: usize,
    file: String,
}

fn cases() -> Vec<Case> {
    #[derive(serde::Deserialize)]
    struct Cases {
        cases: Vec<Case>,
    }
    serde_json::from_slice::<Cases>(&read("cases.json")).expect("cases.json").cases
}

fn settings(c: &Case) -> Settings {
    let mut s = Settings {
        prompt: c.prompt.clone(),
        negative: c.negative.clone(),
        steps: c.steps,
        cfg: c.cfg,
        seed: c.seed,
        sampler: c.sampler.parse().expect("sampler"),
        karras: c.karras,
        ..Settings::default()
    };
    match c.kind.as_str() {
        "img2img" | "inpaint" => {
            // Size from the image (0), as the CLI does without --width/--height.
            (s.width, s.height) = (0, 0);
            s.init_image = Some(InputImage::Encoded { bytes: read("init.png") });
            s.strength = c.strength;
            if c.kind == "inpaint" {
                s.mask = Some(InputImage::Encoded { bytes: read("mask.png") });
            }
        }
        "hires" => {
            (s.width, s.height) = (64, 64);
            s.hires_scale = c.hires_scale.expect("hires_scale");
            s.hires_steps = c.hires_steps.unwrap_or(0);
            s.hires_strength = c.strength;
        }
        k => panic!("unknown case kind {k}"),
    }
    s
}

/// max |got − want| relative to want's std.
fn rel(got: &[f32], want: &[f32]) -> f64 {
    max_abs_err(got, want).0 as f64 / std_dev(want)
}

fn run(force_f32: bool) {
    let gpu = common::gpu(force_f32);
    let model = load(&gpu);
    let mut failures = Vec::new();
    for c in cases() {
        let r = read(&c.file);
        let s = settings(&c);
        let out = pollster::block_on(generate_with(&gpu, &model, &s, true, &mut |_| true))
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        assert_eq!((out.width, out.height), (c.width, c.height), "{}", c.name);
        let d = out.dump.as_ref().expect("dump");
        let mut line = format!("{} f32={force_f32}:", c.name);
        let mut check = |what: &str, got: &[f32], want: &[f32], tol: f64| {
            let e = rel(got, want);
            line.push_str(&format!(" {what} {e:.2e} of std;"));
            if e > tol {
                failures.push(format!("{}: {what} max err {e:.2e} of std > {tol}", c.name));
            }
        };
        if c.kind != "hires" {
            check("image_latents", &dumped(d, "image_latents").2, &f32s(&r, "image_latents"), ENCODER_REL_STD);
            check("init_latents", &dumped(d, "init_latents").2, &f32s(&r, "init_latents"), ENCODER_REL_STD);
        } else {
            // Sampled latents: the f16 path is held to the image tolerance only, as text-to-image.
            let tol = if force_f32 { F32_LATENT_REL_STD } else { f64::INFINITY };
            check("first_pass", &dumped(d, "first_pass").2, &f32s(&r, "first_pass"), tol);
            check("upscaled", &dumped(d, "upscaled").2, &f32s(&r, "upscaled"), tol);
        }
        if c.kind == "inpaint" {
            assert_eq!(dumped(d, "mask_latent").2, f32s(&r, "mask_latent"), "{}: mask on the latent grid", c.name);
        }
        let lat_tol = if force_f32 { F32_LATENT_REL_STD } else { f64::INFINITY };
        check("final_latents", &dumped(d, "final_latents").2, &f32s(&r, "final_latents"), lat_tol);
        let (mean, max) = image_diff(&out.rgb, &u8s(&r, "image"));
        println!("{line} image mean {mean:.3}/255 max {max}/255");
        let bad = if force_f32 { mean > F32_IMAGE_MEAN || max > F32_IMAGE_MAX } else { mean > F16_IMAGE_MEAN };
        if bad {
            failures.push(format!("{}: image differs by mean {mean:.3}, max {max} (/255)", c.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn img2img_inpaint_hires_match_diffusers_f32_path() {
    run(true);
}

#[test]
fn img2img_inpaint_hires_match_diffusers_f16_path() {
    run(false);
}

/// The encoder alone: `vae.encode(image).latent_dist.parameters` of the preprocessed init image.
#[test]
fn vae_encoder_matches_diffusers() {
    let gpu = common::gpu(true);
    let model = load(&gpu);
    let r = read("img2img_euler_a.safetensors");
    let p = decode_file(&read("init.png"), "init").unwrap();
    let x = sdxl_web::image::preprocess_image(&p, 64, 64);
    let t = Tensor::from_f32(&gpu, &[1, 3, 64, 64], DType::F32, &x).unwrap();
    let enc = VaeEncoder::new(model.vae.clone(), &model.weights).unwrap();
    let m = enc.encode(&gpu, &t).unwrap();
    assert_eq!(m.shape(), [1, 8, 8, 8]);
    let got = m.to_vec_f32_blocking(&gpu).unwrap();
    let e = rel(&got, &f32s(&r, "moments"));
    println!("encoder moments max err {e:.2e} of std");
    assert!(e <= ENCODER_REL_STD, "{e}");
}

/// PIL `Image.resize(…, LANCZOS)` and `convert("L")`, byte for byte.
#[test]
fn resize_matches_pil_lanczos() {
    let r = read("resize.safetensors");
    let src = decode_file(&read("resize_src.png"), "src").unwrap();
    // Every combination of growing / shrinking sides (the pass order depends on it).
    for (w, h) in [(64, 64), (24, 40), (50, 37), (100, 20), (30, 20), (51, 36)] {
        let got = src.resize_lanczos(w, h);
        let want = u8s(&r, &format!("{w}x{h}"));
        let diff = got.data.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(got.data.len(), want.len(), "{w}x{h}");
        assert_eq!(diff, 0, "{w}x{h}: {diff} bytes differ from PIL");
    }
    assert_eq!(src.to_gray().data, u8s(&r, "L_64x64"), "convert(\"L\")");
}

/// Bad inputs fail with clear errors, never a panic.
#[test]
fn bad_inputs_are_clear_errors() {
    let gpu = common::gpu(true);
    let model = load(&gpu);
    let png = read("init.png");
    let gen = |s: &Settings| pollster::block_on(generate_with(&gpu, &model, s, false, &mut |_| true));
    let base = Settings {
        prompt: "x".into(),
        width: 0,
        height: 0,
        steps: 4,
        init_image: Some(InputImage::Encoded { bytes: png[..png.len() / 2].to_vec() }),
        ..Settings::default()
    };
    let e = gen(&base).err().expect("truncated").to_string();
    assert!(e.contains("init image: unreadable PNG"), "{e}");
    let s = Settings { strength: 0.0, init_image: Some(InputImage::Encoded { bytes: png.clone() }), ..base.clone() };
    let e = gen(&s).err().expect("strength 0").to_string();
    assert!(e.contains("strength 0"), "{e}");
    // int(4 × 0.2) = 0 steps.
    let s = Settings { strength: 0.2, init_image: Some(InputImage::Encoded { bytes: png.clone() }), ..base.clone() };
    let e = gen(&s).err().expect("no steps").to_string();
    assert!(e.contains("0 steps"), "{e}");
    // A mask of another size is resized (as diffusers does), not refused.
    let small = sdxl_web::pipeline::encode_png(&[255u8; 16 * 24 * 3], 16, 24, "").unwrap();
    let s = Settings {
        strength: 0.5,
        init_image: Some(InputImage::Encoded { bytes: png.clone() }),
        mask: Some(InputImage::Encoded { bytes: small }),
        ..base.clone()
    };
    let out = gen(&s).expect("mask resized");
    assert_eq!((out.width, out.height), (64, 64));
    assert!(out.parameters.contains("Denoising strength: 0.5, Mask blur: 0"), "{}", out.parameters);
    let s = Settings { width: 1024, height: 1024, hires_scale: 2.5, ..Settings::default() };
    let e = gen(&s).err().expect("hires too large").to_string();
    assert!(e.contains("2560x2560") && e.contains("--hires-scale"), "{e}");
}

/// A JPEG decodes as PIL (libjpeg) decodes it, within the IDCT / chroma-upsampling differences
/// of the two decoders.
#[test]
fn jpeg_decodes_like_pil() {
    /// zune-jpeg and libjpeg-turbo differ in IDCT rounding and chroma upsampling of this 4:2:0
    /// file: a fraction of a level on average, a few levels next to hard colour edges.
    const JPEG_MEAN: f64 = 1.0;
    let jpg = decode_file(&read("init.jpg"), "jpeg").unwrap();
    assert_eq!((jpg.width, jpg.height, jpg.channels), (64, 64, 3));
    let (mean, max) = image_diff(&jpg.data, &u8s(&read("resize.safetensors"), "init_jpg_pil"));
    println!("jpeg vs PIL: mean {mean:.3} max {max}");
    assert!(mean <= JPEG_MEAN, "{mean}");
}
