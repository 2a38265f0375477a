//! The smoke kernel (`shaders/smoke.wgsl`): y = a·x + b on f16 tensors.

use crate::gpu::{grid, Binding, DType, Gpu, Tensor, Variant};
use crate::{Error, Result};

pub fn variants(f16: bool) -> Vec<Variant> {
    vec![Variant::new("smoke", f16)]
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    a: f32,
    b: f32,
    _pad: u32,
}

/// y = a·x + b, elementwise. x: any shape, F16.
pub fn axpb(gpu: &Gpu, x: &Tensor, a: f32, b: f32) -> Result<Tensor> {
    if x.dtype() != DType::F16 {
        return Err(Error::Input(format!("smoke::axpb wants an F16 tensor, got {:?}", x.dtype())));
    }
    let y = Tensor::empty(gpu, x.shape(), DType::F16)?;
    let pipe = gpu.pipeline(&variants(gpu.f16)[0], "main")?;
    let words = x.numel().div_ceil(2) as u32;
    let wg = grid(words.div_ceil(64), gpu.limits.max_compute_workgroups_per_dimension);
    let p = Params { n: x.numel() as u32, a, b, _pad: 0 };
    gpu.dispatch(&pipe, &[Binding::whole(x), Binding::whole(&y)], &p, wg)?;
    Ok(y)
}
