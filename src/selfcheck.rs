//! GPU self-check, needing no model (`sdxl selfcheck`, `engine.selfCheck()`): every shader family
//! and the variants the engine builds, on the compute path in use, at small shapes that cross the
//! tiling edges (odd sizes, partial 64-wide tiles, split binding windows), against CPU references
//! in f64; plus one UNet ResBlock and one VAE mid-block attention. Each check reports its max
//! error against a named tolerance and its GPU time (timestamp queries, else wall clock).

use serde::Serialize;

use crate::gpu::{now_seconds, DType, Gpu, Tensor};
use crate::ops::attention::{self, Path};
use crate::ops::elementwise::{self as ew, Unary};
use crate::ops::{conv, linear, norm, peak, smoke};
use crate::Result;

/// Elementwise error bound: `abs + rel·|want| + arith·Σ|terms|` (the last for dot products).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Tol {
    pub name: &'static str,
    pub abs: f64,
    pub rel: f64,
    pub arith: f64,
}

/// Exact in f32 up to rounding of transcendental functions.
pub const F32_TOL: Tol = Tol { name: "f32", abs: 2e-6, rel: 2e-6, arith: 0.0 };
/// An f16 output: rounding (2⁻¹¹) plus f16 intermediate rounding.
pub const F16_OUT_TOL: Tol = Tol { name: "f16-out", abs: 2e-6, rel: 1.0 / 1024.0, arith: 0.0 };
/// A few f16 arithmetic steps on values of magnitude ~1 (the smoke kernel on the f16 path).
pub const F16_MATH_TOL: Tol = Tol { name: "f16-math", abs: 1e-3, rel: 2.0 / 1024.0, arith: 0.0 };
/// Dot products accumulated in f32.
pub const DOT_F32_TOL: Tol = Tol { name: "dot-f32", abs: 1e-30, rel: 0.0, arith: 1e-5 };
/// Dot products with f16 arithmetic.
pub const DOT_F16_TOL: Tol = Tol { name: "dot-f16", abs: 1e-30, rel: 0.0, arith: 4.0 / 2048.0 };
/// Group/layer norm in f32.
pub const NORM_F32_TOL: Tol = Tol { name: "norm-f32", abs: 2e-5, rel: 2e-5, arith: 0.0 };
/// Attention with f32 / f16 activations.
pub const ATTN_F32_TOL: Tol = Tol { name: "attn-f32", abs: 5e-6, rel: 0.0, arith: 0.0 };
pub const ATTN_F16_TOL: Tol = Tol { name: "attn-f16", abs: 2e-3, rel: 0.0, arith: 0.0 };
/// Whole blocks (several kernels, intermediates rounded to the activation dtype).
pub const BLOCK_F32_TOL: Tol = Tol { name: "block-f32", abs: 1e-4, rel: 1e-4, arith: 0.0 };
pub const BLOCK_F16_TOL: Tol = Tol { name: "block-f16", abs: 1.5e-2, rel: 1e-2, arith: 0.0 };

/// One kernel check.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// Shader family (`shaders/<family>.wgsl`), or "block".
    pub family: String,
    pub name: String,
    pub shape: String,
    pub tolerance: Tol,
    /// Largest |got − want|.
    pub max_abs_err: f64,
    /// Largest error as a multiple of its tolerance (pass: ≤ 1).
    pub worst_ratio: f64,
    pub pass: bool,
    /// Seconds of GPU time (`clock` says how it was measured).
    pub seconds: f64,
    /// "gpu" (timestamp queries) or "wall".
    pub clock: &'static str,
    /// An error running the kernel, if any (then `pass` is false).
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub adapter: String,
    pub compute_path: String,
    pub passed: bool,
    pub failures: usize,
    pub total_seconds: f64,
    pub checks: Vec<Check>,
}

impl Report {
    /// A plain-text table.
    pub fn table(&self) -> String {
        let mut s = format!("self-check on {} ({} path)\n", self.adapter, self.compute_path);
        s += &format!(
            "{:<12} {:<44} {:<22} {:>10} {:>8} {:>9}  {}\n",
            "family", "check", "shape", "max err", "x tol", "ms", ""
        );
        for c in &self.checks {
            s += &format!(
                "{:<12} {:<44} {:<22} {:>10.2e} {:>8.3} {:>9.3} {:<5} {}{}\n",
                c.family,
                c.name,
                c.shape,
                c.max_abs_err,
                c.worst_ratio,
                c.seconds * 1e3,
                c.clock,
                if c.pass { "ok" } else { "FAIL" },
                c.error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()
            );
        }
        s += &format!("{} checks, {} failed, {:.1} s\n", self.checks.len(), self.failures, self.total_seconds);
        s
    }
}

/// Compare `got` with `want`; `mag[i]` (Σ|terms| of a dot product) scales `tol.arith`.
/// Returns (max abs error, worst error / tolerance); NaN counts as infinitely wrong.
pub fn compare(got: &[f32], want: &[f64], mag: Option<&[f64]>, tol: Tol) -> (f64, f64) {
    if got.len() != want.len() {
        return (f64::INFINITY, f64::INFINITY);
    }
    let (mut max_abs, mut worst) = (0f64, 0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let e = if g as f64 == w { 0.0 } else { (g as f64 - w).abs() };
        let e = if e.is_nan() { f64::INFINITY } else { e };
        let m = mag.map_or(0.0, |m| m[i]);
        let t = tol.abs + tol.rel * w.abs() + tol.arith * m;
        max_abs = max_abs.max(e);
        worst = worst.max(e / t);
    }
    (max_abs, worst)
}

/// Deterministic pseudo-random values in [-scale, scale).
pub fn rand(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// What the GPU sees of `x` stored as `dt`.
pub fn stored(x: &[f32], dt: DType) -> Vec<f64> {
    x.iter()
        .map(|&v| match dt {
            DType::F16 => half::f16::from_f32(v).to_f64(),
            DType::F32 => v as f64,
        })
        .collect()
}

fn dn(d: DType) -> &'static str {
    match d {
        DType::F16 => "f16",
        DType::F32 => "f32",
    }
}

fn out_tol(d: DType) -> Tol {
    match d {
        DType::F16 => F16_OUT_TOL,
        DType::F32 => F32_TOL,
    }
}

// ---- CPU references -------------------------------------------------------------------------

pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// erf in f64 (~1e-13 absolute).
pub fn erf64(x: f64) -> f64 {
    let a = x.abs();
    let r = if a < 3.0 {
        // Maclaurin series: largest term ~3e3 at a = 3, so ~1e-13 absolute accuracy.
        let (mut sum, mut term, mut n) = (0.0, a, 0u32);
        loop {
            let t = term / (2 * n + 1) as f64;
            sum += t;
            if t.abs() < 1e-18 {
                break;
            }
            n += 1;
            term *= -a * a / n as f64;
        }
        sum * std::f64::consts::FRAC_2_SQRT_PI
    } else {
        // erfc continued fraction x + (1/2)/(x + (2/2)/(x + (3/2)/ ...)), fast for x >= 3.
        let mut t = a;
        for k in (1..=80).rev() {
            t = a + (k as f64 / 2.0) / t;
        }
        1.0 - (-a * a).exp() / (std::f64::consts::PI.sqrt() * t)
    };
    r.copysign(x)
}

pub fn gelu64(x: f64) -> f64 {
    0.5 * x * (1.0 + erf64(x / std::f64::consts::SQRT_2))
}

/// GEGLU over rows of 2f: first half × gelu(second half).
pub fn geglu_ref(x: &[f64], f: usize) -> Vec<f64> {
    x.chunks(2 * f).flat_map(|r| (0..f).map(move |i| r[i] * gelu64(r[f + i]))).collect()
}

/// Nearest 2× upsampling of h×w planes.
pub fn upsample_ref(x: &[f64], h: usize, w: usize) -> Vec<f64> {
    let mut y = Vec::with_capacity(x.len() * 4);
    for p in x.chunks(h * w) {
        for oy in 0..2 * h {
            for ox in 0..2 * w {
                y.push(p[(oy / 2) * w + ox / 2]);
            }
        }
    }
    y
}

/// y = x·Wᵀ + b; returns (y, Σ|x·w| + |b|).
pub fn linear_ref(x: &[f64], w: &[f64], b: Option<&[f64]>, m: usize, n: usize, k: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut y, mut mag) = (vec![0.0; m * n], vec![0.0; m * n]);
    for i in 0..m {
        for j in 0..n {
            let (mut s, mut a) = b.map_or((0.0, 0.0), |b| (b[j], b[j].abs()));
            for t in 0..k {
                let p = x[i * k + t] * w[j * k + t];
                s += p;
                a += p.abs();
            }
            y[i * n + j] = s;
            mag[i * n + j] = a;
        }
    }
    (y, mag)
}

/// NCHW conv2d with square kernel and zero padding (before, after); returns (y, Σ|x·w| + |b|, ho, wo).
#[allow(clippy::too_many_arguments)]
pub fn conv_ref(
    x: &[f64],
    w: &[f64],
    b: Option<&[f64]>,
    [bn, c, h, wd]: [usize; 4],
    o: usize,
    k: usize,
    stride: usize,
    (pad, pad_after): (usize, usize),
) -> (Vec<f64>, Vec<f64>, usize, usize) {
    let ho = (h + pad + pad_after - k) / stride + 1;
    let wo = (wd + pad + pad_after - k) / stride + 1;
    let (mut y, mut mag) = (vec![0.0; bn * o * ho * wo], vec![0.0; bn * o * ho * wo]);
    for bi in 0..bn {
        for oi in 0..o {
            for yy in 0..ho {
                for xx in 0..wo {
                    let (mut s, mut a) = b.map_or((0.0, 0.0), |b| (b[oi], b[oi].abs()));
                    for ci in 0..c {
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (yy * stride + ky) as isize - pad as isize;
                                let ix = (xx * stride + kx) as isize - pad as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let xv = x[((bi * c + ci) * h + iy as usize) * wd + ix as usize];
                                let p = xv * w[((oi * c + ci) * k + ky) * k + kx];
                                s += p;
                                a += p.abs();
                            }
                        }
                    }
                    let idx = ((bi * o + oi) * ho + yy) * wo + xx;
                    y[idx] = s;
                    mag[idx] = a;
                }
            }
        }
    }
    (y, mag, ho, wo)
}

/// Normalise contiguous groups of `glen` elements; channel of element e is (e / inner) % C.
pub fn norm_ref(x: &[f64], glen: usize, inner: usize, gamma: &[f64], beta: &[f64], eps: f64, silu: bool) -> Vec<f64> {
    let c = gamma.len();
    let mut y = vec![0.0; x.len()];
    for (gi, g) in x.chunks(glen).enumerate() {
        let mean = g.iter().sum::<f64>() / glen as f64;
        let var = g.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / glen as f64;
        let rstd = 1.0 / (var + eps).sqrt();
        for (i, &v) in g.iter().enumerate() {
            let e = gi * glen + i;
            let ch = (e / inner) % c;
            let o = (v - mean) * rstd * gamma[ch] + beta[ch];
            y[e] = if silu { o * sigmoid(o) } else { o };
        }
    }
    y
}

/// softmax(q kᵀ / √D) v per (batch, head); causal masks key j > query i.
#[allow(clippy::too_many_arguments)]
pub fn attention_ref(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    b: usize,
    tq: usize,
    tk: usize,
    h: usize,
    d: usize,
    causal: bool,
) -> Vec<f64> {
    let c = h * d;
    let scale = 1.0 / (d as f64).sqrt();
    let mut o = vec![0.0; b * tq * c];
    let mut s = vec![0.0; tk];
    for bi in 0..b {
        for hi in 0..h {
            for i in 0..tq {
                let mut mx = f64::NEG_INFINITY;
                for (j, sj) in s.iter_mut().enumerate() {
                    *sj = if causal && j > i {
                        f64::NEG_INFINITY
                    } else {
                        (0..d)
                            .map(|t| q[(bi * tq + i) * c + hi * d + t] * k[(bi * tk + j) * c + hi * d + t])
                            .sum::<f64>()
                            * scale
                    };
                    mx = mx.max(*sj);
                }
                let z: f64 = s.iter().map(|&x| (x - mx).exp()).sum();
                for t in 0..d {
                    o[(bi * tq + i) * c + hi * d + t] = s
                        .iter()
                        .enumerate()
                        .map(|(j, &x)| (x - mx).exp() / z * v[(bi * tk + j) * c + hi * d + t])
                        .sum();
                }
            }
        }
    }
    o
}

/// [B, C, HW] ↔ [B, HW, C].
fn transpose_ref(x: &[f64], b: usize, r: usize, s: usize) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for bi in 0..b {
        for i in 0..r {
            for j in 0..s {
                y[bi * r * s + j * r + i] = x[bi * r * s + i * s + j];
            }
        }
    }
    y
}

// ---- the runner -----------------------------------------------------------------------------

struct Run<'a> {
    gpu: &'a Gpu,
    checks: Vec<Check>,
}

impl Run<'_> {
    /// Run `f` (dispatches only), timing it; None on error (recorded as a failed check).
    async fn timed<T>(
        &mut self,
        family: &str,
        name: &str,
        shape: &str,
        tol: Tol,
        f: impl FnOnce() -> Result<T>,
    ) -> Option<(T, f64, &'static str)> {
        let gpu = self.gpu;
        let t0 = now_seconds();
        let ts = gpu.begin_timing();
        let r = f();
        let secs = if ts { gpu.end_timing().await.ok().flatten() } else { None };
        let out = match r {
            Ok(v) => v,
            Err(e) => {
                self.fail(family, name, shape, tol, e.to_string());
                return None;
            }
        };
        match secs {
            Some(s) => Some((out, s, "gpu")),
            None => {
                if let Err(e) = gpu.queue_idle().await {
                    self.fail(family, name, shape, tol, e.to_string());
                    return None;
                }
                Some((out, now_seconds() - t0, "wall"))
            }
        }
    }

    fn fail(&mut self, family: &str, name: &str, shape: &str, tol: Tol, error: String) {
        self.checks.push(Check {
            family: family.into(),
            name: name.into(),
            shape: shape.into(),
            tolerance: tol,
            max_abs_err: f64::INFINITY,
            worst_ratio: f64::INFINITY,
            pass: false,
            seconds: 0.0,
            clock: "wall",
            error: Some(error),
        });
    }

    /// Time `f`, read its output back and compare.
    #[allow(clippy::too_many_arguments)]
    async fn check(
        &mut self,
        family: &str,
        name: &str,
        shape: &str,
        tol: Tol,
        want: &[f64],
        mag: Option<&[f64]>,
        f: impl FnOnce() -> Result<Tensor>,
    ) {
        let Some((y, seconds, clock)) = self.timed(family, name, shape, tol, f).await else { return };
        let got = match y.to_vec_f32(self.gpu).await {
            Ok(g) => g,
            Err(e) => return self.fail(family, name, shape, tol, e.to_string()),
        };
        let (max_abs_err, worst_ratio) = compare(&got, want, mag, tol);
        self.checks.push(Check {
            family: family.into(),
            name: name.into(),
            shape: shape.into(),
            tolerance: tol,
            max_abs_err,
            worst_ratio,
            pass: worst_ratio <= 1.0,
            seconds,
            clock,
            error: None,
        });
    }

    fn up(&self, shape: &[usize], dt: DType, v: &[f32]) -> Result<Tensor> {
        Tensor::from_f32(self.gpu, shape, dt, v)
    }
}

const H: DType = DType::F16;
const F: DType = DType::F32;

/// Binding cap for the split-window checks (bytes): small tensors then span several windows.
const WINDOW: u64 = 4096;

/// Run every check on `gpu`'s compute path.
pub async fn run(gpu: &Gpu) -> Result<Report> {
    let t0 = now_seconds();
    let mut r = Run { gpu, checks: Vec::new() };
    let f16 = gpu.f16;
    let dot_tol = |x: DType| if f16 && x == H { DOT_F16_TOL } else { DOT_F32_TOL };
    let dot_out = |x: DType, y: DType| {
        let mut t = dot_tol(x);
        if y == H {
            t.rel = 1.0 / 2048.0;
            t.name = if t.name == "dot-f16" { "dot-f16+f16-out" } else { "dot-f32+f16-out" };
        }
        t
    };

    // smoke: y = 1.5·x − 0.25 in f16.
    {
        let n = 333;
        let x = rand(n, 1, 2.0);
        let want: Vec<f64> = stored(&x, H).iter().map(|v| 1.5 * v - 0.25).collect();
        let xt = r.up(&[n], H, &x)?;
        let tol = if f16 { F16_MATH_TOL } else { F16_OUT_TOL };
        r.check("smoke", "axpb", &format!("[{n}]"), tol, &want, None, || smoke::axpb(gpu, &xt, 1.5, -0.25)).await;
    }

    // peak: x ← 0.999·x + 0.001, simulated in f64 from the shader's start values.
    {
        let (groups, rounds) = (2u32, 64u32);
        let out = peak::out_tensor(gpu, groups)?;
        let want: Vec<f64> = (0..groups * 256)
            .map(|g| {
                let s = (g & 15) as f64 * 0.0625;
                let mut acc = 0.0;
                for j in 0..8 {
                    for l in 0..4 {
                        let mut a = s + 0.01 * l as f64 + 0.1 * j as f64;
                        for _ in 0..rounds {
                            a = a * 0.999 + 0.001;
                        }
                        acc += a;
                    }
                }
                acc
            })
            .collect();
        let name = format!("fma loop ({} math)", if f16 { "f16" } else { "f32" });
        // f16 rounds the constants and each of the 64 steps.
        let tol = if f16 {
            Tol { name: "peak-f16", abs: 0.0, rel: 2e-2, arith: 0.0 }
        } else {
            Tol { name: "peak-f32", abs: 0.0, rel: 1e-5, arith: 0.0 }
        };
        r.check("peak", &name, "[512]", tol, &want, None, || {
            peak::dispatch(gpu, &out, f16, groups, rounds)?;
            Ok(out.clone())
        })
        .await;
    }

    // matmul: every (x, y) dtype, vec4 (K % 8 == 0) and scalar loads, partial 64×64 tiles; naive.
    for (xd, yd) in [(H, H), (H, F), (F, H), (F, F)] {
        for k in [40usize, 19] {
            let (m, n) = (67, 70);
            let x = rand(m * k, 10 + k as u64, 1.0);
            let w = rand(n * k, 11, 0.5);
            let b = rand(n, 12, 0.5);
            let (want, mag) = linear_ref(&stored(&x, xd), &stored(&w, H), Some(&stored(&b, H)), m, n, k);
            let (xt, wt, bt) = (r.up(&[m, k], xd, &x)?, r.up(&[n, k], H, &w)?, r.up(&[n], H, &b)?);
            let name = format!("tiled x={} y={} {}", dn(xd), dn(yd), if k % 8 == 0 { "vec4" } else { "scalar" });
            r.check("matmul", &name, &format!("{m}x{k} · {n}x{k}"), dot_out(xd, yd), &want, Some(&mag), || {
                linear::linear(gpu, &xt, &wt, Some(&bt), yd)
            })
            .await;
        }
    }
    {
        let (m, n, k) = (5, 70, 33);
        let x = rand(m * k, 13, 1.0);
        let w = rand(n * k, 14, 0.5);
        let (want, mag) = linear_ref(&stored(&x, F), &stored(&w, H), None, m, n, k);
        let (xt, wt) = (r.up(&[m, k], F, &x)?, r.up(&[n, k], H, &w)?);
        r.check("matmul", "naive x=f32 y=f32", &format!("{m}x{k} · {n}x{k}"), DOT_F32_TOL, &want, Some(&mag), || {
            linear::naive_matmul(gpu, &xt, &wt, None, F)
        })
        .await;
    }

    // conv: the three SDXL kernel shapes × (x, y) dtypes; 67 output channels and odd spatial
    // sizes leave partial tiles on both GEMM axes.
    for (k, s, p) in conv::SDXL_SHAPES {
        for (xd, yd) in [(H, H), (H, F), (F, H), (F, F)] {
            let dims = [2usize, 5, 9, 11];
            let o = 67;
            let x = rand(dims.iter().product(), 20 + k as u64 + s as u64, 1.0);
            let w = rand(o * dims[1] * k * k, 21, 0.5);
            let b = rand(o, 22, 0.5);
            let (want, mag, ho, wo) =
                conv_ref(&stored(&x, xd), &stored(&w, H), Some(&stored(&b, H)), dims, o, k, s, (p, p));
            let (xt, wt, bt) = (r.up(&dims, xd, &x)?, r.up(&[o, dims[1], k, k], H, &w)?, r.up(&[o], H, &b)?);
            let name = format!("{k}x{k} s{s} p{p} x={} y={}", dn(xd), dn(yd));
            let shape = format!("{dims:?}→[{},{o},{ho},{wo}]", dims[0]);
            r.check("conv", &name, &shape, dot_out(xd, yd), &want, Some(&mag), || {
                conv::conv2d(gpu, &xt, &wt, Some(&bt), s, p, yd)
            })
            .await;
        }
    }

    // conv2d_padded: the VAE encoder's downsample, F.pad(x, (0, 1, 0, 1)) then stride 2.
    for (xd, yd) in [(F, F), (H, H)] {
        let dims = [1usize, 6, 10, 13];
        let o = 65;
        let x = rand(dims.iter().product(), 23, 1.0);
        let w = rand(o * dims[1] * 9, 24, 0.5);
        let (want, mag, ho, wo) = conv_ref(&stored(&x, xd), &stored(&w, H), None, dims, o, 3, 2, (0, 1));
        let (xt, wt) = (r.up(&dims, xd, &x)?, r.up(&[o, dims[1], 3, 3], H, &w)?);
        let name = format!("3x3 s2 pad(0,1) x={} y={}", dn(xd), dn(yd));
        let shape = format!("{dims:?}→[1,{o},{ho},{wo}]");
        r.check("conv", &name, &shape, dot_out(xd, yd), &want, Some(&mag), || {
            conv::conv2d_padded(gpu, &xt, &wt, None, 2, (0, 1), yd)
        })
        .await;
    }

    // elementwise: unary ops (every op, casts both ways), binary with broadcast, layout ops.
    {
        let n = 1001;
        let x = rand(n, 30, 4.0);
        type Ref = fn(f64) -> f64;
        let ops: [(Unary, &str, Ref); 5] = [
            (Unary::Copy, "copy", |v| v),
            (Unary::Silu, "silu", |v| v * sigmoid(v)),
            (Unary::Gelu, "gelu", gelu64),
            (Unary::QuickGelu, "quick_gelu", |v| v * sigmoid(1.702 * v)),
            (Unary::Affine(0.75, -0.5), "affine", |v| 0.75 * v - 0.5),
        ];
        for (op, name, f) in ops {
            for (xd, yd) in [(H, H), (F, F), (F, H), (H, F)] {
                let want: Vec<f64> = stored(&x, xd).iter().map(|&v| f(v)).collect();
                let xt = r.up(&[n], xd, &x)?;
                r.check(
                    "elementwise",
                    &format!("{name} {}→{}", dn(xd), dn(yd)),
                    &format!("[{n}]"),
                    out_tol(yd),
                    &want,
                    None,
                    || ew::unary(gpu, &xt, op, yd),
                )
                .await;
            }
        }
        // Binary with a per-channel broadcast, then the same split into binding windows.
        let (sa, sb) = ([2usize, 7, 9, 13], [1usize, 7, 1, 1]);
        let na: usize = sa.iter().product();
        let a = rand(na, 31, 2.0);
        let b = rand(7, 32, 2.0);
        for (op, name) in [(ew::Binary::Add, "add"), (ew::Binary::Mul, "mul")] {
            for (da, db, dy) in [(H, H, H), (F, H, F), (F, F, F), (H, F, H)] {
                let (av, bv) = (stored(&a, da), stored(&b, db));
                let want: Vec<f64> = (0..na)
                    .map(|i| {
                        let c = i / (9 * 13) % 7;
                        if name == "add" {
                            av[i] + bv[c]
                        } else {
                            av[i] * bv[c]
                        }
                    })
                    .collect();
                let (at, bt) = (r.up(&sa, da, &a)?, r.up(&sb, db, &b)?);
                let nm = format!("{name} {},{}→{} bcast", dn(da), dn(db), dn(dy));
                r.check("elementwise", &nm, &format!("{sa:?}+{sb:?}"), out_tol(dy), &want, None, || {
                    ew::binary(gpu, &at, &bt, op, dy)
                })
                .await;
                if da == dy && db == H {
                    r.check(
                        "elementwise",
                        &format!("{nm} windows"),
                        &format!("{sa:?}+{sb:?}"),
                        out_tol(dy),
                        &want,
                        None,
                        || ew::with_binding_limit(WINDOW, || ew::binary(gpu, &at, &bt, op, dy)),
                    )
                    .await;
                }
            }
        }
        for dt in [H, F] {
            // geglu
            let (rows, ff) = (7usize, 37usize);
            let x = rand(rows * 2 * ff, 33, 3.0);
            let xs = stored(&x, dt);
            let want = geglu_ref(&xs, ff);
            let xt = r.up(&[rows, 2 * ff], dt, &x)?;
            r.check(
                "elementwise",
                &format!("geglu {}", dn(dt)),
                &format!("[{rows},{}]", 2 * ff),
                out_tol(dt),
                &want,
                None,
                || ew::geglu(gpu, &xt),
            )
            .await;
            // upsample 2×
            let (c, h, w) = (3usize, 5usize, 7usize);
            let x = rand(c * h * w, 34, 1.0);
            let xs = stored(&x, dt);
            let want = upsample_ref(&xs, h, w);
            let xt = r.up(&[1, c, h, w], dt, &x)?;
            r.check(
                "elementwise",
                &format!("upsample 2x {}", dn(dt)),
                &format!("[1,{c},{h},{w}]"),
                out_tol(dt),
                &want,
                None,
                || ew::upsample_nearest_2x(gpu, &xt),
            )
            .await;
            // concat along channels
            let (a, b) = (rand(2 * 3 * 35, 35, 1.0), rand(2 * 5 * 35, 36, 1.0));
            let (av, bv) = (stored(&a, dt), stored(&b, dt));
            let mut want = Vec::new();
            for bi in 0..2 {
                want.extend_from_slice(&av[bi * 105..(bi + 1) * 105]);
                want.extend_from_slice(&bv[bi * 175..(bi + 1) * 175]);
            }
            let (at, bt) = (r.up(&[2, 3, 5, 7], dt, &a)?, r.up(&[2, 5, 5, 7], dt, &b)?);
            r.check("elementwise", &format!("concat {}", dn(dt)), "[2,3|5,5,7]", out_tol(dt), &want, None, || {
                ew::concat_channels(gpu, &[&at, &bt])
            })
            .await;
            // transpose (tokens ↔ NCHW)
            let x = rand(2 * 9 * 35, 37, 1.0);
            let want = transpose_ref(&stored(&x, dt), 2, 9, 35);
            let xt = r.up(&[2, 9, 35], dt, &x)?;
            r.check("elementwise", &format!("transpose {}", dn(dt)), "[2,9,35]", out_tol(dt), &want, None, || {
                ew::transpose_last2(gpu, &xt)
            })
            .await;
        }
    }

    // norm: group norm (+SiLU) and layer norm for every (x, affine) dtype, softmax; then windowed.
    for (xd, wd) in [(H, H), (F, H), (F, F), (H, F)] {
        let s = [2usize, 12, 7, 9];
        let n: usize = s.iter().product();
        let x = rand(n, 40, 2.0).iter().map(|v| v + 0.5).collect::<Vec<_>>();
        let (g, b) = (rand(12, 41, 1.5), rand(12, 42, 0.5));
        let (gv, bv) = (stored(&g, wd), stored(&b, wd));
        let tol = if xd == H { F16_OUT_TOL } else { NORM_F32_TOL };
        let tol = Tol { abs: NORM_F32_TOL.abs.max(tol.abs) * if xd == H { 50.0 } else { 1.0 }, ..tol };
        let (xt, gt, bt) = (r.up(&s, xd, &x)?, r.up(&[12], wd, &g)?, r.up(&[12], wd, &b)?);
        let want = norm_ref(&stored(&x, xd), 3 * 63, 63, &gv, &bv, 1e-5, true);
        let nm = format!("group_norm+silu x={} w={}", dn(xd), dn(wd));
        r.check("norm", &nm, &format!("{s:?} g=4"), tol, &want, None, || {
            norm::group_norm(gpu, &xt, 4, &gt, &bt, 1e-5, true)
        })
        .await;
        if xd == wd {
            r.check("norm", &format!("{nm} windows"), &format!("{s:?} g=4"), tol, &want, None, || {
                ew::with_binding_limit(WINDOW, || norm::group_norm(gpu, &xt, 4, &gt, &bt, 1e-5, true))
            })
            .await;
        }
        let (rows, c) = (21usize, 12usize);
        let xl = &x[..rows * c];
        let want = norm_ref(&stored(xl, xd), c, 1, &gv, &bv, 1e-5, false);
        let xlt = r.up(&[rows, c], xd, xl)?;
        r.check(
            "norm",
            &format!("layer_norm x={} w={}", dn(xd), dn(wd)),
            &format!("[{rows},{c}]"),
            tol,
            &want,
            None,
            || norm::layer_norm(gpu, &xlt, &gt, &bt, 1e-5),
        )
        .await;
    }
    for xd in [H, F] {
        let (rows, len) = (13usize, 77usize);
        let x = rand(rows * len, 43, 6.0);
        let xs = stored(&x, xd);
        let mut want = Vec::new();
        for row in xs.chunks(len) {
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = row.iter().map(|v| (v - m).exp()).sum();
            want.extend(row.iter().map(|v| (v - m).exp() / z));
        }
        let tol = if xd == H { F16_OUT_TOL } else { Tol { name: "softmax-f32", abs: 1e-5, rel: 1e-5, arith: 0.0 } };
        let xt = r.up(&[rows, len], xd, &x)?;
        r.check("norm", &format!("softmax {}", dn(xd)), &format!("[{rows},{len}]"), tol, &want, None, || {
            norm::softmax(gpu, &xt)
        })
        .await;
        r.check("norm", &format!("softmax {} windows", dn(xd)), &format!("[{rows},{len}]"), tol, &want, None, || {
            ew::with_binding_limit(WINDOW, || norm::softmax(gpu, &xt))
        })
        .await;
    }

    // attention: the D = 64 fast path and the generic path (several accumulator sizes), causal
    // and not, both activation dtypes; one run split into binding windows.
    for dt in [H, F] {
        let tol = if dt == H { ATTN_F16_TOL } else { ATTN_F32_TOL };
        // The fast path, then the smallest head dim of each generic (GQ, NS) variant.
        let mut cases: Vec<(Path, usize, usize, usize, usize, bool)> =
            vec![(Path::Fast64, 64usize, 2usize, 19usize, 19usize, true), (Path::Fast64, 64, 1, 70, 37, false)];
        // The largest head dim of each generic (GQ, NS) variant: every accumulator slot in use.
        let mut largest: Vec<((u32, u32), usize)> = Vec::new();
        for d in (4..=attention::MAX_HEAD_DIM).step_by(4) {
            let shape = attention::generic_shape(d);
            match largest.iter_mut().find(|(s, _)| *s == shape) {
                Some(e) => e.1 = d,
                None => largest.push((shape, d)),
            }
        }
        cases.push((Path::Generic, 40, 2, 21, 33, false));
        for (i, (_, d)) in largest.into_iter().enumerate() {
            // Odd row counts leave partial query tiles; causal on every other variant.
            cases.push((Path::Generic, d, if d <= 256 { 2 } else { 1 }, 21, 33, i % 2 == 1));
        }
        for (path, d, heads, tq, tk, causal) in cases {
            let (b, c) = (1usize, heads * d);
            let q = rand(b * tq * c, 50 + d as u64, 1.0);
            let k = rand(b * tk * c, 51 + d as u64, 1.0);
            let v = rand(b * tk * c, 52 + d as u64, 1.0);
            let want = attention_ref(&stored(&q, dt), &stored(&k, dt), &stored(&v, dt), b, tq, tk, heads, d, causal);
            let (qt, kt, vt) = (r.up(&[b, tq, c], dt, &q)?, r.up(&[b, tk, c], dt, &k)?, r.up(&[b, tk, c], dt, &v)?);
            let nm = format!("{path:?} D={d} {}{}", dn(dt), if causal { " causal" } else { "" });
            let shape = format!("q[{b},{tq},{c}] kv[{b},{tk},{c}] h={heads}");
            r.check("attention", &nm, &shape, tol, &want, None, || {
                attention::attention_with(gpu, &qt, &kt, &vt, heads, causal, path)
            })
            .await;
            if path == Path::Generic && d == 40 {
                r.check("attention", &format!("{nm} windows"), &shape, tol, &want, None, || {
                    ew::with_binding_limit(WINDOW, || {
                        attention::attention_with(gpu, &qt, &kt, &vt, heads, causal, path)
                    })
                })
                .await;
            }
        }
    }

    resblock(&mut r).await?;
    vae_attention(&mut r).await?;

    let failures = r.checks.iter().filter(|c| !c.pass).count();
    Ok(Report {
        adapter: gpu.info.name.clone(),
        compute_path: gpu.info.compute_path.clone(),
        passed: failures == 0,
        failures,
        total_seconds: now_seconds() - t0,
        checks: r.checks,
    })
}

/// UNet ResBlock (f16 activations): x + conv3x3(silu(group_norm(x))).
async fn resblock(r: &mut Run<'_>) -> Result<()> {
    let gpu = r.gpu;
    let dims = [1usize, 16, 9, 11];
    let (c, hw) = (dims[1], dims[2] * dims[3]);
    let n: usize = dims.iter().product();
    let x = rand(n, 60, 1.0);
    let (g, b) = (rand(c, 61, 1.0), rand(c, 62, 0.3));
    let w = rand(c * c * 9, 63, 0.1);
    let cb = rand(c, 64, 0.1);
    let xs = stored(&x, H);
    let h = norm_ref(&xs, 4 * hw, hw, &stored(&g, H), &stored(&b, H), 1e-5, true);
    let (y, _, _, _) = conv_ref(&h, &stored(&w, H), Some(&stored(&cb, H)), dims, c, 3, 1, (1, 1));
    let want: Vec<f64> = y.iter().zip(&xs).map(|(a, b)| a + b).collect();
    let (xt, gt, bt, wt, cbt) =
        (r.up(&dims, H, &x)?, r.up(&[c], H, &g)?, r.up(&[c], H, &b)?, r.up(&[c, c, 3, 3], H, &w)?, r.up(&[c], H, &cb)?);
    let tol = if gpu.f16 { BLOCK_F16_TOL } else { Tol { abs: 5e-3, ..BLOCK_F16_TOL } };
    r.check(
        "block",
        "UNet ResBlock: group_norm+silu → conv3x3 → add (f16)",
        &format!("{dims:?} g=4"),
        tol,
        &want,
        None,
        || {
            let h = norm::group_norm(gpu, &xt, 4, &gt, &bt, 1e-5, true)?;
            let y = conv::conv2d(gpu, &h, &wt, Some(&cbt), 1, 1, H)?;
            ew::add(gpu, &y, &xt)
        },
    )
    .await;
    Ok(())
}

/// VAE mid-block attention (f32 activations, f16 weights): x + proj(attn(q, k, v of group_norm(x))).
async fn vae_attention(r: &mut Run<'_>) -> Result<()> {
    let gpu = r.gpu;
    let dims = [1usize, 32, 5, 7];
    let (c, hw) = (dims[1], dims[2] * dims[3]);
    let n: usize = dims.iter().product();
    let x = rand(n, 70, 1.0);
    let (g, b) = (rand(c, 71, 1.0), rand(c, 72, 0.3));
    let ws: Vec<Vec<f32>> = (0..4).map(|i| rand(c * c, 73 + i, 0.2)).collect();
    let bs: Vec<Vec<f32>> = (0..4).map(|i| rand(c, 80 + i, 0.1)).collect();
    let xs = stored(&x, F);
    let h = norm_ref(&xs, c / 8 * hw, hw, &stored(&g, H), &stored(&b, H), 1e-6, false);
    let tok = transpose_ref(&h, 1, c, hw);
    let proj = |i: usize, t: &[f64]| linear_ref(t, &stored(&ws[i], H), Some(&stored(&bs[i], H)), hw, c, c).0;
    let (q, k, v) = (proj(0, &tok), proj(1, &tok), proj(2, &tok));
    let a = attention_ref(&q, &k, &v, 1, hw, hw, 1, c, false);
    let o = transpose_ref(&proj(3, &a), 1, hw, c);
    let want: Vec<f64> = o.iter().zip(&xs).map(|(a, b)| a + b).collect();
    let xt = r.up(&dims, F, &x)?;
    let (gt, bt) = (r.up(&[c], H, &g)?, r.up(&[c], H, &b)?);
    let mut wt = Vec::new();
    for i in 0..4 {
        wt.push((r.up(&[c, c], H, &ws[i])?, r.up(&[c], H, &bs[i])?));
    }
    r.check(
        "block",
        "VAE mid-block attention: group_norm → qkv → attn → proj → add (f32)",
        &format!("{dims:?} g=8"),
        BLOCK_F32_TOL,
        &want,
        None,
        || {
            let h = norm::group_norm(gpu, &xt, 8, &gt, &bt, 1e-6, false)?;
            let t = ew::nchw_to_tokens(gpu, &h)?;
            let lin = |i: usize, t: &Tensor| linear::linear(gpu, t, &wt[i].0, Some(&wt[i].1), F);
            let (q, k, v) = (lin(0, &t)?, lin(1, &t)?, lin(2, &t)?);
            let a = attention::attention(gpu, &q, &k, &v, 1, false)?;
            let o = ew::tokens_to_nchw(gpu, &lin(3, &a)?, dims[2], dims[3])?;
            ew::add(gpu, &o, &xt)
        },
    )
    .await;
    Ok(())
}

/// `run` on native, blocking.
#[cfg(not(target_arch = "wasm32"))]
pub fn run_blocking(gpu: &Gpu) -> Result<Report> {
    pollster::block_on(run(gpu))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_catches_a_wrong_reference() {
        let got = [1.0f32, 2.0, 3.0];
        assert!(compare(&got, &[1.0, 2.0, 3.0], None, F32_TOL).1 <= 1.0);
        let (abs, ratio) = compare(&got, &[1.0, 2.001, 3.0], None, F32_TOL);
        assert!(ratio > 1.0 && (abs - 0.001).abs() < 1e-9);
        assert!(compare(&[f32::NAN], &[0.0], None, F16_OUT_TOL).1.is_infinite());
        assert!(compare(&got, &[1.0, 2.0], None, F32_TOL).1.is_infinite());
        // Dot-product tolerance scales with Σ|terms|.
        assert!(compare(&[1.0], &[1.00001], Some(&[10.0]), DOT_F32_TOL).1 <= 1.0);
        assert!(compare(&[1.0], &[1.001], Some(&[10.0]), DOT_F32_TOL).1 > 1.0);
    }

    #[test]
    fn erf_is_right() {
        for (x, want) in
            [(0.5, 0.520_499_877_813_046_5), (1.0, 0.842_700_792_949_714_9), (3.5, 0.999_999_256_901_627_7)]
        {
            assert!((erf64(x) - want).abs() < 1e-14, "erf({x}) = {}", erf64(x));
            assert!((erf64(-x) + want).abs() < 1e-14);
        }
    }
}
