//! Chrome's WebGPU stack on the f16 path: the wasm library in Node on Dawn (Chrome's WebGPU
//! implementation, with Tint, Chrome's WGSL compiler) from the npm `webgpu` package, on Mesa 25
//! lavapipe, which offers shader-f16 (headless Chromium here has only SwiftShader, without it).
//! Runs through `./x dawn-node www/node.js` (the Node host the README documents), on both
//! compute paths: the GPU self-check (with the kernel timing), and one generation stage by stage against the native CLI.
//!
//! Needs www/pkg (`./x wasm`) and Dawn + Mesa 25 under target/dawn (`./x setup`); `./x test` does
//! both first.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

mod common;

/// The stage-by-stage case: the browser test's (CFG on, a prompt past CLIP's first 16 tokens,
/// where a Tint-only bug once broke attention, and a 64 px VAE tile).
const PROMPT: &str = "1girl, (silver hair:1.2), looking at viewer, cherry blossoms, outdoors, smile, long hair";
const NEGATIVE: &str = "lowres, bad hands";
/// Dawn vs the CLI, stage by stage, either path: both run on llvmpipe (Mesa 25 under Dawn, Mesa
/// 22 natively) from different SPIR-V (Tint vs naga), so only float rounding may differ. Measured
/// (f16 path): text embeddings and the first UNet output equal, final latents 6e-7 of their std;
/// f32 path: 4.6e-6 and 8.3e-6 of std. The bounds are the browser test's (SwiftShader vs lavapipe).
const TOL: common::StageTol = common::StageTol { embed_abs: 1e-4, unet_rel_std: 1e-4, latent_rel_std: 1e-3 };
/// Dawn vs CLI PNG, mean absolute difference per channel (of 255; measured 0.000 on both paths).
const MAX_MEAN_DIFF: f64 = 1.0;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `./x dawn-node www/node.js ARGS…`.
fn node(args: &[&str]) -> Output {
    let out = Command::new(root().join("x"))
        .arg("dawn-node")
        .arg(root().join("www/node.js"))
        .args(args)
        .output()
        .expect("run ./x dawn-node");
    if !out.status.success() {
        panic!(
            "./x dawn-node www/node.js {} failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

fn path_flag(f32: bool) -> &'static [&'static str] {
    if f32 {
        &["--f32"]
    } else {
        &[]
    }
}

#[test]
fn dawn_runs_the_self_check_on_both_paths() {
    for f32 in [false, true] {
        let t0 = std::time::Instant::now();
        let out = node(&[&["selfcheck", "--json", "--timing"][..], path_flag(f32)].concat());
        let r: Value = serde_json::from_slice(&out.stdout).expect("selfcheck --json prints one JSON object");
        let want = if f32 { "f32" } else { "f16" };
        eprintln!(
            "{} ({} path): {} checks, {} failed, {:.1} s in checks, {:.1} s in all",
            r["adapter"],
            r["compute_path"],
            r["checks"].as_array().map_or(0, |c| c.len()),
            r["failures"],
            r["total_seconds"].as_f64().unwrap_or(0.0),
            t0.elapsed().as_secs_f64()
        );
        assert!(r["adapter"].as_str().unwrap_or("").contains("Mesa 25"), "not Dawn on Mesa 25: {}", r["adapter"]);
        assert_eq!(r["compute_path"], want, "Mesa 25 lavapipe offers shader-f16: the f16 path must run");
        let checks = r["checks"].as_array().expect("checks");
        assert!(checks.len() > 50, "only {} checks", checks.len());
        let failed: Vec<String> = checks
            .iter()
            .filter(|c| c["pass"] != true)
            .map(|c| format!("{} {} {}: {}x tol {}", c["family"], c["name"], c["shape"], c["worst_ratio"], c["error"]))
            .collect();
        assert!(failed.is_empty() && r["passed"] == true, "{want} path on Tint:\n{}", failed.join("\n"));
        // `engine.timing()` on Tint: every family timed, a positive estimate of the 1024² step.
        let t = &r["timing"];
        eprintln!("{want} path: estimated {} s per 1024² step (capped: {})", t["step_seconds"], t["capped"]);
        assert_eq!(t["compute_path"], want);
        let families = t["families"].as_array().expect("timing families");
        assert!(families.len() >= 8, "{} timing families", families.len());
        assert!(families.iter().all(|f| f["ms"].as_f64().is_some_and(|ms| ms > 0.0)), "a family without a time: {t}");
        assert!(
            t["step_seconds"].as_f64().is_some_and(|s| s > 0.0 && s.is_finite()),
            "step estimate {}",
            t["step_seconds"]
        );
    }
}

fn generate_cli(model: &Path, dir: &Path, f32: bool) -> (Vec<u8>, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_sdxl"))
        .args(path_flag(f32))
        .args(["generate", "--model", model.to_str().unwrap(), "--prompt", PROMPT, "--negative", NEGATIVE])
        .args(["--width", "64", "--height", "72", "--steps", "3", "--cfg", "6", "--seed", "99"])
        .args(["--sampler", "dpmpp_2m", "--gpu-memory", "6G", "--vae-tile", "64", "--json"])
        .args(["--output", dir.join("cli.png").to_str().unwrap(), "--dump", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "sdxl generate failed: {}", String::from_utf8_lossy(&out.stderr));
    (std::fs::read(dir.join("dump.safetensors")).unwrap(), serde_json::from_slice(&out.stdout).unwrap())
}

fn png_mean_diff(a: &Path, b: &Path) -> f64 {
    let dec = |p: &Path| {
        let bytes = std::fs::read(p).unwrap();
        let mut r = png::Decoder::new(std::io::Cursor::new(bytes)).read_info().expect("a PNG");
        let (w, h) = (r.info().width, r.info().height);
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut buf).unwrap();
        buf.truncate(info.buffer_size());
        (buf, w, h)
    };
    let (x, y) = (dec(a), dec(b));
    assert_eq!((x.1, x.2), (y.1, y.2), "image sizes");
    x.0.iter().zip(&y.0).map(|(p, q)| p.abs_diff(*q) as f64).sum::<f64>() / x.0.len() as f64
}

#[test]
fn dawn_matches_the_cli_stage_by_stage_on_both_paths() {
    let model = root().join("tests/fixtures/tiny-sdxl/tiny-sdxl.safetensors");
    for f32 in [false, true] {
        let path = if f32 { "f32" } else { "f16" };
        let dir = std::env::temp_dir().join(format!("sdxl-dawn-{path}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cli, cli_report) = generate_cli(&model, &dir, f32);
        let settings = json!({"prompt": PROMPT, "negative": NEGATIVE, "width": 64, "height": 72, "steps": 3,
                              "cfg": 6, "seed": 99, "sampler": "dpmpp_2m", "gpu_memory": "6G", "vae_tile": 64});
        let (png, dump, report) = (dir.join("dawn.png"), dir.join("dawn.safetensors"), dir.join("dawn.json"));
        let t0 = std::time::Instant::now();
        let settings = settings.to_string();
        let mut args = vec!["generate", "--model", model.to_str().unwrap(), "--settings", &settings];
        args.extend(["--out", png.to_str().unwrap(), "--dump", dump.to_str().unwrap()]);
        args.extend(["--report", report.to_str().unwrap()]);
        args.extend(path_flag(f32));
        node(&args);
        let wr: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        eprintln!(
            "{path} path: Dawn {} ({:.1} s with compiles)\nDawn: {wr}\nCLI: {cli_report}",
            wr["adapter"],
            t0.elapsed().as_secs_f64()
        );
        assert_eq!(wr["compute_path"], path);
        // The same planner on both hosts: the same plan and the same peak, to the byte.
        for k in ["peak_gpu_bytes", "plan", "width", "height", "steps", "seed"] {
            assert_eq!(wr[k], cli_report[k], "{path} path: report field {k}, Dawn vs CLI");
        }
        let failures = common::compare_dumps("dawn", &std::fs::read(&dump).unwrap(), &cli, &TOL);
        assert!(failures.is_empty(), "{path} path on Dawn/Tint differs from the CLI:\n{}", failures.join("\n"));
        let mean = png_mean_diff(&png, &dir.join("cli.png"));
        eprintln!("{path} path: Dawn vs CLI PNG mean {mean:.3}/255");
        assert!(mean <= MAX_MEAN_DIFF, "{path} path: PNG mean difference {mean}/255");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
