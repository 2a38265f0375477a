//! The fixture model through the GPU sink (lavapipe in CI): every tensor read back from its
//! buffer equals the host-side load bit for bit, in both layouts and both GPU dtypes, with
//! chunk sizes that leave pieces unaligned to the 4-byte words `write_buffer` needs.

mod common;

use std::path::Path;

use common::gpu;
use sdxl_web::gpu::DType;
use sdxl_web::weights::{load_path, CpuSink, GpuSink};

#[test]
fn fixture_lands_bit_exact_on_the_gpu() {
    let gpu = gpu(false);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sdxl");
    for (model, target, chunk) in [
        (dir.join("tiny-sdxl.safetensors"), DType::F16, 4093),
        (dir.join("diffusers"), DType::F16, 1 << 20),
        (dir.join("tiny-sdxl.safetensors"), DType::F32, 1 << 20),
    ] {
        let want = load_path(&model, None, CpuSink::default(), target, 1 << 20, |_| {}).unwrap().sink.into_map();
        let l = load_path(&model, None, GpuSink::new(&gpu), target, chunk, |_| {}).unwrap();
        let w = l.sink.into_weights().unwrap();
        assert_eq!(w.len(), want.len());
        // Weights get exact-size buffers (4-byte padded), not pool size classes.
        let exact: u64 = w.map.values().map(|t| t.byte_len_padded()).sum();
        assert_eq!(gpu.memory_stats(), (exact, 0), "weights must use exact-size, unpooled buffers");
        for (name, (t, bytes)) in &want {
            let g = w.get(name).unwrap();
            assert_eq!(g.shape(), &t.shape[..], "{name}");
            assert_eq!(g.dtype(), target);
            let back = pollster::block_on(g.to_bytes(&gpu)).unwrap();
            assert!(back == *bytes, "{name} differs on the GPU ({}, {target:?})", model.display());
        }
        drop(w);
        assert_eq!(gpu.memory_stats().0, 0, "dropped weights go back to the driver");
    }
}

#[test]
fn a_failed_load_leaves_nothing_on_the_gpu() {
    let gpu = gpu(false);
    let bytes =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sdxl/tiny-sdxl.safetensors"))
            .unwrap();
    // Cut mid-way: the header is intact, so buffers get created before the data runs out.
    let mut l = sdxl_web::weights::Loader::new(GpuSink::new(&gpu), DType::F16, "single-file");
    l.begin_file("half", sdxl_web::weights::FileRole::SingleFile { with_vae: true }, None).unwrap();
    l.push(&bytes[..bytes.len() / 2]).unwrap();
    assert!(gpu.memory_stats().0 > 0, "buffers exist mid-load");
    let e = l.end_file().unwrap_err().to_string();
    assert!(e.contains("truncated"), "{e}");
    drop(l);
    assert_eq!(gpu.memory_stats(), (0, 0), "a failed load must release every buffer");
}
