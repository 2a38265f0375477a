//! Group norm, layer norm and softmax against CPU f64 references, on lavapipe, on both compute
//! paths, F16 and F32 activations, odd sizes, multi-slice groups, large means, split bindings and
//! a real tensor above the 128 MiB binding limit.

mod common;

use sdxl_web::gpu::{DType, Tensor};
use sdxl_web::ops::{elementwise as ew, norm};

use common::{check_close as check, gpu, rand, upload};
use sdxl_web::selfcheck::norm_ref;
/// F32 outputs: mean and variance come from f32 sums over slices of up to 16,384 elements
/// (merged in f32), so the normalised value carries ~1e-6 relative error; outputs are O(1-10).
const NORM_F32_TOL: f64 = 2e-5;
/// F16 outputs: one f16 rounding of the result (2^-11 relative), allow one ulp plus the f32 error.
const F16_REL_TOL: f64 = 1.0 / 1024.0;
/// Large-mean inputs (mean 5000, std 1): the shifted sums keep the variance to f32 precision of
/// the deviations, but each input is itself only known to ulp(5000) = 4.9e-4 relative to std 1.
const LARGE_MEAN_TOL: f64 = 2e-3;
/// Softmax F32: exp of f32 differences (WGSL exp: 3 + 2|x| ulp) divided by an f32 sum.
const SOFTMAX_F32_TOL: f64 = 1e-5;

fn tol_for(dt: DType, f32_tol: f64) -> (f64, f64) {
    match dt {
        DType::F16 => (f32_tol, F16_REL_TOL),
        DType::F32 => (f32_tol, f32_tol),
    }
}

fn run_group_norm(force_f32: bool) {
    let gpu = gpu(force_f32);
    // (shape, eps): odd spatial sizes, 10 channels per group (SDXL 320), a group over one slice
    // (2 × 96 × 96 = 18,432 and 1 × 129 × 129 = 16,641 elements), 1×1 spatial, batch 2.
    let cases: [(&[usize], f32); 5] = [
        (&[2, 64, 5, 7], 1e-5),
        (&[1, 320, 3, 3], 1e-5),
        (&[1, 64, 96, 96], 1e-6),
        (&[1, 32, 129, 129], 1e-6),
        (&[2, 96, 1, 1], 1e-5),
    ];
    for (i, (shape, eps)) in cases.iter().enumerate() {
        let n: usize = shape.iter().product();
        let c = shape[1];
        let inner = n / (shape[0] * c);
        let x: Vec<f32> = rand(n, i as u64, 3.0).iter().enumerate().map(|(j, v)| v + (j / inner % 7) as f32).collect();
        for (xd, wd) in [(DType::F16, DType::F16), (DType::F32, DType::F16), (DType::F32, DType::F32)] {
            let (xt, xr) = upload(&gpu, shape, xd, &x);
            let (gt, gr) = upload(&gpu, &[c], wd, &rand(c, 100 + i as u64, 1.5));
            let (bt, br) = upload(&gpu, &[c], wd, &rand(c, 200 + i as u64, 0.5));
            for silu in [false, true] {
                let y = norm::group_norm(&gpu, &xt, 32, &gt, &bt, *eps, silu).unwrap();
                assert_eq!(y.shape(), *shape);
                let want = norm_ref(&xr, c / 32 * inner, inner, &gr, &br, *eps as f64, silu);
                let got = y.to_vec_f32_blocking(&gpu).unwrap();
                check(
                    &format!("group_norm {shape:?} {xd:?} w {wd:?} silu={silu}"),
                    &gpu,
                    &got,
                    &want,
                    tol_for(xd, NORM_F32_TOL),
                );
            }
        }
    }
    let x = Tensor::zeros(&gpu, &[1, 30, 2, 2], DType::F32).unwrap();
    let g = Tensor::zeros(&gpu, &[30], DType::F16).unwrap();
    let e = norm::group_norm(&gpu, &x, 32, &g, &g, 1e-5, false).unwrap_err().to_string();
    assert!(e.contains("32 groups") && e.contains("[1, 30, 2, 2]"), "{e}");
}

#[test]
fn group_norm_f16_path() {
    run_group_norm(false);
}

#[test]
fn group_norm_f32_path() {
    run_group_norm(true);
}

/// VAE-like activations with a large mean: E[x²] - E[x]² in f32 would lose every digit here.
#[test]
fn group_norm_is_stable_for_large_means() {
    for force in [false, true] {
        let gpu = gpu(force);
        let shape = [1usize, 64, 48, 48];
        let n: usize = shape.iter().product();
        let x: Vec<f32> = rand(n, 7, 1.7).iter().map(|v| 5000.0 + v).collect();
        let (xt, xr) = upload(&gpu, &shape, DType::F32, &x);
        let (gt, gr) = upload(&gpu, &[64], DType::F16, &vec![1.0; 64]);
        let (bt, br) = upload(&gpu, &[64], DType::F16, &vec![0.0; 64]);
        let y = norm::group_norm(&gpu, &xt, 32, &gt, &bt, 1e-6, false).unwrap();
        let want = norm_ref(&xr, 2 * 48 * 48, 48 * 48, &gr, &br, 1e-6, false);
        check(
            "group_norm mean 5000",
            &gpu,
            &y.to_vec_f32_blocking(&gpu).unwrap(),
            &want,
            (LARGE_MEAN_TOL, LARGE_MEAN_TOL),
        );
    }
}

fn run_layer_norm(force_f32: bool) {
    let gpu = gpu(force_f32);
    for (i, shape) in [&[2usize, 77, 768][..], &[1, 129, 33], &[7, 1], &[1, 4096, 640]].iter().enumerate() {
        let n: usize = shape.iter().product();
        let c = *shape.last().unwrap();
        let x: Vec<f32> =
            rand(n, 30 + i as u64, 2.0).iter().enumerate().map(|(j, v)| v * (1.0 + (j / c % 5) as f32)).collect();
        for xd in [DType::F16, DType::F32] {
            let (xt, xr) = upload(&gpu, shape, xd, &x);
            let (gt, gr) = upload(&gpu, &[c], DType::F16, &rand(c, 40, 1.0));
            let (bt, br) = upload(&gpu, &[c], DType::F16, &rand(c, 41, 1.0));
            let y = norm::layer_norm(&gpu, &xt, &gt, &bt, 1e-5).unwrap();
            let want = norm_ref(&xr, c, 1, &gr, &br, 1e-5, false);
            check(
                &format!("layer_norm {shape:?} {xd:?}"),
                &gpu,
                &y.to_vec_f32_blocking(&gpu).unwrap(),
                &want,
                tol_for(xd, NORM_F32_TOL),
            );
        }
    }
}

#[test]
fn layer_norm_f16_path() {
    run_layer_norm(false);
}

#[test]
fn layer_norm_f32_path() {
    run_layer_norm(true);
}

fn softmax_ref(x: &[f64], len: usize) -> Vec<f64> {
    x.chunks(len)
        .flat_map(|r| {
            let m = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = r.iter().map(|v| (v - m).exp()).sum();
            r.iter().map(move |v| (v - m).exp() / s).collect::<Vec<_>>()
        })
        .collect()
}

fn run_softmax(force_f32: bool) {
    let gpu = gpu(force_f32);
    for (i, (rows, len, offset)) in
        [(2usize, 77usize, 0.0f32), (3, 129, 1000.0), (5, 1, 0.0), (1, 4096, -50.0)].iter().enumerate()
    {
        let x: Vec<f32> = rand(rows * len, 50 + i as u64, 8.0).iter().map(|v| v + offset).collect();
        for xd in [DType::F16, DType::F32] {
            let (xt, xr) = upload(&gpu, &[*rows, *len], xd, &x);
            let y = norm::softmax(&gpu, &xt).unwrap();
            let tol = match xd {
                DType::F16 => (1e-6, F16_REL_TOL),
                DType::F32 => (1e-9, SOFTMAX_F32_TOL),
            };
            check(
                &format!("softmax {rows}x{len} +{offset} {xd:?}"),
                &gpu,
                &y.to_vec_f32_blocking(&gpu).unwrap(),
                &softmax_ref(&xr, *len),
                tol,
            );
        }
    }
}

#[test]
fn softmax_f16_path() {
    run_softmax(false);
}

#[test]
fn softmax_f32_path() {
    run_softmax(true);
}

/// The same ops with a binding limit of a few KiB: many windows, unaligned starts, F16 chunk
/// edges mid-word. With 40 KB the results must be bit-identical to the unsplit ones; at 8000
/// bytes the statistics slices themselves shrink, so the sums differ by f32 rounding only.
#[test]
fn split_bindings_match() {
    for force in [false, true] {
        let gpu = gpu(force);
        for dt in [DType::F16, DType::F32] {
            let x = Tensor::from_f32(&gpu, &[2, 64, 5, 7], dt, &rand(2 * 64 * 35, 1, 2.0)).unwrap();
            let big = Tensor::from_f32(&gpu, &[1, 32, 129, 129], dt, &rand(32 * 129 * 129, 2, 2.0)).unwrap();
            let l = Tensor::from_f32(&gpu, &[3, 77, 33], dt, &rand(3 * 77 * 33, 3, 2.0)).unwrap();
            let g = Tensor::from_f32(&gpu, &[64], DType::F16, &rand(64, 4, 1.0)).unwrap();
            let b = Tensor::from_f32(&gpu, &[64], DType::F16, &rand(64, 5, 1.0)).unwrap();
            let g2 = Tensor::from_f32(&gpu, &[32], DType::F16, &rand(32, 6, 1.0)).unwrap();
            let g3 = Tensor::from_f32(&gpu, &[33], DType::F16, &rand(33, 7, 1.0)).unwrap();
            let run = || -> Vec<Vec<f32>> {
                [
                    norm::group_norm(&gpu, &x, 32, &g, &b, 1e-5, true).unwrap(),
                    norm::group_norm(&gpu, &big, 32, &g2, &g2, 1e-6, false).unwrap(),
                    norm::layer_norm(&gpu, &l, &g3, &g3, 1e-5).unwrap(),
                    norm::softmax(&gpu, &l).unwrap(),
                ]
                .iter()
                .map(|t| t.to_vec_f32_blocking(&gpu).unwrap())
                .collect()
            };
            let whole = run();
            // 40 KiB: a 16,641-element group spans several windows of whole slices.
            for limit in [8000u64, 40_000] {
                let split = ew::with_binding_limit(limit, run);
                for (i, (a, s)) in whole.iter().zip(&split).enumerate() {
                    if limit >= 40_000 {
                        assert!(
                            a == s,
                            "op #{i} {dt:?} differs with a {limit}-byte binding limit [{} path]",
                            gpu.info.compute_path
                        );
                    } else {
                        let want: Vec<f64> = a.iter().map(|&v| v as f64).collect();
                        check(
                            &format!("op #{i} {dt:?}, {limit}-byte limit"),
                            &gpu,
                            s,
                            &want,
                            tol_for(dt, NORM_F32_TOL),
                        );
                    }
                }
            }
        }
    }
}

/// Group norm + SiLU on a 144 MiB F32 activation (1 × 64 × 768 × 768, above lavapipe's
/// 128 MiB binding limit), checked on a strided sample against f64 statistics of every group.
#[test]
fn group_norm_over_the_binding_limit() {
    let gpu = gpu(true);
    let shape = [1usize, 64, 768, 768];
    let n: usize = shape.iter().product();
    assert!((n * 4) as u64 > gpu.limits.max_storage_buffer_binding_size);
    let inner = 768 * 768;
    let x: Vec<f32> =
        (0..n).map(|i| ((i * 7919 % 10007) as f32 / 10007.0 - 0.5) * 6.0 + (i / inner % 5) as f32).collect();
    let xt = Tensor::from_f32(&gpu, &shape, DType::F32, &x).unwrap();
    let gamma: Vec<f32> = (0..64).map(|i| 0.5 + i as f32 / 64.0).collect();
    let beta: Vec<f32> = (0..64).map(|i| i as f32 / 128.0 - 0.25).collect();
    let gt = Tensor::from_f32(&gpu, &[64], DType::F16, &gamma).unwrap();
    let bt = Tensor::from_f32(&gpu, &[64], DType::F16, &beta).unwrap();
    let got = norm::group_norm(&gpu, &xt, 32, &gt, &bt, 1e-6, true).unwrap().to_vec_f32_blocking(&gpu).unwrap();
    let glen = 2 * inner;
    let stats: Vec<(f64, f64)> = x
        .chunks(glen)
        .map(|g| {
            let mean = g.iter().map(|&v| v as f64).sum::<f64>() / glen as f64;
            let var = g.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / glen as f64;
            (mean, 1.0 / (var + 1e-6).sqrt())
        })
        .collect();
    let idx: Vec<usize> = (0..n).step_by(1009).chain([n - 1]).collect();
    let want: Vec<f64> = idx
        .iter()
        .map(|&i| {
            let (m, r) = stats[i / glen];
            let ch = i / inner;
            let g = half::f16::from_f32(gamma[ch]).to_f64();
            let b = half::f16::from_f32(beta[ch]).to_f64();
            let o = (x[i] as f64 - m) * r * g + b;
            o / (1.0 + (-o).exp())
        })
        .collect();
    let g: Vec<f32> = idx.iter().map(|&i| got[i]).collect();
    check("group_norm+silu 144 MiB", &gpu, &g, &want, (NORM_F32_TOL, NORM_F32_TOL));
}
