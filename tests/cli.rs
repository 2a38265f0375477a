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
    let bytes = std::fs::read(&png).expect("png written");
    let reader = png::Decoder::new(std::io::Cursor::new(bytes)).read_info().expect("png");
    let info = reader.info();
    assert_eq!((info.width, info.height), (64, 72));
    let text = &info.uncompressed_latin1_text.iter().find(|t| t.keyword == "parameters").expect("parameters").text;
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
