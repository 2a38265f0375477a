//! FMA peak microbenchmark (`shaders/peak.wgsl`): the device's measured arithmetic ceiling, the
//! denominator of the benchmark's "% of peak".

use crate::gpu::{Binding, DType, Gpu, Tensor, Variant};
use crate::Result;

pub fn variants(f16: bool) -> Vec<Variant> {
    vec![Variant::new("peak", f16)]
}

const THREADS: u32 = 256;
/// Scalar FMAs per thread per round (8 vec4 chains), 2 FLOPs each.
const FLOPS_PER_ROUND: f64 = 32.0 * 2.0;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rounds: u32,
    b: f32,
    c: f32,
    _pad: u32,
}

/// One FMA-chain dispatch, recorded (not waited for): `groups` workgroups of 256 threads, each
/// running `rounds` rounds, in f16 (`half`, needs shader-f16) or f32. Returns the FLOPs it does.
pub fn dispatch(gpu: &Gpu, out: &Tensor, half: bool, groups: u32, rounds: u32) -> Result<f64> {
    let pipe = gpu.pipeline(&variants(half)[0], "main")?;
    // x ← 0.999·x + 0.001 converges to 1: no overflow or denormals in either type.
    let p = Params { rounds, b: 0.999, c: 0.001, _pad: 0 };
    gpu.dispatch(&pipe, &[Binding::whole(out)], &p, [groups, 1, 1])?;
    Ok(groups as f64 * THREADS as f64 * rounds as f64 * FLOPS_PER_ROUND)
}

/// The output buffer `dispatch` writes: one f32 per thread.
pub fn out_tensor(gpu: &Gpu, groups: u32) -> Result<Tensor> {
    Tensor::empty(gpu, &[(groups * THREADS) as usize], DType::F32)
}
