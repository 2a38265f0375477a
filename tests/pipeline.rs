//! The golden end-to-end test: the whole text-to-image pipeline on the tiny SDXL-shaped
//! single-file model (tests/fixtures/tiny-sdxl) against diffusers' StableDiffusionXLPipeline run
//! in f32 on CPU (tests/fixtures/gen_pipeline.py), one case per sampler / schedule / size /
//! negative-prompt variant, on both compute paths.

mod common;

use std::path::PathBuf;

use common::golden::{cases, check_case};
use sdxl_web::gpu::Gpu;
use sdxl_web::pipeline::{generate_with, Model, Settings};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load(gpu: &Gpu) -> Model {
    Model::load(gpu, &dir().join("tiny-sdxl/tiny-sdxl.safetensors"), None, |_| {}).expect("tiny model loads")
}

/// Every case of tests/fixtures/pipeline, compared stage by stage (tests/common/golden.rs).
fn run(force_f32: bool) {
    let gpu = common::gpu(force_f32);
    let model = load(&gpu);
    let failures: Vec<String> = cases(&dir().join("pipeline"))
        .iter()
        .flat_map(|c| check_case(&gpu, &model, &dir().join("pipeline"), c, force_f32))
        .collect();
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
