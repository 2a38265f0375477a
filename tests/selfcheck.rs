//! The library's GPU self-check (`sdxl selfcheck`, `engine.selfCheck()`) on both compute paths.

mod common;

use sdxl_web::gpu::registry::SHADERS;
use sdxl_web::selfcheck::{self, compare, F16_OUT_TOL, F32_TOL};

fn run(force_f32: bool) {
    let gpu = common::gpu(force_f32);
    let t0 = std::time::Instant::now();
    let report = selfcheck::run_blocking(&gpu).expect("self-check runs");
    eprintln!("{}", report.table());
    eprintln!("{} path: {:.1} s", gpu.info.compute_path, t0.elapsed().as_secs_f64());
    let failed: Vec<String> =
        report.checks.iter().filter(|c| !c.pass).map(|c| format!("{} {} ({:?})", c.family, c.name, c.error)).collect();
    assert!(failed.is_empty(), "failed checks: {failed:#?}");
    assert!(report.passed && report.failures == 0);
    for s in SHADERS {
        assert!(report.checks.iter().any(|c| c.family == s.name), "shader family {} missing from the report", s.name);
    }
    assert!(report.checks.iter().filter(|c| c.family == "block").count() >= 2, "UNet and VAE blocks");
    assert!(report.checks.iter().any(|c| c.name.ends_with("windows")), "binding-window paths");
    assert!(report.checks.iter().all(|c| c.seconds >= 0.0 && c.seconds.is_finite()));
    let json = serde_json::to_string(&report).expect("serialises");
    assert!(json.contains("\"worst_ratio\""));
}

#[test]
fn selfcheck_f16_path() {
    run(false);
}

#[test]
fn selfcheck_f32_path() {
    run(true);
}

#[test]
fn a_wrong_reference_is_caught() {
    let got = [0.5f32, -1.25, 3.0];
    assert!(compare(&got, &[0.5, -1.25, 3.0], None, F32_TOL).1 <= 1.0);
    // One element off by 1e-3 fails the f32 tolerance; off by 1e-2, the f16 one.
    assert!(compare(&got, &[0.5, -1.25, 3.001], None, F32_TOL).1 > 1.0);
    assert!(compare(&got, &[0.5, -1.26, 3.0], None, F16_OUT_TOL).1 > 1.0);
    assert!(compare(&[f32::NAN], &[0.0], None, F16_OUT_TOL).1.is_infinite());
}

// ---- timing (`sdxl selfcheck --timing`, `engine.timing()`) ------------------------------------

use sdxl_web::gpu::{DType, Gpu, Tensor};
use sdxl_web::model::unet::{Cond, UNet};
use sdxl_web::pipeline::Model;
use sdxl_web::timing::{self, StepModel, TimingOptions};
use sdxl_web::tokenizer::CONTEXT_LEN;

/// The estimate against real UNet steps of the tiny fixture model, both on lavapipe, both in GPU
/// time (timestamp queries). The estimator extrapolates each family from its largest call, so
/// small calls (the tiny model has many) run at a lower rate than the model assumes, and lavapipe
/// runs dispatches with CPU threads whose start-up cost varies (observed estimate/measured over
/// four runs: 0.53 to 0.79 on both paths); a factor of 3 either way leaves room for a loaded
/// machine and still catches a unit or counting error (those are 10× or more).
const ESTIMATE_FACTOR: f64 = 3.0;
/// Real steps to time after the warm-up.
const MEASURED_STEPS: usize = 3;

fn tiny_model_path() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sdxl/tiny-sdxl.safetensors")
}

/// GPU seconds (and wall seconds) of one real UNet forward, median of `MEASURED_STEPS`.
fn measure_steps(gpu: &Gpu, unet: &UNet, x: &Tensor, cond: &Cond) -> (f64, f64) {
    unet.forward(gpu, x, cond).expect("warm-up step");
    gpu.sync().unwrap();
    let (mut g, mut w) = (Vec::new(), Vec::new());
    for _ in 0..MEASURED_STEPS {
        let t0 = std::time::Instant::now();
        assert!(gpu.begin_timing(), "lavapipe grants timestamp queries");
        unet.forward(gpu, x, cond).expect("step");
        let s = gpu.end_timing_blocking().unwrap().expect("one step fits one query set");
        w.push(t0.elapsed().as_secs_f64());
        g.push(s);
    }
    g.sort_by(f64::total_cmp);
    w.sort_by(f64::total_cmp);
    (g[g.len() / 2], w[w.len() / 2])
}

fn estimate_vs_tiny_unet(force_f32: bool) {
    let gpu = common::gpu(force_f32);
    let path = tiny_model_path();
    let m = Model::load(&gpu.dry_twin(), &path, None, |_| {}).expect("tiny model header");
    let (w, h, batch) = (128, 128, 2);
    let (lh, lw) = (h / m.vae_factor(), w / m.vae_factor());
    let t0 = std::time::Instant::now();
    // What `engine.timing()` does with this model loaded.
    let opts = TimingOptions { width: w, height: h, batch, ..TimingOptions::sdxl_1024() };
    let est = pollster::block_on(timing::run(&gpu, &opts, &m.step_model())).expect("timing");
    let pass_s = t0.elapsed().as_secs_f64();
    eprintln!("{}", est.table());
    assert_eq!(est.model, m.name, "the report names the model it estimated");

    // The real model on the real device: the same work as the dry count, then timed steps.
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let weights: std::collections::HashMap<String, Tensor> = st
        .tensors()
        .into_iter()
        .filter(|(name, _)| name.starts_with("model.diffusion_model."))
        .map(|(name, v)| (name, Tensor::from_bytes(&gpu, v.shape(), DType::F16, v.data()).unwrap()))
        .collect();
    let unet = UNet::new(m.unet.clone(), &weights).unwrap();
    let cfg = &m.unet;
    let x = Tensor::from_f32(
        &gpu,
        &[batch, cfg.in_channels, lh, lw],
        DType::F32,
        &selfcheck::rand(batch * cfg.in_channels * lh * lw, 1, 1.0),
    )
    .unwrap();
    let context = Tensor::from_f32(
        &gpu,
        &[batch, CONTEXT_LEN, cfg.context_dim],
        DType::F32,
        &selfcheck::rand(batch * CONTEXT_LEN * cfg.context_dim, 2, 1.0),
    )
    .unwrap();
    let pooled =
        Tensor::from_f32(&gpu, &[batch, cfg.pooled_dim], DType::F32, &selfcheck::rand(batch * cfg.pooled_dim, 3, 1.0))
            .unwrap();
    let time_ids = vec![[h as f32, w as f32, 0.0, 0.0, h as f32, w as f32]; batch];
    let ts = vec![500.0; batch];
    let cond = Cond { timesteps: &ts, context: &context, pooled: &pooled, time_ids: &time_ids };
    gpu.begin_work_count();
    unet.forward(&gpu, &x, &cond).unwrap();
    let real = gpu.end_work_count();
    assert_eq!(real.dispatches, est.dispatches, "a dry twin counts the dispatches the real step makes");
    assert_eq!(real.flops() * 1e-9, est.unet_gflop, "and the same FLOPs");
    let (gpu_s, wall_s) = measure_steps(&gpu, &unet, &x, &cond);
    let ratio = est.step_seconds / gpu_s;
    eprintln!(
        "{} path, tiny UNet at {w}x{h} batch {batch}: estimated {:.4} s, measured {:.4} s GPU ({:.4} s wall) per step, estimate/measured {ratio:.2}; timing pass {pass_s:.1} s",
        gpu.info.compute_path, est.step_seconds, gpu_s, wall_s
    );
    assert!(est.families.iter().all(|f| f.ms > 0.0 && f.rate > 0.0 && f.step_ms > 0.0), "{:?}", est.families);
    assert!(
        (1.0 / ESTIMATE_FACTOR..=ESTIMATE_FACTOR).contains(&ratio),
        "estimate {:.4} s vs measured {gpu_s:.4} s: off by more than {ESTIMATE_FACTOR}x",
        est.step_seconds
    );
}

#[test]
fn timing_estimate_matches_tiny_unet_steps_f16_path() {
    estimate_vs_tiny_unet(false);
}

#[test]
fn timing_estimate_matches_tiny_unet_steps_f32_path() {
    estimate_vs_tiny_unet(true);
}

/// The full-size count comes from `ModelConfig::sdxl_base()`'s structure (no constant): the
/// largest calls are the level-1 self-attention over 64² = 4096 tokens (10 heads of 64) and
/// the 1280-channel convolutions; the FLOPs of one CFG step at 1024² are ~13.5 TFLOP.
#[test]
fn sdxl_1024_count_and_capped_timing() {
    for force_f32 in [false, true] {
        let gpu = common::gpu(force_f32);
        let base = StepModel::sdxl_base();
        assert_eq!(base.vae_factor, 8);
        let tally = pollster::block_on(timing::count_unet(&gpu, &base.unet, 2, (128, 128), base.vae_factor)).unwrap();
        let tflop = tally.flops() * 1e-12;
        assert!((12.0..15.0).contains(&tflop), "{tflop} TFLOP");
        let t0 = std::time::Instant::now();
        let r = pollster::block_on(timing::run(&gpu, &TimingOptions::capped(), &base)).unwrap();
        assert_eq!((r.model.as_str(), r.unet_gflop), ("SDXL 1.0 base", tally.flops() * 1e-9));
        eprintln!("{}", r.table());
        eprintln!("{} path: capped timing pass {:.1} s", gpu.info.compute_path, t0.elapsed().as_secs_f64());
        let attn = r.families.iter().find(|f| f.family == "attn_self").expect("self attention timed");
        assert!(attn.shape.starts_with("b2 h10 q4096 k4096 d64"), "{}", attn.shape);
        for fam in ["linear", "conv3x3", "attn_self", "attn_cross", "group_norm", "layer_norm", "elementwise"] {
            assert!(r.families.iter().any(|f| f.family == fam), "{fam} missing");
        }
        assert!(r.step_seconds > 0.0 && r.step_seconds.is_finite());
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"step_seconds\""));
    }
}
