//! Building blocks shared by the UNet and the VAE: scoped parameter lookup and the layers both
//! use (convolution, group norm), each checking weight shapes so a wrong checkpoint fails with the
//! tensor's name rather than deep inside a kernel.

use super::Params;
use crate::gpu::{DType, Gpu, Tensor};
use crate::ops::{conv, elementwise as ew, linear, norm};
use crate::{Error, Result};

/// A view of the parameters under a key prefix (`first_stage_model.decoder.` …).
#[derive(Clone, Copy)]
pub struct Scope<'a> {
    params: &'a dyn Params,
    prefix: &'a str,
}

/// An owned prefix, so nested scopes can be built from format strings.
pub struct Sub<'a> {
    params: &'a dyn Params,
    prefix: String,
}

impl<'a> Sub<'a> {
    pub fn scope(&self) -> Scope<'_> {
        Scope { params: self.params, prefix: &self.prefix }
    }
}

impl<'a> Scope<'a> {
    pub fn new(params: &'a dyn Params, prefix: &'a str) -> Self {
        Scope { params, prefix }
    }

    /// `prefix` + `name` + "."
    pub fn sub(&self, name: &str) -> Sub<'a> {
        Sub { params: self.params, prefix: format!("{}{name}.", self.prefix) }
    }

    pub fn name(&self, leaf: &str) -> String {
        format!("{}{leaf}", self.prefix)
    }

    /// The tensor `prefix + leaf`, checked against `shape` (dimensions of 0 are not checked).
    pub fn get(&self, leaf: &str, shape: &[usize]) -> Result<&'a Tensor> {
        let name = self.name(leaf);
        let t = self.params.get(&name)?;
        let ok = t.shape().len() == shape.len() && t.shape().iter().zip(shape).all(|(&a, &b)| b == 0 || a == b);
        if !ok {
            return Err(Error::Weights(format!("tensor `{name}` has shape {:?}, expected {shape:?}", t.shape())));
        }
        if t.dtype() != DType::F16 {
            return Err(Error::Weights(format!("tensor `{name}` must be uploaded as F16, got {:?}", t.dtype())));
        }
        Ok(t)
    }

    /// Whether `prefix + leaf` exists.
    pub fn has(&self, leaf: &str) -> bool {
        self.params.get(&self.name(leaf)).is_ok()
    }

    pub fn params(&self) -> &'a dyn Params {
        self.params
    }
}

/// y + Σ c·B·(A·x) over the LoRAs on the linear layer `key` (x [.., in] → y [.., out]): two
/// small matmuls through the rank-r bottleneck, the coefficient applied there (r values per
/// row), then an add in y's dtype. No LoRA: y unchanged, no dispatch.
pub fn lora_linear(gpu: &Gpu, p: &dyn Params, key: &str, x: &Tensor, mut y: Tensor) -> Result<Tensor> {
    for (down, up, c) in p.lora(key) {
        let t = linear::linear(gpu, x, down, None, x.dtype())?; // [.., r]
        let t = ew::scale(gpu, &t, c, 0.0)?;
        let d = linear::linear(gpu, &t, up, None, y.dtype())?; // [.., out]
        y = ew::add(gpu, &y, &d)?;
    }
    Ok(y)
}

/// The convolution form: A is a conv with the base layer's kernel, `stride` and `pad`
/// ([B, in, H, W] → [B, r, Ho, Wo]), B a 1×1 conv to [B, out, Ho, Wo].
pub fn lora_conv(
    gpu: &Gpu,
    p: &dyn Params,
    key: &str,
    x: &Tensor,
    mut y: Tensor,
    stride: usize,
    pad: usize,
) -> Result<Tensor> {
    for (down, up, c) in p.lora(key) {
        let t = conv::conv2d(gpu, x, down, None, stride, pad, x.dtype())?;
        let t = ew::scale(gpu, &t, c, 0.0)?;
        let d = conv::conv2d(gpu, &t, up, None, 1, 0, y.dtype())?;
        y = ew::add(gpu, &y, &d)?;
    }
    Ok(y)
}

/// conv2d with weight [o, c, k, k] and bias [o] under `s`; padding k/2 (same size at stride 1);
/// plus the active LoRAs on it.
pub fn conv(gpu: &Gpu, s: Scope, x: &Tensor, o: usize, k: usize, stride: usize) -> Result<Tensor> {
    let c = x.shape()[1];
    let w = s.get("weight", &[o, c, k, k])?;
    let b = s.get("bias", &[o])?;
    let y = conv::conv2d(gpu, x, w, Some(b), stride, k / 2, x.dtype())?;
    lora_conv(gpu, s.params, &s.name("weight"), x, y, stride, k / 2)
}

/// Linear with weight [n, k] (and bias [n] if `bias`) under `s`, plus the active LoRAs on it;
/// output in x's dtype.
pub fn lin(gpu: &Gpu, s: Scope, x: &Tensor, n: usize, bias: bool) -> Result<Tensor> {
    let k = *x.shape().last().unwrap_or(&0);
    let w = s.get("weight", &[n, k])?;
    let b = if bias { Some(s.get("bias", &[n])?) } else { None };
    let y = linear::linear(gpu, x, w, b, x.dtype())?;
    lora_linear(gpu, s.params, &s.name("weight"), x, y)
}

/// Group norm (affine weight/bias [C] under `s`), optionally followed by SiLU.
pub fn group_norm(gpu: &Gpu, s: Scope, x: &Tensor, groups: usize, eps: f32, silu: bool) -> Result<Tensor> {
    let c = x.shape()[1];
    norm::group_norm(gpu, x, groups, s.get("weight", &[c])?, s.get("bias", &[c])?, eps, silu)
}

/// Layer norm over the last dimension (weight/bias [C] under `s`).
pub fn layer_norm(gpu: &Gpu, s: Scope, x: &Tensor, eps: f32) -> Result<Tensor> {
    let c = *x.shape().last().unwrap_or(&0);
    norm::layer_norm(gpu, x, s.get("weight", &[c])?, s.get("bias", &[c])?, eps)
}
