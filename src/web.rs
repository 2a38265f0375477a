//! The browser API (wasm-bindgen). The only wasm-bindgen file: everything else is shared with
//! the native build.

use wasm_bindgen::prelude::*;

use crate::gpu::{DType, Gpu, GpuOptions, Tensor};

fn js_err(e: crate::Error) -> JsError {
    JsError::new(&e.to_string())
}

/// One GPU device and what runs on it.
#[wasm_bindgen]
pub struct Engine {
    gpu: Gpu,
}

#[wasm_bindgen]
impl Engine {
    /// Acquire WebGPU. `force_f32` selects the f32 compute path even with shader-f16.
    pub async fn create(force_f32: bool) -> Result<Engine, JsError> {
        let gpu = Gpu::new(GpuOptions { force_f32 }).await.map_err(js_err)?;
        Ok(Engine { gpu })
    }

    /// Adapter, features and granted limits as JSON (the same object as `sdxl info --json`).
    pub fn info(&self) -> String {
        serde_json::to_string(&self.gpu.info).unwrap_or_default()
    }

    /// Runs the smoke kernel (y = 1.5·x − 0.25) on `x`: proves the device computes.
    #[wasm_bindgen(js_name = selfTest)]
    pub async fn self_test(&self, x: Vec<f32>) -> Result<Vec<f32>, JsError> {
        let t = Tensor::from_f32(&self.gpu, &[x.len()], DType::F16, &x).map_err(js_err)?;
        let y = crate::ops::smoke::axpb(&self.gpu, &t, 1.5, -0.25).map_err(js_err)?;
        y.to_vec_f32(&self.gpu).await.map_err(js_err)
    }
}
