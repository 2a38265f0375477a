//! 2-D convolution (`shaders/conv.wgsl`), NCHW with PyTorch's weight layout [O, C, kh, kw], as an
//! implicit GEMM. Inputs or outputs over the storage-binding limit (a VAE activation at 1024²
//! is 512 MiB in f32) are split per image, into blocks of input channels (accumulated into y)
//! and blocks of output channels, each bound as a window.

use super::linear::{rows_per_binding, window};
use crate::gpu::work::{self, Family, OpShape, Work};
use crate::gpu::{Binding, DType, Gpu, Tensor, Variant};
use crate::{Error, Result};

const TILE: usize = 64;

/// (kernel size, stride, padding) of the convolutions SDXL uses: 3×3 same, 3×3 stride-2
/// downsample, 1×1. Other square shapes compile on demand.
pub const SDXL_SHAPES: [(usize, usize, usize); 3] = [(3, 1, 1), (3, 2, 1), (1, 1, 0)];

fn variant(f16: bool, x_half: bool, y_half: bool, ksize: usize, stride: usize, pad: usize) -> Variant {
    let half_math = f16 && x_half;
    Variant::new("conv", f16)
        .with_const("X_HALF", x_half)
        .with_const("Y_HALF", y_half)
        .with_const("HALF_MATH", half_math)
        .with_alias("MT", if half_math { "f16" } else { "f32" })
        .with_const("KH", ksize)
        .with_const("KW", ksize)
        .with_const("STRIDE", stride)
        .with_const("PAD", pad)
}

pub fn variants(f16: bool) -> Vec<Variant> {
    let mut v = Vec::new();
    for (k, s, p) in SDXL_SHAPES {
        for x_half in [false, true] {
            for y_half in [false, true] {
                v.push(variant(f16, x_half, y_half, k, s, p));
            }
        }
    }
    v
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    c: u32,
    h_in: u32,
    w_in: u32,
    o: u32,
    ho: u32,
    wo: u32,
    k_total: u32,
    k0w: u32,
    o0: u32,
    x_off: u32,
    y_off: u32,
    flags: u32,
    x_bs: u32,
    y_bs: u32,
    p_tile0: u32,
    _pad: u32,
}

const HAS_BIAS: u32 = 1;
const ACCUMULATE: u32 = 2;

/// Output spatial size as PyTorch computes it.
pub fn out_size(h: usize, ksize: usize, stride: usize, pad: usize) -> Option<usize> {
    (h + 2 * pad).checked_sub(ksize).map(|d| d / stride + 1)
}

/// y = conv2d(x, W, bias, stride, padding). x [B, C, H, W] F16 or F32, W [O, C, k, k] F16 (square
/// kernel), bias [O] F16; y [B, O, Ho, Wo] of dtype `out`.
pub fn conv2d(
    gpu: &Gpu,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    pad: usize,
    out: DType,
) -> Result<Tensor> {
    conv2d_padded(gpu, x, w, bias, stride, (pad, pad), out)
}

/// conv2d with zero padding `(before, after)` on both spatial axes: diffusers' VAE encoder
/// downsample is `F.pad(x, (0, 1, 0, 1))` then a stride-2 conv without padding, i.e. (0, 1). The
/// kernel reads are bounds-checked, so the trailing padding is only a larger output.
pub fn conv2d_padded(
    gpu: &Gpu,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    (pad, pad_after): (usize, usize),
    out: DType,
) -> Result<Tensor> {
    let (xs, ws) = (x.shape(), w.shape());
    if xs.len() != 4 || ws.len() != 4 {
        return Err(Error::Input(format!("conv2d wants x [B, C, H, W] and W [O, C, kh, kw], got x {xs:?}, W {ws:?}")));
    }
    let (b, c, h, wd) = (xs[0], xs[1], xs[2], xs[3]);
    let (o, wc, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
    if wc != c || kh != kw || kh == 0 || o == 0 || c == 0 || stride == 0 {
        return Err(Error::Input(format!(
            "conv2d: x {xs:?} and W {ws:?} (stride {stride}) do not fit: W must be [O, C, k, k] with C = {c}"
        )));
    }
    if w.dtype() != DType::F16 {
        return Err(Error::Input(format!("conv2d: W must be F16, got {:?}", w.dtype())));
    }
    if let Some(bt) = bias {
        if bt.shape() != [o] || bt.dtype() != DType::F16 {
            return Err(Error::Input(format!("conv2d: bias must be F16 [{o}], got {:?} {:?}", bt.dtype(), bt.shape())));
        }
    }
    let size = |n: usize| (n + pad + pad_after).checked_sub(kh).map(|d| d / stride + 1);
    let (Some(ho), Some(wo)) = (size(h), size(wd)) else {
        return Err(Error::Input(format!(
            "conv2d: input {h}x{wd} is smaller than the {kh}x{kw} kernel with padding {pad}"
        )));
    };
    let np = ho * wo;
    let y = Tensor::empty(gpu, &[b, o, ho, wo], out)?;
    gpu.tally(|| Work {
        shape: OpShape {
            family: if kh == 3 { Family::Conv3x3 } else { Family::ConvOther },
            dims: vec![b, c, h, wd, o, kh, stride, pad, pad_after],
            x: x.dtype(),
            y: out,
        },
        flops: 2.0 * (b * o * np) as f64 * (c * kh * kw) as f64,
        bytes: work::bytes_of(x.numel(), x.dtype())
            + work::bytes_of(w.numel(), DType::F16)
            + work::bytes_of(y.numel(), out),
    });
    if b == 0 || np == 0 {
        return Ok(y);
    }
    let limit = gpu.limits.max_storage_buffer_binding_size;
    if w.byte_len_padded() > limit {
        return Err(Error::Gpu(format!(
            "conv2d: weight {ws:?} is over this device's {limit}-byte storage binding limit"
        )));
    }
    let v = variant(gpu.f16, x.dtype() == DType::F16, out == DType::F16, kh, stride, pad);
    let pipe = gpu.pipeline(&v, "main")?;
    let max_wg = gpu.limits.max_compute_workgroups_per_dimension as usize;
    let (hw, ksq) = (h * wd, kh * kw);
    let (xe, ye) = (x.dtype().size() as u64, out.size() as u64);

    // Whole tensors in one binding each when they fit; else per image, channel blocks.
    let whole = x.byte_len_padded() <= limit && y.byte_len_padded() <= limit;
    let (cb, ob) = if whole {
        (c, o)
    } else {
        (rows_per_binding(gpu, &[hw as u64 * xe]).min(c), rows_per_binding(gpu, &[np as u64 * ye]).min(o))
    };
    if cb == 0 || ob == 0 {
        return Err(Error::Gpu(format!("conv2d: one channel plane of x {xs:?} or y does not fit a storage binding")));
    }
    let images: Vec<(usize, usize)> = if whole { vec![(0, b)] } else { (0..b).map(|i| (i, 1)).collect() };
    let (wb, _) = window(gpu, w, 0, w.numel() as u64)?;
    let p_tiles = np.div_ceil(TILE);
    for &(b0, nb) in &images {
        for o0 in (0..o).step_by(ob) {
            let on = ob.min(o - o0);
            for c0 in (0..c).step_by(cb) {
                let cn = cb.min(c - c0);
                let xe0 = ((b0 * c + c0) * hw) as u64;
                let x_count = if whole { (b * c * hw) as u64 } else { (cn * hw) as u64 };
                let (xb, x_off) = window(gpu, x, xe0, x_count)?;
                let ye0 = ((b0 * o + o0) * np) as u64;
                let y_count = if whole { (b * o * np) as u64 } else { (on * np) as u64 };
                let (yb, y_off) = window(gpu, &y, ye0, y_count)?;
                let mut flags = 0;
                if c0 == 0 && bias.is_some() {
                    flags |= HAS_BIAS;
                }
                if c0 > 0 {
                    flags |= ACCUMULATE;
                }
                for t0 in (0..p_tiles).step_by(max_wg) {
                    let tn = max_wg.min(p_tiles - t0);
                    let p = Params {
                        c: cn as u32,
                        h_in: h as u32,
                        w_in: wd as u32,
                        o: on as u32,
                        ho: ho as u32,
                        wo: wo as u32,
                        k_total: (c * ksq) as u32,
                        k0w: (c0 * ksq) as u32,
                        o0: o0 as u32,
                        x_off,
                        y_off,
                        flags,
                        x_bs: (c * hw) as u32,
                        y_bs: (o * np) as u32,
                        p_tile0: t0 as u32,
                        _pad: 0,
                    };
                    let bb = match bias {
                        Some(bt) => window(gpu, bt, 0, o as u64)?.0,
                        // Unused without HAS_BIAS, but the layout wants a buffer there.
                        None => window(gpu, w, 0, 2)?.0,
                    };
                    let wb2 = Binding { buffer: wb.buffer, offset: wb.offset, size: wb.size };
                    let xb2 = Binding { buffer: xb.buffer, offset: xb.offset, size: xb.size };
                    let yb2 = Binding { buffer: yb.buffer, offset: yb.offset, size: yb.size };
                    gpu.dispatch(&pipe, &[xb2, wb2, bb, yb2], &p, [tn as u32, on.div_ceil(TILE) as u32, nb as u32])?;
                }
            }
        }
    }
    Ok(y)
}

/// Benchmark rows: 3×3 same convolutions at the UNet's three resolutions (f16 activations).
#[cfg(not(target_arch = "wasm32"))]
pub fn bench_rows(b: &mut super::bench::Bench) -> Result<()> {
    use super::linear::bench_tensor;
    if !b.wants("conv3x3") {
        return Ok(());
    }
    let gpu = b.gpu;
    for (ch, res) in [(320usize, 128usize), (640, 64), (1280, 32)] {
        let x = bench_tensor(gpu, &[1, ch, res, res], DType::F16)?;
        let w = bench_tensor(gpu, &[ch, ch, 3, 3], DType::F16)?;
        let bias = bench_tensor(gpu, &[ch], DType::F16)?;
        let flops = 2.0 * (res * res * ch * ch * 9) as f64;
        b.time_op("conv3x3", &format!("{ch}->{ch} at {res}x{res}, f16 act"), flops, || {
            conv2d(gpu, &x, &w, Some(&bias), 1, 1, DType::F16)?;
            Ok(())
        })?;
    }
    Ok(())
}
