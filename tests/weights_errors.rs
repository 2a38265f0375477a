//! Every kind of bad input gets an error naming the file, the tensor and what is wrong, with no
//! panic and nothing left loaded. Bad files are made here, in a temp dir.

use std::path::{Path, PathBuf};

use sdxl_web::gpu::DType;
use sdxl_web::weights::safetensors::{build_header, StoredDType};
use sdxl_web::weights::{inspect_path, load_path, CpuSink, Loader, ModelConfig, NullSink};

struct Tmp(PathBuf);

impl Tmp {
    fn new(tag: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!("sdxl-weights-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }
    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Both the header-only inspection and a full load must fail with a message containing all `want`.
fn fails(model: &Path, want: &[&str]) {
    let e1 = inspect_path(model, None).expect_err("inspect must fail").to_string();
    let e2 = match load_path(model, None, CpuSink::default(), DType::F16, 4096, |_| {}) {
        Ok(_) => panic!("load of {} must fail", model.display()),
        Err(e) => e.to_string(),
    };
    for e in [&e1, &e2] {
        for w in want {
            assert!(e.contains(w), "error {e:?} should mention {w:?}");
        }
    }
}

fn raw(json: &str, data: usize) -> Vec<u8> {
    let mut b = (json.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(json.as_bytes());
    b.extend(std::iter::repeat_n(0u8, data));
    b
}

/// A small but complete SDXL-shaped single-file checkpoint from the canonical lists.
fn tiny_config() -> ModelConfig {
    let mut c = ModelConfig::sdxl_base();
    c.unet.model_channels = 32;
    c.unet.channel_mult = vec![1, 2];
    c.unet.num_res_blocks = 1;
    c.unet.transformer_depth = vec![0, 1];
    c.unet.transformer_depth_middle = 1;
    c.unet.num_heads = vec![1, 1];
    c.unet.num_heads_middle = 1;
    c.unet.time_embed_dim = 128;
    c.unet.context_dim = 64;
    c.unet.pooled_dim = 32;
    c.unet.adm_in_channels = 6 * 256 + 32;
    for t in [&mut c.text_encoder, &mut c.text_encoder_2] {
        t.hidden = 32;
        t.layers = 1;
        t.heads = 1;
        t.intermediate = 64;
        t.vocab = 100;
    }
    c.text_encoder_2.projection = Some(32);
    c.vae.ch = 32;
    c.vae.ch_mult = vec![1, 2];
    c.vae.num_res_blocks = 1;
    c
}

fn checkpoint(edit: impl Fn(&mut Vec<(String, StoredDType, Vec<usize>)>)) -> Vec<u8> {
    let mut t = sdxl_web::weights::random::checkpoint_tensors(&tiny_config(), |_| StoredDType::F16);
    edit(&mut t);
    let data: usize = t.iter().map(|(_, d, s)| s.iter().product::<usize>() * d.size() as usize).sum();
    let mut b = build_header(&t, &Default::default());
    b.extend(std::iter::repeat_n(0x11u8, data));
    b
}

#[test]
fn a_valid_tiny_checkpoint_loads() {
    let d = Tmp::new("valid");
    let p = d.file("ok.safetensors", &checkpoint(|_| {}));
    let ins = inspect_path(&p, None).unwrap();
    assert_eq!(ins.config, tiny_config());
    load_path(&p, None, NullSink::default(), DType::F16, 4096, |_| {}).unwrap();
}

#[test]
fn empty_file() {
    let d = Tmp::new("empty");
    fails(&d.file("empty.safetensors", b""), &["empty.safetensors", "empty"]);
}

#[test]
fn truncated_file() {
    let d = Tmp::new("trunc");
    let mut b = checkpoint(|_| {});
    b.truncate(b.len() - 1000);
    let p = d.file("trunc.safetensors", &b);
    // The header check catches it before any data is read.
    fails(&p, &["trunc.safetensors", "first_stage_model.", "truncated"]);
    // A stream without a known length finds it at the end.
    let mut l = Loader::new(NullSink::default(), DType::F16, "single-file");
    l.begin_file("stream", sdxl_web::weights::FileRole::SingleFile { with_vae: true }, None).unwrap();
    l.push(&b).unwrap();
    let e = l.end_file().unwrap_err().to_string();
    assert!(e.contains("stream: truncated") && e.contains("first_stage_model.decoder.conv_out"), "{e}");
}

#[test]
fn truncated_inside_the_header() {
    let d = Tmp::new("trunchead");
    fails(&d.file("short.safetensors", &[1, 2, 3]), &["short.safetensors", "8-byte"]);
    let b = checkpoint(|_| {});
    let mut l = Loader::new(NullSink::default(), DType::F16, "single-file");
    l.begin_file("s", sdxl_web::weights::FileRole::SingleFile { with_vae: true }, None).unwrap();
    l.push(&b[..100]).unwrap();
    let e = l.end_file().unwrap_err().to_string();
    assert!(e.contains("truncated") && e.contains("header"), "{e}");
}

#[test]
fn header_length_beyond_file() {
    let d = Tmp::new("hlen");
    let mut b = 5000u64.to_le_bytes().to_vec();
    b.extend_from_slice(b"{}");
    fails(&d.file("hlen.safetensors", &b), &["hlen.safetensors", "header length 5000", "past the end"]);
    let b = u64::MAX.to_le_bytes();
    fails(&d.file("huge.safetensors", &b), &["huge.safetensors", "over the safetensors limit"]);
}

#[test]
fn invalid_json() {
    let d = Tmp::new("json");
    fails(&d.file("bad.safetensors", &raw("{\"a\": [1, 2", 0)), &["bad.safetensors", "not valid JSON"]);
    // A text file someone renamed.
    fails(&d.file("text.safetensors", b"hello world, this is not a model at all"), &["text.safetensors"]);
}

#[test]
fn overlapping_offsets() {
    let d = Tmp::new("overlap");
    let j = r#"{"a":{"dtype":"F16","shape":[4],"data_offsets":[0,8]},"b":{"dtype":"F16","shape":[4],"data_offsets":[4,12]}}"#;
    fails(&d.file("ov.safetensors", &raw(j, 12)), &["ov.safetensors", "'a'", "'b'", "overlap"]);
}

#[test]
fn out_of_range_offsets() {
    let d = Tmp::new("range");
    let j = r#"{"w":{"dtype":"F16","shape":[4],"data_offsets":[0,8]}}"#;
    fails(&d.file("oor.safetensors", &raw(j, 4)), &["oor.safetensors", "'w'", "file is"]);
    let j = r#"{"w":{"dtype":"F16","shape":[4],"data_offsets":[0,6]}}"#;
    fails(&d.file("size.safetensors", &raw(j, 6)), &["size.safetensors", "'w'", "needs 8 bytes"]);
    let j = r#"{"w":{"dtype":"F16","shape":[4],"data_offsets":[8,0]}}"#;
    fails(&d.file("rev.safetensors", &raw(j, 8)), &["rev.safetensors", "'w'", "end before"]);
}

#[test]
fn unknown_and_unsupported_dtypes() {
    let d = Tmp::new("dtype");
    let j = r#"{"w":{"dtype":"F99","shape":[4],"data_offsets":[0,8]}}"#;
    fails(&d.file("f99.safetensors", &raw(j, 8)), &["f99.safetensors", "'w'", "unknown dtype \"F99\""]);
    let b = checkpoint(|t| {
        let x = t.iter_mut().find(|x| x.0 == "model.diffusion_model.out.2.bias").unwrap();
        x.1 = StoredDType::F64;
    });
    fails(
        &d.file("f64.safetensors", &b),
        &["f64.safetensors", "model.diffusion_model.out.2.bias", "F64", "only F16, F32 and BF16"],
    );
}

#[test]
fn missing_tensor() {
    let d = Tmp::new("missing");
    let b = checkpoint(|t| t.retain(|x| x.0 != "model.diffusion_model.input_blocks.1.0.emb_layers.1.weight"));
    fails(&d.file("m.safetensors", &b), &["m.safetensors", "missing tensor", "input_blocks.1.0.emb_layers.1.weight"]);
    let b = checkpoint(|t| t.retain(|x| !x.0.starts_with("first_stage_model.")));
    fails(&d.file("novae.safetensors", &b), &["novae.safetensors", "no vae tensors", "--vae"]);
}

#[test]
fn wrong_shape() {
    let d = Tmp::new("shape");
    let b = checkpoint(|t| {
        let x = t.iter_mut().find(|x| x.0 == "model.diffusion_model.middle_block.1.proj_in.weight").unwrap();
        x.2 = vec![64, 32];
    });
    fails(&d.file("s.safetensors", &b), &["s.safetensors", "middle_block.1.proj_in.weight", "[64, 32]", "[64, 64]"]);
    let b = checkpoint(|t| t.push(("model.diffusion_model.input_blocks.9.0.weight".into(), StoredDType::F16, vec![3])));
    fails(&d.file("x.safetensors", &b), &["x.safetensors", "unexpected tensor", "input_blocks.9.0.weight"]);
}

fn sd(prefix_te: &str, ctx: usize) -> Vec<u8> {
    let t = vec![
        ("model.diffusion_model.input_blocks.0.0.weight".to_string(), StoredDType::F16, vec![320, 4, 3, 3]),
        (
            "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight".into(),
            StoredDType::F16,
            vec![320, ctx],
        ),
        (format!("{prefix_te}final_layer_norm.weight"), StoredDType::F16, vec![ctx]),
        ("first_stage_model.decoder.conv_in.weight".into(), StoredDType::F16, vec![512, 4, 3, 3]),
    ];
    let n: usize = t.iter().map(|(_, d, s)| s.iter().product::<usize>() * d.size() as usize).sum();
    let mut b = build_header(&t, &Default::default());
    b.extend(std::iter::repeat_n(0u8, n));
    b
}

#[test]
fn sd1_and_sd2_checkpoints() {
    let d = Tmp::new("sd12");
    let p = d.file("v1-5.safetensors", &sd("cond_stage_model.transformer.text_model.", 768));
    fails(
        &p,
        &[
            "v1-5.safetensors",
            "looks like a Stable Diffusion 1.x checkpoint",
            "context dim 768",
            "only SDXL is supported",
        ],
    );
    let p = d.file("v2-1.safetensors", &sd("cond_stage_model.model.", 1024));
    fails(
        &p,
        &[
            "v2-1.safetensors",
            "looks like a Stable Diffusion 2.x checkpoint",
            "context dim 1024",
            "only SDXL is supported",
        ],
    );
    let p = d.file("refiner.safetensors", &sd("conditioner.embedders.0.model.", 1280));
    fails(&p, &["refiner.safetensors", "SDXL refiner"]);
}

#[test]
fn lora_given_as_model() {
    let d = Tmp::new("lora");
    for (i, key) in [
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight",
        "lora_te1_text_model_encoder_layers_0_mlp_fc1.alpha",
        "unet.down_blocks.0.attentions.0.proj_in.lora_A.weight",
    ]
    .iter()
    .enumerate()
    {
        let t = vec![(key.to_string(), StoredDType::F16, vec![4, 4])];
        let mut b = build_header(&t, &Default::default());
        b.extend([0u8; 32]);
        let p = d.file(&format!("lora{i}.safetensors"), &b);
        fails(&p, &[&format!("lora{i}.safetensors"), "looks like a LoRA", key, "not a model"]);
    }
}

#[test]
fn directory_that_is_not_diffusers() {
    let d = Tmp::new("dir");
    std::fs::create_dir_all(d.0.join("stuff")).unwrap();
    d.file("stuff/readme.txt", b"hi");
    fails(&d.0.join("stuff"), &["stuff", "not a diffusers model"]);
    // A diffusers folder missing a component.
    std::fs::create_dir_all(d.0.join("partial/unet")).unwrap();
    d.file("partial/model_index.json", b"{}");
    fails(&d.0.join("partial"), &["partial", "unet/diffusion_pytorch_model.safetensors", "no safetensors file"]);
}

#[test]
fn missing_path() {
    let e = inspect_path(Path::new("/nonexistent/model.safetensors"), None).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/model.safetensors"), "{e}");
}
