//! Loading the committed tiny SDXL fixture (tests/fixtures/gen_models.py) in both layouts: every
//! tensor must land bit-exact (after the dtype conversion), the two layouts must agree, and any
//! chunking of the byte stream must give the same result.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use half::f16;
use sdxl_web::gpu::DType;
use sdxl_web::weights::safetensors::{build_header, StoredDType};
use sdxl_web::weights::{
    inspect_path, load_path, load_sources, ChunkSource, CpuSink, DestTensor, FileRole, FileSource, Loaded,
};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sdxl")
}
fn single() -> PathBuf {
    fixture().join("tiny-sdxl.safetensors")
}
fn diffusers() -> PathBuf {
    fixture().join("diffusers")
}

type Map = HashMap<String, (DestTensor, Vec<u8>)>;

fn load(model: &Path, vae: Option<&Path>, target: DType, chunk: usize) -> (Map, Loaded<()>) {
    let l = load_path(model, vae, CpuSink::default(), target, chunk, |_| {}).expect("fixture loads");
    let Loaded { sink, config, inspection, tensors, plans } = l;
    (sink.into_map(), Loaded { sink: (), config, inspection, tensors, plans })
}

/// Reference: read a tensor with the `safetensors` crate (an independent parser) and convert
/// element by element as the loader must (f32 → f16 round to nearest even).
fn reference(file: &Path, name: &str, target: DType) -> Vec<u8> {
    let bytes = std::fs::read(file).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap_or_else(|_| panic!("{name} in {}", file.display()));
    let vals: Vec<f32> = match t.dtype() {
        safetensors::Dtype::F16 => t.data().chunks(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        safetensors::Dtype::F32 => t.data().chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
        d => panic!("unexpected fixture dtype {d:?}"),
    };
    match target {
        DType::F16 => vals.iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()).collect(),
        DType::F32 => vals.iter().flat_map(|&x| x.to_le_bytes()).collect(),
    }
}

#[test]
fn single_file_tensors_are_bit_exact() {
    for target in [DType::F16, DType::F32] {
        let (map, l) = load(&single(), None, target, 1 << 20);
        let bytes = std::fs::read(single()).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        // Every file tensor except the two non-weights is loaded, under its own name.
        let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
        names.retain(|n| !n.ends_with("position_ids") && !n.ends_with("logit_scale"));
        assert_eq!(map.len(), names.len());
        assert_eq!(l.tensors.len(), names.len());
        for n in &names {
            let (t, got) = &map[n];
            assert_eq!(t.dtype, target);
            let want_shape = st.tensor(n).unwrap().shape().to_vec();
            assert_eq!(t.shape, want_shape, "{n}");
            assert!(*got == reference(&single(), n, target), "{n} differs ({target:?})");
        }
    }
}

#[test]
fn diffusers_folder_matches_single_file() {
    let (a, la) = load(&single(), None, DType::F16, 1 << 20);
    let (b, lb) = load(&diffusers(), None, DType::F16, 1 << 20);
    assert_eq!(la.config, lb.config);
    assert_eq!(la.inspection.layout, "single-file");
    assert_eq!(lb.inspection.layout, "diffusers");
    assert_eq!(a.len(), b.len());
    for (n, (ta, da)) in &a {
        let (tb, db) = b.get(n).unwrap_or_else(|| panic!("{n} missing from the diffusers load"));
        assert_eq!(ta, tb, "{n}");
        // The single file's VAE decoder is F32, rounded by the loader; the diffusers copy was
        // rounded by torch's .half(): both round to nearest even, so the bits agree.
        assert!(da == db, "{n} differs between layouts");
    }
    // The transposed and fused tensors really are the diffusers ones rearranged.
    let te2 = std::fs::read(diffusers().join("text_encoder_2/model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&te2).unwrap();
    let w = st.tensor("text_projection.weight").unwrap();
    let (rows, cols) = (w.shape()[0], w.shape()[1]);
    let p = &b["conditioner.embedders.1.model.text_projection"].1;
    for r in 0..rows {
        for c in 0..cols {
            assert_eq!(w.data()[(r * cols + c) * 2..][..2], p[(c * rows + r) * 2..][..2]);
        }
    }
    let k = st.tensor("text_model.encoder.layers.1.self_attn.k_proj.bias").unwrap();
    let fused = &b["conditioner.embedders.1.model.transformer.resblocks.1.attn.in_proj_bias"].1;
    assert_eq!(&fused[k.data().len()..2 * k.data().len()], k.data());
}

#[test]
fn inspect_reports_the_tiny_config() {
    let s = inspect_path(&single(), None).unwrap();
    let d = inspect_path(&diffusers(), None).unwrap();
    let js = serde_json::to_value(&s).unwrap();
    let jd = serde_json::to_value(&d).unwrap();
    assert_eq!(js["layout"], "single-file");
    assert_eq!(jd["layout"], "diffusers");
    assert_eq!(js["config"], jd["config"]);
    let u = &js["config"]["unet"];
    assert_eq!(u["model_channels"], 32);
    assert_eq!(u["channel_mult"], serde_json::json!([1, 2, 2]));
    assert_eq!(u["num_res_blocks"], 1);
    assert_eq!(u["transformer_depth"], serde_json::json!([0, 1, 2]));
    assert_eq!(u["transformer_depth_middle"], 2);
    assert_eq!(u["num_heads"], serde_json::json!([1, 1, 1]));
    assert_eq!(u["context_dim"], 48);
    assert_eq!(u["adm_in_channels"], 6 * 256 + 32);
    assert_eq!(u["pooled_dim"], 32);
    let t = &js["config"]["text_encoder"];
    assert_eq!((t["hidden"].as_u64(), t["layers"].as_u64(), t["vocab"].as_u64()), (Some(16), Some(3), Some(49408)));
    assert_eq!(js["config"]["text_encoder_2"]["projection"], 32);
    assert_eq!(js["config"]["vae"]["ch_mult"], serde_json::json!([1, 1, 2, 2]));
    assert_eq!(js["config"]["vae"]["z_channels"], 4);
    for c in ["unet", "vae", "text_encoder", "text_encoder_2"] {
        assert_eq!(js["components"][c]["params"], jd["components"][c]["params"], "{c}");
        assert!(js["components"][c]["params"].as_u64().unwrap() > 0);
    }
    assert_eq!(js["components"]["vae"]["dtype"], "F16+F32");
    assert_eq!(jd["components"]["unet"]["dtype"], "F16");
    // Parameter counts equal what diffusers' modules hold.
    assert_eq!(
        js["components"]["text_encoder"]["params"],
        49408 * 16 + 77 * 16 + 3 * (4 * (16 * 16 + 16) + 2 * 2 * 16 + 16 * 64 + 64 + 64 * 16 + 16) + 2 * 16
    );
}

/// A file served through the chunk-source trait in pieces whose sizes cycle through `sizes`.
struct Pieces {
    inner: FileSource,
    sizes: Vec<usize>,
    k: usize,
}

impl ChunkSource for Pieces {
    fn label(&self) -> String {
        self.inner.label()
    }
    fn total_len(&self) -> Option<u64> {
        self.inner.total_len()
    }
    fn read(&mut self, buf: &mut [u8]) -> sdxl_web::Result<usize> {
        let n = self.sizes[self.k % self.sizes.len()].min(buf.len());
        self.k += 1;
        self.inner.read(&mut buf[..n])
    }
}

#[test]
fn odd_chunk_sizes_give_identical_tensors() {
    let (want, _) = load(&single(), None, DType::F16, 1 << 20);
    // The 1/7/4093 cycle splits elements and words at every possible offset (a pure 1-byte run
    // over the whole 12 MiB only costs time); 7 and 4093 alone keep the phase fixed.
    for sizes in [vec![1usize, 7, 4093], vec![7], vec![4093]] {
        let src = Pieces { inner: FileSource::open(&single()).unwrap(), sizes: sizes.clone(), k: 0 };
        let l = load_sources(
            CpuSink::default(),
            DType::F16,
            "single-file",
            vec![(Box::new(src), FileRole::SingleFile { with_vae: true })],
            4093,
            |_| {},
        )
        .unwrap();
        let got = l.sink.into_map();
        assert_eq!(got.len(), want.len());
        for (n, (_, b)) in &want {
            assert!(got[n].1 == *b, "{n} differs with chunks of {sizes:?}");
        }
    }
    // Pure 1-byte pushes through the whole header and the first tensors.
    let bytes = std::fs::read(single()).unwrap();
    let mut l = sdxl_web::weights::Loader::new(CpuSink::default(), DType::F16, "single-file");
    l.begin_file("one-byte", FileRole::SingleFile { with_vae: true }, Some(bytes.len() as u64)).unwrap();
    let split = bytes.len().min(1 << 20);
    for b in bytes[..split].chunks(1) {
        l.push(b).unwrap();
    }
    l.push(&bytes[split..]).unwrap();
    l.end_file().unwrap();
    let got = l.finish().unwrap().sink.into_map();
    for (n, (_, b)) in &want {
        assert!(got[n].1 == *b, "{n} differs with 1-byte chunks");
    }
}

#[test]
fn separate_vae_overrides_the_checkpoint() {
    let (base, _) = load(&single(), None, DType::F16, 1 << 20);
    // Diffusers-named VAE file as the override of a single-file checkpoint.
    let dvae = diffusers().join("vae/diffusion_pytorch_model.safetensors");
    let (a, _) = load(&single(), Some(&dvae), DType::F16, 1 << 20);
    assert_eq!(a.len(), base.len());
    for (n, (_, b)) in &base {
        assert!(a[n].1 == *b, "{n}");
    }
    // A single-file-named VAE without prefix (as VAE files are distributed), with a marker value
    // so the override is seen to win.
    let vae: Vec<(String, StoredDType, Vec<usize>, Vec<u8>)> = base
        .iter()
        .filter(|(n, _)| n.starts_with("first_stage_model."))
        .map(|(n, (t, b))| {
            let mut b = b.clone();
            if n == "first_stage_model.decoder.conv_out.bias" {
                b[..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
            }
            (n["first_stage_model.".len()..].to_string(), StoredDType::F16, t.shape.clone(), b)
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("sdxl-vae-override-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("vae.safetensors");
    let head: Vec<_> = vae.iter().map(|(n, d, s, _)| (n.clone(), *d, s.clone())).collect();
    let mut bytes = build_header(&head, &Default::default());
    for (_, _, _, b) in &vae {
        bytes.extend_from_slice(b);
    }
    std::fs::write(&path, bytes).unwrap();
    for model in [single(), diffusers()] {
        let (m, l) = load(&model, Some(&path), DType::F16, 1 << 20);
        assert_eq!(m.len(), base.len());
        assert_eq!(m["first_stage_model.decoder.conv_out.bias"].1[..2], f16::from_f32(0.5).to_le_bytes());
        assert!(l.inspection.components["vae"].file.ends_with("vae.safetensors"));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
