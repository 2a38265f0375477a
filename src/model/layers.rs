//! Building blocks shared by the UNet and the VAE: scoped parameter lookup and the layers both
//! use (convolution, group norm), each checking weight shapes so a wrong checkpoint fails with the
//! tensor's name rather than deep inside a kernel.

use super::Params;
use crate::gpu::{DType, Gpu, Tensor};
use crate::ops::{conv, linear, norm};
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
}

/// conv2d with weight [o, c, k, k] and bias [o] under `s`; padding k/2 (same size at stride 1).
pub fn conv(gpu: &Gpu, s: Scope, x: &Tensor, o: usize, k: usize, stride: usize) -> Result<Tensor> {
    let c = x.shape()[1];
    let w = s.get("weight", &[o, c, k, k])?;
    let b = s.get("bias", &[o])?;
    conv::conv2d(gpu, x, w, Some(b), stride, k / 2, x.dtype())
}

/// Linear with weight [n, k] (and bias [n] if `bias`) under `s`; output in x's dtype.
pub fn lin(gpu: &Gpu, s: Scope, x: &Tensor, n: usize, bias: bool) -> Result<Tensor> {
    let k = *x.shape().last().unwrap_or(&0);
    let w = s.get("weight", &[n, k])?;
    let b = if bias { Some(s.get("bias", &[n])?) } else { None };
    linear::linear(gpu, x, w, b, x.dtype())
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
