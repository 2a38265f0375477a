//! Multi-head attention (`shaders/attention.wgsl`), flash style: online softmax per workgroup
//! tile, so memory stays O(T·C) — the VAE mid-block at 1024² attends over 16,384 tokens, whose
//! full score matrix would be 1 GiB in f32.

use super::elementwise::{check_u32, spans, units_per_window, window};
use crate::gpu::{DType, Gpu, Tensor, Variant};
use crate::{Error, Result};

/// Largest head dim of the generic path (its accumulators live in registers).
pub const MAX_HEAD_DIM: usize = 1024;

/// Which kernel runs a given head dim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// D = 64 only: one thread per query row.
    Fast64,
    /// Any D that is a multiple of 4 up to `MAX_HEAD_DIM`.
    Generic,
}

/// (GQ query rows per workgroup, NS vec4 accumulator slots per thread) of the generic path.
fn generic_shape(d: usize) -> (u32, u32) {
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
    _p: [u32; 3],
}

/// softmax(q kᵀ / √D) v per head. q [B, Tq, H·D], k and v [B, Tk, H·D] (one dtype), H = `heads`;
/// `causal` masks key j > query i (CLIP). Returns [B, Tq, H·D] in q's dtype.
///
/// Q and O may exceed the storage binding limit (they are split by query rows); K and V of one
/// batch element must each fit one binding (Tk·H·D: 16,384 × 512 f32 = 32 MiB for the VAE at
/// 1024², far below every limit).
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
    if causal && tq > tk {
        return Err(Error::Input(format!("{what}: causal attention with more queries ({tq}) than keys ({tk})")));
    }
    check_u32(q, what)?;
    check_u32(k, what)?;
    let o = Tensor::empty(gpu, qs, q.dtype())?;
    if b == 0 || tq == 0 {
        return Ok(o);
    }
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
    let kv_fits = units_per_window(gpu, tk * c * es, what)?;
    let rows_per = units_per_window(gpu, c * es, what)?;
    let all_fit = kv_fits >= b && rows_per >= b * tq;
    let batches: Vec<(u64, u64)> = if all_fit { vec![(0, b)] } else { (0..b).map(|i| (i, i + 1)).collect() };
    let row_step = if all_fit { tq } else { (rows_per / rows_per_wg * rows_per_wg).max(rows_per_wg).min(tq) };
    let max_x = gpu.limits.max_compute_workgroups_per_dimension as u64 * rows_per_wg;
    let row_step = row_step.min(max_x);
    for &(b0, b1) in &batches {
        let kw = window(gpu, k, b0 * tk * c, b1 * tk * c, what)?;
        let vw = window(gpu, v, b0 * tk * c, b1 * tk * c, what)?;
        for (r0, r1) in spans(tq, row_step) {
            // Rows r0..r1 of every batch in b0..b1 (one batch when split by rows).
            let q_start = b0 * tq * c + r0 * c;
            let q_end = (b1 - 1) * tq * c + r1 * c;
            let qw = window(gpu, q, q_start, q_end, what)?;
            let ow = window(gpu, &o, q_start, q_end, what)?;
            let p = AttnP {
                tk: tk as u32,
                d: d as u32,
                c: c as u32,
                causal: causal as u32,
                r0: r0 as u32,
                r1: r1 as u32,
                q_bstride: (tq * c) as u32,
                kv_bstride: (tk * c) as u32,
                q0: qw.local(q_start),
                k0: kw.local(b0 * tk * c),
                v0: vw.local(b0 * tk * c),
                o0: ow.local(q_start),
                scale,
                _p: [0; 3],
            };
            let wg = [(r1 - r0).div_ceil(rows_per_wg) as u32, heads as u32, (b1 - b0) as u32];
            gpu.dispatch(&pipe, &[qw.binding, kw.bind(), vw.bind(), ow.binding], &p, wg)?;
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
