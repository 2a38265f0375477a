//! Conv2d kernels on the real device (lavapipe in CI), both compute paths, against an f64 CPU
//! reference computed from the same f16-rounded inputs.

mod common;

use sdxl_web::gpu::{DType, Gpu, Tensor};
use sdxl_web::ops::conv;
use sdxl_web::selfcheck::{self, stored};

use common::gpu;
/// f16 output: round-to-nearest costs at most half an ulp, 2^-11 of |y|.
const F16_OUT_REL: f64 = 1.0 / 2048.0;
/// f32 arithmetic: f32 accumulation over ≤ 630 terms; a generous bound relative to Σ|x·w|.
const F32_ARITH_REL: f64 = 1e-5;
/// f16 path with f16 x: each product rounded to f16 and summed in f16 over 4 k before the f32
/// accumulator — at most ~4 roundings of 2^-11 of Σ|x·w| (worst-case bound).
const F16_ARITH_REL: f64 = 4.0 / 2048.0;
/// Channel blocks over the binding limit accumulate through y: one more rounding of the
/// partial sum per block (f32 y here, so 2^-24 per block; bounded generously).
const BLOCKED_F32_REL: f64 = 1e-5;

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

struct Shape {
    b: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    k: usize,
    stride: usize,
    pad: usize,
}

/// Reference y and Σ|x·w| per output, in f64, PyTorch semantics (zero padding): the self-check's.
fn reference(s: &Shape, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> (Vec<f64>, Vec<f64>, usize, usize) {
    let f64s = |v: &[f32]| stored(v, DType::F32);
    let dims = [s.b, s.c, s.h, s.w];
    selfcheck::conv_ref(&f64s(x), &f64s(w), bias.map(f64s).as_deref(), dims, s.o, s.k, s.stride, (s.pad, s.pad))
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
        if e / tol > worst || e.is_nan() {
            worst = if e.is_nan() { f64::INFINITY } else { e / tol };
            at = i;
        }
    }
    assert!(
        worst <= 1.0,
        "{what}: error {worst:.3}x the tolerance at index {at} (got {}, want {}, Σ|x·w| {}); max abs err {worst_abs:e}, max rel err {worst_rel:e}",
        got[at],
        want[at],
        mag[at]
    );
}

fn run_case(gpu: &Gpu, s: &Shape, xd: DType, yd: DType, with_bias: bool, seed: u64, extra_rel: f64) {
    let x = data(s.b * s.c * s.h * s.w, seed, 2.0, xd);
    let w = data(s.o * s.c * s.k * s.k, seed + 1, 0.5, DType::F16);
    let bias = data(s.o, seed + 2, 1.0, DType::F16);
    let xt = Tensor::from_f32(gpu, &[s.b, s.c, s.h, s.w], xd, &x).unwrap();
    let wt = Tensor::from_f32(gpu, &[s.o, s.c, s.k, s.k], DType::F16, &w).unwrap();
    let bt = Tensor::from_f32(gpu, &[s.o], DType::F16, &bias).unwrap();
    let y = conv::conv2d(gpu, &xt, &wt, with_bias.then_some(&bt), s.stride, s.pad, yd).unwrap();
    let (want, mag, ho, wo) = reference(s, &x, &w, with_bias.then_some(&bias[..]));
    assert_eq!(y.shape(), &[s.b, s.o, ho, wo]);
    let got = y.to_vec_f32_blocking(gpu).unwrap();
    let arith = if gpu.f16 && xd == DType::F16 { F16_ARITH_REL } else { F32_ARITH_REL } + extra_rel;
    let what = format!(
        "{} path, x {xd:?} [{}, {}, {}, {}], W [{}, {}, {k}, {k}] stride {} pad {}, bias {with_bias}, y {yd:?}",
        gpu.info.compute_path,
        s.b,
        s.c,
        s.h,
        s.w,
        s.o,
        s.c,
        s.stride,
        s.pad,
        k = s.k
    );
    compare(&what, &got, &want, &mag, arith, yd);
}

const H: DType = DType::F16;
const F: DType = DType::F32;

/// 3×3 same, 3×3 stride-2 and 1×1 on odd sizes (7×9: odd pixel counts, f16 outputs sharing words
/// across threads), pixel counts and channels crossing the 64 tile, K = C·9 off the 32 step,
/// batch 2, every x / y dtype pairing.
fn all_cases(force_f32: bool) {
    let gpu = gpu(force_f32);
    let cases: Vec<(Shape, DType, DType, bool)> = vec![
        (Shape { b: 2, c: 5, h: 7, w: 9, o: 6, k: 3, stride: 1, pad: 1 }, H, H, true),
        (Shape { b: 1, c: 70, h: 9, w: 10, o: 70, k: 3, stride: 1, pad: 1 }, H, F, true),
        (Shape { b: 1, c: 4, h: 12, w: 12, o: 65, k: 3, stride: 1, pad: 1 }, F, F, false),
        (Shape { b: 2, c: 8, h: 7, w: 9, o: 3, k: 3, stride: 2, pad: 1 }, H, H, true),
        (Shape { b: 1, c: 16, h: 16, w: 16, o: 65, k: 3, stride: 2, pad: 1 }, F, H, true),
        (Shape { b: 2, c: 33, h: 5, w: 13, o: 17, k: 1, stride: 1, pad: 0 }, F, F, true),
        (Shape { b: 1, c: 40, h: 9, w: 15, o: 66, k: 1, stride: 1, pad: 0 }, H, H, false),
    ];
    for (i, (s, xd, yd, b)) in cases.iter().enumerate() {
        run_case(&gpu, s, *xd, *yd, *b, 10 + i as u64, 0.0);
    }
}

#[test]
fn conv_f16_path() {
    all_cases(false);
}

#[test]
fn conv_f32_path() {
    all_cases(true);
}

/// 1×1 convs over lavapipe's 128 MiB binding limit (f32 activations, as in the VAE):
/// x [1, 36, 1024, 1024] is 144 MiB (input-channel blocks accumulated through y), then y
/// [1, 36, 1024, 1024] is 144 MiB (output-channel blocks).
fn over_binding_limit(force_f32: bool) {
    let gpu = gpu(force_f32);
    let limit = gpu.limits.max_storage_buffer_binding_size;
    let big_in = Shape { b: 1, c: 36, h: 1024, w: 1024, o: 4, k: 1, stride: 1, pad: 0 };
    assert!((36u64 << 22) > limit, "test tensor must exceed the binding limit");
    run_case(&gpu, &big_in, F, F, true, 1, BLOCKED_F32_REL);
    let big_out = Shape { b: 1, c: 4, h: 1024, w: 1024, o: 36, k: 1, stride: 1, pad: 0 };
    run_case(&gpu, &big_out, F, F, true, 2, 0.0);
}

#[test]
fn conv_over_binding_limit_f32_path() {
    over_binding_limit(true);
}

#[test]
fn conv_over_binding_limit_f16_path() {
    over_binding_limit(false);
}

#[test]
fn conv_bad_shapes_are_errors() {
    let gpu = gpu(true);
    let x = Tensor::zeros(&gpu, &[1, 4, 8, 8], H).unwrap();
    let w = Tensor::zeros(&gpu, &[2, 3, 3, 3], H).unwrap();
    let e = conv::conv2d(&gpu, &x, &w, None, 1, 1, H).unwrap_err().to_string();
    assert!(e.contains("C = 4"), "{e}");
    let w = Tensor::zeros(&gpu, &[2, 4, 9, 9], H).unwrap();
    let e = conv::conv2d(&gpu, &x, &w, None, 1, 0, H).unwrap_err().to_string();
    assert!(e.contains("smaller than"), "{e}");
    let w = Tensor::zeros(&gpu, &[2, 4, 3, 3], F).unwrap();
    assert!(conv::conv2d(&gpu, &x, &w, None, 1, 1, H).unwrap_err().to_string().contains("W must be F16"));
}
