//! Linear layers and matmul (`shaders/matmul.wgsl`): y = x·Wᵀ + b with PyTorch's nn.Linear
//! weight layout, plus the naive baseline kernel the benchmark compares against.
//!
//! Tensors over the device's storage-binding limit are handled by binding windows of them
//! (`window`) and dispatching once per block of rows.

use crate::gpu::work::{self, Family, OpShape, Work};
use crate::gpu::{Binding, DType, Gpu, Tensor, Variant};
use crate::{Error, Result};

/// Output tile edge (rows and columns) of the `tiled` entry point.
const TILE: usize = 64;

fn variant(f16: bool, x_half: bool, y_half: bool, vec: bool) -> Variant {
    Variant::new("matmul", f16)
        .with_const("X_HALF", x_half)
        .with_const("Y_HALF", y_half)
        .with_const("VEC", vec)
        .with_const("HALF_MATH", f16 && x_half)
        .with_alias("XW", if vec { "vec4<u32>" } else { "u32" })
        .with_alias("MT", if f16 && x_half { "f16" } else { "f32" })
}

pub fn variants(f16: bool) -> Vec<Variant> {
    let mut v = Vec::new();
    for x_half in [false, true] {
        for y_half in [false, true] {
            for vec in [false, true] {
                v.push(variant(f16, x_half, y_half, vec));
            }
        }
    }
    v
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    x_off: u32,
    y_off: u32,
    has_bias: u32,
    _pad: [u32; 2],
}

/// Bind `count` elements of `t` from element `elem0`: the binding starts at the offset rounded
/// down to the device's storage offset alignment (and 16 bytes, for vec4 loads); returns it with
/// the element offset of `elem0` inside it. Errors when the window exceeds the binding limit.
pub fn window<'a>(gpu: &Gpu, t: &'a Tensor, elem0: u64, count: u64) -> Result<(Binding<'a>, u32)> {
    let es = t.dtype().size() as u64;
    let align = (gpu.limits.min_storage_buffer_offset_alignment as u64).max(16);
    let start = elem0 * es;
    let bind0 = start - start % align;
    let end = ((elem0 + count) * es).next_multiple_of(16).min(t.buffer().size()).max(bind0 + 4);
    let size = end - bind0;
    let limit = gpu.limits.max_storage_buffer_binding_size;
    if size > limit {
        return Err(Error::Gpu(format!(
            "a {size}-byte window of tensor {:?} exceeds max_storage_buffer_binding_size ({limit})",
            t.shape()
        )));
    }
    Ok((Binding { buffer: t.buffer(), offset: bind0, size: Some(size) }, ((start - bind0) / es) as u32))
}

/// Largest row count per dispatch such that `row_bytes`-sized rows of each operand fit one
/// binding (with room for the alignment slack of `window`).
pub fn rows_per_binding(gpu: &Gpu, row_bytes: &[u64]) -> usize {
    let slack = (gpu.limits.min_storage_buffer_offset_alignment as u64).max(16) + 16;
    let room = gpu.limits.max_storage_buffer_binding_size.saturating_sub(slack);
    row_bytes.iter().map(|&b| (room / b.max(1)) as usize).min().unwrap_or(usize::MAX)
}

struct Checked {
    m: usize,
    n: usize,
    k: usize,
    out_shape: Vec<usize>,
}

fn check(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Checked> {
    let xs = x.shape();
    let ws = w.shape();
    if xs.is_empty() || ws.len() != 2 {
        return Err(Error::Input(format!("linear wants x [.., K] and W [N, K], got x {xs:?}, W {ws:?}")));
    }
    let k = *xs.last().unwrap_or(&0);
    let (n, wk) = (ws[0], ws[1]);
    if wk != k || k == 0 || n == 0 {
        return Err(Error::Input(format!("linear: x {xs:?} and W {ws:?} disagree on K (x·Wᵀ, W is [N, K])")));
    }
    if w.dtype() != DType::F16 {
        return Err(Error::Input(format!("linear: W must be F16, got {:?}", w.dtype())));
    }
    if let Some(b) = bias {
        if b.shape() != [n] || b.dtype() != DType::F16 {
            return Err(Error::Input(format!("linear: bias must be F16 [{n}], got {:?} {:?}", b.dtype(), b.shape())));
        }
    }
    let m = x.numel() / k;
    let mut out_shape = xs.to_vec();
    *out_shape.last_mut().expect("x has a last dim") = n;
    Ok(Checked { m, n, k, out_shape })
}

/// y = x·Wᵀ + b. x [.., K] F16 or F32, W [N, K] F16, bias [N] F16; y [.., N] of `out` dtype.
pub fn linear(gpu: &Gpu, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, out: DType) -> Result<Tensor> {
    run(gpu, x, w, bias, out, false)
}

/// The same product by the naive one-output-per-thread kernel: the benchmark's baseline.
pub fn naive_matmul(gpu: &Gpu, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, out: DType) -> Result<Tensor> {
    run(gpu, x, w, bias, out, true)
}

fn run(gpu: &Gpu, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, out: DType, naive: bool) -> Result<Tensor> {
    let Checked { m, n, k, out_shape } = check(x, w, bias)?;
    let y = Tensor::empty(gpu, &out_shape, out)?;
    gpu.tally(|| Work {
        shape: OpShape { family: Family::Linear, dims: vec![m, k, n], x: x.dtype(), y: out },
        flops: 2.0 * (m * n) as f64 * k as f64,
        bytes: work::bytes_of(m * k, x.dtype()) + work::bytes_of(n * k, DType::F16) + work::bytes_of(m * n, out),
    });
    let x_half = x.dtype() == DType::F16;
    // vec4<u32> loads need every row to start on a 16-byte boundary.
    let vec = !naive && k % 8 == 0;
    let v = variant(gpu.f16, x_half, out == DType::F16, vec);
    let pipe = gpu.pipeline(&v, if naive { "naive" } else { "tiled" })?;
    let limit = gpu.limits.max_storage_buffer_binding_size;
    if w.byte_len_padded() > limit {
        return Err(Error::Gpu(format!(
            "linear: weight {:?} is over this device's {limit}-byte storage binding limit",
            w.shape()
        )));
    }
    let max_wg = gpu.limits.max_compute_workgroups_per_dimension as usize;
    let xs = x.dtype().size() as u64;
    let ys = out.size() as u64;
    let mut rows = rows_per_binding(gpu, &[k as u64 * xs, n as u64 * ys]);
    rows = rows.min(if naive { max_wg } else { max_wg * TILE });
    if rows == 0 {
        return Err(Error::Gpu(format!("linear: one row of x {:?} or y does not fit a storage binding", x.shape())));
    }
    if !naive && rows < m {
        rows -= rows % TILE;
    }
    let (wb, _) = window(gpu, w, 0, (n * k) as u64)?;
    let mut m0 = 0usize;
    while m0 < m {
        let mb = rows.min(m - m0);
        let (xb, x_off) = window(gpu, x, (m0 * k) as u64, (mb * k) as u64)?;
        let (yb, y_off) = window(gpu, &y, (m0 * n) as u64, (mb * n) as u64)?;
        let bb = match bias {
            Some(b) => window(gpu, b, 0, n as u64)?.0,
            // Unused when has_bias == 0, but the layout wants a buffer there.
            None => window(gpu, w, 0, 2)?.0,
        };
        let p = Params {
            m: mb as u32,
            n: n as u32,
            k: k as u32,
            x_off,
            y_off,
            has_bias: bias.is_some() as u32,
            _pad: [0; 2],
        };
        let groups = if naive {
            [n.div_ceil(64) as u32, mb as u32, 1]
        } else {
            [n.div_ceil(TILE) as u32, mb.div_ceil(TILE) as u32, 1]
        };
        let wb2 = Binding { buffer: wb.buffer, offset: wb.offset, size: wb.size };
        gpu.dispatch(&pipe, &[xb, wb2, bb, yb], &p, groups)?;
        m0 += mb;
    }
    Ok(y)
}

/// A deterministic F16 tensor of small values for benchmarks (contents do not affect timing).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn bench_tensor(gpu: &Gpu, shape: &[usize], dtype: DType) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|i| ((i * 7919 % 1009) as f32 - 504.0) / 1024.0).collect();
    Tensor::from_f32(gpu, shape, dtype, &v)
}

/// Benchmark rows: the naive baseline and the SDXL linear shapes (f16 activations, as the UNet).
#[cfg(not(target_arch = "wasm32"))]
pub fn bench_rows(b: &mut super::bench::Bench) -> Result<()> {
    let gpu = b.gpu;
    let shapes: [(&str, usize, usize, usize); 3] =
        [("naive_matmul", 4096, 640, 640), ("linear", 4096, 640, 640), ("linear", 1024, 1280, 10240)];
    for (kernel, m, k, n) in shapes {
        if !b.wants(kernel) {
            continue;
        }
        let x = bench_tensor(gpu, &[m, k], DType::F16)?;
        let w = bench_tensor(gpu, &[n, k], DType::F16)?;
        let bias = bench_tensor(gpu, &[n], DType::F16)?;
        let flops = 2.0 * (m * n * k) as f64;
        let naive = kernel == "naive_matmul";
        b.time_op(kernel, &format!("{m}x{k} -> {n}, f16 act"), flops, || {
            if naive {
                naive_matmul(gpu, &x, &w, Some(&bias), DType::F16)?;
            } else {
                linear(gpu, &x, &w, Some(&bias), DType::F16)?;
            }
            Ok(())
        })?;
    }
    // A LoRA-augmented linear (one rank-32 LoRA, the common size, on SDXL's level-1 attention
    // projection): the base matmul plus the unfused low-rank path of `model::layers::lora_linear`
    // (A·x, scale, B·(·), add). The row's time against the plain `linear` row above is the LoRA's cost.
    if b.wants("linear_lora") {
        let (m, k, n, r) = (4096, 640, 640, 32);
        let x = bench_tensor(gpu, &[m, k], DType::F16)?;
        let w = bench_tensor(gpu, &[n, k], DType::F16)?;
        let bias = bench_tensor(gpu, &[n], DType::F16)?;
        let down = bench_tensor(gpu, &[r, k], DType::F16)?;
        let up = bench_tensor(gpu, &[n, r], DType::F16)?;
        let flops = 2.0 * (m * n * k + m * r * k + m * n * r) as f64;
        b.time_op("linear_lora", &format!("{m}x{k} -> {n} + rank {r}, f16 act"), flops, || {
            let y = linear(gpu, &x, &w, Some(&bias), DType::F16)?;
            let t = linear(gpu, &x, &down, None, DType::F16)?;
            let t = crate::ops::elementwise::scale(gpu, &t, 0.8, 0.0)?;
            let d = linear(gpu, &t, &up, None, DType::F16)?;
            crate::ops::elementwise::add(gpu, &y, &d)?;
            Ok(())
        })?;
    }
    Ok(())
}
