//! Linear / matmul kernels on the real device (lavapipe in CI), both compute paths, against an
//! f64 CPU reference computed from the same f16-rounded inputs.

mod common;

use sdxl_web::gpu::{DType, Gpu, Tensor};
use sdxl_web::ops::linear;
use sdxl_web::selfcheck::{self, stored};

use common::gpu;
/// f16 output: round-to-nearest costs at most half an ulp, 2^-11 of |y|.
const F16_OUT_REL: f64 = 1.0 / 2048.0;
/// f32 path: f32 accumulation over K ≤ 1280 terms; a generous bound relative to Σ|x·w|.
const F32_ARITH_REL: f64 = 1e-5;
/// f16 path with f16 x: each product is rounded to f16 and summed in f16 over 4 k before the
/// f32 accumulator, at most ~4 roundings of 2^-11 of Σ|x·w| (the worst-case bound).
const F16_ARITH_REL: f64 = 4.0 / 2048.0;

/// Deterministic values in [-scale, scale], already rounded to what the GPU tensor will hold.
fn data(n: usize, seed: u64, scale: f32, dtype: DType) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let v = ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale;
            if dtype == DType::F16 {
                half::f16::from_f32(v).to_f32()
            } else {
                v
            }
        })
        .collect()
}

/// Reference y and Σ|x·w| per output, in f64 (the self-check's reference).
fn reference(x: &[f32], w: &[f32], b: Option<&[f32]>, m: usize, n: usize, k: usize) -> (Vec<f64>, Vec<f64>) {
    let f64s = |v: &[f32]| stored(v, DType::F32);
    selfcheck::linear_ref(&f64s(x), &f64s(w), b.map(f64s).as_deref(), m, n, k)
}

fn compare(what: &str, got: &[f32], want: &[f64], mag: &[f64], arith_rel: f64, out: DType) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let (mut worst, mut at, mut worst_abs, mut worst_rel) = (0f64, 0usize, 0f64, 0f64);
    for i in 0..got.len() {
        let e = (got[i] as f64 - want[i]).abs();
        let out_tol = if out == DType::F16 { F16_OUT_REL * want[i].abs() } else { 0.0 };
        let tol = out_tol + arith_rel * mag[i] + 1e-30;
        worst_abs = worst_abs.max(e);
        worst_rel = worst_rel.max(e / want[i].abs().max(1e-6));
        if e / tol > worst {
            worst = e / tol;
            at = i;
        }
    }
    assert!(
        worst <= 1.0,
        "{what}: error {:.3}x the tolerance at index {at} (got {}, want {}, Σ|x·w| {}); max abs err {worst_abs:e}, max rel err {worst_rel:e}",
        worst,
        got[at],
        want[at],
        mag[at]
    );
}

struct Case {
    batch: &'static [usize],
    k: usize,
    n: usize,
    xd: DType,
    yd: DType,
    bias: bool,
}

fn run_case(gpu: &Gpu, c: &Case, naive: bool, seed: u64) {
    let m: usize = c.batch.iter().product();
    let x = data(m * c.k, seed, 2.0, c.xd);
    let w = data(c.n * c.k, seed + 1, 0.5, DType::F16);
    let b = data(c.n, seed + 2, 1.0, DType::F16);
    let mut xs = c.batch.to_vec();
    xs.push(c.k);
    let xt = Tensor::from_f32(gpu, &xs, c.xd, &x).unwrap();
    let wt = Tensor::from_f32(gpu, &[c.n, c.k], DType::F16, &w).unwrap();
    let bt = Tensor::from_f32(gpu, &[c.n], DType::F16, &b).unwrap();
    let bias = c.bias.then_some(&bt);
    let y = if naive {
        linear::naive_matmul(gpu, &xt, &wt, bias, c.yd).unwrap()
    } else {
        linear::linear(gpu, &xt, &wt, bias, c.yd).unwrap()
    };
    let mut ys = c.batch.to_vec();
    ys.push(c.n);
    assert_eq!(y.shape(), &ys[..]);
    assert_eq!(y.dtype(), c.yd);
    let got = y.to_vec_f32_blocking(gpu).unwrap();
    let (want, mag) = reference(&x, &w, c.bias.then_some(&b[..]), m, c.n, c.k);
    let arith = if gpu.f16 && c.xd == DType::F16 { F16_ARITH_REL } else { F32_ARITH_REL };
    let what = format!(
        "{} path {}, x {:?} {xs:?}, W [{}, {}], bias {}, y {:?}",
        gpu.info.compute_path,
        if naive { "naive" } else { "tiled" },
        c.xd,
        c.n,
        c.k,
        c.bias,
        c.yd
    );
    compare(&what, &got, &want, &mag, arith, c.yd);
}

const H: DType = DType::F16;
const F: DType = DType::F32;

/// Shapes crossing the 64×64 tile and 32-wide K step: M = 1, 7, 77, 129, batch 2; N and K off
/// the tile, odd N (f16 outputs sharing words across threads), K not a multiple of 8 (the
/// per-element load path), every x / y dtype pairing.
const CASES: &[Case] = &[
    Case { batch: &[1], k: 64, n: 64, xd: H, yd: H, bias: true },
    Case { batch: &[7], k: 40, n: 70, xd: H, yd: F, bias: true },
    Case { batch: &[77], k: 320, n: 130, xd: H, yd: H, bias: false },
    Case { batch: &[129], k: 136, n: 129, xd: H, yd: H, bias: true },
    Case { batch: &[2, 77], k: 96, n: 66, xd: F, yd: F, bias: true },
    Case { batch: &[2, 7], k: 77, n: 33, xd: F, yd: H, bias: true },
    Case { batch: &[65], k: 77, n: 31, xd: H, yd: H, bias: false },
    Case { batch: &[3], k: 1280, n: 20, xd: H, yd: F, bias: true },
];

fn all_cases(force_f32: bool) {
    let gpu = gpu(force_f32);
    for (i, c) in CASES.iter().enumerate() {
        run_case(&gpu, c, false, 100 + i as u64);
    }
    // The benchmark's baseline must compute the same thing.
    run_case(&gpu, &CASES[3], true, 7);
    run_case(&gpu, &CASES[5], true, 8);
}

#[test]
fn linear_f16_path() {
    all_cases(false);
}

#[test]
fn linear_f32_path() {
    all_cases(true);
}

/// x is 152 MiB of f32, over lavapipe's 128 MiB binding limit: the op must bind row windows
/// and dispatch per block (and split the row-tile grid over the 65,535 workgroup limit).
fn over_binding_limit(force_f32: bool) {
    let gpu = gpu(force_f32);
    let (m, k, n) = (5_000_000usize, 8usize, 6usize);
    assert!((m * k * 4) as u64 > gpu.limits.max_storage_buffer_binding_size, "test tensor must exceed the limit");
    let x = data(m * k, 1, 2.0, F);
    let w = data(n * k, 2, 0.5, H);
    let b = data(n, 3, 1.0, H);
    let xt = Tensor::from_f32(&gpu, &[m, k], F, &x).unwrap();
    let wt = Tensor::from_f32(&gpu, &[n, k], H, &w).unwrap();
    let bt = Tensor::from_f32(&gpu, &[n], H, &b).unwrap();
    let got = linear::linear(&gpu, &xt, &wt, Some(&bt), F).unwrap().to_vec_f32_blocking(&gpu).unwrap();
    let (want, mag) = reference(&x, &w, Some(&b), m, n, k);
    compare(
        &format!("{} path, x [{m}, {k}] F32 over the binding limit", gpu.info.compute_path),
        &got,
        &want,
        &mag,
        F32_ARITH_REL,
        F,
    );
}

#[test]
fn linear_over_binding_limit_f32_path() {
    over_binding_limit(true);
}

#[test]
fn linear_over_binding_limit_f16_path() {
    over_binding_limit(false);
}

#[test]
fn linear_bad_shapes_are_errors() {
    let gpu = gpu(true);
    let x = Tensor::zeros(&gpu, &[4, 8], H).unwrap();
    let w = Tensor::zeros(&gpu, &[3, 9], H).unwrap();
    let e = linear::linear(&gpu, &x, &w, None, H).unwrap_err().to_string();
    assert!(e.contains("disagree on K"), "{e}");
    let w = Tensor::zeros(&gpu, &[3, 8], F).unwrap();
    assert!(linear::linear(&gpu, &x, &w, None, H).unwrap_err().to_string().contains("W must be F16"));
    let w = Tensor::zeros(&gpu, &[3, 8], H).unwrap();
    let b = Tensor::zeros(&gpu, &[4], H).unwrap();
    assert!(linear::linear(&gpu, &x, &w, Some(&b), H).unwrap_err().to_string().contains("bias"));
}
