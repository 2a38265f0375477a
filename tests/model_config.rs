//! Configuration that the weights' shapes cannot tell, on tests/fixtures/tiny-custom
//! (tests/fixtures/gen_custom.py): a tiny SDXL-shaped model whose heads (CLIP 2 of 32 and 2 of 16,
//! UNet 1/2/4 per level), activation, norm groups, size-embedding width (16), pooled width (24,
//! not text_encoder_2's hidden 32) and VAE scaling factor (0.18215) all differ from SDXL's.
//!
//! - The diffusers folder loads with its config.json numbers and matches diffusers end to end.
//! - The single file of the same weights carries no config: it loads with the documented
//!   fallbacks (heads 64 wide, 32 groups, quick_gelu CLIP-L, scaling 0.13025) but derives
//!   addition_time_embed_dim 16 from the widths, and matches diffusers run with those fallbacks;
//!   against the configured model's reference it differs (head splits are not in the weights).
//! - A config.json that contradicts the weights, and a label_emb width that does not split into
//!   pooled text + 6 equal size embeddings, are refused with messages that say what disagrees.

mod common;

use std::path::{Path, PathBuf};

use common::golden::{cases, check_case, Case};
use sdxl_web::gpu::DType;
use sdxl_web::pipeline::Model;
use sdxl_web::weights::config::Activation;
use sdxl_web::weights::safetensors::{build_header, StoredDType};
use sdxl_web::weights::{inspect_path, load_path, ModelConfig, NullSink};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-custom")
}
fn diffusers() -> PathBuf {
    fixture().join("diffusers")
}
fn single() -> PathBuf {
    fixture().join("tiny-custom.safetensors")
}

struct Tmp(PathBuf);

impl Tmp {
    fn new(tag: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!("sdxl-config-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn diffusers_folder_takes_its_config_json() {
    let ins = inspect_path(&diffusers(), None).unwrap();
    let c = &ins.config;
    assert_eq!((c.text_encoder.hidden, c.text_encoder.heads, c.text_encoder.activation), (64, 2, Activation::Gelu));
    assert_eq!((c.text_encoder_2.hidden, c.text_encoder_2.heads), (32, 2));
    assert_eq!(c.text_encoder_2.projection, Some(24));
    let u = &c.unet;
    assert_eq!((&u.num_heads[..], u.num_heads_middle), (&[1, 2, 4][..], 4));
    assert_eq!((u.adm_in_channels, u.addition_time_embed_dim, u.pooled_dim), (120, 16, 24));
    assert_eq!((u.norm_num_groups, u.context_dim), (16, 96));
    assert_eq!((c.vae.norm_num_groups, c.vae.scaling_factor), (16, 0.18215));
    for (name, comp) in &ins.components {
        let f = comp.config_file.as_deref().unwrap_or_else(|| panic!("{name}: no config file reported"));
        assert!(f.ends_with(&format!("{name}/config.json")), "{name}: {f}");
    }
    // What `sdxl inspect --json` prints carries the numbers used.
    let js = serde_json::to_value(&ins).unwrap();
    assert_eq!(js["config"]["unet"]["addition_time_embed_dim"], 16);
    assert_eq!(js["config"]["text_encoder"]["activation"], "gelu");
}

#[test]
fn single_file_uses_the_documented_fallbacks_but_derives_the_size_embedding() {
    let ins = inspect_path(&single(), None).unwrap();
    let c = &ins.config;
    assert_eq!((c.text_encoder.heads, c.text_encoder.activation), (1, Activation::QuickGelu));
    assert_eq!((c.text_encoder_2.heads, c.text_encoder_2.projection), (1, Some(24)));
    assert_eq!((&c.unet.num_heads[..], c.unet.num_heads_middle, c.unet.norm_num_groups), (&[1, 1, 1][..], 1, 32));
    // (120 − 24) / 6: derived from the widths, not SDXL's 256.
    assert_eq!((c.unet.addition_time_embed_dim, c.unet.pooled_dim), (16, 24));
    assert_eq!((c.vae.norm_num_groups, c.vae.scaling_factor), (32, 0.13025));
    assert!(ins.components.values().all(|c| c.config_file.is_none()));
    // Everything the shapes tell agrees with the folder.
    let d = inspect_path(&diffusers(), None).unwrap().config;
    let shape_only = |m: &ModelConfig| {
        let u = &m.unet;
        (u.channel_mult.clone(), u.transformer_depth.clone(), u.context_dim, u.adm_in_channels, u.pooled_dim, m.vae.ch)
    };
    assert_eq!(shape_only(c), shape_only(&d));
}

/// Edit one field of one component's config.json in a copy of the folder: both the header-only
/// inspection and a load must fail with a message containing every `want`.
#[test]
fn config_json_contradicting_the_weights_is_refused() {
    let tmp = Tmp::new("contra");
    let dir = tmp.0.join("model");
    copy_dir(&diffusers(), &dir);
    let cases: &[(&str, &str, serde_json::Value, &[&str])] = &[
        ("unet", "block_out_channels", serde_json::json!([32, 32, 64]), &["[32,32,64]", "[32, 32, 32]"]),
        ("unet", "layers_per_block", serde_json::json!(2), &["is 2", "say 1 (res blocks per down level)"]),
        ("unet", "cross_attention_dim", serde_json::json!(80), &["is 80", "say 96"]),
        ("unet", "transformer_layers_per_block", serde_json::json!([1, 1, 2]), &["[1, 1, 2]", "[0, 1, 1]"]),
        ("unet", "attention_head_dim", serde_json::json!([1, 3, 4]), &["[1, 3, 4]", "32 channels", "3 heads"]),
        ("unet", "norm_num_groups", serde_json::json!(24), &["is 24", "32-channel GroupNorm"]),
        ("unet", "projection_class_embeddings_input_dim", serde_json::json!(128), &["is 128", "say 120"]),
        // 120 − 6 × 12 = 48 for pooled text, but text_encoder_2 projects to 24.
        ("unet", "addition_time_embed_dim", serde_json::json!(12), &["is 12", "= 48", "is 24"]),
        ("unet", "addition_time_embed_dim", serde_json::json!(20), &["is 20", "takes 120 inputs"]),
        ("unet", "_class_name", serde_json::json!("AutoencoderKL"), &["says AutoencoderKL", "UNet2DConditionModel"]),
        ("unet", "flip_sin_to_cos", serde_json::json!(false), &["is false", "not supported"]),
        ("unet", "act_fn", serde_json::json!("gelu"), &["\"gelu\"", "not supported"]),
        ("text_encoder", "hidden_size", serde_json::json!(32), &["hidden_size is 32", "say 64"]),
        ("text_encoder", "num_attention_heads", serde_json::json!(3), &["num_attention_heads is 3", "hidden width 64"]),
        ("text_encoder", "num_hidden_layers", serde_json::json!(3), &["num_hidden_layers is 3", "say 2"]),
        ("text_encoder", "intermediate_size", serde_json::json!(256), &["intermediate_size is 256", "say 128"]),
        ("text_encoder", "hidden_act", serde_json::json!("relu"), &["hidden_act \"relu\"", "not supported"]),
        ("text_encoder_2", "projection_dim", serde_json::json!(32), &["projection_dim is 32", "say 24"]),
        ("vae", "latent_channels", serde_json::json!(8), &["latent_channels is 8", "say 4"]),
        ("vae", "block_out_channels", serde_json::json!([32, 64, 64, 64]), &["[32,64,64,64]", "[32, 32, 32, 32]"]),
        ("vae", "norm_num_groups", serde_json::json!(64), &["norm_num_groups is 64", "32-channel GroupNorm"]),
        ("vae", "shift_factor", serde_json::json!(0.1), &["shift_factor is 0.1", "not supported"]),
    ];
    for (comp, key, value, want) in cases {
        let cfg = dir.join(comp).join("config.json");
        let original = std::fs::read_to_string(&cfg).unwrap();
        let mut json: serde_json::Value = serde_json::from_str(&original).unwrap();
        json[*key] = value.clone();
        std::fs::write(&cfg, serde_json::to_string_pretty(&json).unwrap()).unwrap();
        let e1 = inspect_path(&dir, None).expect_err("inspect must fail").to_string();
        let e2 = match load_path(&dir, None, NullSink::default(), DType::F16, 1 << 20, |_| {}) {
            Ok(_) => panic!("{comp}/config.json with {key} = {value}: load must fail"),
            Err(e) => e.to_string(),
        };
        println!("{comp}.{key} = {value}: {e1}");
        for e in [&e1, &e2] {
            let file = format!("{comp}/config.json");
            for w in [file.as_str(), key].iter().chain(want.iter()) {
                assert!(e.contains(w), "{comp}.{key} = {value}: error {e:?} should mention {w:?}");
            }
        }
        std::fs::write(&cfg, original).unwrap();
    }
    // Restored: loads again; and without config.json a component falls back to the shapes alone.
    inspect_path(&dir, None).unwrap();
    std::fs::remove_file(dir.join("unet/config.json")).unwrap();
    let u = inspect_path(&dir, None).unwrap().config.unet;
    assert_eq!((&u.num_heads[..], u.norm_num_groups, u.addition_time_embed_dim), (&[1, 1, 1][..], 32, 16));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// A small single-file checkpoint (canonical lists) whose label_emb takes `adm` inputs, with
/// text_encoder_2 projecting to 24.
fn checkpoint_with_label_emb(adm: usize) -> Vec<u8> {
    let mut c = ModelConfig::sdxl_base();
    c.unet.model_channels = 32;
    c.unet.channel_mult = vec![1, 2];
    c.unet.num_res_blocks = 1;
    c.unet.transformer_depth = vec![0, 1];
    c.unet.transformer_depth_middle = 1;
    c.unet.time_embed_dim = 128;
    c.unet.context_dim = 64;
    c.unet.adm_in_channels = adm;
    for t in [&mut c.text_encoder, &mut c.text_encoder_2] {
        t.hidden = 32;
        t.layers = 2;
        t.intermediate = 64;
        t.vocab = 100;
    }
    c.text_encoder_2.projection = Some(24);
    c.vae.ch = 32;
    c.vae.ch_mult = vec![1, 2];
    c.vae.num_res_blocks = 1;
    let t = sdxl_web::weights::random::checkpoint_tensors(&c, |_| StoredDType::F16);
    let data: usize = t.iter().map(|(_, d, s)| s.iter().product::<usize>() * d.size() as usize).sum();
    let mut b = build_header(&t, &Default::default());
    b.extend(std::iter::repeat_n(0x11u8, data));
    b
}

#[test]
fn label_emb_width_must_split_into_pooled_and_six_size_embeddings() {
    let tmp = Tmp::new("adm");
    let file = |name: &str, adm: usize| {
        let p = tmp.0.join(name);
        std::fs::write(&p, checkpoint_with_label_emb(adm)).unwrap();
        p
    };
    // 24 + 6 × 16: a UNet trained with 16-wide size embeddings.
    let u = inspect_path(&file("ok.safetensors", 24 + 6 * 16), None).unwrap().config.unet;
    assert_eq!((u.addition_time_embed_dim, u.pooled_dim), (16, 24));
    // 24 + 97 does not split into 6 equal embeddings.
    let e = inspect_path(&file("odd.safetensors", 24 + 97), None).unwrap_err().to_string();
    for w in ["label_emb", "121 inputs", "pooled width 24", "leaves 97", "6 equal size/crop embeddings"] {
        assert!(e.contains(w), "{e:?} should mention {w:?}");
    }
    let e = inspect_path(&file("small.safetensors", 20), None).unwrap_err().to_string();
    assert!(e.contains("20 inputs") && e.contains("pooled width 24"), "{e}");
}

fn case(layout: &str) -> Case {
    cases(&fixture().join("cases"))
        .into_iter()
        .find(|c| c.layout.as_deref() == Some(layout))
        .unwrap_or_else(|| panic!("no {layout} case"))
}

fn run(force_f32: bool) {
    let gpu = common::gpu(force_f32);
    let dir = fixture().join("cases");
    let mut failures = Vec::new();
    for (layout, model) in [("diffusers", diffusers()), ("single-file", single())] {
        let m = Model::load(&gpu, &model, None, |_| {}).unwrap_or_else(|e| panic!("{}: {e}", model.display()));
        failures.extend(check_case(&gpu, &m, &dir, &case(layout), force_f32));
        if force_f32 && layout == "single-file" {
            // The same weights read without the config give other embeddings, UNet output and image.
            let f = check_case(&gpu, &m, &dir, &case("diffusers"), true);
            println!("single file against the configured model's reference: {f:?}");
            assert!(f.iter().any(|m| m.contains("context")) && f.iter().any(|m| m.contains("UNet")), "{f:?}");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn custom_model_matches_diffusers_f32_path() {
    run(true);
}

#[test]
fn custom_model_matches_diffusers_f16_path() {
    run(false);
}
