//! The runtime end to end on the real device (lavapipe in CI), on both compute paths: upload,
//! dispatch, readback, buffer reuse, error reporting.

mod common;

use sdxl_web::gpu::{DType, Tensor};
use sdxl_web::ops::smoke;

use common::gpu;
/// a·x + b with f16 inputs and f16 output: one rounding of the result (the f16 path also rounds
/// the product), so allow 2 ulp of f16 at the values' magnitude (< 8): 2 · 2^-8.
const SMOKE_TOL: f32 = 2.0 / 256.0;

fn run_smoke(force_f32: bool) {
    let gpu = gpu(force_f32);
    assert_eq!(gpu.f16, !force_f32 && gpu.info.shader_f16);
    // Odd length: the last word holds one real element and one pad half.
    for n in [1usize, 7, 1001, 200_003] {
        let x: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 16.0).collect();
        let t = Tensor::from_f32(&gpu, &[n], DType::F16, &x).unwrap();
        let y = smoke::axpb(&gpu, &t, 1.5, -0.25).unwrap();
        let got = y.to_vec_f32_blocking(&gpu).unwrap();
        assert_eq!(got.len(), n);
        let (mut worst, mut at) = (0f32, 0usize);
        for i in 0..n {
            let xr = half::f16::from_f32(x[i]).to_f32() as f64;
            let want = (1.5 * xr - 0.25) as f32;
            let e = (got[i] - want).abs();
            if e > worst {
                worst = e;
                at = i;
            }
        }
        assert!(
            worst <= SMOKE_TOL,
            "path {} n={n}: max abs err {worst} at {at} (got {}, x {})",
            gpu.info.compute_path,
            got[at],
            x[at]
        );
    }
}

#[test]
fn smoke_kernel_f16_path() {
    let g = gpu(false);
    assert!(g.info.shader_f16, "lavapipe offers shader-f16; the f16 path must be tested");
    drop(g);
    run_smoke(false);
}

#[test]
fn smoke_kernel_f32_path() {
    run_smoke(true);
}

#[test]
fn pool_reuses_buffers_and_results_stay_correct() {
    let gpu = gpu(true);
    let x = Tensor::from_f32(&gpu, &[4096], DType::F16, &vec![2.0; 4096]).unwrap();
    // Chain through pooled intermediates, dropping each: every step reuses a freed buffer.
    let mut y = smoke::axpb(&gpu, &x, 1.0, 1.0).unwrap();
    for _ in 0..10 {
        y = smoke::axpb(&gpu, &y, 1.0, 1.0).unwrap();
    }
    let (live, cached) = gpu.memory_stats();
    assert!(live <= 3 * 8192 && cached <= 2 * 8192, "pool grew: live {live}, cached {cached}");
    assert!(y.to_vec_f32_blocking(&gpu).unwrap().iter().all(|&v| v == 13.0));
}

#[test]
fn wrong_input_is_an_error_not_a_panic() {
    let gpu = gpu(true);
    let e = Tensor::from_f32(&gpu, &[3, 3], DType::F16, &[1.0; 8]).unwrap_err().to_string();
    assert!(e.contains("8 values") && e.contains("[3, 3]"), "{e}");
    let big = Tensor::empty(&gpu, &[1 << 40], DType::F32).unwrap_err().to_string();
    assert!(big.contains("max_buffer_size"), "{big}");
    let f32t = Tensor::zeros(&gpu, &[4], DType::F32).unwrap();
    assert!(smoke::axpb(&gpu, &f32t, 1.0, 0.0).is_err());
    assert_eq!(f32t.to_vec_f32_blocking(&gpu).unwrap(), vec![0.0; 4]);
}
