//! The golden end-to-end test: the whole text-to-image pipeline on the tiny SDXL-shaped
//! single-file model (tests/fixtures/tiny-sdxl) against diffusers' StableDiffusionXLPipeline run
//! in f32 on CPU (tests/fixtures/gen_pipeline.py), one case per sampler / schedule / size /
//! negative-prompt variant, on both compute paths.

mod common;

use std::path::PathBuf;

use safetensors::{Dtype, SafeTensors};
use sdxl_web::gpu::Gpu;
use sdxl_web::pipeline::{generate_with, Dump, Model, Settings};

/// f32 path: final latents within 1e-3 of the reference's standard deviation (the issue's bar):
/// only kernel summation order differs from torch.
const F32_LATENT_REL_STD: f64 = 1e-3;
/// f32 path: 8-bit images within 1/255 on average and 4/255 at most (rounding of values that land
/// next to a quantisation boundary).
const F32_IMAGE_MEAN: f64 = 1.0;
const F32_IMAGE_MAX: u8 = 4;
/// f16 path: F16 activations in the UNet (diffusers' fp16 quality); the VAE stays f32.
const F16_IMAGE_MEAN: f64 = 3.0;
/// Text embeddings: f32 CLIP through our kernels vs torch (3 layers, values O(1)).
const F32_EMBED_ABS: f32 = 1e-4;
/// The first UNet output (batch [negative, positive]), max error relative to its std: f32
/// summation order only on the f32 path; f16 activations and f16 arithmetic on the f16 path.
const F32_UNET_REL_STD: f64 = 1e-4;
const F16_UNET_REL_STD: f64 = 3e-2;
/// Initial latents = torch.randn (bit-exact, tests/rng.rs) × init_noise_sigma. torch computes
/// init_noise_sigma as `(σ_max² + 1) ** 0.5` with the CPU's pow, which is 1 ulp above the
/// correctly rounded sqrt we compute on some CPUs (the fixture machine's AMD EPYC: 7.4393635
/// against 7.4393630), so each latent may differ by 1 ulp of itself (2^-23 relative, + rounding).
const INIT_LATENT_REL: f32 = 2.5e-7;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    prompt: String,
    negative: Option<String>,
    width: usize,
    height: usize,
    steps: usize,
    cfg: f32,
    seed: u64,
    sampler: String,
    karras: bool,
    file: String,
}

#[derive(serde::Deserialize)]
struct Cases {
    cases: Vec<Case>,
}

fn cases() -> Vec<Case> {
    let p = dir().join("pipeline/cases.json");
    let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_slice::<Cases>(&bytes).expect("cases.json").cases
}

fn settings(c: &Case) -> Settings {
    Settings {
        prompt: c.prompt.clone(),
        negative: c.negative.clone(),
        width: c.width,
        height: c.height,
        steps: c.steps,
        cfg: c.cfg,
        seed: c.seed,
        sampler: c.sampler.parse().expect("sampler"),
        karras: c.karras,
        ..Settings::default()
    }
}

fn load(gpu: &Gpu) -> Model {
    Model::load(gpu, &dir().join("tiny-sdxl/tiny-sdxl.safetensors"), None, |_| {}).expect("tiny model loads")
}

struct Reference {
    bytes: Vec<u8>,
}

impl Reference {
    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("reference safetensors")
    }
    fn f32s(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let st = self.st();
        let v = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(v.dtype(), Dtype::F32, "{name}");
        (v.shape().to_vec(), bytemuck::pod_collect_to_vec(v.data()))
    }
    fn ids(&self, name: &str) -> Vec<i64> {
        let st = self.st();
        let v = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        match v.dtype() {
            Dtype::I64 => bytemuck::pod_collect_to_vec::<u8, i64>(v.data()),
            Dtype::I32 => bytemuck::pod_collect_to_vec::<u8, i32>(v.data()).into_iter().map(i64::from).collect(),
            d => panic!("{name}: ids stored as {d:?}"),
        }
    }
    fn image(&self) -> Vec<u8> {
        let st = self.st();
        let v = st.tensor("image").expect("image");
        assert_eq!(v.dtype(), Dtype::U8);
        v.data().to_vec()
    }
}

fn dumped<'a>(d: &'a Dump, name: &str) -> &'a (String, Vec<usize>, Vec<f32>) {
    d.f32s.iter().find(|(n, ..)| n == name).unwrap_or_else(|| panic!("dump has no {name}"))
}

fn std_dev(v: &[f32]) -> f64 {
    let m = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
    (v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
}

/// (mean, max) absolute difference of two RGB8 images, in 1/255 steps.
fn image_diff(a: &[u8], b: &[u8]) -> (f64, u8) {
    assert_eq!(a.len(), b.len(), "image sizes");
    let sum: u64 = a.iter().zip(b).map(|(&x, &y)| x.abs_diff(y) as u64).sum();
    (sum as f64 / a.len() as f64, a.iter().zip(b).map(|(&x, &y)| x.abs_diff(y)).max().unwrap_or(0))
}

fn run(force_f32: bool) {
    let gpu = common::gpu(force_f32);
    let model = load(&gpu);
    let mut failures = Vec::new();
    for c in cases() {
        let r = Reference { bytes: std::fs::read(dir().join("pipeline").join(&c.file)).expect("case file") };
        let s = settings(&c);
        let t = std::time::Instant::now();
        let out = pollster::block_on(generate_with(&gpu, &model, &s, true, &mut |_| true))
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let d = out.dump.as_ref().expect("dump");
        let (w, h) = (c.width, c.height);
        assert_eq!((out.width, out.height), (w, h), "{}", c.name);

        // Token ids (exact) and the initial latents (torch's generator, bit-exact) on both paths.
        for key in ["ids_l", "ids_g"] {
            let got: Vec<i64> =
                d.ids.iter().find(|(n, ..)| n == key).expect("ids").2.iter().map(|&i| i as i64).collect();
            assert_eq!(got, r.ids(key), "{}: {key}", c.name);
        }
        let (_, init) = r.f32s("init_latents");
        for (j, (&g, &w)) in dumped(d, "init_latents").2.iter().zip(&init).enumerate() {
            assert!((g - w).abs() <= INIT_LATENT_REL * w.abs(), "{}: initial latent {j}: {g} vs torch {w}", c.name);
        }

        // The first UNet call, before sampling compounds anything.
        let (_, want_u) = r.f32s("unet_out_0");
        let (u_err, u_at, _) = common::max_abs_err(&dumped(d, "unet_out_0").2, &want_u);
        let u_rel = u_err as f64 / std_dev(&want_u);
        let u_tol = if force_f32 { F32_UNET_REL_STD } else { F16_UNET_REL_STD };
        if u_rel > u_tol {
            failures.push(format!(
                "{}: first UNet output max err {u_err} at {u_at} ({u_rel:.2e} of std > {u_tol})",
                c.name
            ));
        }

        let (_, want_lat) = r.f32s("final_latents");
        let got_lat = &dumped(d, "final_latents").2;
        let (lat_err, _, _) = common::max_abs_err(got_lat, &want_lat);
        let sd = std_dev(&want_lat);
        let (mean, max) = image_diff(&out.rgb, &r.image());
        println!(
            "{} f32={force_f32} {w}x{h} {} steps {}{}: unet_out_0 {u_rel:.2e} of std; latents max err {lat_err:.2e} (std {sd:.3}, {:.2e} of std); image mean {mean:.3}/255 max {max}/255 ({:.1} s)",
            c.name,
            c.steps,
            c.sampler,
            if c.karras { " karras" } else { "" },
            lat_err as f64 / sd,
            t.elapsed().as_secs_f64()
        );
        if force_f32 {
            for key in ["context", "pooled"] {
                let (_, want) = r.f32s(key);
                let (e, at, _) = common::max_abs_err(&dumped(d, key).2, &want);
                if e > F32_EMBED_ABS {
                    failures.push(format!("{}: {key} max err {e} at {at}", c.name));
                }
            }
            if lat_err as f64 > F32_LATENT_REL_STD * sd {
                failures.push(format!("{}: final latents max err {lat_err} > {F32_LATENT_REL_STD} × std {sd}", c.name));
            }
            if mean > F32_IMAGE_MEAN || max > F32_IMAGE_MAX {
                failures.push(format!("{}: image differs by mean {mean:.3}, max {max} (/255)", c.name));
            }
        } else if mean > F16_IMAGE_MEAN {
            failures.push(format!("{}: f16 image differs by mean {mean:.3}/255", c.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn pipeline_matches_diffusers_f32_path() {
    run(true);
}

#[test]
fn pipeline_matches_diffusers_f16_path() {
    run(false);
}

/// The PNG's `parameters` chunk parses the way A1111's `parse_generation_parameters` reads it:
/// prompt lines, `Negative prompt:`, then `key: value` pairs split by its regex.
#[test]
fn png_carries_a1111_parameters() {
    let gpu = common::gpu(true);
    let model = load(&gpu);
    let s = Settings {
        prompt: "1girl, solo, 東方".into(),
        negative: Some("lowres".into()),
        width: 64,
        height: 64,
        steps: 2,
        seed: 7,
        ..Settings::default()
    };
    let out = pollster::block_on(generate_with(&gpu, &model, &s, false, &mut |_| true)).expect("generate");
    let dec = png::Decoder::new(std::io::Cursor::new(&out.png));
    let reader = dec.read_info().expect("png");
    let info = reader.info();
    assert_eq!((info.width, info.height), (64, 64));
    let text: Vec<String> = info
        .uncompressed_latin1_text
        .iter()
        .filter(|t| t.keyword == "parameters")
        .map(|t| t.text.clone())
        .chain(info.utf8_text.iter().filter(|t| t.keyword == "parameters").map(|t| t.get_text().expect("itxt")))
        .collect();
    assert_eq!(text.len(), 1, "one parameters chunk");
    let lines: Vec<&str> = text[0].lines().collect();
    assert_eq!(lines[0], "1girl, solo, 東方");
    assert_eq!(lines[1], "Negative prompt: lowres");
    let re = regex::Regex::new(r#"\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)"#).unwrap();
    let kv: std::collections::HashMap<String, String> =
        re.captures_iter(lines[2]).map(|c| (c[1].to_string(), c[2].to_string())).collect();
    for (k, v) in [
        ("Steps", "2"),
        ("Sampler", "Euler a"),
        ("CFG scale", "7"),
        ("Seed", "7"),
        ("Size", "64x64"),
        ("Model", "tiny-sdxl"),
    ] {
        assert_eq!(kv.get(k).map(String::as_str), Some(v), "{k} in {:?}", lines[2]);
    }
}

/// Cancelling from the step callback stops the run with `Error::Cancelled` after that step.
#[test]
fn cancel_stops_after_the_step() {
    let gpu = common::gpu(true);
    let model = load(&gpu);
    let s = Settings { prompt: "cat".into(), width: 64, height: 64, steps: 5, ..Settings::default() };
    let mut seen = Vec::new();
    let r = pollster::block_on(generate_with(&gpu, &model, &s, false, &mut |p| {
        assert_eq!(p.preview_rgba.len(), p.preview_width * p.preview_height * 4);
        seen.push(p.step);
        p.step < 2
    }));
    assert!(matches!(r, Err(sdxl_web::Error::Cancelled)), "{:?}", r.err());
    assert_eq!(seen, [1, 2]);
}
