//! Elementwise and layout ops (`shaders/elementwise.wgsl`), plus the binding-window helpers that
//! let every op handle tensors larger than one storage binding
//! (`max_storage_buffer_binding_size`: 128 MiB on lavapipe, while a 1024² VAE activation is
//! 512 MiB): a dispatch binds a window (`Binding::range`) of the buffer, starting at an offset
//! rounded down to `min_storage_buffer_offset_alignment`, and the kernel gets local indices.

use std::cell::Cell;

use crate::gpu::work;
use crate::gpu::{grid, Binding, DType, Gpu, Tensor, Variant};
use crate::{Error, Result};

// ---- binding windows ------------------------------------------------------------------------------

thread_local! {
    /// 0: no override. Thread-local so a test's reduced limit cannot leak into other tests.
    static LIMIT_OVERRIDE: Cell<u64> = const { Cell::new(0) };
}

/// Run `f` with storage bindings capped at `bytes` (on this thread). Lets tests exercise the
/// split-dispatch paths on small tensors; also usable where huge bindings are slow.
pub fn with_binding_limit<R>(bytes: u64, f: impl FnOnce() -> R) -> R {
    struct Restore(u64);
    impl Drop for Restore {
        fn drop(&mut self) {
            LIMIT_OVERRIDE.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(LIMIT_OVERRIDE.with(|c| c.replace(bytes)));
    f()
}

/// The largest storage binding ops may use, in bytes.
pub fn binding_limit(gpu: &Gpu) -> u64 {
    let dev = gpu.limits.max_storage_buffer_binding_size;
    match LIMIT_OVERRIDE.with(|c| c.get()) {
        0 => dev,
        o => dev.min(o),
    }
}

/// A bound window of a tensor: `binding` covers elements from `base` on.
pub struct Window<'a> {
    pub binding: Binding<'a>,
    /// Element index (in the whole tensor) of the window's first element.
    pub base: u64,
}

impl<'a> Window<'a> {
    /// The binding (again: `Binding` is not `Clone`).
    pub fn bind(&self) -> Binding<'a> {
        Binding { buffer: self.binding.buffer, offset: self.binding.offset, size: self.binding.size }
    }

    /// Local (in-window) index of global element `e`.
    pub fn local(&self, e: u64) -> u32 {
        (e - self.base) as u32
    }
}

/// Bind elements `start..end` of `t` (the window may begin a little earlier, at the previous
/// aligned offset). Errors when the window exceeds the binding limit.
pub fn window<'a>(gpu: &Gpu, t: &'a Tensor, start: u64, end: u64, what: &str) -> Result<Window<'a>> {
    let es = t.dtype().size() as u64;
    let align = gpu.limits.min_storage_buffer_offset_alignment.max(4) as u64;
    let off = (start * es) / align * align;
    let end_b = (end * es).next_multiple_of(4).min(t.byte_len_padded()).max(off + 4);
    let size = end_b - off;
    let limit = binding_limit(gpu);
    if size > limit {
        return Err(Error::Gpu(format!(
            "{what}: a {} MiB slice of tensor {:?} {:?} does not fit one storage binding ({} MiB limit on this device)",
            size >> 20,
            t.shape(),
            t.dtype(),
            limit >> 20
        )));
    }
    Ok(Window { binding: Binding::range(t, off, size), base: off / es })
}

/// The whole tensor as one binding (small operands: weights, broadcast terms, statistics).
pub fn whole<'a>(gpu: &Gpu, t: &'a Tensor, what: &str) -> Result<Window<'a>> {
    window(gpu, t, 0, t.numel() as u64, what)
}

/// How many units of `unit_bytes` one window may hold (leaving room for the alignment slack).
pub fn units_per_window(gpu: &Gpu, unit_bytes: u64, what: &str) -> Result<u64> {
    let limit = binding_limit(gpu);
    let slack = gpu.limits.min_storage_buffer_offset_alignment.max(4) as u64 + 4;
    let n = limit.saturating_sub(slack) / unit_bytes.max(1);
    if n == 0 {
        return Err(Error::Gpu(format!(
            "{what}: one unit of {unit_bytes} bytes exceeds this device's storage binding limit of {limit} bytes"
        )));
    }
    Ok(n)
}

/// Split `0..total` into runs of at most `per`.
pub fn spans(total: u64, per: u64) -> impl Iterator<Item = (u64, u64)> {
    let per = per.max(1);
    (0..total.div_ceil(per)).map(move |i| (i * per, ((i + 1) * per).min(total)))
}

/// Kernels index elements with u32.
pub fn check_u32(t: &Tensor, what: &str) -> Result<()> {
    if t.numel() as u64 > u32::MAX as u64 {
        return Err(Error::Input(format!("{what}: tensor {:?} has more than 2^32 elements", t.shape())));
    }
    Ok(())
}

/// Workgroups for `n` element pairs starting at local index `y0`, 256 threads each.
fn pair_grid(gpu: &Gpu, y0: u32, n: u32) -> [u32; 3] {
    let pairs = (y0 + n).div_ceil(2) - y0 / 2;
    grid(pairs.div_ceil(256), gpu.limits.max_compute_workgroups_per_dimension)
}

fn is_half(d: DType) -> bool {
    d == DType::F16
}

// ---- variants -----------------------------------------------------------------------------------

const OP_COPY: u32 = 0;
const OP_SILU: u32 = 1;
const OP_GELU: u32 = 2;
const OP_QUICK_GELU: u32 = 3;
const OP_AFFINE: u32 = 4;
const OP_ADD: u32 = 0;
const OP_MUL: u32 = 1;

fn variant(f16: bool, op: u32, x: DType, x2: DType, y: DType) -> Variant {
    Variant::new("elementwise", f16)
        .with_const("OP", format!("{op}u"))
        .with_const("X_HALF", is_half(x))
        .with_const("X2_HALF", is_half(x2))
        .with_const("Y_HALF", is_half(y))
}

/// Every variant the ops below can build (for naga validation).
pub fn variants(f16: bool) -> Vec<Variant> {
    let mut v = Vec::new();
    for op in 0..=4 {
        for x in [DType::F16, DType::F32] {
            for x2 in [DType::F16, DType::F32] {
                for y in [DType::F16, DType::F32] {
                    v.push(variant(f16, op, x, x2, y));
                }
            }
        }
    }
    v
}

// ---- unary ops ----------------------------------------------------------------------------------

/// A pointwise function.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary {
    /// Identity (copy / dtype cast).
    Copy,
    /// x · sigmoid(x).
    Silu,
    /// Exact GELU, 0.5·x·(1 + erf(x/√2)).
    Gelu,
    /// x · sigmoid(1.702·x) (CLIP ViT-L).
    QuickGelu,
    /// alpha·x + beta.
    Affine(f32, f32),
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct UnaryP {
    n: u32,
    y0: u32,
    x0: u32,
    _p0: u32,
    alpha: f32,
    beta: f32,
    _p1: [u32; 2],
}

/// y[y_start + k] = op(x[x_start + k]) for k < n, in as many dispatches as the binding limit needs.
#[allow(clippy::too_many_arguments)]
fn unary_into(
    gpu: &Gpu,
    op: Unary,
    x: &Tensor,
    x_start: u64,
    y: &Tensor,
    y_start: u64,
    n: u64,
    what: &str,
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    gpu.tally(|| work::elementwise(n as usize, work::bytes_of(n as usize, x.dtype()), x.dtype(), y.dtype()));
    let (code, alpha, beta) = match op {
        Unary::Copy => (OP_COPY, 1.0, 0.0),
        Unary::Silu => (OP_SILU, 1.0, 0.0),
        Unary::Gelu => (OP_GELU, 1.0, 0.0),
        Unary::QuickGelu => (OP_QUICK_GELU, 1.0, 0.0),
        Unary::Affine(a, b) => (OP_AFFINE, a, b),
    };
    let pipe = gpu.pipeline(&variant(gpu.f16, code, x.dtype(), x.dtype(), y.dtype()), "unary")?;
    let unit = x.dtype().size().max(y.dtype().size()) as u64;
    // Even-sized chunks keep F16 chunk boundaries on word boundaries where possible.
    let per = units_per_window(gpu, unit, what)? & !1;
    for (c0, c1) in spans(n, per.max(2)) {
        let xw = window(gpu, x, x_start + c0, x_start + c1, what)?;
        let yw = window(gpu, y, y_start + c0, y_start + c1, what)?;
        let p = UnaryP {
            n: (c1 - c0) as u32,
            y0: yw.local(y_start + c0),
            x0: xw.local(x_start + c0),
            _p0: 0,
            alpha,
            beta,
            _p1: [0; 2],
        };
        let wg = pair_grid(gpu, p.y0, p.n);
        gpu.dispatch(&pipe, &[xw.binding, yw.binding], &p, wg)?;
    }
    Ok(())
}

/// op(x) elementwise into a new tensor of dtype `out`.
pub fn unary(gpu: &Gpu, x: &Tensor, op: Unary, out: DType) -> Result<Tensor> {
    check_u32(x, "unary op")?;
    let y = Tensor::empty(gpu, x.shape(), out)?;
    unary_into(gpu, op, x, 0, &y, 0, x.numel() as u64, &format!("{op:?}"))?;
    Ok(y)
}

pub fn silu(gpu: &Gpu, x: &Tensor) -> Result<Tensor> {
    unary(gpu, x, Unary::Silu, x.dtype())
}

pub fn gelu(gpu: &Gpu, x: &Tensor) -> Result<Tensor> {
    unary(gpu, x, Unary::Gelu, x.dtype())
}

pub fn quick_gelu(gpu: &Gpu, x: &Tensor) -> Result<Tensor> {
    unary(gpu, x, Unary::QuickGelu, x.dtype())
}

/// alpha·x + beta.
pub fn scale(gpu: &Gpu, x: &Tensor, alpha: f32, beta: f32) -> Result<Tensor> {
    unary(gpu, x, Unary::Affine(alpha, beta), x.dtype())
}

/// The same values in another dtype (F32 → F16 rounds to nearest).
pub fn cast(gpu: &Gpu, x: &Tensor, dtype: DType) -> Result<Tensor> {
    unary(gpu, x, Unary::Copy, dtype)
}

// ---- binary ops with broadcast ------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    Add,
    Mul,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct BinaryP {
    n: u32,
    y0: u32,
    a0: u32,
    b0: u32,
    e0: u32,
    a_bc: u32,
    b_bc: u32,
    _p: u32,
    dims: [u32; 4],
    sa: [u32; 4],
    sb: [u32; 4],
}

/// numpy broadcasting of two shapes (aligned at the last dimension).
fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n { a[i + a.len() - n] } else { 1 };
        let db = if i + b.len() >= n { b[i + b.len() - n] } else { 1 };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// Strides of `s` broadcast to the 4-D `out` (0 along broadcast dimensions).
fn bcast_strides(s: &[usize], out4: &[usize; 4]) -> [u32; 4] {
    let mut s4 = [1usize; 4];
    s4[4 - s.len()..].copy_from_slice(s);
    let mut st = [0u32; 4];
    let mut acc = 1usize;
    for d in (0..4).rev() {
        st[d] = if s4[d] == 1 && out4[d] != 1 { 0 } else { acc as u32 };
        acc *= s4[d];
    }
    st
}

/// a op b with numpy broadcasting (e.g. [B,C,H,W] + [B,C,1,1], [B,T,C] + [C]); result dtype `out`.
/// Up to 4 dimensions. A broadcast (smaller) operand must fit one binding.
pub fn binary(gpu: &Gpu, a: &Tensor, b: &Tensor, op: Binary, out: DType) -> Result<Tensor> {
    let what = format!("{op:?}");
    let shape = broadcast_shape(a.shape(), b.shape())
        .ok_or_else(|| Error::Input(format!("{what}: shapes {:?} and {:?} do not broadcast", a.shape(), b.shape())))?;
    if shape.len() > 4 {
        return Err(Error::Input(format!("{what}: at most 4 dimensions, got {shape:?}")));
    }
    let y = Tensor::empty(gpu, &shape, out)?;
    check_u32(&y, &what)?;
    let n = y.numel() as u64;
    if n == 0 {
        return Ok(y);
    }
    gpu.tally(|| {
        let inb = work::bytes_of(a.numel(), a.dtype()) + work::bytes_of(b.numel(), b.dtype());
        work::elementwise(n as usize, inb, a.dtype(), out)
    });
    let mut out4 = [1usize; 4];
    out4[4 - shape.len()..].copy_from_slice(&shape);
    let a_bc = a.numel() as u64 != n;
    let b_bc = b.numel() as u64 != n;
    let pipe = gpu.pipeline(&variant(gpu.f16, op_code(op), a.dtype(), b.dtype(), out), "binary")?;
    let mut unit = out.size();
    if !a_bc {
        unit = unit.max(a.dtype().size());
    }
    if !b_bc {
        unit = unit.max(b.dtype().size());
    }
    let per = units_per_window(gpu, unit as u64, &what)? & !1;
    let dims = out4.map(|d| d as u32);
    let (sa, sb) = (bcast_strides(a.shape(), &out4), bcast_strides(b.shape(), &out4));
    for (c0, c1) in spans(n, per.max(2)) {
        let aw = if a_bc { whole(gpu, a, &what)? } else { window(gpu, a, c0, c1, &what)? };
        let bw = if b_bc { whole(gpu, b, &what)? } else { window(gpu, b, c0, c1, &what)? };
        let yw = window(gpu, &y, c0, c1, &what)?;
        let p = BinaryP {
            n: (c1 - c0) as u32,
            y0: yw.local(c0),
            a0: if a_bc { 0 } else { aw.local(c0) },
            b0: if b_bc { 0 } else { bw.local(c0) },
            e0: c0 as u32,
            a_bc: a_bc as u32,
            b_bc: b_bc as u32,
            _p: 0,
            dims,
            sa,
            sb,
        };
        let wg = pair_grid(gpu, p.y0, p.n);
        gpu.dispatch(&pipe, &[aw.binding, bw.binding, yw.binding], &p, wg)?;
    }
    Ok(y)
}

fn op_code(op: Binary) -> u32 {
    match op {
        Binary::Add => OP_ADD,
        Binary::Mul => OP_MUL,
    }
}

/// a + b (broadcast), in a's dtype.
pub fn add(gpu: &Gpu, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(gpu, a, b, Binary::Add, a.dtype())
}

/// a · b (broadcast), in a's dtype.
pub fn mul(gpu: &Gpu, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(gpu, a, b, Binary::Mul, a.dtype())
}

// ---- GEGLU ----------------------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GegluP {
    n: u32,
    y0: u32,
    x0: u32,
    f: u32,
}

/// x [.., 2F] → x[.., :F] · gelu(x[.., F:]) (diffusers GEGLU after its projection).
pub fn geglu(gpu: &Gpu, x: &Tensor) -> Result<Tensor> {
    let what = "geglu";
    let (&last, lead) = x.shape().split_last().ok_or_else(|| Error::Input(format!("{what}: scalar input")))?;
    if last % 2 != 0 || last == 0 {
        return Err(Error::Input(format!("{what}: last dimension must be even, got {:?}", x.shape())));
    }
    check_u32(x, what)?;
    let f = last / 2;
    let mut shape = lead.to_vec();
    shape.push(f);
    let y = Tensor::empty(gpu, &shape, x.dtype())?;
    gpu.tally(|| work::elementwise(y.numel(), work::bytes_of(x.numel(), x.dtype()), x.dtype(), x.dtype()));
    let rows = lead.iter().product::<usize>() as u64;
    let pipe = gpu.pipeline(&variant(gpu.f16, 0, x.dtype(), x.dtype(), x.dtype()), "geglu")?;
    let per = units_per_window(gpu, (last * x.dtype().size()) as u64, what)?;
    for (r0, r1) in spans(rows, per) {
        let xw = window(gpu, x, r0 * last as u64, r1 * last as u64, what)?;
        let yw = window(gpu, &y, r0 * f as u64, r1 * f as u64, what)?;
        let p = GegluP {
            n: ((r1 - r0) * f as u64) as u32,
            y0: yw.local(r0 * f as u64),
            x0: xw.local(r0 * last as u64),
            f: f as u32,
        };
        let wg = pair_grid(gpu, p.y0, p.n);
        gpu.dispatch(&pipe, &[xw.binding, yw.binding], &p, wg)?;
    }
    Ok(y)
}

// ---- nearest 2x upsample --------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct UpP {
    n: u32,
    y0: u32,
    x0: u32,
    w: u32,
}

/// Nearest-neighbour 2× upsample of the last two dimensions ([B, C, H, W] → [B, C, 2H, 2W]).
pub fn upsample_nearest_2x(gpu: &Gpu, x: &Tensor) -> Result<Tensor> {
    let what = "upsample_nearest_2x";
    let s = x.shape();
    if s.len() < 2 {
        return Err(Error::Input(format!("{what}: needs [.., H, W], got {s:?}")));
    }
    let (h, w) = (s[s.len() - 2], s[s.len() - 1]);
    let mut shape = s.to_vec();
    shape[s.len() - 2] = 2 * h;
    shape[s.len() - 1] = 2 * w;
    let y = Tensor::empty(gpu, &shape, x.dtype())?;
    check_u32(&y, what)?;
    if w == 0 {
        return Ok(y);
    }
    gpu.tally(|| work::elementwise(y.numel(), work::bytes_of(x.numel(), x.dtype()), x.dtype(), x.dtype()));
    // Input row i (over all planes) becomes output rows 2i, 2i+1.
    let (rows, w) = ((x.numel() / w) as u64, w as u64);
    let pipe = gpu.pipeline(&variant(gpu.f16, 0, x.dtype(), x.dtype(), x.dtype()), "upsample")?;
    let per = units_per_window(gpu, 4 * w * x.dtype().size() as u64, what)?;
    for (r0, r1) in spans(rows, per) {
        let xw = window(gpu, x, r0 * w, r1 * w, what)?;
        let yw = window(gpu, &y, r0 * 4 * w, r1 * 4 * w, what)?;
        let p = UpP { n: ((r1 - r0) * 4 * w) as u32, y0: yw.local(r0 * 4 * w), x0: xw.local(r0 * w), w: w as u32 };
        let wg = pair_grid(gpu, p.y0, p.n);
        gpu.dispatch(&pipe, &[xw.binding, yw.binding], &p, wg)?;
    }
    Ok(y)
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct UpToP {
    n: u32,
    y0: u32,
    x0: u32,
    w: u32,
    h: u32,
    ow: u32,
    oh: u32,
    _p0: u32,
    sw: f32,
    sh: f32,
    _p1: [u32; 2],
}

/// Nearest-neighbour resize of the last two dimensions to `oh × ow`, as torch's
/// `F.interpolate(size=(oh, ow), mode="nearest")` (exact 2× goes through the faster kernel).
pub fn upsample_nearest_to(gpu: &Gpu, x: &Tensor, oh: usize, ow: usize) -> Result<Tensor> {
    let what = "upsample_nearest_to";
    let s = x.shape();
    if s.len() < 2 || oh == 0 || ow == 0 {
        return Err(Error::Input(format!("{what}: needs [.., H, W] and a non-empty size, got {s:?} -> {oh}x{ow}")));
    }
    let (h, w) = (s[s.len() - 2], s[s.len() - 1]);
    if (oh, ow) == (2 * h, 2 * w) {
        return upsample_nearest_2x(gpu, x);
    }
    let mut shape = s.to_vec();
    shape[s.len() - 2] = oh;
    shape[s.len() - 1] = ow;
    let y = Tensor::empty(gpu, &shape, x.dtype())?;
    check_u32(&y, what)?;
    if h == 0 || w == 0 {
        return Ok(y);
    }
    gpu.tally(|| work::elementwise(y.numel(), work::bytes_of(x.numel(), x.dtype()), x.dtype(), x.dtype()));
    let planes = (x.numel() / (h * w)) as u64;
    let (in_plane, out_plane) = ((h * w) as u64, (oh * ow) as u64);
    let pipe = gpu.pipeline(&variant(gpu.f16, 0, x.dtype(), x.dtype(), x.dtype()), "upsample_to")?;
    let per = units_per_window(gpu, in_plane.max(out_plane) * x.dtype().size() as u64, what)?;
    for (p0, p1) in spans(planes, per) {
        let xw = window(gpu, x, p0 * in_plane, p1 * in_plane, what)?;
        let yw = window(gpu, &y, p0 * out_plane, p1 * out_plane, what)?;
        let p = UpToP {
            n: ((p1 - p0) * out_plane) as u32,
            y0: yw.local(p0 * out_plane),
            x0: xw.local(p0 * in_plane),
            w: w as u32,
            h: h as u32,
            ow: ow as u32,
            oh: oh as u32,
            _p0: 0,
            // torch: (float)input_size / output_size.
            sw: w as f32 / ow as f32,
            sh: h as f32 / oh as f32,
            _p1: [0; 2],
        };
        let wg = pair_grid(gpu, p.y0, p.n);
        gpu.dispatch(&pipe, &[xw.binding, yw.binding], &p, wg)?;
    }
    Ok(y)
}

// ---- channel concat -------------------------------------------------------------------------------

/// Concatenate along dimension 1 ([B, C_i, ...] → [B, ΣC_i, ...]; UNet skip connections).
/// Inputs must agree in every other dimension and in dtype.
pub fn concat_channels(gpu: &Gpu, xs: &[&Tensor]) -> Result<Tensor> {
    let what = "concat_channels";
    let first = xs.first().ok_or_else(|| Error::Input(format!("{what}: no inputs")))?;
    let s0 = first.shape();
    if s0.len() < 2 {
        return Err(Error::Input(format!("{what}: needs [B, C, ...], got {s0:?}")));
    }
    let mut c_total = 0;
    for x in xs {
        let s = x.shape();
        if s.len() != s0.len() || s[0] != s0[0] || s[2..] != s0[2..] || x.dtype() != first.dtype() {
            return Err(Error::Input(format!(
                "{what}: {:?} {:?} does not match {:?} {:?} outside dimension 1",
                s,
                x.dtype(),
                s0,
                first.dtype()
            )));
        }
        c_total += s[1];
    }
    let mut shape = s0.to_vec();
    shape[1] = c_total;
    let y = Tensor::empty(gpu, &shape, first.dtype())?;
    check_u32(&y, what)?;
    let inner: u64 = s0[2..].iter().product::<usize>() as u64;
    let b = s0[0] as u64;
    let mut c_off = 0u64;
    for x in xs {
        let c = x.shape()[1] as u64;
        // One contiguous block per batch element: x[bi] → y[bi, c_off .. c_off + c].
        for bi in 0..b {
            unary_into(
                gpu,
                Unary::Copy,
                x,
                bi * c * inner,
                &y,
                (bi * c_total as u64 + c_off) * inner,
                c * inner,
                what,
            )?;
        }
        c_off += c;
    }
    Ok(y)
}

// ---- transposes -------------------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct TrP {
    r: u32,
    s: u32,
    r_lo: u32,
    r_hi: u32,
    s_lo: u32,
    s_hi: u32,
    x0: u32,
    y0: u32,
}

/// Swap the last two dimensions: [.., R, S] → [.., S, R], same dtype.
pub fn transpose_last2(gpu: &Gpu, x: &Tensor) -> Result<Tensor> {
    let what = "transpose";
    let sh = x.shape();
    if sh.len() < 2 {
        return Err(Error::Input(format!("{what}: needs [.., R, S], got {sh:?}")));
    }
    let (r, s) = (sh[sh.len() - 2], sh[sh.len() - 1]);
    let mut shape = sh.to_vec();
    shape.swap(sh.len() - 2, sh.len() - 1);
    let y = Tensor::empty(gpu, &shape, x.dtype())?;
    check_u32(x, what)?;
    let (r, s) = (r as u64, s as u64);
    if r == 0 || s == 0 {
        return Ok(y);
    }
    gpu.tally(|| work::elementwise(y.numel(), work::bytes_of(x.numel(), x.dtype()), x.dtype(), x.dtype()));
    let batches = x.numel() as u64 / (r * s);
    let es = x.dtype().size() as u64;
    let half = x.dtype() == DType::F16;
    // Block rows of x (each S long) and rows of y (each R long) so both windows fit a binding.
    // With F16 output and odd R a word can straddle two y rows (y[s, R-1], y[s+1, 0]): then the
    // block keeps all of R so that the word's second element is inside the x window.
    let mut rb = units_per_window(gpu, s * es, what)?.min(r);
    if half && r % 2 == 1 {
        if rb < r {
            return Err(Error::Gpu(format!(
                "{what}: F16 [.., {r}, {s}] with odd {r} needs one whole [{r}, {s}] matrix per binding, over the limit"
            )));
        }
    } else if half && rb < r {
        rb &= !1;
    }
    let max_wg = gpu.limits.max_compute_workgroups_per_dimension as u64 * 32;
    rb = rb.min(max_wg).max(1);
    let sb = units_per_window(gpu, r * es, what)?.min(s).min(max_wg);
    let pipe = gpu.pipeline(&variant(gpu.f16, 0, x.dtype(), x.dtype(), x.dtype()), "transpose")?;
    for bi in 0..batches {
        let base = bi * r * s;
        for (r0, r1) in spans(r, rb) {
            for (s0, s1) in spans(s, sb) {
                let xw = window(gpu, x, base + r0 * s, base + r1 * s, what)?;
                let yw = window(gpu, &y, base + s0 * r, base + s1 * r, what)?;
                let p = TrP {
                    r: r as u32,
                    s: s as u32,
                    r_lo: r0 as u32,
                    r_hi: r1 as u32,
                    s_lo: s0 as u32,
                    s_hi: s1 as u32,
                    x0: xw.local(base + r0 * s),
                    y0: yw.local(base + s0 * r),
                };
                let wg = [(s1 - s0).div_ceil(32) as u32, (r1 - r0).div_ceil(32) as u32, 1];
                gpu.dispatch(&pipe, &[xw.binding, yw.binding], &p, wg)?;
            }
        }
    }
    Ok(y)
}

/// [B, C, H, W] → [B, H·W, C] (tokens for transformer blocks and VAE attention).
pub fn nchw_to_tokens(gpu: &Gpu, x: &Tensor) -> Result<Tensor> {
    let s = x.shape();
    if s.len() != 4 {
        return Err(Error::Input(format!("nchw_to_tokens: needs [B, C, H, W], got {s:?}")));
    }
    let (b, c, hw) = (s[0], s[1], s[2] * s[3]);
    transpose_last2(gpu, &x.reshape(&[b, c, hw])?)
}

/// [B, H·W, C] → [B, C, H, W].
pub fn tokens_to_nchw(gpu: &Gpu, x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let s = x.shape();
    if s.len() != 3 || s[1] != h * w {
        return Err(Error::Input(format!("tokens_to_nchw: needs [B, {h}·{w}, C], got {s:?}")));
    }
    let (b, c) = (s[0], s[2]);
    transpose_last2(gpu, x)?.reshape(&[b, c, h, w])
}

// ---- timestep embedding -----------------------------------------------------------------------------

/// Sinusoidal embedding of timesteps, as diffusers `get_timestep_embedding(t, dim,
/// flip_sin_to_cos=True, downscale_freq_shift=0, max_period=10000)`: [cos(t·f), sin(t·f)] with
/// f_i = exp(-ln(10000)·i / (dim/2)). Used for the UNet time (dim 320) and the SDXL
/// size/crop conditioning (dim 256 per value). Returns [B, dim].
///
/// Computed on the host (a few thousand values per step): the arguments reach ~2000 rad, and
/// GPU sin/cos are only specified to 2^-11 absolute even after range reduction (SwiftShader's
/// error there changed browser images visibly), while torch's are accurate to an ulp.
pub fn timestep_embedding(gpu: &Gpu, t: &[f32], dim: usize, out: DType) -> Result<Tensor> {
    if t.is_empty() || dim < 2 {
        return Err(Error::Input(format!(
            "timestep_embedding: needs timesteps and dim >= 2 (got {} and {dim})",
            t.len()
        )));
    }
    let half_dim = dim / 2;
    // torch: exponent = -ln(max_period) * arange(half) (f32) / (half - shift); exp, t·f in f32;
    // sin/cos correctly rounded to f32 (f64 math, then one rounding).
    let ln = -(10000f64.ln() as f32);
    let freqs: Vec<f32> = (0..half_dim).map(|i| ((ln * i as f32) / half_dim as f32).exp()).collect();
    let mut y = Vec::with_capacity(t.len() * dim);
    for &tv in t {
        let args: Vec<f64> = freqs.iter().map(|&f| (tv * f) as f64).collect();
        y.extend(args.iter().map(|a| a.cos() as f32));
        y.extend(args.iter().map(|a| a.sin() as f32));
        y.resize(y.len() + dim % 2, 0.0);
    }
    Tensor::from_f32(gpu, &[t.len(), dim], out, &y)
}

// ---- token + position embedding --------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct EmbP {
    n: u32,
    c: u32,
    t: u32,
    row_lo: u32,
    row_hi: u32,
    tok0: u32,
    _p: [u32; 2],
}

/// CLIP input embedding: y[b, t] = tok[ids[b·T + t]] + pos[t]. `ids` holds B·T token ids
/// (T = `seq_len`), `tok` is [V, C], `pos` is [≥T, C]. Returns [B, T, C] in dtype `out`.
/// The token table may be larger than one binding (bigG's is 126 MB in f16).
pub fn embed_tokens(gpu: &Gpu, ids: &[u32], seq_len: usize, tok: &Tensor, pos: &Tensor, out: DType) -> Result<Tensor> {
    let what = "embed_tokens";
    let (ts, ps) = (tok.shape(), pos.shape());
    if ts.len() != 2 || ps.len() != 2 || ts[1] != ps[1] {
        return Err(Error::Input(format!("{what}: needs tok [V, C] and pos [T, C], got {ts:?} and {ps:?}")));
    }
    if seq_len == 0 || ids.is_empty() || !ids.len().is_multiple_of(seq_len) || ps[0] < seq_len {
        return Err(Error::Input(format!(
            "{what}: {} ids are not whole sequences of {seq_len} (position table has {} rows)",
            ids.len(),
            ps[0]
        )));
    }
    let (v, c) = (ts[0], ts[1]);
    if let Some((i, &bad)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= v) {
        return Err(Error::Input(format!("{what}: token id {bad} at {i} is outside the vocabulary of {v}")));
    }
    check_u32(tok, what)?;
    let ids_t = Tensor::from_bytes(gpu, &[ids.len()], DType::F32, bytemuck::cast_slice(ids))?;
    let y = Tensor::empty(gpu, &[ids.len() / seq_len, seq_len, c], out)?;
    let posw = whole(gpu, pos, what)?;
    let pipe = gpu.pipeline(&variant(gpu.f16, 0, tok.dtype(), pos.dtype(), out), "embed")?;
    let per = units_per_window(gpu, (c * tok.dtype().size()) as u64, what)?;
    let n = (ids.len() * c) as u32;
    let wg = grid(n.div_ceil(2).div_ceil(256), gpu.limits.max_compute_workgroups_per_dimension);
    for (r0, r1) in spans(v as u64, per) {
        let tw = window(gpu, tok, r0 * c as u64, r1 * c as u64, what)?;
        let p = EmbP {
            n,
            c: c as u32,
            t: seq_len as u32,
            row_lo: r0 as u32,
            row_hi: r1 as u32,
            tok0: tw.local(r0 * c as u64),
            _p: [0; 2],
        };
        gpu.dispatch(&pipe, &[Binding::whole(&ids_t), tw.binding, posw.bind(), Binding::whole(&y)], &p, wg)?;
    }
    Ok(y)
}

/// Rows r0..r1 of t ([R, ..]) as a new tensor: a GPU buffer copy, ordered with recorded work
/// (OpenCLIP's fused q/k/v `in_proj` split into three projections).
pub fn slice_rows(gpu: &Gpu, t: &Tensor, r0: usize, r1: usize) -> Result<Tensor> {
    let s = t.shape();
    let row: usize = s.iter().skip(1).product::<usize>() * t.dtype().size();
    if s.is_empty() || r1 > s[0] || r0 > r1 || !row.is_multiple_of(4) {
        return Err(Error::Input(format!("rows {r0}..{r1} of {s:?}: out of range or rows not whole words")));
    }
    let mut shape = s.to_vec();
    shape[0] = r1 - r0;
    let y = Tensor::empty(gpu, &shape, t.dtype())?;
    let bytes = ((r1 - r0) * row) as u64;
    if bytes > 0 {
        gpu.with_encoder(|e| e.copy_buffer_to_buffer(t.buffer(), (r0 * row) as u64, y.buffer(), 0, bytes));
    }
    Ok(y)
}
