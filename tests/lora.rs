//! LoRA and textual-inversion embeddings on tiny-sdxl against diffusers (tests/fixtures/gen_lora.py:
//! `load_lora_weights` + `set_adapters`, `load_textual_inversion`), with the text-to-image
//! tolerances of tests/common/golden.rs on both compute paths, and every bad-file message.

mod common;

use std::path::PathBuf;

use common::golden::{cases, check_case_with, image_diff, settings, Reference, F32_IMAGE_MEAN};
use sdxl_web::gpu::Gpu;
use sdxl_web::lora::LoraWeight;
use sdxl_web::pipeline::{generate_with, Model, Settings};

/// Each case's adapters must move the image by at least this many times the f32 mean tolerance,
/// or a LoRA silently not applied could pass.
const MIN_EFFECT_OVER_TOL: f64 = 10.0;
/// f16 path, first UNet output: the random LoRAs are as strong as the base layers (B ~ N(0, 1/r)),
/// and each adds an f16 product rounded on its own, so the f16 error doubles against text-to-image's
/// 3e-2 (measured 4.1e-2 with two LoRAs). The image bar (mean ≤ 3/255) is unchanged.
const F16_LORA_UNET_REL_STD: f64 = 6e-2;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load(gpu: &Gpu) -> Model {
    Model::load(gpu, &dir().join("tiny-sdxl/tiny-sdxl.safetensors"), None, |_| {}).expect("tiny model loads")
}

#[derive(serde::Deserialize)]
struct Adapters {
    name: String,
    #[serde(default)]
    loras: Vec<LoraFile>,
    #[serde(default)]
    embeddings: Vec<EmbFile>,
}
#[derive(serde::Deserialize)]
struct LoraFile {
    file: String,
    name: String,
    weight: f32,
}
#[derive(serde::Deserialize)]
struct EmbFile {
    file: String,
    name: String,
}
#[derive(serde::Deserialize)]
struct AdapterCases {
    cases: Vec<Adapters>,
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(dir().join("lora").join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn run(force_f32: bool) {
    let gpu = common::gpu(force_f32);
    let d = dir().join("lora");
    let extra: AdapterCases =
        serde_json::from_slice(&std::fs::read(d.join("cases.json")).expect("cases.json")).expect("cases");
    let mut failures = Vec::new();
    for c in cases(&d) {
        // A fresh model per case: adapters from earlier cases must not leak in.
        let model = load(&gpu);
        let a = extra.cases.iter().find(|a| a.name == c.name).expect("adapters of the case");
        let mut s: Settings = settings(&c);
        for l in &a.loras {
            model.load_lora(&gpu, &l.name, &l.file, &read(&l.file)).expect("LoRA loads");
            s.loras.push(LoraWeight { name: l.name.clone(), weight: l.weight });
        }
        for e in &a.embeddings {
            model.load_embedding(&gpu, &e.name, &e.file, &read(&e.file)).expect("embedding loads");
        }
        failures.extend(check_case_with(&gpu, &model, &d, &c, force_f32, s, F16_LORA_UNET_REL_STD));
        let r = Reference::read(&d, &c);
        let (effect, _) = image_diff(&r.image(), &r.u8s("image_without"));
        println!("{}: the adapters move the reference image by mean {effect:.1}/255", c.name);
        assert!(
            effect > MIN_EFFECT_OVER_TOL * F32_IMAGE_MEAN,
            "{}: adapters change the image by only {effect}",
            c.name
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn lora_and_embeddings_match_diffusers_f32_path() {
    run(true);
}

#[test]
fn lora_and_embeddings_match_diffusers_f16_path() {
    run(false);
}

// ---- bad files ------------------------------------------------------------------------------------

/// A safetensors file of F16 zeros with these names and shapes.
fn st(tensors: &[(&str, &[usize])]) -> Vec<u8> {
    use safetensors::tensor::{Dtype, TensorView};
    let data: Vec<Vec<u8>> = tensors.iter().map(|(_, s)| vec![0u8; s.iter().product::<usize>() * 2]).collect();
    let views: Vec<(&str, TensorView)> = tensors
        .iter()
        .zip(&data)
        .map(|((n, s), d)| (*n, TensorView::new(Dtype::F16, s.to_vec(), d).expect("view")))
        .collect();
    safetensors::tensor::serialize(views, None).expect("serialize")
}

fn lora_err(model: &Model, gpu: &Gpu, bytes: &[u8]) -> String {
    let e = model.load_lora(gpu, "bad", "bad.safetensors", bytes).expect_err("must be refused").to_string();
    assert!(model.loras().is_empty(), "a refused LoRA stays loaded");
    e
}

#[test]
fn bad_lora_files_are_refused_with_the_key_named() {
    let gpu = common::gpu(true);
    let model = load(&gpu);
    let q = "lora_unet_input_blocks_3_1_transformer_blocks_0_attn1_to_q";
    let cases: Vec<(Vec<u8>, Vec<&str>)> = vec![
        (
            st(&[
                ("lora_unet_input_blocks_4_1_proj_in.hada_w1_a", &[4, 4]),
                ("lora_unet_input_blocks_4_1_proj_in.hada_w1_b", &[4, 4]),
            ]),
            vec!["LoHa", "hada_w1_a"],
        ),
        (st(&[("lora_unet_input_blocks_4_1_proj_in.lokr_w1", &[4, 4])]), vec!["LoKr", "lokr_w1"]),
        (
            st(&[
                ("lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight", &[4, 16]),
                ("lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight", &[16, 4]),
            ]),
            vec!["SD 1.x/2.x", "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"],
        ),
        (
            st(&[
                ("lora_unet_down_blocks_1_attentions_0_proj_in.lora_down.weight", &[4, 64]),
                ("lora_unet_down_blocks_1_attentions_0_proj_in.lora_up.weight", &[64, 4]),
            ]),
            vec!["SD 1.x/2.x", "lora_unet_down_blocks_1_attentions_0_proj_in"],
        ),
        (
            // attn1.to_q of level 1 is [64, 64]: a LoRA for a wider model.
            st(&[(&format!("{q}.lora_down.weight"), &[4, 640]), (&format!("{q}.lora_up.weight"), &[640, 4])]),
            vec!["has shape [4, 640]", "needs down [r, 64] and up [64, r]", "another base model"],
        ),
        (
            st(&[("lora_unet_foo_bar.lora_down.weight", &[4, 64]), ("lora_unet_foo_bar.lora_up.weight", &[64, 4])]),
            vec!["lora_unet_foo_bar.lora_down.weight", "matches no linear or convolution layer"],
        ),
        (st(&[(&format!("{q}.lora_down.weight"), &[4, 64])]), vec!["no matching up (B) weight", q]),
        (
            st(&[(&format!("{q}.lora_down.weight"), &[4, 64]), (&format!("{q}.dora_scale"), &[64, 1])]),
            vec!["DoRA", "dora_scale"],
        ),
        (
            st(&[("unet.down_blocks.1.attentions.0.proj_in.lora.down.weight", &[4, 64])]),
            vec!["pre-PEFT diffusers", "lora.down"],
        ),
        (st(&[("model.diffusion_model.out.2.weight", &[4, 32, 3, 3])]), vec!["model checkpoint"]),
        (st(&[("clip_l", &[1, 16]), ("clip_g", &[1, 32])]), vec!["textual-inversion embedding"]),
        (st(&[("something.else", &[2, 2])]), vec!["not a LoRA file", "something.else"]),
        (
            // A conv LoRA whose down kernel differs from the layer's (3×3 in_layers.2).
            st(&[
                ("lora_unet_input_blocks_1_0_in_layers_2.lora_down.weight", &[2, 32, 1, 1]),
                ("lora_unet_input_blocks_1_0_in_layers_2.lora_up.weight", &[32, 2, 1, 1]),
            ]),
            vec!["needs down [r, 32, 3, 3] and up [32, r, 1, 1]"],
        ),
        (b"not safetensors".to_vec(), vec!["bad.safetensors"]),
    ];
    for (bytes, want) in cases {
        let e = lora_err(&model, &gpu, &bytes);
        for w in want {
            assert!(e.contains(w), "{e:?} should mention {w:?}");
        }
    }
    // A good file after bad ones loads, and a LoRA a settings name does not know is an error.
    model.load_lora(&gpu, "k", "kohya_locon.safetensors", &read("kohya_locon.safetensors")).expect("loads");
    assert_eq!(model.loras().len(), 1);
    let s = Settings { prompt: "x <lora:missing:0.5>".into(), width: 64, height: 64, steps: 1, ..Settings::default() };
    let e =
        pollster::block_on(generate_with(&gpu, &model, &s, false, &mut |_| true)).err().expect("refused").to_string();
    assert!(e.contains("LoRA 'missing' is not loaded (loaded: k)"), "{e}");
}

#[test]
fn bad_embeddings_are_refused() {
    let gpu = common::gpu(true);
    let model = load(&gpu);
    let err = |name: &str, bytes: &[u8]| {
        model.load_embedding(&gpu, name, "e.safetensors", bytes).expect_err("refused").to_string()
    };
    let e = err("zqemb", &st(&[("clip_l", &[2, 768]), ("clip_g", &[2, 1280])]));
    assert!(e.contains("'clip_l' has shape [2, 768], expected [n, 16]"), "{e}");
    let e = err("zqemb", &st(&[("clip_l", &[2, 16]), ("clip_g", &[3, 32])]));
    assert!(e.contains("'clip_g' has shape [3, 32]"), "{e}");
    let e = err("zqemb", &st(&[("emb_params", &[2, 768])]));
    assert!(e.contains("SD 1.x/2.x embedding") && e.contains("emb_params"), "{e}");
    let e = err("zqemb", &st(&[("some_table", &[2, 768])]));
    assert!(e.contains("single-table (SD 1.x/2.x) embedding"), "{e}");
    let e = err("cat", &read("tinyemb.safetensors"));
    assert!(e.contains("'cat' is a word of the CLIP vocabulary"), "{e}");
    let e = err("a b", &read("tinyemb.safetensors"));
    assert!(e.contains("without spaces"), "{e}");
    assert!(model.embeddings().is_empty());
    model.load_embedding(&gpu, "tinyemb", "tinyemb.safetensors", &read("tinyemb.safetensors")).expect("loads");
    let e = err("TinyEmb", &read("tinyemb.safetensors"));
    assert!(e.contains("already loaded"), "{e}");
}

/// Prompt syntax: `embedding:NAME` is NAME, emphasis weights the embedding's tokens, the PNG keeps
/// the prompt as typed and gains A1111's `Lora hashes` / `TI hashes`.
#[test]
fn prompt_syntax_and_infotext() {
    let gpu = common::gpu(true);
    let model = load(&gpu);
    model.load_lora(&gpu, "kohya_locon", "kohya_locon.safetensors", &read("kohya_locon.safetensors")).unwrap();
    model.load_embedding(&gpu, "tinyemb", "tinyemb.safetensors", &read("tinyemb.safetensors")).unwrap();
    let s = Settings {
        prompt: "(embedding:tinyemb:1.2), cat <lora:kohya_locon:0.8>".into(),
        negative: Some("tinyemb".into()),
        width: 64,
        height: 64,
        steps: 1,
        seed: 3,
        ..Settings::default()
    };
    let out = pollster::block_on(generate_with(&gpu, &model, &s, true, &mut |_| true)).expect("generate");
    let ids = &out.dump.as_ref().unwrap().ids.iter().find(|(n, ..)| n == "ids_l").unwrap().2;
    // Rows [negative, positive]: "tinyemb" is both of its ids (2 vectors) in each.
    assert_eq!(&ids[..4], &[49406, 49408, 49409, 49407]);
    assert_eq!(&ids[77..81], &[49406, 49408, 49409, 267]);
    let lines: Vec<&str> = out.parameters.lines().collect();
    assert_eq!(lines[0], s.prompt);
    let lora_hash = &model.loras()[0].1;
    let ti_hash = &model.embeddings()[0].1;
    assert!(lines[2].contains(&format!("Lora hashes: \"kohya_locon: {lora_hash}\"")), "{}", lines[2]);
    assert!(lines[2].contains(&format!("TI hashes: \"tinyemb: {ti_hash}\"")), "{}", lines[2]);
    // A1111's LoRA short hash: sha256 of the bytes after the header, 12 hex digits.
    let bytes = read("kohya_locon.safetensors");
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert_eq!(lora_hash, &sdxl_web::sha256::hex(&bytes[8 + n..])[..12]);
    assert_eq!(ti_hash, &sdxl_web::sha256::hex(&read("tinyemb.safetensors"))[..12]);
}
