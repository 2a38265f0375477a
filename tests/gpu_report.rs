//! `./x gpu-report` end to end, in its quick mode on lavapipe: the tiny fixture model instead of
//! the random 6.9 GB checkpoint, 64×64 instead of 1024², one bench kernel. The report file must
//! hold real figures, and a failing step must not lose the others.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `bash x gpu-report OUT ARGS` against this build's `sdxl`.
fn gpu_report(out: &Path, args: &[&str]) -> (Output, serde_json::Value) {
    let o = Command::new("bash")
        .arg(repo().join("x"))
        .arg("gpu-report")
        .arg(out)
        .args(args)
        .env("SDXL_BIN", env!("CARGO_BIN_EXE_sdxl"))
        .env("XDG_RUNTIME_DIR", std::env::var_os("XDG_RUNTIME_DIR").unwrap_or_else(|| "/tmp".into()))
        .output()
        .expect("run bash x gpu-report");
    let log = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(out).unwrap_or_else(|e| panic!("no report {}: {e}\n{log}", out.display()));
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("report is not JSON ({e}): {text}"));
    (o, v)
}

fn quick_args(model: &str) -> Vec<&str> {
    vec!["--size", "64", "--model", model, "--quick", "--bench-only", "layer_norm", "--step-timeout", "300"]
}

#[test]
fn gpu_report_quick_mode_writes_every_figure() {
    let dir = std::env::temp_dir().join(format!("sdxl-gpu-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = repo().join("tests/fixtures/tiny-sdxl/tiny-sdxl.safetensors");
    let out = dir.join("report.json");
    let (o, r) = gpu_report(&out, &quick_args(model.to_str().unwrap()));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(r["passed"], true, "{r:#}");
    assert_eq!(r["errors"].as_array().map(Vec::len), Some(0));
    assert!(stdout.contains("s per step") && stdout.contains("wrote "), "summary: {stdout}");

    assert!(r["adapter"]["name"].as_str().is_some_and(|s| !s.is_empty()), "adapter");
    // Both compute paths when the adapter has shader-f16 (lavapipe does), each with every check passed.
    let paths: Vec<&str> = if r["adapter"]["shader_f16"] == true { vec!["f16", "f32"] } else { vec!["f32"] };
    for p in &paths {
        let sc = &r["selfcheck"][p];
        assert_eq!(sc["compute_path"], *p);
        assert_eq!((sc["passed"].as_bool(), sc["failures"].as_u64()), (Some(true), Some(0)), "{p}");
        let s = &r["summary"]["selfcheck"][p];
        assert!(s["total"].as_u64().unwrap() > 50 && s["passed"] == s["total"], "{p}: {s}");
    }
    let bench = r["bench"].as_array().expect("bench rows");
    assert!(bench.iter().any(|b| b["kernel"] == "peak_fma") && bench.iter().any(|b| b["kernel"] == "layer_norm"));
    assert!(bench.iter().all(|b| b["ms"].as_f64().unwrap() > 0.0));

    let g = &r["generate"];
    assert_eq!((g["width"].as_u64(), g["steps"].as_u64()), (Some(64), Some(2)));
    let steps: Vec<f64> = g["step_seconds"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(steps.len(), 2);
    let unet = g["stages"]["unet"]["seconds"].as_f64().unwrap();
    assert!((steps.iter().sum::<f64>() - unet).abs() < 1e-6, "step_seconds {steps:?} sum to the UNet stage {unet}");
    let sps = r["seconds_per_step"]["seconds"].as_f64().unwrap();
    assert!(sps > 0.0 && sps == steps[1], "the measured step is step 2: {sps} vs {steps:?}");
    assert_eq!(r["summary"]["seconds_per_step"].as_f64(), Some(sps));
    assert!(r["seconds_per_step_1024"].is_null(), "not measured at 1024²");
    assert!(r["summary"]["peak_gpu_bytes"].as_u64().unwrap() > 0);
    for step in ["info", "selfcheck", "bench", "generate", "total"] {
        assert!(r["wall_seconds"][step].as_f64().is_some_and(|s| s > 0.0), "wall {step}: {r:#}");
    }
    assert!(r["binary"]["sha256"].as_str().is_some_and(|s| s.len() == 64));
    assert!(r["system"]["cpus"].as_u64().is_some_and(|n| n > 0));
    // The work folder is gone: only the report is left.
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("report.json")]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn gpu_report_keeps_the_other_steps_when_one_fails() {
    let dir = std::env::temp_dir().join(format!("sdxl-gpu-report-fail-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("report.json");
    let missing = dir.join("missing.safetensors");
    let (o, r) = gpu_report(&out, &quick_args(missing.to_str().unwrap()));
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(r["passed"], false);
    let errors = r["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = errors[0].as_str().unwrap();
    // The CLI's error line, not the whole stderr.
    assert!(e.starts_with("generate: exit code 2: error: ") && e.contains("missing.safetensors"), "{e}");
    assert!(!e.contains('\n'), "{e}");
    assert_eq!(r["steps"]["generate"]["exit_code"], 2);
    assert!(r["generate"].is_null() && r["seconds_per_step"].is_null());
    assert!(r["selfcheck"]["f32"]["passed"] == true && r["bench"].as_array().is_some_and(|b| !b.is_empty()));
    let _ = std::fs::remove_dir_all(&dir);
}
