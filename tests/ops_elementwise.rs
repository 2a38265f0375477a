//! Elementwise and layout ops against CPU f64 references, on lavapipe, on both compute paths,
//! with F16 and F32 activations, odd sizes, split bindings (a reduced binding limit) and one
//! set of real tensors above the 128 MiB binding limit.

mod common;

use sdxl_web::gpu::{DType, Gpu, Tensor};
use sdxl_web::ops::elementwise as ew;

use common::{check_close as check, gpu, rand, upload};
use sdxl_web::selfcheck::{erf64, geglu_ref, gelu64, sigmoid as sigmoid64, upsample_ref};
/// F32 outputs of plain arithmetic (add, mul, copy, transposes): a couple of f32 roundings.
const F32_TOL: f64 = 1e-6;
/// F32 outputs through exp / erf (SiLU, GELU, quick_gelu): erf is faithfully rounded (~1 ulp)
/// and WGSL's exp allows 3 + 2|x| ulp, so a few ulp of the result's magnitude.
const F32_TRANSCENDENTAL_TOL: f64 = 2e-6;
/// F16 outputs: the result is rounded to f16 once (half an ulp, 2^-11 relative); allow one ulp.
const F16_REL_TOL: f64 = 1.0 / 1024.0;
/// Timestep embedding: the argument t·f is formed in f32 exactly as torch does; what remains is
/// sin/cos of a reduced argument (|r| <= pi), a few f32 ulp.
const TIMESTEP_TOL: f64 = 1e-5;

/// Tolerance for an output of dtype `dt` whose f32 tolerance is `f32_tol`.
fn tol_for(dt: DType, f32_tol: f64) -> (f64, f64) {
    match dt {
        // (abs, rel): abs covers f16 subnormals / values near zero.
        DType::F16 => (1e-6, F16_REL_TOL),
        DType::F32 => (f32_tol, f32_tol),
    }
}

// ---- f64 references ---------------------------------------------------------------------------

#[test]
fn erf_reference_is_right() {
    // math.erf values.
    assert!((erf64(1.0) - 0.8427007929497149).abs() < 1e-15);
    assert!((erf64(3.0) - 0.9999779095030014).abs() < 1e-15);
    assert!((erf64(-0.5) + 0.5204998778130465).abs() < 1e-15);
    // Series and continued fraction agree where they meet (erf' (3) = 1.4e-4).
    assert!((erf64(2.9999999) - erf64(3.0)).abs() < 1e-10);
}

// ---- unary ---------------------------------------------------------------------------------------

fn run_unary(force_f32: bool) {
    let gpu = gpu(force_f32);
    type Case = (ew::Unary, fn(f64) -> f64, f64);
    let cases: [Case; 5] = [
        (ew::Unary::Silu, |x| x * sigmoid64(x), F32_TRANSCENDENTAL_TOL),
        (ew::Unary::Gelu, gelu64, F32_TRANSCENDENTAL_TOL),
        (ew::Unary::QuickGelu, |x| x * sigmoid64(1.702 * x), F32_TRANSCENDENTAL_TOL),
        (ew::Unary::Affine(0.18215, -0.5), |x| 0.18215f32 as f64 * x - 0.5, F32_TOL),
        (ew::Unary::Copy, |x| x, F32_TOL),
    ];
    for n in [1usize, 7, 1001, 65_537] {
        let mut x = rand(n, n as u64, 9.0);
        // Tails where exp over/underflows.
        if n > 8 {
            x[0] = -100.0;
            x[1] = 100.0;
            x[2] = 0.0;
            x[3] = -1e-3;
        }
        for (op, f, t32) in cases {
            for xd in [DType::F16, DType::F32] {
                for yd in [DType::F16, DType::F32] {
                    let (xt, xs) = upload(&gpu, &[n], xd, &x);
                    let got = ew::unary(&gpu, &xt, op, yd).unwrap().to_vec_f32_blocking(&gpu).unwrap();
                    let want: Vec<f64> = xs.iter().map(|&v| f(v)).collect();
                    check(&format!("{op:?} n={n} {xd:?}->{yd:?}"), &gpu, &got, &want, tol_for(yd, t32));
                }
            }
        }
    }
}

#[test]
fn unary_ops_f16_path() {
    run_unary(false);
}

#[test]
fn unary_ops_f32_path() {
    run_unary(true);
}

/// Exact GELU needs erf to < 1e-6: a dense sweep in f32, relative to the result.
#[test]
fn gelu_is_exact_to_f32_precision() {
    for force in [false, true] {
        let gpu = gpu(force);
        let n = 200_001;
        let x: Vec<f32> = (0..n).map(|i| -10.0 + 20.0 * i as f32 / (n - 1) as f32).collect();
        let xt = Tensor::from_f32(&gpu, &[n], DType::F32, &x).unwrap();
        let got = ew::gelu(&gpu, &xt).unwrap().to_vec_f32_blocking(&gpu).unwrap();
        let want: Vec<f64> = x.iter().map(|&v| gelu64(v as f64)).collect();
        // 1e-6 absolute plus a few ulp of the result (|gelu| reaches 10 here).
        check("gelu sweep", &gpu, &got, &want, (1e-6, 1e-6));
    }
}

// ---- binary --------------------------------------------------------------------------------------

fn bcast_ref(a: &[f64], ash: &[usize], b: &[f64], bsh: &[usize], out: &[usize], f: fn(f64, f64) -> f64) -> Vec<f64> {
    let n: usize = out.iter().product();
    let idx = |sh: &[usize], coord: &[usize]| -> usize {
        let off = out.len() - sh.len();
        let mut i = 0;
        for (d, &s) in sh.iter().enumerate() {
            i = i * s + if s == 1 { 0 } else { coord[d + off] };
        }
        i
    };
    (0..n)
        .map(|e| {
            let mut coord = vec![0; out.len()];
            let mut r = e;
            for d in (0..out.len()).rev() {
                coord[d] = r % out[d];
                r /= out[d];
            }
            f(a[idx(ash, &coord)], b[idx(bsh, &coord)])
        })
        .collect()
}

fn run_binary(force_f32: bool) {
    let gpu = gpu(force_f32);
    let shapes: [(&[usize], &[usize], &[usize]); 5] = [
        (&[2, 5, 7, 3], &[2, 5, 1, 1], &[2, 5, 7, 3]), // + time embedding [B, C, 1, 1]
        (&[2, 77, 33], &[33], &[2, 77, 33]),           // + bias [C]
        (&[3, 1, 5], &[1, 4, 1], &[3, 4, 5]),          // both broadcast
        (&[129], &[129], &[129]),                      // residual, same shape
        (&[1, 7], &[2, 3, 1], &[2, 3, 7]),             // rank padding on the left
    ];
    for (i, (sa, sb, so)) in shapes.iter().enumerate() {
        let na: usize = sa.iter().product();
        let nb: usize = sb.iter().product();
        let xa = rand(na, 10 + i as u64, 4.0);
        let xb = rand(nb, 20 + i as u64, 4.0);
        for (op, f) in [(ew::Binary::Add, (|a, b| a + b) as fn(f64, f64) -> f64), (ew::Binary::Mul, |a, b| a * b)] {
            for (da, db, dy) in [
                (DType::F16, DType::F16, DType::F16),
                (DType::F32, DType::F32, DType::F32),
                (DType::F16, DType::F32, DType::F32),
                (DType::F32, DType::F16, DType::F16),
            ] {
                let (ta, ra) = upload(&gpu, sa, da, &xa);
                let (tb, rb) = upload(&gpu, sb, db, &xb);
                let y = ew::binary(&gpu, &ta, &tb, op, dy).unwrap();
                assert_eq!(y.shape(), *so);
                let got = y.to_vec_f32_blocking(&gpu).unwrap();
                let want = bcast_ref(&ra, sa, &rb, sb, so, f);
                check(&format!("{op:?} {sa:?} {sb:?} {da:?},{db:?}->{dy:?}"), &gpu, &got, &want, tol_for(dy, F32_TOL));
            }
        }
    }
    let a = Tensor::zeros(&gpu, &[2, 3], DType::F32).unwrap();
    let b = Tensor::zeros(&gpu, &[4], DType::F32).unwrap();
    let e = ew::add(&gpu, &a, &b).unwrap_err().to_string();
    assert!(e.contains("[2, 3]") && e.contains("[4]") && e.contains("broadcast"), "{e}");
}

#[test]
fn binary_broadcast_f16_path() {
    run_binary(false);
}

#[test]
fn binary_broadcast_f32_path() {
    run_binary(true);
}

// ---- GEGLU, upsample, concat, transpose ------------------------------------------------------------

/// torch's nearest_idx for a given output size: min(floor(dst · (in / out) as f32), in − 1).
fn upsample_to_ref(x: &[f64], h: usize, w: usize, oh: usize, ow: usize) -> Vec<f64> {
    let (sh, sw) = (h as f32 / oh as f32, w as f32 / ow as f32);
    let idx = |o: usize, s: f32, n: usize| (((o as f32) * s).floor() as usize).min(n - 1);
    let mut y = Vec::with_capacity(x.len() / (h * w) * oh * ow);
    for p in x.chunks(h * w) {
        for oy in 0..oh {
            for ox in 0..ow {
                y.push(p[idx(oy, sh, h) * w + idx(ox, sw, w)]);
            }
        }
    }
    y
}

fn concat_ref(xs: &[(&[f64], usize)], b: usize, inner: usize) -> Vec<f64> {
    let mut y = Vec::new();
    for bi in 0..b {
        for (x, c) in xs {
            y.extend_from_slice(&x[bi * c * inner..(bi + 1) * c * inner]);
        }
    }
    y
}

fn transpose_ref(x: &[f64], r: usize, s: usize) -> Vec<f64> {
    let mut y = Vec::with_capacity(x.len());
    for m in x.chunks(r * s) {
        for j in 0..s {
            for i in 0..r {
                y.push(m[i * s + j]);
            }
        }
    }
    y
}

fn run_layout(force_f32: bool) {
    let gpu = gpu(force_f32);
    for dt in [DType::F16, DType::F32] {
        // GEGLU: odd F, 129 rows.
        for (rows, f) in [(14usize, 37usize), (129, 64), (1, 1)] {
            let x = rand(rows * 2 * f, rows as u64, 3.0);
            let (t, r) = upload(&gpu, &[rows, 2 * f], dt, &x);
            let y = ew::geglu(&gpu, &t).unwrap();
            assert_eq!(y.shape(), [rows, f]);
            check(
                &format!("geglu {rows}x{f} {dt:?}"),
                &gpu,
                &y.to_vec_f32_blocking(&gpu).unwrap(),
                &geglu_ref(&r, f),
                tol_for(dt, F32_TRANSCENDENTAL_TOL),
            );
        }
        // Upsample: odd H, W.
        let (b, c, h, w) = (2, 3, 5, 7);
        let x = rand(b * c * h * w, 5, 2.0);
        let (t, r) = upload(&gpu, &[b, c, h, w], dt, &x);
        let y = ew::upsample_nearest_2x(&gpu, &t).unwrap();
        assert_eq!(y.shape(), [b, c, 2 * h, 2 * w]);
        check(
            &format!("upsample {dt:?}"),
            &gpu,
            &y.to_vec_f32_blocking(&gpu).unwrap(),
            &upsample_ref(&r, h, w),
            tol_for(dt, 0.0),
        );
        // Upsample to a given size (UNet up path for odd latent sides: 3→5, 5→9, and 2× exactly).
        for (h, w, oh, ow) in [(3usize, 5usize, 5usize, 9usize), (5, 3, 9, 6), (2, 2, 4, 4), (1, 1, 3, 1)] {
            let x = rand(b * c * h * w, 6, 2.0);
            let (t, r) = upload(&gpu, &[b, c, h, w], dt, &x);
            let y = ew::upsample_nearest_to(&gpu, &t, oh, ow).unwrap();
            assert_eq!(y.shape(), [b, c, oh, ow]);
            check(
                &format!("upsample_to {h}x{w}->{oh}x{ow} {dt:?}"),
                &gpu,
                &y.to_vec_f32_blocking(&gpu).unwrap(),
                &upsample_to_ref(&r, h, w, oh, ow),
                tol_for(dt, 0.0),
            );
        }
        // Concat: inner 5·5 = 25 is odd, so F16 blocks start mid-word.
        let (xa, xb, xc) = (rand(2 * 3 * 25, 1, 1.0), rand(2 * 4 * 25, 2, 1.0), rand(2 * 25, 3, 1.0));
        let (ta, ra) = upload(&gpu, &[2, 3, 5, 5], dt, &xa);
        let (tb, rb) = upload(&gpu, &[2, 4, 5, 5], dt, &xb);
        let (tc, rc) = upload(&gpu, &[2, 1, 5, 5], dt, &xc);
        let y = ew::concat_channels(&gpu, &[&ta, &tb, &tc]).unwrap();
        assert_eq!(y.shape(), [2, 8, 5, 5]);
        let want = concat_ref(&[(&ra, 3), (&rb, 4), (&rc, 1)], 2, 25);
        check(&format!("concat {dt:?}"), &gpu, &y.to_vec_f32_blocking(&gpu).unwrap(), &want, tol_for(dt, 0.0));
        // Transposes: odd R (F16 words straddle rows), tiles of 32 crossed.
        for (bb, r, s) in [(2usize, 7usize, 129usize), (1, 64, 33), (3, 33, 1), (1, 1, 5)] {
            let x = rand(bb * r * s, (r * s) as u64, 5.0);
            let (t, rf) = upload(&gpu, &[bb, r, s], dt, &x);
            let y = ew::transpose_last2(&gpu, &t).unwrap();
            assert_eq!(y.shape(), [bb, s, r]);
            check(
                &format!("transpose {bb}x{r}x{s} {dt:?}"),
                &gpu,
                &y.to_vec_f32_blocking(&gpu).unwrap(),
                &transpose_ref(&rf, r, s),
                tol_for(dt, 0.0),
            );
        }
        // NCHW <-> tokens round trip.
        let x = rand(2 * 10 * 3 * 5, 9, 5.0);
        let (t, rf) = upload(&gpu, &[2, 10, 3, 5], dt, &x);
        let tok = ew::nchw_to_tokens(&gpu, &t).unwrap();
        assert_eq!(tok.shape(), [2, 15, 10]);
        check(
            "nchw_to_tokens",
            &gpu,
            &tok.to_vec_f32_blocking(&gpu).unwrap(),
            &transpose_ref(&rf, 10, 15),
            tol_for(dt, 0.0),
        );
        let back = ew::tokens_to_nchw(&gpu, &tok, 3, 5).unwrap();
        assert_eq!(back.shape(), [2, 10, 3, 5]);
        check("tokens_to_nchw", &gpu, &back.to_vec_f32_blocking(&gpu).unwrap(), &rf, tol_for(dt, 0.0));
        // Row slices (OpenCLIP's fused q/k/v split): rows 2..5 of [6, 4, 3]; an odd row of F16
        // halves would not be whole words and is refused.
        let xs = rand(6 * 12, 5, 1.0);
        let (ts, rs) = upload(&gpu, &[6, 4, 3], DType::F32, &xs);
        let y = ew::slice_rows(&gpu, &ts, 2, 5).unwrap();
        assert_eq!(y.shape(), [3, 4, 3]);
        check("slice_rows", &gpu, &y.to_vec_f32_blocking(&gpu).unwrap(), &rs[24..60], (0.0, 0.0));
        let odd = Tensor::from_f32(&gpu, &[4, 3], DType::F16, &xs[..12]).unwrap();
        assert!(ew::slice_rows(&gpu, &odd, 1, 2).is_err());
        assert!(ew::slice_rows(&gpu, &ts, 4, 7).is_err());

        // Casts both ways.
        let x = rand(1001, 4, 70_000.0);
        let t = Tensor::from_f32(&gpu, &[1001], DType::F32, &x).unwrap();
        let h = ew::cast(&gpu, &t, DType::F16).unwrap();
        let want: Vec<f64> = x.iter().map(|&v| half::f16::from_f32(v).to_f64()).collect();
        check("cast f32->f16 (inf beyond 65504)", &gpu, &h.to_vec_f32_blocking(&gpu).unwrap(), &want, (0.0, 0.0));
        let back = ew::cast(&gpu, &h, DType::F32).unwrap();
        check("cast f16->f32", &gpu, &back.to_vec_f32_blocking(&gpu).unwrap(), &want, (0.0, 0.0));
    }
}

#[test]
fn layout_ops_f16_path() {
    run_layout(false);
}

#[test]
fn layout_ops_f32_path() {
    run_layout(true);
}

// ---- embeddings -----------------------------------------------------------------------------------

/// diffusers get_timestep_embedding(flip_sin_to_cos=True, downscale_freq_shift=0): the
/// frequencies and t·f in f32 as torch computes them, then sin/cos in f64.
fn timestep_ref(t: &[f32], dim: usize) -> Vec<f64> {
    let half = dim / 2;
    let ln = -(10000f64.ln() as f32);
    let mut y = Vec::new();
    for &tv in t {
        let args: Vec<f64> = (0..half)
            .map(|i| {
                let e = (ln * i as f32) / half as f32;
                let f = (e as f64).exp() as f32; // correctly rounded f32 exp
                (tv * f) as f64
            })
            .collect();
        y.extend(args.iter().map(|a| a.cos()));
        y.extend(args.iter().map(|a| a.sin()));
        if dim % 2 == 1 {
            y.push(0.0);
        }
    }
    y
}

fn run_embeddings(force_f32: bool) {
    let gpu = gpu(force_f32);
    let t = [0.0f32, 1.0, 499.5, 999.0, 981.0];
    for dim in [320usize, 256, 7] {
        for dt in [DType::F32, DType::F16] {
            let y = ew::timestep_embedding(&gpu, &t, dim, dt).unwrap();
            assert_eq!(y.shape(), [t.len(), dim]);
            let tol = match dt {
                DType::F32 => (TIMESTEP_TOL, 0.0),
                DType::F16 => (1e-6, F16_REL_TOL),
            };
            check(
                &format!("timestep dim {dim} {dt:?}"),
                &gpu,
                &y.to_vec_f32_blocking(&gpu).unwrap(),
                &timestep_ref(&t, dim),
                tol,
            );
        }
    }
    // Token + position lookup, with odd C so F16 words straddle tokens.
    let (v, c, tlen) = (50usize, 11usize, 7usize);
    let ids: Vec<u32> = (0..2 * tlen as u32).map(|i| (i * 17 + 3) % v as u32).collect();
    for (td, pd, yd) in [
        (DType::F16, DType::F16, DType::F16),
        (DType::F16, DType::F32, DType::F32),
        (DType::F32, DType::F16, DType::F16),
    ] {
        let (tok, rt) = upload(&gpu, &[v, c], td, &rand(v * c, 1, 1.0));
        let (pos, rp) = upload(&gpu, &[9, c], pd, &rand(9 * c, 2, 1.0));
        let want: Vec<f64> = ids
            .iter()
            .enumerate()
            .flat_map(|(n, &id)| (0..c).map(move |j| (n, id as usize, j)))
            .map(|(n, id, j)| rt[id * c + j] + rp[(n % tlen) * c + j])
            .collect();
        let y = ew::embed_tokens(&gpu, &ids, tlen, &tok, &pos, yd).unwrap();
        assert_eq!(y.shape(), [2, tlen, c]);
        check("embed_tokens", &gpu, &y.to_vec_f32_blocking(&gpu).unwrap(), &want, tol_for(yd, F32_TOL));
        // The table split over several bindings (a few rows each).
        let y = ew::with_binding_limit(512, || ew::embed_tokens(&gpu, &ids, tlen, &tok, &pos, yd)).unwrap();
        check("embed_tokens split table", &gpu, &y.to_vec_f32_blocking(&gpu).unwrap(), &want, tol_for(yd, F32_TOL));
    }
    let tok = Tensor::zeros(&gpu, &[5, 4], DType::F16).unwrap();
    let pos = Tensor::zeros(&gpu, &[2, 4], DType::F16).unwrap();
    let e = ew::embed_tokens(&gpu, &[1, 9], 2, &tok, &pos, DType::F16).unwrap_err().to_string();
    assert!(e.contains("token id 9"), "{e}");
}

#[test]
fn embeddings_f16_path() {
    run_embeddings(false);
}

#[test]
fn embeddings_f32_path() {
    run_embeddings(true);
}

// ---- split bindings --------------------------------------------------------------------------------

/// Every op with a binding limit of a few hundred bytes: many dispatches, windows starting at
/// unaligned elements, F16 chunk edges mid-word. Must equal the unsplit results exactly.
fn run_split(force_f32: bool) {
    let gpu = gpu(force_f32);
    for dt in [DType::F16, DType::F32] {
        let x = rand(2 * 5 * 7 * 9, 3, 3.0);
        let xt = Tensor::from_f32(&gpu, &[2, 5, 7, 9], dt, &x).unwrap();
        let bt = Tensor::from_f32(&gpu, &[2, 5, 1, 1], dt, &rand(10, 4, 1.0)).unwrap();
        let full = Tensor::from_f32(&gpu, &[2, 5, 7, 9], dt, &rand(630, 5, 1.0)).unwrap();
        let g = Tensor::from_f32(&gpu, &[2, 5, 7, 18], dt, &rand(1260, 6, 2.0)).unwrap();
        let run = |g_: &Gpu| -> Vec<Vec<f32>> {
            let outs = vec![
                ew::silu(g_, &xt).unwrap(),
                ew::add(g_, &xt, &bt).unwrap(),
                ew::mul(g_, &xt, &full).unwrap(),
                ew::geglu(g_, &g).unwrap(),
                ew::upsample_nearest_2x(g_, &xt).unwrap(),
                ew::concat_channels(g_, &[&xt, &full]).unwrap(),
                ew::transpose_last2(g_, &xt.reshape(&[10, 7, 9]).unwrap()).unwrap(),
                ew::transpose_last2(g_, &xt.reshape(&[1, 18, 35]).unwrap()).unwrap(),
                ew::cast(g_, &xt, DType::F32).unwrap(),
            ];
            outs.iter().map(|t| t.to_vec_f32_blocking(g_).unwrap()).collect()
        };
        let whole = run(&gpu);
        for limit in [300u64, 1000, 4096] {
            let split = ew::with_binding_limit(limit, || run(&gpu));
            for (i, (a, b)) in whole.iter().zip(&split).enumerate() {
                assert!(
                    a == b,
                    "op #{i} {dt:?} differs with a {limit}-byte binding limit [{} path]",
                    gpu.info.compute_path
                );
            }
        }
    }
}

#[test]
fn split_bindings_f16_path() {
    run_split(false);
}

#[test]
fn split_bindings_f32_path() {
    run_split(true);
}

// ---- real tensors above the 128 MiB binding limit ----------------------------------------------------

/// F32 activations of VAE size: SiLU and a broadcast add on a 144 MiB tensor, upsample to
/// 144 MiB, concat into 180 MiB, a 144 MiB transpose. Checked on a strided sample of elements
/// (every element would cost minutes of f64 reference on two cores).
#[test]
fn tensors_over_the_binding_limit() {
    let gpu = gpu(true);
    let limit = gpu.limits.max_storage_buffer_binding_size;
    let (c, hw) = (36usize, 1024 * 1024);
    let n = c * hw;
    assert!((n * 4) as u64 > limit, "the test tensor must exceed the binding limit ({limit})");
    let x: Vec<f32> = (0..n).map(|i| ((i * 7919 % 10007) as f32 / 10007.0 - 0.5) * 8.0).collect();
    let xt = Tensor::from_f32(&gpu, &[1, c, 1024, 1024], DType::F32, &x).unwrap();
    let stride = 997;
    let sample = |got: &[f32], want: &dyn Fn(usize) -> f64, what: &str, tol: f64| {
        let idx: Vec<usize> = (0..got.len()).step_by(stride).chain([got.len() - 1]).collect();
        let g: Vec<f32> = idx.iter().map(|&i| got[i]).collect();
        let w: Vec<f64> = idx.iter().map(|&i| want(i)).collect();
        check(what, &gpu, &g, &w, (tol, tol));
    };

    let y = ew::silu(&gpu, &xt).unwrap().to_vec_f32_blocking(&gpu).unwrap();
    sample(&y, &|i| x[i] as f64 * sigmoid64(x[i] as f64), "silu 144 MiB", F32_TRANSCENDENTAL_TOL);
    drop(y);

    let bias: Vec<f32> = (0..c).map(|i| i as f32 * 0.25).collect();
    let bt = Tensor::from_f32(&gpu, &[1, c, 1, 1], DType::F32, &bias).unwrap();
    let y = ew::add(&gpu, &xt, &bt).unwrap().to_vec_f32_blocking(&gpu).unwrap();
    sample(&y, &|i| x[i] as f64 + bias[i / hw] as f64, "add [1,36,1024,1024] + [1,36,1,1]", F32_TOL);
    drop(y);

    let small = Tensor::from_f32(&gpu, &[1, 9, 1024, 1024], DType::F32, &x[..9 * hw]).unwrap();
    let y = ew::upsample_nearest_2x(&gpu, &small).unwrap().to_vec_f32_blocking(&gpu).unwrap();
    sample(
        &y,
        &|i| {
            let (p, rem) = (i / (4 * hw), i % (4 * hw));
            let (oy, ox) = (rem / 2048, rem % 2048);
            x[p * hw + (oy / 2) * 1024 + ox / 2] as f64
        },
        "upsample to 144 MiB",
        0.0,
    );
    drop(y);

    let y = ew::concat_channels(&gpu, &[&xt, &small]).unwrap().to_vec_f32_blocking(&gpu).unwrap();
    sample(&y, &|i| if i < n { x[i] as f64 } else { x[i - n] as f64 }, "concat to 180 MiB", 0.0);
    drop(y);

    let y = ew::nchw_to_tokens(&gpu, &xt).unwrap().to_vec_f32_blocking(&gpu).unwrap();
    sample(&y, &|i| x[(i % c) * hw + i / c] as f64, "nchw_to_tokens 144 MiB", 0.0);
}
