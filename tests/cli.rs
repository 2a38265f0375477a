//! `sdxl generate` as a user runs it: bad arguments exit 2 with a message naming the problem
//! (before any GPU or model work), and a real run on the fixture model writes a PNG with A1111
//! `parameters` metadata and a `--dump` file.

use std::path::PathBuf;
use std::process::{Command, Output};

fn model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sdxl/tiny-sdxl.safetensors")
}

fn sdxl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sdxl"))
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::var_os("XDG_RUNTIME_DIR").unwrap_or_else(|| "/tmp".into()))
        .output()
        .expect("run sdxl")
}

/// ((width, height), the `parameters` text) of a PNG the CLI wrote.
fn png_size_and_parameters(path: &std::path::Path) -> ((u32, u32), String) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let reader = png::Decoder::new(std::io::Cursor::new(bytes)).read_info().expect("png");
    let info = reader.info();
    let text = info.uncompressed_latin1_text.iter().find(|t| t.keyword == "parameters").expect("parameters");
    ((info.width, info.height), text.text.clone())
}

fn bad(args: &[&str], words: &[&str]) {
    let m = model();
    let mut full = vec!["generate", "--model", m.to_str().unwrap(), "--prompt", "cat"];
    full.extend_from_slice(args);
    let out = sdxl(&full);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    for w in words {
        assert!(err.contains(w), "{args:?}: {w:?} not in {err}");
    }
}

#[test]
fn bad_arguments_exit_2_with_a_clear_message() {
    bad(&["--width", "100"], &["width 100", "multiple of 8"]);
    bad(&["--height", "4096"], &["height 4096", "2048"]);
    bad(&["--width", "32"], &["width 32", "64"]);
    bad(&["--steps", "0"], &["steps 0"]);
    bad(&["--sampler", "heun"], &["heun", "euler_a"]);
    bad(&["--cfg", "nan"], &["CFG"]);
    bad(&["--sampler", "ddim", "--karras"], &["ddim", "Karras"]);
    bad(&["--rating", "safe"], &["safe", "questionable"]);
    bad(&["--gpu-memory", "8X"], &["8X", "unknown unit"]);
    bad(&["--vae-tile-overlap", "1.5"], &["overlap 1.5"]);
    bad(&["--vae-tile", "20"], &["VAE tile 20"]);
    let fx = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/img2img");
    let init = fx.join("init.png");
    let init = init.to_str().unwrap();
    bad(&["--init-image", init, "--strength", "0"], &["strength 0", "at most 1"]);
    bad(&["--init-image", init, "--strength", "1.5"], &["strength 1.5"]);
    bad(&["--mask", init], &["mask needs an init image"]);
    bad(&["--init-image", fx.join("cases.json").to_str().unwrap()], &["init image: not a PNG or JPEG"]);
    bad(&["--hires-scale", "3"], &["3072x3072", "--hires-scale"]);
    bad(&["--hires-scale", "1.5", "--hires-strength", "0"], &["hires strength 0"]);
    bad(&["--hires-scale", "2", "--init-image", init], &["hires fix applies to text-to-image"]);
    let truncated = std::env::temp_dir().join(format!("sdxl-cli-trunc-{}.png", std::process::id()));
    let bytes = std::fs::read(fx.join("init.png")).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();
    bad(&["--init-image", truncated.to_str().unwrap()], &["init image: unreadable PNG"]);
    let _ = std::fs::remove_file(&truncated);
    let out = sdxl(&["generate", "--model", "/nonexistent/model.safetensors", "--prompt", "cat"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("/nonexistent/model.safetensors"), "{err}");
    let out = sdxl(&["generate", "--prompt", "cat"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--model"));
}

#[test]
fn generate_writes_png_with_parameters_and_dump() {
    let dir = std::env::temp_dir().join(format!("sdxl-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("out.png");
    let m = model();
    let out = sdxl(&[
        "generate",
        "--model",
        m.to_str().unwrap(),
        "--prompt",
        "1girl, solo",
        "--negative",
        "",
        "--width",
        "64",
        "--height",
        "72",
        "--steps",
        "2",
        "--seed",
        "5",
        "--rating",
        "sensitive",
        "--output",
        png.to_str().unwrap(),
        "--dump",
        dir.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("not one of the model card's resolution buckets"), "{err}");
    let (size, text) = png_size_and_parameters(&png);
    assert_eq!(size, (64, 72));
    assert!(text.starts_with("1girl, solo, sensitive-rated\nNegative prompt: \nSteps: 2, Sampler: Euler a"), "{text}");
    assert!(text.contains("Seed: 5, Size: 64x72, Model: tiny-sdxl"), "{text}");
    let dump = std::fs::read(dir.join("dump.safetensors")).expect("dump written");
    let st = safetensors::SafeTensors::deserialize(&dump).expect("dump parses");
    for (name, shape) in [
        ("ids_l", vec![2, 77]),
        ("ids_g", vec![2, 77]),
        ("context", vec![2, 77, 48]),
        ("pooled", vec![2, 32]),
        ("add_time_ids", vec![2, 6]),
        ("init_latents", vec![1, 4, 9, 8]),
        ("final_latents", vec![1, 4, 9, 8]),
    ] {
        assert_eq!(st.tensor(name).expect(name).shape(), shape.as_slice(), "{name}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn run_json(extra: &[&str]) -> serde_json::Value {
    let m = model();
    let mut args =
        vec!["--f32", "generate", "--model", m.to_str().unwrap(), "--prompt", "1girl, solo", "--negative", ""];
    args.extend_from_slice(&["--width", "64", "--height", "64", "--steps", "2", "--seed", "3", "--json"]);
    args.extend_from_slice(extra);
    let out = sdxl(&args);
    assert!(out.status.success(), "{extra:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{extra:?}: stdout is not one JSON object ({e})"))
}

/// `--json` prints one report on stdout; `--dry-run` reads only headers, computes nothing, writes
/// no image and reports the same peak as the real run (the proof that dry runs measure).
#[test]
fn json_report_and_dry_run_agree() {
    let dir = std::env::temp_dir().join(format!("sdxl-cli-json-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("real.png");
    let real = run_json(&["--output", png.to_str().unwrap()]);
    let dry_png = dir.join("dry.png");
    let dry = run_json(&["--dry-run", "--output", dry_png.to_str().unwrap()]);
    assert!(png.exists() && !dry_png.exists(), "a dry run writes no image");
    assert_eq!(real["output"], png.to_str().unwrap());
    assert_eq!((real["dry_run"].as_bool(), dry["dry_run"].as_bool()), (Some(false), Some(true)));
    let peak = real["peak_gpu_bytes"].as_u64().expect("peak_gpu_bytes");
    assert!(peak > 0);
    assert_eq!(dry["peak_gpu_bytes"].as_u64(), Some(peak), "dry {dry}\nreal {real}");
    for st in ["text", "unet", "vae"] {
        assert_eq!(dry["stages"][st]["peak_gpu_bytes"], real["stages"][st]["peak_gpu_bytes"], "{st}");
        assert!(real["stages"][st]["seconds"].as_f64().unwrap() > 0.0, "{st}");
    }
    for k in ["width", "height", "steps", "seed"] {
        assert_eq!(real[k], dry[k], "{k}");
    }
    assert_eq!((real["width"].as_u64(), real["steps"].as_u64(), real["seed"].as_u64()), (Some(64), Some(2), Some(3)));
    assert_eq!(real["plan"]["gpu_memory"].as_u64(), Some(15 << 29), "default budget 7.5 GiB");
    assert_eq!(real["plan"]["text_encoders"], "resident");
    assert_eq!(real["plan"]["predicted_peak_gpu_bytes"].as_u64(), Some(peak));

    // A budget nothing fits: exit 2 before any work, naming the size, the need and the budget.
    let m = model();
    let out = sdxl(&[
        "generate",
        "--model",
        m.to_str().unwrap(),
        "--prompt",
        "x",
        "--width",
        "64",
        "--height",
        "64",
        "--gpu-memory",
        "2M",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for w in ["64x64 does not fit", "needs at least", "budget is 2.0 MiB"] {
        assert!(err.contains(w), "{w:?} not in {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Inpainting from a JPEG init image and a PNG mask: the size comes from the image, the PNG
/// records the strength and mask blur as A1111 does.
#[test]
fn inpaint_from_jpeg_writes_a1111_parameters() {
    let dir = std::env::temp_dir().join(format!("sdxl-cli-inpaint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("out.png");
    let fx = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/img2img");
    let m = model();
    let out = sdxl(&[
        "generate",
        "--model",
        m.to_str().unwrap(),
        "--prompt",
        "1girl",
        "--init-image",
        fx.join("init.jpg").to_str().unwrap(),
        "--mask",
        fx.join("mask.png").to_str().unwrap(),
        "--strength",
        "0.5",
        "--steps",
        "4",
        "--seed",
        "3",
        "--output",
        png.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("2 steps in"), "int(4 × 0.5) = 2 steps run: {err}");
    let (size, text) = png_size_and_parameters(&png);
    assert_eq!(size, (64, 64), "the init image's size");
    assert!(text.contains("Size: 64x64") && text.contains("Denoising strength: 0.5, Mask blur: 0"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The hires fix: the output is the upscaled size, the parameters name the base size and the
/// hires fields as A1111 writes them.
#[test]
fn hires_fix_writes_a1111_parameters() {
    let dir = std::env::temp_dir().join(format!("sdxl-cli-hires-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("out.png");
    let m = model();
    let out = sdxl(&[
        "generate",
        "--model",
        m.to_str().unwrap(),
        "--prompt",
        "1girl",
        "--width",
        "64",
        "--height",
        "64",
        "--steps",
        "2",
        "--hires-scale",
        "1.5",
        "--hires-steps",
        "4",
        "--output",
        png.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("4 steps in"), "2 + int(4 × 0.5): {err}");
    let (size, text) = png_size_and_parameters(&png);
    assert_eq!(size, (96, 96));
    assert!(
        text.contains("Size: 64x64")
            && text.contains("Denoising strength: 0.5, Hires upscale: 1.5, Hires steps: 4, Hires upscaler: Latent"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `sdxl selfcheck --timing --json`: the self-check's object gains the timing report, with an
/// entry per kernel family at SDXL's 1024² shapes and a positive estimate for one CFG step.
#[test]
fn selfcheck_timing_json() {
    let out = sdxl(&["selfcheck", "--timing", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["passed"], true);
    let t = &v["timing"];
    assert_eq!((t["width"].as_u64(), t["height"].as_u64(), t["batch"].as_u64()), (Some(1024), Some(1024), Some(2)));
    let fams: Vec<&str> = t["families"].as_array().unwrap().iter().map(|f| f["family"].as_str().unwrap()).collect();
    for f in ["linear", "conv3x3", "attn_self", "attn_cross", "group_norm", "layer_norm", "elementwise"] {
        assert!(fams.contains(&f), "{f} missing from {fams:?}");
    }
    let est = t["step_seconds"].as_f64().unwrap();
    assert!(est > 0.0 && est.is_finite(), "{est}");
    // The table form prints both tables and the estimate.
    let out = sdxl(&["selfcheck", "--timing"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("checks, 0 failed") && text.contains("per UNet step at 1024x1024"), "{text}");
}
