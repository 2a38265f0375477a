//! Multi-head attention (`shaders/attention.wgsl`), flash style: online softmax per workgroup
//! tile, so memory stays O(T·C) — the VAE mid-block at 1024² attends over 16,384 tokens, whose
//! full score matrix would be 1 GiB in f32.

use super::elementwise::{check_u32, spans, units_per_window, window};
use crate::gpu::work::{self, Family, OpShape, Work};
use crate::gpu::{DType, Gpu, Tensor, Variant};
use crate::{Error, Result};

/// Largest head dim of the generic path (its accumulators live in registers).
pub const MAX_HEAD_DIM: usize = 1024;

/// Keys per dispatch at most: longer sequences (the VAE's 16,384 tokens at 1024²) are split and
/// merged through an f32 state. Bounds one dispatch's run time (browser GPU watchdogs) and stays
/// under lavapipe's loop-iteration cap (~65,535 per invocation, beyond which it silently skips
/// iterations): 8192 keys at D = 64 (the UNet's 4,096 keys stay in one dispatch), 1024 at the
/// VAE's D = 512 (the split costs one f32 state read+write per part, ~1% of the FLOP time).
pub fn keys_per_dispatch(d: usize) -> u64 {
    ((1u64 << 19) / d.max(1) as u64).clamp(256, 8192)
}

/// Which kernel runs a given head dim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// D = 64 only: one thread per query row.
    Fast64,
    /// Any D that is a multiple of 4 up to `MAX_HEAD_DIM`.
    Generic,
}

/// (GQ query rows per workgroup, NS vec4 accumulator slots per thread) of the generic path.
pub(crate) fn generic_shape(d: usize) -> (u32, u32) {
    let gq: u32 = if d <= 256 {
        16
    } else if d <= 512 {
        8
    } else {
        4
    };
    let slots = (gq as usize * d / 4).div_ceil(64) as u32;
    // Few distinct register-array sizes keep the variant count small.
    let ns = slots.next_power_of_two().max(2);
    (gq, ns)
}

fn variant(f16: bool, x: DType, gq: u32, ns: u32) -> Variant {
    let half = x == DType::F16;
    Variant::new("attention", f16)
        .with_const("X_HALF", half)
        // f16 arithmetic only for f16 activations: f32 activations (the VAE) keep f32 math.
        .with_alias("at", if f16 && half { "f16" } else { "f32" })
        .with_const("GQ", format!("{gq}u"))
        .with_const("NS", format!("{ns}u"))
}

pub fn variants(f16: bool) -> Vec<Variant> {
    let mut v = Vec::new();
    for x in [DType::F16, DType::F32] {
        let mut shapes: Vec<(u32, u32)> = (1..=MAX_HEAD_DIM / 4).map(|d4| generic_shape(d4 * 4)).collect();
        shapes.sort();
        shapes.dedup();
        for (gq, ns) in shapes {
            v.push(variant(f16, x, gq, ns));
        }
    }
    v
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AttnP {
    tk: u32,
    d: u32,
    c: u32,
    causal: u32,
    r0: u32,
    r1: u32,
    q_bstride: u32,
    kv_bstride: u32,
    q0: u32,
    k0: u32,
    v0: u32,
    o0: u32,
    scale: f32,
    k_lo: u32,
    mode: u32,
    s0: u32,
    m0: u32,
    heads: u32,
    ml_bstride: u32,
    _p: u32,
}

/// softmax(q kᵀ / √D) v per head. q [B, Tq, H·D], k and v [B, Tk, H·D] (one dtype), H = `heads`;
/// `causal` masks key j > query i (CLIP; torch's top-left alignment). Returns [B, Tq, H·D] in q's dtype.
///
/// Any tensor may exceed the storage binding limit: Q and O are split by query rows; K and V,
/// when one batch element's do not fit a binding (never at SDXL sizes: 16,384 × 512 f32 is
/// 32 MiB for the VAE at 1024²), by keys, merging the parts' softmax states in f32.
pub fn attention(gpu: &Gpu, q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, causal: bool) -> Result<Tensor> {
    let d = q.shape().last().copied().unwrap_or(0) / heads.max(1);
    let path = if d == 64 { Path::Fast64 } else { Path::Generic };
    attention_with(gpu, q, k, v, heads, causal, path)
}

/// `attention` on a chosen kernel (tests run D = 64 through both).
pub fn attention_with(
    gpu: &Gpu,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    causal: bool,
    path: Path,
) -> Result<Tensor> {
    let what = "attention";
    let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
    if qs.len() != 3 || ks.len() != 3 || ks != vs || qs[0] != ks[0] || qs[2] != ks[2] {
        return Err(Error::Input(format!(
            "{what}: needs q [B, Tq, C] and k, v [B, Tk, C], got q {qs:?}, k {ks:?}, v {vs:?}"
        )));
    }
    if q.dtype() != k.dtype() || q.dtype() != v.dtype() {
        return Err(Error::Input(format!(
            "{what}: q, k, v must share a dtype, got {:?}, {:?}, {:?}",
            q.dtype(),
            k.dtype(),
            v.dtype()
        )));
    }
    let (b, tq, c, tk) = (qs[0], qs[1], qs[2], ks[1]);
    if heads == 0 || c % heads != 0 {
        return Err(Error::Input(format!("{what}: {c} channels do not split into {heads} heads")));
    }
    let d = c / heads;
    if !d.is_multiple_of(4) || d > MAX_HEAD_DIM {
        return Err(Error::Input(format!("{what}: head dim {d} must be a multiple of 4 and at most {MAX_HEAD_DIM}")));
    }
    if path == Path::Fast64 && d != 64 {
        return Err(Error::Input(format!("{what}: the fast path needs head dim 64, got {d}")));
    }
    if tk == 0 {
        return Err(Error::Input(format!("{what}: no keys (k {ks:?})")));
    }
    check_u32(q, what)?;
    check_u32(k, what)?;
    let o = Tensor::empty(gpu, qs, q.dtype())?;
    if b == 0 || tq == 0 {
        return Ok(o);
    }
    gpu.tally(|| Work {
        shape: OpShape {
            family: if tq == tk { Family::AttnSelf } else { Family::AttnCross },
            dims: vec![b, heads, tq, tk, d],
            x: q.dtype(),
            y: q.dtype(),
        },
        // QKᵀ and PV: 2 multiply-adds per (query, key, channel).
        flops: 4.0 * (b * tq * tk) as f64 * c as f64,
        bytes: work::bytes_of(2 * b * tq * c + 2 * b * tk * c, q.dtype()),
    });
    let (gq, ns) = generic_shape(d);
    let (entry, rows_per_wg) = match path {
        Path::Fast64 => ("attn64", 64u64),
        Path::Generic => ("attn_gen", gq as u64),
    };
    let pipe = gpu.pipeline(&variant(gpu.f16, q.dtype(), gq, ns), entry)?;
    let es = q.dtype().size() as u64;
    let (b, tq, tk, c) = (b as u64, tq as u64, tk as u64, c as u64);
    let scale = std::f32::consts::LOG2_E / (d as f32).sqrt();
    // K/V of one batch element must fit a binding (Tk·C: 16,384 × 512 f32 is 32 MiB); Q/O are
    // split by query rows.
    let h = heads as u64;
    // Keys per dispatch: all of one batch element when its K/V fit a binding and number at most
    // keys_per_dispatch(D), else parts merged through an f32 state (flash-decoding style split).
    let keys_per = units_per_window(gpu, c * es, what)?.min(keys_per_dispatch(d)).min(tk);
    let split_k = keys_per < tk;
    // Q, O (and the state) are split by query rows.
    let row_bytes = if split_k { c * es.max(4) } else { c * es };
    let rows_per = units_per_window(gpu, row_bytes, what)?;
    let all_fit = !split_k && keys_per * b <= units_per_window(gpu, c * es, what)? && rows_per >= b * tq;
    let batches: Vec<(u64, u64)> = if all_fit { vec![(0, b)] } else { (0..b).map(|i| (i, i + 1)).collect() };
    let row_step = if all_fit {
        tq
    } else if rows_per >= rows_per_wg {
        rows_per / rows_per_wg * rows_per_wg
    } else {
        rows_per
    };
    let max_x = gpu.limits.max_compute_workgroups_per_dimension as u64 * rows_per_wg;
    let row_step = row_step.min(max_x).min(tq);
    let (acc, ml) = if split_k {
        (
            Tensor::empty(gpu, &[(b * tq * c) as usize], DType::F32)?,
            Tensor::empty(gpu, &[(b * tq * h * 2) as usize], DType::F32)?,
        )
    } else {
        // Unused but bound (auto layouts need every binding the shader declares).
        (Tensor::empty(gpu, &[8], DType::F32)?, Tensor::empty(gpu, &[8], DType::F32)?)
    };
    let key_spans: Vec<(u64, u64)> = spans(tk, keys_per).collect();
    for &(b0, b1) in &batches {
        for (r0, r1) in spans(tq, row_step) {
            // Rows r0..r1 of every batch in b0..b1 (one batch when split by rows).
            let q_start = b0 * tq * c + r0 * c;
            let q_end = (b1 - 1) * tq * c + r1 * c;
            let qw = window(gpu, q, q_start, q_end, what)?;
            let ow = window(gpu, &o, q_start, q_end, what)?;
            let (aw, mw) = if split_k {
                (
                    window(gpu, &acc, q_start, q_end, what)?,
                    window(gpu, &ml, (b0 * tq + r0) * h * 2, (b0 * tq + r1) * h * 2, what)?,
                )
            } else {
                (window(gpu, &acc, 0, 8, what)?, window(gpu, &ml, 0, 8, what)?)
            };
            for (i, &(k_lo, k_hi)) in key_spans.iter().enumerate() {
                let last = i + 1 == key_spans.len();
                let mode = match (split_k, i == 0, last) {
                    (false, _, _) => 0,
                    (true, true, _) => 1,
                    (true, false, false) => 2,
                    (true, false, true) => 3,
                };
                let kstart = b0 * tk * c + k_lo * c;
                let kend = (b1 - 1) * tk * c + k_hi * c;
                let kw = window(gpu, k, kstart, kend, what)?;
                let vw = window(gpu, v, kstart, kend, what)?;
                let p = AttnP {
                    tk: (k_hi - k_lo) as u32,
                    d: d as u32,
                    c: c as u32,
                    causal: causal as u32,
                    r0: r0 as u32,
                    r1: r1 as u32,
                    q_bstride: (tq * c) as u32,
                    kv_bstride: (tk * c) as u32,
                    q0: qw.local(q_start),
                    k0: kw.local(kstart),
                    v0: vw.local(kstart),
                    o0: ow.local(q_start),
                    scale,
                    k_lo: k_lo as u32,
                    mode,
                    s0: if split_k { aw.local(q_start) } else { 0 },
                    m0: if split_k { mw.local((b0 * tq + r0) * h * 2) } else { 0 },
                    heads: heads as u32,
                    ml_bstride: (tq * h * 2) as u32,
                    _p: 0,
                };
                let wg = [(r1 - r0).div_ceil(rows_per_wg) as u32, heads as u32, (b1 - b0) as u32];
                let bindings = [qw.bind(), kw.binding, vw.binding, ow.bind(), aw.bind(), mw.bind()];
                gpu.dispatch(&pipe, &bindings, &p, wg)?;
            }
        }
    }
    Ok(o)
}

/// Benchmark rows (`sdxl bench kernels`): the UNet's attention shapes with F16 activations (one
/// image; CFG doubles B), plus the VAE mid-block's single 512-wide head at 512² with F32
/// activations (generic path) unless `--quick`.
#[cfg(not(target_arch = "wasm32"))]
pub fn bench_rows(b: &mut crate::ops::bench::Bench) -> Result<()> {
    if !b.wants("attention") {
        return Ok(());
    }
    let gpu = b.gpu;
    let mut cases = vec![
        ("self 4096 tok x 10 h x 64", 4096usize, 4096usize, 10usize, 64usize, DType::F16),
        ("self 1024 tok x 20 h x 64", 1024, 1024, 20, 64, DType::F16),
        ("cross 4096 x 77 tok x 10 h x 64", 4096, 77, 10, 64, DType::F16),
    ];
    if !b.quick {
        cases.push(("vae 4096 tok x 1 h x 512 f32", 4096, 4096, 1, 512, DType::F32));
    }
    for (shape, tq, tk, h, d, dt) in cases {
        let c = h * d;
        let pattern =
            |n: usize, s: usize| -> Vec<f32> { (0..n).map(|i| ((i * s + 7) % 251) as f32 / 251.0 - 0.5).collect() };
        let q = Tensor::from_f32(gpu, &[1, tq, c], dt, &pattern(tq * c, 31))?;
        let k = Tensor::from_f32(gpu, &[1, tk, c], dt, &pattern(tk * c, 17))?;
        let v = Tensor::from_f32(gpu, &[1, tk, c], dt, &pattern(tk * c, 13))?;
        // QKᵀ and PV: 2 multiply-adds per (query, key, dim) per head, 2 FLOPs each.
        let flops = 4.0 * (tq * tk * d * h) as f64;
        b.time_op("attention", shape, flops, || {
            let _o = attention(gpu, &q, &k, &v, h, false)?;
            Ok(())
        })?;
    }
    Ok(())
}
