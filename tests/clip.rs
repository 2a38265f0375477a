//! The SDXL text encoders (src/model/clip.rs) on the real device (lavapipe in CI), both compute
//! paths, against transformers' CLIPTextModel / CLIPTextModelWithProjection run in f32 on the
//! same f16 weights (tests/fixtures/gen_clip.py: CLIP-L 64 wide / 2 heads of 32, bigG 128 wide /
//! 2 heads of 64, 3 layers each, real vocabulary and 77 positions).

mod common;

use std::collections::HashMap;

use safetensors::{Dtype, SafeTensors};
use sdxl_web::gpu::{DType, Gpu, Tensor};
use sdxl_web::model::clip::{apply_emphasis, encode_prompt, Activation, ClipConfig, ClipText, Naming};
use sdxl_web::prompt::{PromptTokens, Rating};
use sdxl_web::tokenizer::SdxlTokenizers;

use common::gpu;
// Errors are max |got - want| over the output's scale max(1, max |want|).
/// f32 path: the same f32 math in another order (matmul tiling, attention's online softmax,
/// layer-norm reductions); measured ≤ 7e-7 of scale, bounded with a 15x margin.
const F32_TOL: f64 = 1e-5;
/// f16 path: matmul inputs, attention and MLP activations are rounded to f16 (2^-11 ≈ 4.9e-4
/// relative) in every layer and products summed in f16 over short runs; over 3 layers measured
/// ≤ 1.3e-3 of scale (the residual stream itself stays F32), bounded at ~3x that.
const F16_TOL: f64 = 4e-3;

const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/clip/");

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIX}{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn weights(gpu: &Gpu) -> HashMap<String, Tensor> {
    let bytes = read("weights.safetensors");
    let st = SafeTensors::deserialize(&bytes).expect("weights parse");
    st.tensors()
        .into_iter()
        .map(|(k, v)| {
            assert_eq!(v.dtype(), Dtype::F16, "{k}");
            (k, Tensor::from_bytes(gpu, v.shape(), DType::F16, v.data()).expect("upload"))
        })
        .collect()
}

struct Ref {
    bytes: Vec<u8>,
}

impl Ref {
    fn load() -> Self {
        Ref { bytes: read("outputs.safetensors") }
    }
    fn f32(&self, name: &str) -> Vec<f32> {
        let st = SafeTensors::deserialize(&self.bytes).expect("outputs parse");
        let t = st.tensor(name).unwrap_or_else(|_| panic!("fixture has no {name}"));
        assert_eq!(t.dtype(), Dtype::F32);
        bytemuck::pod_collect_to_vec(t.data())
    }
    fn ids(&self, name: &str) -> Vec<u32> {
        let st = SafeTensors::deserialize(&self.bytes).expect("outputs parse");
        let t = st.tensor(name).unwrap_or_else(|_| panic!("fixture has no {name}"));
        bytemuck::pod_collect_to_vec::<u8, i32>(t.data()).into_iter().map(|i| i as u32).collect()
    }
}

fn cfg_l() -> ClipConfig {
    ClipConfig {
        naming: Naming::Hf,
        prefix: "conditioner.embedders.0.transformer.text_model.".into(),
        layers: 3,
        hidden: 64,
        heads: 2,
        mlp: 128,
        vocab: 49408,
        positions: 77,
        projection: None,
        activation: Activation::QuickGelu,
        eps: 1e-5,
    }
}

fn cfg_g() -> ClipConfig {
    ClipConfig {
        naming: Naming::OpenClip,
        prefix: "conditioner.embedders.1.model.".into(),
        layers: 3,
        hidden: 128,
        heads: 2,
        mlp: 256,
        vocab: 49408,
        positions: 77,
        projection: Some(64),
        activation: Activation::Gelu,
        eps: 1e-5,
    }
}

/// Max |got - want| over max(1, max |want|), printed with its index and checked against `tol`.
fn check(what: &str, got: &[f32], want: &[f32], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1.0f64, |m, &v| m.max((v as f64).abs()));
    let (mut worst, mut at) = (0.0f64, 0);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(g.is_finite(), "{what}: non-finite at {i}");
        let e = (g as f64 - w as f64).abs();
        if e > worst {
            (worst, at) = (e, i);
        }
    }
    println!(
        "{what}: max abs err {worst:.3e} at {at} (got {}, want {}), scale {scale:.2}, rel {:.3e}",
        got[at],
        want[at],
        worst / scale
    );
    assert!(worst / scale <= tol, "{what}: error {:.3e} of scale over {tol:.1e}", worst / scale);
}

const SEQS: [&str; 4] = ["s0", "s1", "s2", "s3"];

fn encoders_match(force_f32: bool) {
    let gpu = gpu(force_f32);
    let tol = if force_f32 { F32_TOL } else { F16_TOL };
    let w = weights(&gpu);
    let r = Ref::load();
    let (l, g) = (ClipText::new(cfg_l()).unwrap(), ClipText::new(cfg_g()).unwrap());
    for s in SEQS {
        let out = l.forward(&gpu, &w, &r.ids(&format!("{s}.l.ids")), 0, false).unwrap();
        assert!(out.pooled.is_none());
        check(
            &format!("{s} clip_l hidden[-2]"),
            &out.hidden.to_vec_f32_blocking(&gpu).unwrap(),
            &r.f32(&format!("{s}.l.hidden_m2")),
            tol,
        );
        let ids = r.ids(&format!("{s}.g.ids"));
        let out = g.forward(&gpu, &w, &ids, 0, true).unwrap();
        check(
            &format!("{s} clip_g hidden[-2]"),
            &out.hidden.to_vec_f32_blocking(&gpu).unwrap(),
            &r.f32(&format!("{s}.g.hidden_m2")),
            tol,
        );
        let pooled = out.pooled.expect("pooled");
        assert_eq!(pooled.shape(), [1, 64]);
        check(
            &format!("{s} clip_g text_embeds"),
            &pooled.to_vec_f32_blocking(&gpu).unwrap(),
            &r.f32(&format!("{s}.g.text_embeds")),
            tol,
        );
        // clip skip 1: hidden_states[-3].
        let out = g.forward(&gpu, &w, &ids, 1, false).unwrap();
        check(
            &format!("{s} clip_g hidden[-3]"),
            &out.hidden.to_vec_f32_blocking(&gpu).unwrap(),
            &r.f32(&format!("{s}.g.hidden_m3")),
            tol,
        );
    }
}

#[test]
fn encoders_match_transformers_f32_path() {
    encoders_match(true);
}

#[test]
fn encoders_match_transformers_f16_path() {
    encoders_match(false);
}

const PROMPTS: [&str; 3] = [
    "1girl, solo, long hair, looking at viewer, smile",
    "masterpiece!! best quality, wow!",
    "very long prompt number 0 with tags, very long prompt number 1 with tags, very long prompt number 2 with tags, very long prompt number 3 with tags, very long prompt number 4 with tags, very long prompt number 5 with tags, very long prompt number 6 with tags, very long prompt number 7 with tags, very long prompt number 8 with tags, very long prompt number 9 with tags, very long prompt number 10 with tags, very long prompt number 11 with tags, very long prompt number 12 with tags, very long prompt number 13 with tags",
];

/// The fixture's ids are what our tokenizer and chunker produce ("!" is 0 for bigG only).
#[test]
fn fixture_ids_match_prompt_tokens() {
    let toks = SdxlTokenizers::new().unwrap();
    let r = Ref::load();
    let seqs: [&[&str]; 3] = [&["s0"], &["s1"], &["s2", "s3"]];
    for (p, ss) in PROMPTS.iter().zip(seqs) {
        let t = PromptTokens::new(p, Rating::None, &toks).unwrap();
        assert_eq!(t.chunk_count(), ss.len(), "{p}");
        for (i, s) in ss.iter().enumerate() {
            assert_eq!(t.clip_l[i].ids.to_vec(), r.ids(&format!("{s}.l.ids")), "{p} clip_l chunk {i}");
            assert_eq!(t.clip_g[i].ids.to_vec(), r.ids(&format!("{s}.g.ids")), "{p} clip_g chunk {i}");
        }
    }
}

/// Rows [77, C] of a reference hidden state, concatenated per token: [77, Cl + Cg].
fn concat_rows(a: &[f32], ca: usize, b: &[f32], cb: usize) -> Vec<f32> {
    a.chunks_exact(ca).zip(b.chunks_exact(cb)).flat_map(|(x, y)| x.iter().chain(y).copied()).collect()
}

/// Independent f64 A1111 `process_tokens` on one [77, C] chunk.
fn emphasis_ref(z: &[f32], c: usize, w: &[f32]) -> Vec<f32> {
    let n = z.len() as f64;
    let old: f64 = z.iter().map(|&v| v as f64).sum::<f64>() / n;
    let zw: Vec<f64> = z.iter().enumerate().map(|(i, &v)| v as f64 * w[i / c] as f64).collect();
    let new: f64 = zw.iter().sum::<f64>() / n;
    zw.iter().map(|v| (v * old / new) as f32).collect()
}

fn conditioning(force_f32: bool) {
    let gpu = gpu(force_f32);
    let tol = if force_f32 { F32_TOL } else { F16_TOL };
    let w = weights(&gpu);
    let r = Ref::load();
    let toks = SdxlTokenizers::new().unwrap();
    let (l, g) = (ClipText::new(cfg_l()).unwrap(), ClipText::new(cfg_g()).unwrap());

    // Two chunks: concatenated along the sequence, pooled from the first.
    let t = PromptTokens::new(PROMPTS[2], Rating::None, &toks).unwrap();
    let c = pollster::block_on(encode_prompt(&gpu, &w, &l, &g, Some(&t), t.chunk_count(), 0)).unwrap();
    assert_eq!(c.context.shape(), [1, 154, 192]);
    let mut want = concat_rows(&r.f32("s2.l.hidden_m2"), 64, &r.f32("s2.g.hidden_m2"), 128);
    want.extend(concat_rows(&r.f32("s3.l.hidden_m2"), 64, &r.f32("s3.g.hidden_m2"), 128));
    check("2-chunk context", &c.context.to_vec_f32_blocking(&gpu).unwrap(), &want, tol);
    check("2-chunk pooled", &c.pooled.to_vec_f32_blocking(&gpu).unwrap(), &r.f32("s2.g.text_embeds"), tol);

    // Emphasis: the same tokens as s0 with "1girl" ×1.3 and "smile" ÷1.1.
    let t = PromptTokens::new("(1girl:1.3), solo, long hair, looking at viewer, [smile]", Rating::None, &toks).unwrap();
    assert_eq!(t.clip_l[0].ids.to_vec(), r.ids("s0.l.ids"));
    assert_eq!(t.clip_g[0].ids.to_vec(), r.ids("s0.g.ids"));
    assert!(t.clip_l[0].weights.iter().any(|&x| x != 1.0));
    let c = pollster::block_on(encode_prompt(&gpu, &w, &l, &g, Some(&t), 1, 0)).unwrap();
    let zl = emphasis_ref(&r.f32("s0.l.hidden_m2"), 64, &t.clip_l[0].weights);
    let zg = emphasis_ref(&r.f32("s0.g.hidden_m2"), 128, &t.clip_g[0].weights);
    check("weighted context", &c.context.to_vec_f32_blocking(&gpu).unwrap(), &concat_rows(&zl, 64, &zg, 128), tol);
    // Weights do not touch the pooled output.
    check("weighted pooled", &c.pooled.to_vec_f32_blocking(&gpu).unwrap(), &r.f32("s0.g.text_embeds"), tol);

    // No negative prompt: zeros, as many chunks as asked.
    let z = pollster::block_on(encode_prompt(&gpu, &w, &l, &g, None, 2, 0)).unwrap();
    assert_eq!(z.context.shape(), [1, 154, 192]);
    assert_eq!(z.pooled.shape(), [1, 64]);
    assert!(z.context.to_vec_f32_blocking(&gpu).unwrap().iter().all(|&v| v == 0.0));
    assert!(z.pooled.to_vec_f32_blocking(&gpu).unwrap().iter().all(|&v| v == 0.0));

    // "" is a real prompt ([bos, eos, pad..]): encoded, not zero.
    let t = PromptTokens::new("", Rating::None, &toks).unwrap();
    let e = pollster::block_on(encode_prompt(&gpu, &w, &l, &g, Some(&t), 1, 0)).unwrap();
    assert_eq!(e.context.shape(), [1, 77, 192]);
    assert!(e.pooled.to_vec_f32_blocking(&gpu).unwrap().iter().any(|&v| v != 0.0));
}

#[test]
fn conditioning_f32_path() {
    conditioning(true);
}

#[test]
fn conditioning_f16_path() {
    conditioning(false);
}

/// `apply_emphasis` on a hand-computed case: 2 channels, weights 2 on token 0, 1 elsewhere.
#[test]
fn emphasis_restores_mean() {
    let c = 2;
    let mut z = vec![1.0f32; 77 * c];
    z[0] = 3.0; // token 0 = [3, 1]; sum = 156, mean 156/154
    let mut w = [1.0f32; 77];
    w[0] = 2.0; // weighted: token 0 = [6, 2]; sum = 160
    apply_emphasis(&mut z, c, &[w]).unwrap();
    let r = 156.0f32 / 160.0;
    assert!((z[0] - 6.0 * r).abs() < 1e-6 && (z[1] - 2.0 * r).abs() < 1e-6 && (z[2] - r).abs() < 1e-6);
    let mean: f32 = z.iter().sum::<f32>() / z.len() as f32;
    assert!((mean - 156.0 / 154.0).abs() < 1e-6, "mean {mean}");
    // Wrong sizes are an error, not a panic.
    assert!(apply_emphasis(&mut z[..10], c, &[w]).is_err());
}

/// Bad ids and a missing tensor give clear errors.
#[test]
fn bad_inputs_are_errors() {
    let gpu = gpu(true);
    let w = weights(&gpu);
    let l = ClipText::new(cfg_l()).unwrap();
    let e = l.forward(&gpu, &w, &[1, 2, 3], 0, false).err().expect("short ids");
    assert!(e.to_string().contains("77"), "{e}");
    let e = l.forward(&gpu, &w, &[49408; 77], 0, false).err().expect("id out of range");
    assert!(e.to_string().contains("49408"), "{e}");
    let e = l.forward(&gpu, &w, &[0; 77], 2, false).err().expect("too much clip skip");
    assert!(e.to_string().contains("clip skip"), "{e}");
    let mut cfg = cfg_l();
    cfg.layers = 4;
    // pooled = true runs every layer (4 here, the fixture has 3).
    let e = ClipText::new(cfg).unwrap().forward(&gpu, &w, &[0; 77], 0, true).err().expect("missing layer");
    assert!(e.to_string().contains("encoder.layers.3."), "{e}");
}
