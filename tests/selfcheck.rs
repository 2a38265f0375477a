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
