//! Multi-head attention against a CPU f64 reference, on lavapipe, on both compute paths: the
//! D = 64 fast path and the generic path (D = 32, 40, 80, 128, 512 and 64), self and cross
//! attention, causal and not, token counts 1, 7, 77, 129, batch 2, F16 and F32 activations,
//! split bindings, and a query tensor above the 128 MiB binding limit.

mod common;

use sdxl_web::gpu::{DType, Gpu, Tensor};
use sdxl_web::ops::attention::{self, Path};
use sdxl_web::ops::elementwise as ew;

use common::{gpu, rand, stored};
use sdxl_web::selfcheck::attention_ref;
/// F32 activations (f32 arithmetic on both paths): scores and the running sums are f32; the
/// outputs are averages of |v| <= 1, so a few f32 ulp of 1 after Tk-term sums.
const ATTN_F32_TOL: f64 = 5e-6;
/// F16 activations: the output is rounded to f16 (2^-11 relative, |o| <= 1); on the f16 path the
/// q·k products and P·V products are f16 too (each 2^-11 relative), which perturbs the scores
/// (|s| <~ 3 here) by ~3·2^-11 and the weights by as much.
const ATTN_F16_TOL: f64 = 2e-3;

fn check(what: &str, gpu: &Gpu, got: &[f32], want: &[f64], abs: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let (mut worst, mut at) = (0f64, 0usize);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let e = (g as f64 - w).abs();
        let e = if e.is_nan() { f64::INFINITY } else { e };
        if e > worst {
            worst = e;
            at = i;
        }
    }
    let rel = worst / want[at].abs().max(1e-30);
    assert!(
        worst <= abs,
        "{what} [{} path]: max abs err {worst:.3e} (rel {rel:.3e}) at {at}: got {}, want {} (tol {abs:e})",
        gpu.info.compute_path,
        got[at],
        want[at]
    );
}

struct Case {
    b: usize,
    tq: usize,
    tk: usize,
    h: usize,
    d: usize,
    causal: bool,
}

fn run_case(gpu: &Gpu, cs: &Case, dt: DType, path: Path, seed: u64) {
    let Case { b, tq, tk, h, d, causal } = *cs;
    let c = h * d;
    // q scaled up so the softmax is far from uniform (scores up to ~±3).
    let qx = rand(b * tq * c, seed, 2.0);
    let kx = rand(b * tk * c, seed + 1, 1.0);
    let vx = rand(b * tk * c, seed + 2, 1.0);
    let q = Tensor::from_f32(gpu, &[b, tq, c], dt, &qx).unwrap();
    let k = Tensor::from_f32(gpu, &[b, tk, c], dt, &kx).unwrap();
    let v = Tensor::from_f32(gpu, &[b, tk, c], dt, &vx).unwrap();
    let o = attention::attention_with(gpu, &q, &k, &v, h, causal, path).unwrap();
    assert_eq!(o.shape(), [b, tq, c]);
    let got = o.to_vec_f32_blocking(gpu).unwrap();
    let want = attention_ref(&stored(&qx, dt), &stored(&kx, dt), &stored(&vx, dt), b, tq, tk, h, d, causal);
    let tol = if dt == DType::F16 { ATTN_F16_TOL } else { ATTN_F32_TOL };
    let what = format!("attention {path:?} B={b} Tq={tq} Tk={tk} H={h} D={d} causal={causal} {dt:?}");
    check(&what, gpu, &got, &want, tol);
}

fn run_fast(force_f32: bool) {
    let gpu = gpu(force_f32);
    let cases = [
        Case { b: 1, tq: 1, tk: 1, h: 1, d: 64, causal: false },
        Case { b: 2, tq: 7, tk: 7, h: 2, d: 64, causal: true },
        Case { b: 2, tq: 77, tk: 77, h: 3, d: 64, causal: true }, // CLIP text encoder
        Case { b: 1, tq: 129, tk: 77, h: 2, d: 64, causal: false }, // cross attention
        Case { b: 2, tq: 129, tk: 129, h: 1, d: 64, causal: false },
        Case { b: 1, tq: 65, tk: 129, h: 1, d: 64, causal: true },
    ];
    for (i, cs) in cases.iter().enumerate() {
        for dt in [DType::F16, DType::F32] {
            run_case(&gpu, cs, dt, Path::Fast64, i as u64 * 10);
        }
    }
}

#[test]
fn attention_head64_f16_path() {
    run_fast(false);
}

#[test]
fn attention_head64_f32_path() {
    run_fast(true);
}

fn run_generic(force_f32: bool) {
    let gpu = gpu(force_f32);
    let cases = [
        Case { b: 1, tq: 65, tk: 33, h: 2, d: 32, causal: false },
        Case { b: 2, tq: 7, tk: 77, h: 2, d: 40, causal: false },
        Case { b: 1, tq: 33, tk: 33, h: 1, d: 80, causal: true },
        Case { b: 1, tq: 20, tk: 17, h: 2, d: 128, causal: false },
        Case { b: 1, tq: 41, tk: 41, h: 1, d: 512, causal: false }, // VAE mid-block: 1 head × 512
        Case { b: 2, tq: 77, tk: 77, h: 2, d: 64, causal: true },
        Case { b: 1, tq: 1, tk: 129, h: 1, d: 64, causal: false },
    ];
    for (i, cs) in cases.iter().enumerate() {
        for dt in [DType::F16, DType::F32] {
            run_case(&gpu, cs, dt, Path::Generic, 100 + i as u64 * 10);
        }
    }
}

#[test]
fn attention_generic_f16_path() {
    run_generic(false);
}

#[test]
fn attention_generic_f32_path() {
    run_generic(true);
}

/// Split into per-batch, per-row-block dispatches by a small binding limit: bit-identical. A
/// smaller limit also splits K/V by keys (merged through the f32 state): equal within rounding.
#[test]
fn attention_split_bindings_match() {
    for force in [false, true] {
        let gpu = gpu(force);
        for dt in [DType::F16, DType::F32] {
            let (b, tq, tk, c) = (2, 129, 77, 128);
            let q = Tensor::from_f32(&gpu, &[b, tq, c], dt, &rand(b * tq * c, 1, 2.0)).unwrap();
            let k = Tensor::from_f32(&gpu, &[b, tk, c], dt, &rand(b * tk * c, 2, 1.0)).unwrap();
            let v = Tensor::from_f32(&gpu, &[b, tk, c], dt, &rand(b * tk * c, 3, 1.0)).unwrap();
            // Per batch K/V is 77 × 128 elements (19.7 / 39.4 KB): this limit keeps it whole but
            // cuts Q and O into row blocks.
            let limit = if dt == DType::F16 { 24_000 } else { 48_000 };
            for path in [Path::Fast64, Path::Generic] {
                for causal in [false, true] {
                    let run = || attention::attention_with(&gpu, &q, &k, &v, 2, causal, path);
                    let whole = run().unwrap().to_vec_f32_blocking(&gpu).unwrap();
                    let split = ew::with_binding_limit(limit, run).unwrap().to_vec_f32_blocking(&gpu).unwrap();
                    assert!(whole == split, "{path:?} {dt:?} differs when split [{} path]", gpu.info.compute_path);
                    // 5000 bytes: 19 keys per part (5 parts, the last partial), 9 rows per block.
                    let split_k = ew::with_binding_limit(5000, run).unwrap().to_vec_f32_blocking(&gpu).unwrap();
                    let want: Vec<f64> = whole.iter().map(|&x| x as f64).collect();
                    let tol = if dt == DType::F16 { ATTN_F16_TOL } else { ATTN_F32_TOL };
                    check(&format!("{path:?} {dt:?} causal={causal} split by keys"), &gpu, &split_k, &want, tol);
                }
            }
        }
    }
}

/// K and V of 146 MiB (F32 [1, 300000, 128], over lavapipe's 128 MiB binding limit) against 7
/// queries: split by keys into 37 dispatches of at most `keys_per_dispatch(64)` keys, merged in f32.
#[test]
fn attention_keys_over_the_binding_limit() {
    let gpu = gpu(true);
    let (tq, tk, h, d) = (7usize, 300_000usize, 2usize, 64usize);
    let c = h * d;
    assert!((tk * c * 4) as u64 > gpu.limits.max_storage_buffer_binding_size);
    let qx = rand(tq * c, 7, 2.0);
    let kx: Vec<f32> = (0..tk * c).map(|i| ((i * 7919 % 10007) as f32 / 10007.0 - 0.5) * 2.0).collect();
    let vx: Vec<f32> = (0..tk * c).map(|i| ((i * 104729 % 10009) as f32 / 10009.0 - 0.5) * 2.0).collect();
    let q = Tensor::from_f32(&gpu, &[1, tq, c], DType::F32, &qx).unwrap();
    let k = Tensor::from_f32(&gpu, &[1, tk, c], DType::F32, &kx).unwrap();
    let v = Tensor::from_f32(&gpu, &[1, tk, c], DType::F32, &vx).unwrap();
    let got = attention::attention(&gpu, &q, &k, &v, h, false).unwrap().to_vec_f32_blocking(&gpu).unwrap();
    let want = attention_ref(
        &stored(&qx, DType::F32),
        &stored(&kx, DType::F32),
        &stored(&vx, DType::F32),
        1,
        tq,
        tk,
        h,
        d,
        false,
    );
    check("attention K/V 146 MiB", &gpu, &got, &want, ATTN_F32_TOL);
}

/// More keys than one dispatch takes: 20,000 keys, fast (D = 64) and generic (D = 512) paths,
/// causal too.
#[test]
fn attention_long_key_sequences() {
    let gpu = gpu(true);
    let (tq, tk) = (21usize, 20_000usize);
    for (h, d) in [(2usize, 64usize), (1, 512)] {
        let c = h * d;
        let qx = rand(tq * c, 7, 2.0);
        let kx = rand(tk * c, 8, 1.0);
        let vx = rand(tk * c, 9, 1.0);
        let q = Tensor::from_f32(&gpu, &[1, tq, c], DType::F32, &qx).unwrap();
        let k = Tensor::from_f32(&gpu, &[1, tk, c], DType::F32, &kx).unwrap();
        let v = Tensor::from_f32(&gpu, &[1, tk, c], DType::F32, &vx).unwrap();
        let (qr, kr, vr) = (stored(&qx, DType::F32), stored(&kx, DType::F32), stored(&vx, DType::F32));
        for causal in [false, true] {
            let got = attention::attention(&gpu, &q, &k, &v, h, causal).unwrap().to_vec_f32_blocking(&gpu).unwrap();
            let want = attention_ref(&qr, &kr, &vr, 1, tq, tk, h, d, causal);
            check(&format!("attention {tk} keys D={d} causal={causal}"), &gpu, &got, &want, ATTN_F32_TOL);
        }
    }
}

/// 4096 queries (the UNet's 64² level) allocate nothing but the output: no score matrix.
#[test]
fn attention_allocates_only_its_output() {
    let gpu = gpu(true);
    let (t, c) = (4096, 64);
    let q = Tensor::from_f32(&gpu, &[1, t, c], DType::F16, &rand(t * c, 1, 1.0)).unwrap();
    let kv = Tensor::from_f32(&gpu, &[1, 77, c], DType::F16, &rand(77 * c, 2, 1.0)).unwrap();
    let (before, _) = gpu.memory_stats();
    let o = attention::attention(&gpu, &q, &kv, &kv, 1, false).unwrap();
    gpu.sync().unwrap();
    let (after, _) = gpu.memory_stats();
    // The output, plus the two 32-byte placeholders bound for the (unused) split-key state.
    let allowed = o.byte_len_padded().next_power_of_two() + 2 * 32;
    assert!(after - before <= allowed, "attention allocated {} bytes, more than its output", after - before);
}

#[test]
fn attention_rejects_bad_shapes() {
    let gpu = gpu(true);
    let q = Tensor::zeros(&gpu, &[1, 4, 96], DType::F16).unwrap();
    let k = Tensor::zeros(&gpu, &[1, 5, 96], DType::F16).unwrap();
    let k32 = Tensor::zeros(&gpu, &[1, 5, 96], DType::F32).unwrap();
    let e = attention::attention(&gpu, &q, &k, &k, 5, false).unwrap_err().to_string();
    assert!(e.contains("96 channels") && e.contains("5 heads"), "{e}");
    let e = attention::attention(&gpu, &q, &k, &k, 16, false).unwrap_err().to_string();
    assert!(e.contains("head dim 6"), "{e}");
    let e = attention::attention(&gpu, &q, &k32, &k32, 1, false).unwrap_err().to_string();
    assert!(e.contains("dtype"), "{e}");
    let e = attention::attention_with(&gpu, &q, &k, &k, 1, false, Path::Fast64).unwrap_err().to_string();
    assert!(e.contains("fast path"), "{e}");
}

/// Q and O of 146 MiB (F32 [1, 300000, 128], over lavapipe's 128 MiB binding limit) against 8
/// keys, cheap enough for lavapipe; checked on a sample of rows. K/V of one batch element must
/// fit one binding (see `attention`'s docs).
#[test]
fn attention_query_over_the_binding_limit() {
    let gpu = gpu(true);
    let (tq, tk, h, d) = (300_000usize, 8usize, 2usize, 64usize);
    let c = h * d;
    assert!((tq * c * 4) as u64 > gpu.limits.max_storage_buffer_binding_size);
    let qx: Vec<f32> = (0..tq * c).map(|i| ((i * 7919 % 10007) as f32 / 10007.0 - 0.5) * 4.0).collect();
    let kx = rand(tk * c, 5, 1.0);
    let vx = rand(tk * c, 6, 1.0);
    let q = Tensor::from_f32(&gpu, &[1, tq, c], DType::F32, &qx).unwrap();
    let k = Tensor::from_f32(&gpu, &[1, tk, c], DType::F32, &kx).unwrap();
    let v = Tensor::from_f32(&gpu, &[1, tk, c], DType::F32, &vx).unwrap();
    let got = attention::attention(&gpu, &q, &k, &v, h, false).unwrap().to_vec_f32_blocking(&gpu).unwrap();
    let (kr, vr) = (stored(&kx, DType::F32), stored(&vx, DType::F32));
    let rows: Vec<usize> = (0..tq).step_by(4999).chain([tq - 1]).collect();
    let mut g = Vec::new();
    let mut w = Vec::new();
    for &r in &rows {
        let qr = stored(&qx[r * c..(r + 1) * c], DType::F32);
        w.extend(attention_ref(&qr, &kr, &vr, 1, 1, tk, h, d, false));
        g.extend_from_slice(&got[r * c..(r + 1) * c]);
    }
    check("attention Q 146 MiB", &gpu, &g, &w, ATTN_F32_TOL);
}
