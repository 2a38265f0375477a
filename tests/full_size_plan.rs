//! The full-size memory plan, proven without the 6.9 GB of weights: a sparse SDXL 1.0 checkpoint
//! (real header, a hole for the data) is dry-loaded and every model-card bucket is dry-run with the
//! default budget. Dry runs account exactly what the real run allocates (tests/memory.rs checks
//! that to the byte), so this is the peak a real 8 GB GPU would see.

mod common;

use sdxl_web::gpu::Gpu;
use sdxl_web::pipeline::{generate_with, MemSize, Model, Report, Settings, TextEncoders, BUCKETS, DEFAULT_GPU_MEMORY};

/// A new prompt every time, so each run encodes (the conditioning cache would skip that).
fn dry(twin: &Gpu, m: &Model, w: usize, h: usize, budget: MemSize) -> sdxl_web::Result<Report> {
    static RUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let s = Settings {
        prompt: format!("1girl, solo, sensitive-rated, {n}"),
        negative: Some("lowres".into()),
        width: w,
        height: h,
        steps: 1,
        gpu_memory: budget,
        ..Settings::default()
    };
    Ok(pollster::block_on(generate_with(twin, m, &s, false, &mut |_| true))?.report)
}

#[test]
fn every_bucket_fits_the_default_budget_at_full_size() {
    let dir = std::env::temp_dir().join(format!("sdxl-full-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sdxl-base-zero.safetensors");
    let bytes = sdxl_web::weights::random::write_sparse_checkpoint(&path, &sdxl_web::weights::ModelConfig::sdxl_base())
        .expect("sparse checkpoint");
    assert!(bytes > 6_900_000_000, "{bytes}");
    for f32_path in [true, false] {
        let twin = common::gpu(f32_path).dry_twin();
        let m = Model::load(&twin, &path, None, |_| {}).expect("dry load of the full-size header");
        let (uv, text) = m.weight_bytes();
        println!("f32={f32_path}: weights {uv} + {text} bytes");
        assert!(uv + text > 6_900_000_000 && uv + text < 7_000_000_000);
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        let mut worst = 0;
        for &(w, h) in BUCKETS {
            let r = dry(&twin, &m, w, h, DEFAULT_GPU_MEMORY).unwrap_or_else(|e| panic!("{w}x{h}: {e}"));
            assert!(r.peak_gpu_bytes <= DEFAULT_GPU_MEMORY.0, "{w}x{h}: {}", r.peak_gpu_bytes);
            assert_eq!(r.plan.vae_tile, 0, "{w}x{h}: the default budget needs no VAE tiling");
            worst = worst.max(r.peak_gpu_bytes);
        }
        let big = dry(&twin, &m, 1024, 1024, MemSize(64 << 30)).unwrap();
        println!(
            "f32={f32_path}: every bucket fits 7.5 GiB (worst peak {:.3} GiB); 1024x1024 with 64 GiB: {:.3} GiB (text {:.3}, unet {:.3}, vae {:.3})",
            gib(worst),
            gib(big.peak_gpu_bytes),
            gib(big.stages.text.peak_gpu_bytes),
            gib(big.stages.unet.peak_gpu_bytes),
            gib(big.stages.vae.peak_gpu_bytes)
        );
        assert_eq!((big.plan.text_encoders, big.plan.vae_tile), (TextEncoders::Resident, 0));
        assert!(big.text_encoders_reloaded, "the big budget keeps them resident again");
        assert!(big.peak_gpu_bytes > DEFAULT_GPU_MEMORY.0, "unplanned, 1024² needs more than 8 GB");
        // A smaller GPU: tiles, still within the budget.
        let small = dry(&twin, &m, 1024, 1024, "6.75G".parse().unwrap()).unwrap();
        assert!(small.plan.vae_tile > 0 && small.peak_gpu_bytes <= (27u64 << 28));
        // Encoding needs every weight at once: below that, a clear refusal.
        let e = dry(&twin, &m, 1024, 1024, "6G".parse().unwrap()).unwrap_err().to_string();
        assert!(e.contains("1024x1024 does not fit") && e.contains("6.00 GiB"), "{e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
