//! Memory accounting, dry runs and the budget planner (issue: full-size SDXL inside 8 GB), on the
//! tiny fixture model: a dry run predicts the real run's peak exactly, the planner streams the
//! text encoders (same image) and tiles the VAE only when the budget demands it, and a budget
//! nothing fits is refused before any work.

mod common;

use std::path::PathBuf;

use sdxl_web::gpu::Gpu;
use sdxl_web::pipeline::{generate_with, plan, MemSize, MemoryPlan, Model, Output, Settings, TextEncoders};

fn model_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sdxl/tiny-sdxl.safetensors")
}

fn load(gpu: &Gpu) -> Model {
    Model::load(gpu, &model_path(), None, |_| {}).expect("tiny model loads")
}

fn settings(w: usize, h: usize, budget: u64) -> Settings {
    Settings {
        prompt: "1girl, solo, (red hair:1.2)".into(),
        negative: Some("lowres".into()),
        width: w,
        height: h,
        steps: 2,
        seed: 11,
        gpu_memory: MemSize(budget),
        ..Settings::default()
    }
}

fn gen(gpu: &Gpu, m: &Model, s: &Settings) -> Output {
    pollster::block_on(generate_with(gpu, m, s, false, &mut |_| true)).expect("generate")
}

const BIG: u64 = 64 << 30;

/// The dry run is the real run with nothing computed, so its accounting must be identical: every
/// stage's peak, and the whole run's, to the byte. Otherwise it proves nothing about full size.
#[test]
fn dry_run_predicts_the_real_peak_exactly() {
    for f32_path in [true, false] {
        let gpu = common::gpu(f32_path);
        let twin = gpu.dry_twin();
        let real_model = load(&gpu);
        let dry_model = load(&twin);
        assert_eq!(twin.memory_stats(), gpu.memory_stats(), "a dry load accounts the same weights");
        for (w, h) in [(64, 64), (96, 64)] {
            let s = settings(w, h, BIG);
            let real = gen(&gpu, &real_model, &s).report;
            let dry = gen(&twin, &dry_model, &s).report;
            println!(
                "f32={f32_path} {w}x{h}: peak {} (text {}, unet {}, vae {}), dry {}",
                real.peak_gpu_bytes,
                real.stages.text.peak_gpu_bytes,
                real.stages.unet.peak_gpu_bytes,
                real.stages.vae.peak_gpu_bytes,
                dry.peak_gpu_bytes
            );
            assert!(!real.dry_run && dry.dry_run);
            assert_eq!(real.peak_gpu_bytes, dry.peak_gpu_bytes, "{w}x{h}");
            assert_eq!(real.plan.predicted_peak_gpu_bytes, real.peak_gpu_bytes, "the plan's prediction");
            for (a, b, n) in [
                (&real.stages.text, &dry.stages.text, "text"),
                (&real.stages.unet, &dry.stages.unet, "unet"),
                (&real.stages.vae, &dry.stages.vae, "vae"),
            ] {
                assert_eq!(a.peak_gpu_bytes, b.peak_gpu_bytes, "{n} stage at {w}x{h}");
            }
            let (uv, text) = real_model.weight_bytes();
            assert!(real.peak_gpu_bytes > uv + text, "the peak includes the weights and activations");
            assert_eq!(real.plan.text_encoders, TextEncoders::Resident, "a big budget releases nothing");
            assert_eq!(real.plan.vae_tile, 0, "a big budget tiles nothing");
            assert_eq!((real.width, real.height, real.steps, real.seed), (w, h, 2, 11));
        }
    }
}

/// Lowers the budget from what a big budget peaks at until the planner's choice satisfies `done`:
/// each fitting plan's own prediction minus one byte is the next budget, so the returned plan
/// is the first one the planner must take at a tighter budget.
fn tighten(gpu: &Gpu, m: &Model, w: usize, h: usize, done: impl Fn(&MemoryPlan) -> bool) -> (Settings, MemoryPlan) {
    tighten_from(gpu, m, settings(w, h, BIG), done)
}

fn tighten_from(gpu: &Gpu, m: &Model, mut s: Settings, done: impl Fn(&MemoryPlan) -> bool) -> (Settings, MemoryPlan) {
    loop {
        let p = pollster::block_on(plan(gpu, m, &s)).expect("a plan fits");
        assert!(p.predicted_peak_gpu_bytes <= s.gpu_memory.0);
        if done(&p) {
            return (s, p);
        }
        s.gpu_memory = MemSize(p.predicted_peak_gpu_bytes - 1);
    }
}

/// Between the all-resident peak and the weights alone, the planner first streams the text
/// encoders (same image, same bytes), caches the conditioning per prompt, and reloads the
/// encoders only for a new prompt.
#[test]
fn planner_streams_text_encoders_when_the_budget_demands() {
    let gpu = common::gpu(true);
    let m = load(&gpu);
    // At 128² the VAE's activations outweigh the text encoders', so streaming them helps even
    // for a new prompt (encoding needs every weight at once).
    let full = gen(&gpu, &m, &settings(128, 128, BIG));
    let (s, p) = tighten(&gpu, &m, 128, 128, |p| p.text_encoders == TextEncoders::Streamed);
    println!("big-budget peak {}, weights {:?}: plan {p:?}", full.report.peak_gpu_bytes, m.weight_bytes());
    assert_eq!(p.vae_tile, 0, "streaming comes before tiling");

    // The big-budget run cached this prompt's conditioning: nothing to encode, nothing to reload.
    let a = gen(&gpu, &m, &s);
    assert!(a.report.conditioning_cached && !a.report.text_encoders_reloaded);
    assert!(!m.text_resident(), "streamed: released after the run");
    assert_eq!(a.report.peak_gpu_bytes, p.predicted_peak_gpu_bytes);
    assert_eq!(a.rgb, full.rgb, "streaming the text encoders must not change the image");

    // A new prompt streams them back from the file, then releases them again. Its budget is
    // planned anew: encoding needs every weight on the GPU at once.
    let s2 = Settings { prompt: "1boy, solo".into(), ..settings(128, 128, BIG) };
    let (s2, p2) = tighten_from(&gpu, &m, s2, |p| p.text_encoders == TextEncoders::Streamed);
    assert_eq!(p2.vae_tile, 0);
    let b = gen(&gpu, &m, &s2);
    assert!(!b.report.conditioning_cached && b.report.text_encoders_reloaded);
    assert!(!m.text_resident());
    assert_eq!(b.report.peak_gpu_bytes, b.report.plan.predicted_peak_gpu_bytes);
    assert!(b.report.peak_gpu_bytes <= s2.gpu_memory.0, "{} > {}", b.report.peak_gpu_bytes, s2.gpu_memory.0);
    // The reloaded encoders give the image a freshly loaded model gives.
    let fresh = load(&gpu);
    let want = gen(&gpu, &fresh, &Settings { gpu_memory: MemSize(BIG), ..s2.clone() });
    drop(fresh);
    assert_eq!(b.rgb, want.rgb, "reloaded text encoders encode exactly as freshly loaded ones");
    // A big budget keeps them once reloaded.
    let c = gen(&gpu, &m, &Settings { prompt: "1boy, solo, smile".into(), gpu_memory: MemSize(BIG), ..s2 });
    assert!(c.report.text_encoders_reloaded && m.text_resident());
}

/// Below what streaming alone can reach, the VAE is tiled with the largest tiles that fit; below
/// everything, a clear error names the size, the need and the budget, before any work.
#[test]
fn planner_tiles_the_vae_or_refuses_clearly() {
    let gpu = common::gpu(true);
    let m = load(&gpu);
    let (s, p) = tighten(&gpu, &m, 128, 128, |p| p.vae_tile > 0);
    println!("plan {p:?}");
    // The largest tile that fits: every larger candidate (under the image side) fails here.
    for larger in [96, 64].into_iter().filter(|&t| t > p.vae_tile) {
        let forced = Settings { vae_tile: larger, ..s.clone() };
        assert!(pollster::block_on(plan(&gpu, &m, &forced)).is_err(), "{larger} px tiles would fit too");
    }
    let out = gen(&gpu, &m, &s);
    assert_eq!(out.report.plan.vae_tile, p.vae_tile);
    assert_eq!(out.report.peak_gpu_bytes, p.predicted_peak_gpu_bytes);
    assert_eq!((out.width, out.height), (128, 128));
    let untiled = gen(&gpu, &m, &settings(128, 128, BIG));
    let diff =
        out.rgb.iter().zip(&untiled.rgb).map(|(a, b)| a.abs_diff(*b) as u64).sum::<u64>() as f64 / out.rgb.len() as f64;
    println!("tiled at {} px vs whole: mean {diff:.2}/255", p.vae_tile);

    let (uv, _) = m.weight_bytes();
    let hopeless = settings(128, 128, uv / 2);
    let e = pollster::block_on(generate_with(&gpu, &m, &hopeless, false, &mut |_| panic!("no step may run")))
        .err()
        .expect("refused")
        .to_string();
    println!("{e}");
    for w in ["128x128", "does not fit", "needs at least", "budget is", "--gpu-memory"] {
        assert!(e.contains(w), "{w:?} not in {e}");
    }
}

#[test]
fn memory_sizes_parse_as_users_write_them() {
    for (t, b) in
        [("7.5G", 15u64 << 29), ("24G", 24 << 30), ("6144M", 6 << 30), ("8GiB", 8 << 30), ("1073741824", 1 << 30)]
    {
        assert_eq!(t.parse::<MemSize>().unwrap(), MemSize(b), "{t}");
    }
    for (t, w) in [
        ("7.5Q", "unknown unit"),
        ("lots", "no number"),
        ("7..5G", "not a number"),
        ("0G", "from 1M"),
        ("-1G", "from 1M"),
    ] {
        let e = t.parse::<MemSize>().unwrap_err();
        assert!(e.contains(w) && e.contains(t), "{t}: {e}");
    }
    let s = Settings::from_json(r#"{"prompt":"x","gpu_memory":"6G","vae_tile":256}"#).unwrap();
    assert_eq!((s.gpu_memory, s.vae_tile), (MemSize(6 << 30), 256));
    assert_eq!(Settings::from_json(r#"{"prompt":"x","gpu_memory":8589934592}"#).unwrap().gpu_memory, MemSize(8 << 30));
    assert!(Settings::from_json(r#"{"prompt":"x","gpu_memory":"big"}"#).unwrap_err().to_string().contains("big"));
    assert!(Settings::from_json(r#"{"prompt":"x","vae_tile_overlap":1.0}"#).is_err());
    assert!(Settings::from_json(r#"{"prompt":"x","vae_tile":30}"#).unwrap_err().to_string().contains("VAE tile 30"));
}
