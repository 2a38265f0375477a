//! The browser API (wasm-bindgen, `--target web` into `www/pkg/`). The only wasm-bindgen file:
//! loading and generation are the shared `weights::Loader` and `pipeline::generate`; only the
//! byte source (a JS `read()` callback over fetch / OPFS / `File`) and the event loop differ.
//!
//! Every method takes `&self`, so the worker may ask `info()` or `deviceLost()` while a load or
//! a generation is awaiting.

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Function, Object, Promise, Reflect, Uint8Array, Uint8ClampedArray};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use crate::gpu::{DType, Gpu, GpuOptions, Tensor};
use crate::image::InputImage;
use crate::pipeline::{Model, Settings};
use crate::weights::{FileRole, GpuSink, Loader, RangeSource};

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = r#"
/** One check of `Engine.selfCheck()` (the Rust `selfcheck::Check`). */
export interface SelfCheckEntry {
  /** Shader family (`shaders/<family>.wgsl`) or "block" (a UNet ResBlock, a VAE attention block). */
  family: string;
  name: string;
  shape: string;
  /** Per element: |got - want| <= abs + rel*|want| + arith*sum|terms|. */
  tolerance: { name: string; abs: number; rel: number; arith: number };
  max_abs_err: number;
  /** Largest error as a multiple of its tolerance; passes at <= 1. */
  worst_ratio: number;
  pass: boolean;
  /** GPU seconds, measured with timestamp queries ("gpu") or the wall clock ("wall"). */
  seconds: number;
  clock: "gpu" | "wall";
  error: string | null;
}
/** `Engine.selfCheck()`'s report (the Rust `selfcheck::Report`). */
export interface SelfCheckReport {
  adapter: string;
  compute_path: "f16" | "f32";
  passed: boolean;
  failures: number;
  total_seconds: number;
  checks: SelfCheckEntry[];
}
/** One kernel family of `Engine.timing()` (the Rust `timing::FamilyTiming`). */
export interface TimingFamily {
  family: "linear" | "conv3x3" | "conv_other" | "attn_self" | "attn_cross" | "group_norm" | "layer_norm" | "elementwise";
  /** The family's largest call in one SDXL UNet step, and the call actually timed (smaller on slow devices). */
  shape: string;
  timed_shape: string;
  /** Milliseconds of one call at `shape` (extrapolated from `timed_shape` when they differ). */
  ms: number;
  /** Of the timed call, net of dispatch overhead, in `unit`. */
  rate: number;
  unit: "GFLOP/s" | "GB/s";
  /** Per UNet step: calls, dispatches, GFLOP or GB, estimated milliseconds. */
  calls: number;
  dispatches: number;
  work: number;
  step_ms: number;
}
/** `Engine.timing()`'s report (the Rust `timing::TimingReport`). */
export interface TimingReport {
  /** The UNet whose step was counted: the loaded model's name, or "SDXL 1.0 base" with none loaded. */
  model: string;
  adapter: string;
  compute_path: "f16" | "f32";
  clock: "gpu" | "wall";
  width: number;
  height: number;
  /** 2: classifier-free guidance. */
  batch: number;
  /** Some family was timed at a smaller call and extrapolated. */
  capped: boolean;
  dispatch_overhead_ms: number;
  unet_gflop: number;
  dispatches: number;
  families: TimingFamily[];
  /** Estimated GPU seconds of one UNet step at width x height (batch 2). */
  step_seconds: number;
  total_seconds: number;
}
/** Generation settings (the Rust `pipeline::Settings`); missing fields take the defaults. */
export interface Settings {
  prompt: string;
  /** null or absent: no negative prompt (zero conditioning); "": the empty string encoded. */
  negative?: string | null;
  width?: number; height?: number; steps?: number; cfg?: number; seed?: number;
  sampler?: "euler" | "euler_a" | "dpmpp_2m" | "ddim";
  karras?: boolean;
  rating?: "none" | "sensitive" | "questionable" | "explicit";
  clip_skip?: number;
  v_prediction?: boolean;
  /** GPU memory budget: bytes, or "7.5G", "24G", "6144M" (default 7.5 GiB). */
  gpu_memory?: number | string;
  /** VAE tile size in px (diffusers enable_tiling); 0 = decide from the budget. */
  vae_tile?: number;
  /** diffusers tile_overlap_factor (default 0.25). */
  vae_tile_overlap?: number;
  /** img2img / inpainting: the image to start from (width/height 0 take its size). */
  init_image?: InputImage | null;
  /** Inpainting mask: white = repaint (binarised at 0.5; resized to the image size if it differs). */
  mask?: InputImage | null;
  /** img2img / inpainting strength in (0, 1] (default 0.75): int(steps × strength) steps run. */
  strength?: number;
  /** Hires fix ("Latent" upscaler): 0 = off, else the latent upscale factor, 1 to 4. */
  hires_scale?: number;
  /** Strength of the hires pass (default 0.5). */
  hires_strength?: number;
  /** Steps of the hires pass before the strength cut (0 = steps). */
  hires_steps?: number;
  /** Loaded LoRAs to apply (`Engine.loadLora`), each with its weight (default 1); prompt tags
   * `<lora:NAME:WEIGHT>` name loaded LoRAs too. */
  loras?: { name: string; weight?: number }[];
}
/** A loaded LoRA or embedding: its name (what settings and prompts use) and A1111 short hash. */
export interface LoadedAdapter { name: string; hash: string; }
/** An input image in the settings JSON: PNG or JPEG file bytes, or RGBA pixels (a canvas'
 * ImageData), as plain number arrays (`Array.from(uint8array)`). Slow for large images: prefer
 * `Engine.setInitImage` / `Engine.setMask`, which take a Uint8Array. */
export type InputImage = { bytes: number[] } | { width: number; height: number; rgba: number[] };
/** One finished step: a preview of the current x0 estimate, one RGBA pixel per latent. */
export interface StepInfo { step: number; total: number; width: number; height: number; rgba: Uint8ClampedArray; }
/** The next bytes of the file in order; undefined or null at the end. */
export type ReadChunk = () => Promise<Uint8Array | undefined | null>;
/** Bytes loaded so far and the total (undefined if unknown), after each chunk. */
export type OnLoadProgress = (loaded: number, total: number | undefined) => void;
/** Bytes [start, end) of the model file again (OPFS copy, File slice, Range request), so the
 * text encoders can be released while the UNet runs and streamed back for a new prompt. */
export type ReadRange = (start: number, end: number) => Promise<Uint8Array>;
/** Return false to cancel the generation. */
export type OnStep = (info: StepInfo) => boolean;
"#;

/// Bytes uploaded between waits for the GPU queue, so the browser's staging memory stays bounded.
const UPLOAD_WINDOW: u64 = 256 << 20;

/// The largest LoRA file `loadLora` accepts: the whole file is held in wasm memory (with its
/// f32 copy while parsing), and SDXL LoRAs are 10 MB to ~900 MB.
pub const MAX_LORA_BYTES: u64 = 1 << 30;
/// The largest embedding file `loadEmbedding` accepts (an SDXL embedding of 75 vectors in f32 is
/// 0.6 MB).
pub const MAX_EMBEDDING_BYTES: u64 = 16 << 20;

fn js_err(e: crate::Error) -> JsError {
    JsError::new(&e.to_string())
}

/// The JS `Error.name` of a file the engine refused (bad header, wrong tensors, not for this
/// model, too large): the worker then drops the file from its cache.
const INVALID_FILE: &str = "InvalidFileError";

/// `e` as a JS `Error`; named [`INVALID_FILE`] when it says the file cannot be used
/// ([`crate::Error::Weights`], and with `input_is_file` also [`crate::Error::Input`]).
fn file_err(e: crate::Error, input_is_file: bool) -> JsValue {
    let invalid = matches!(e, crate::Error::Weights(_)) || (input_is_file && matches!(e, crate::Error::Input(_)));
    invalid_if(&e.to_string(), invalid)
}

fn invalid_if(message: &str, invalid: bool) -> JsValue {
    let err = js_sys::Error::new(message);
    if invalid {
        err.set_name(INVALID_FILE);
    }
    err.into()
}

/// The message of a JS exception (an `Error`'s `.message`, else its string form).
fn js_message(v: &JsValue) -> String {
    if let Some(e) = v.dyn_ref::<js_sys::Error>() {
        return String::from(e.message());
    }
    v.as_string().unwrap_or_else(|| format!("{v:?}"))
}

/// One GPU device and the model loaded on it.
#[wasm_bindgen]
pub struct Engine {
    gpu: Gpu,
    model: RefCell<Option<Rc<Model>>>,
    /// Set by `setInitImage` / `setMask`: used by `plan` and `generate` when the settings JSON
    /// carries no `init_image` / `mask` of its own.
    init_image: RefCell<Option<InputImage>>,
    mask: RefCell<Option<InputImage>>,
}

/// A finished generation.
#[wasm_bindgen]
pub struct Image {
    png: Vec<u8>,
    parameters: String,
    seed: u64,
    width: usize,
    height: usize,
    dump: Option<Vec<u8>>,
    report: String,
}

#[wasm_bindgen]
impl Image {
    /// With `generate(.., dump = true)`: the token ids, embeddings, time ids, initial and final
    /// latents and the first UNet output as one safetensors file (what `sdxl generate --dump`
    /// writes), to compare a browser run with the CLI or a reference stage by stage.
    #[wasm_bindgen(getter)]
    pub fn dump(&self) -> Option<Vec<u8>> {
        self.dump.clone()
    }
    /// The run's report as JSON (what `sdxl generate --json` prints): `peak_gpu_bytes`, `stages`
    /// (text, unet, vae: peak and seconds), the memory `plan`, `seed`, size and steps.
    #[wasm_bindgen(getter)]
    pub fn report(&self) -> String {
        self.report.clone()
    }
    /// The PNG file, with the A1111 `parameters` text chunk.
    #[wasm_bindgen(getter)]
    pub fn png(&self) -> Vec<u8> {
        self.png.clone()
    }
    #[wasm_bindgen(getter)]
    pub fn parameters(&self) -> String {
        self.parameters.clone()
    }
    /// The seed used (exact below 2^53).
    #[wasm_bindgen(getter)]
    pub fn seed(&self) -> f64 {
        self.seed as f64
    }
    #[wasm_bindgen(getter)]
    pub fn width(&self) -> usize {
        self.width
    }
    #[wasm_bindgen(getter)]
    pub fn height(&self) -> usize {
        self.height
    }
}

#[wasm_bindgen]
impl Engine {
    /// Acquire WebGPU. `force_f32` selects the f32 compute path even with shader-f16.
    pub async fn create(force_f32: bool) -> Result<Engine, JsError> {
        let gpu = Gpu::new(GpuOptions { force_f32 }).await.map_err(js_err)?;
        Ok(Engine { gpu, model: RefCell::new(None), init_image: RefCell::new(None), mask: RefCell::new(None) })
    }

    /// Adapter, features and granted limits as JSON (the same object as `sdxl info --json`).
    pub fn info(&self) -> String {
        serde_json::to_string(&self.gpu.info).unwrap_or_default()
    }

    /// Why the GPU device was lost, or undefined while it is alive.
    #[wasm_bindgen(js_name = deviceLost)]
    pub fn device_lost(&self) -> Option<String> {
        self.gpu.lost_reason()
    }

    /// The wasm linear memory's current size in bytes (it only grows: this is the peak).
    #[wasm_bindgen(js_name = wasmMemory)]
    pub fn wasm_memory() -> f64 {
        let mem: js_sys::WebAssembly::Memory = wasm_bindgen::memory().unchecked_into();
        mem.buffer().unchecked_into::<js_sys::ArrayBuffer>().byte_length() as f64
    }

    /// Runs the smoke kernel (y = 1.5·x − 0.25) on `x`: proves the device computes.
    #[wasm_bindgen(js_name = selfTest)]
    pub async fn self_test(&self, x: Vec<f32>) -> Result<Vec<f32>, JsError> {
        let t = Tensor::from_f32(&self.gpu, &[x.len()], DType::F16, &x).map_err(js_err)?;
        let y = crate::ops::smoke::axpb(&self.gpu, &t, 1.5, -0.25).map_err(js_err)?;
        y.to_vec_f32(&self.gpu).await.map_err(js_err)
    }

    /// GPU self-check, no model needed: every kernel and variant on this engine's compute path
    /// against CPU references, plus a UNet and a VAE block. Resolves to a `SelfCheckReport` as JSON.
    #[wasm_bindgen(js_name = selfCheck)]
    pub async fn self_check(&self) -> Result<String, JsError> {
        let report = crate::selfcheck::run(&self.gpu).await.map_err(js_err)?;
        serde_json::to_string(&report).map_err(|e| JsError::new(&e.to_string()))
    }

    /// Time each kernel family at the shapes of one UNet step at 1024×1024 with CFG (counted on a
    /// dry twin) and estimate the seconds per step: the loaded model's UNet, or SDXL 1.0 base's
    /// when none is loaded (`TimingReport.model` says which); seconds on a GPU. Resolves to a
    /// `TimingReport` as JSON. Call it while no generation runs (it times the whole device).
    /// Cached buffers are freed afterwards.
    pub async fn timing(&self) -> Result<String, JsError> {
        use crate::timing::{StepModel, TimingOptions};
        let model = self.model.borrow().as_ref().map_or_else(StepModel::sdxl_base, |m| m.step_model());
        let r = crate::timing::run(&self.gpu, &TimingOptions::sdxl_1024(), &model).await;
        self.gpu.trim_pool();
        let report = r.map_err(js_err)?;
        serde_json::to_string(&report).map_err(|e| JsError::new(&e.to_string()))
    }

    /// Whether a model is loaded.
    #[wasm_bindgen(js_name = hasModel)]
    pub fn has_model(&self) -> bool {
        self.model.borrow().is_some()
    }

    /// Free the loaded model's GPU memory.
    pub fn unload(&self) {
        self.model.borrow_mut().take();
        self.gpu.trim_pool();
    }

    /// Stream an SDXL single-file checkpoint to the GPU. `name` (the file name without
    /// `.safetensors`) labels errors and the PNG's `Model:` field; `size` (bytes, if known) lets
    /// a short stream be reported as truncated;
    /// `read` yields the file's bytes in order (www/download.js makes one for a URL, cached in
    /// OPFS, or a `File`); `progress`, if given, hears the byte count after each chunk. Only one
    /// chunk is in wasm memory at a time. `read_range`, if given, reads the file again by byte
    /// range: with it the memory planner may release the text encoders during sampling (and
    /// stream them back for a new prompt); without it they stay on the GPU.
    /// Returns the inspection (layout, parameter counts, config) as JSON. A failed load frees
    /// everything it allocated; the previous model (with its LoRAs and embeddings) is unloaded
    /// first either way. A file that cannot be used rejects with an `Error` named
    /// `InvalidFileError` (a download cache should drop it); read and GPU failures keep the
    /// plain `Error` name.
    pub async fn load(
        &self,
        name: String,
        size: Option<f64>,
        #[wasm_bindgen(unchecked_param_type = "ReadChunk")] read: Function,
        #[wasm_bindgen(unchecked_optional_param_type = "OnLoadProgress")] progress: Option<Function>,
        #[wasm_bindgen(unchecked_optional_param_type = "ReadRange")] read_range: Option<Function>,
    ) -> Result<String, JsValue> {
        self.unload();
        let gpu = &self.gpu;
        let mut loader = Loader::new(GpuSink::new(gpu), DType::F16, "single-file");
        loader
            .begin_file(name.clone(), FileRole::SingleFile { with_vae: true }, size.map(|s| s as u64))
            .map_err(|e| file_err(e, false))?;
        let (mut since_wait, mut loaded) = (0u64, 0u64);
        let total = size.map(JsValue::from).unwrap_or(JsValue::UNDEFINED);
        loop {
            let p = read.call0(&JsValue::NULL).map_err(|e| JsError::new(&js_message(&e)))?;
            let v = JsFuture::from(Promise::resolve(&p)).await.map_err(|e| JsError::new(&js_message(&e)))?;
            if v.is_undefined() || v.is_null() {
                break;
            }
            let arr = v
                .dyn_into::<Uint8Array>()
                .map_err(|_| JsError::new(&format!("{name}: read() must resolve to a Uint8Array")))?;
            let bytes = arr.to_vec();
            loader.push(&bytes).map_err(|e| file_err(e, false))?;
            since_wait += bytes.len() as u64;
            loaded += bytes.len() as u64;
            if let Some(f) = &progress {
                let _ = f.call2(&JsValue::NULL, &JsValue::from(loaded as f64), &total);
            }
            if since_wait >= UPLOAD_WINDOW {
                since_wait = 0;
                queue_idle(gpu).await;
                gpu.check().map_err(js_err)?;
            }
        }
        loader.end_file().map_err(|e| file_err(e, false))?;
        let loaded = loader.finish().map_err(|e| file_err(e, false))?;
        let inspection = serde_json::to_string(&loaded.inspection).unwrap_or_default();
        let weights = loaded.sink.into_weights().map_err(js_err)?;
        queue_idle(gpu).await;
        gpu.check().map_err(js_err)?;
        let source = read_range.map(|f| Box::new(JsRanges { read: f, name: name.clone() }) as Box<dyn RangeSource>);
        let model = Model::new(weights, &loaded.config, &name).map_err(js_err)?.with_source(loaded.plans, source);
        *self.model.borrow_mut() = Some(Rc::new(model));
        Ok(inspection)
    }

    /// The init image of img2img / inpainting for the next `plan` and `generate` calls (until
    /// replaced): PNG or JPEG file bytes when `width` and `height` are absent, else RGBA pixels
    /// (a canvas' `ImageData.data`, `width`·`height`·4 bytes). `undefined` clears it. The image is
    /// decoded here, so an unreadable file is refused at once (nothing is kept then). An
    /// `init_image` in the settings JSON takes precedence.
    #[wasm_bindgen(js_name = setInitImage)]
    pub fn set_init_image(
        &self,
        data: Option<Vec<u8>>,
        width: Option<u32>,
        height: Option<u32>,
    ) -> Result<(), JsError> {
        // Cleared first: a refused image leaves none behind.
        *self.init_image.borrow_mut() = None;
        *self.init_image.borrow_mut() = input_image(data, width, height, "init image")?;
        Ok(())
    }

    /// The inpainting mask for the next `plan` and `generate` calls, as [`Engine::set_init_image`]
    /// takes the image: white = repaint (grayscale ≥ 0.5), black = keep; resized to the image's
    /// size when it differs. `undefined` clears it (img2img without a mask).
    #[wasm_bindgen(js_name = setMask)]
    pub fn set_mask(&self, data: Option<Vec<u8>>, width: Option<u32>, height: Option<u32>) -> Result<(), JsError> {
        // Cleared first: a refused mask leaves none behind.
        *self.mask.borrow_mut() = None;
        *self.mask.borrow_mut() = input_image(data, width, height, "mask")?;
        Ok(())
    }

    /// Add a LoRA (a kohya or diffusers/PEFT `.safetensors`) to the loaded model under `name`
    /// (what `Settings.loras` and `<lora:NAME:WEIGHT>` tags use), replacing one of that name.
    /// `size`, `read` and `progress` are as for [`Engine::load`]; the whole file is read into
    /// memory (at most 1 GiB). A file that does not fit the model rejects whole (nothing is
    /// applied) with an `InvalidFileError`. Returns the [`LoadedAdapter`] as JSON. Loading
    /// another model drops the LoRAs.
    #[wasm_bindgen(js_name = loadLora)]
    pub async fn load_lora(
        &self,
        name: String,
        size: Option<f64>,
        #[wasm_bindgen(unchecked_param_type = "ReadChunk")] read: Function,
        #[wasm_bindgen(unchecked_optional_param_type = "OnLoadProgress")] progress: Option<Function>,
    ) -> Result<String, JsValue> {
        self.load_adapter(Adapter::Lora, name, size, read, progress).await
    }

    /// Add an SDXL textual-inversion embedding (`clip_l` [n, 768] and `clip_g` [n, 1280]) under
    /// `name`, the word prompts use (also `embedding:NAME`). Refused with an `InvalidFileError`:
    /// SD 1.x embeddings, wrong widths, a name in the CLIP vocabulary or one already loaded.
    /// `size`, `read` and `progress` are as for [`Engine::load`] (at most 16 MiB). Returns the
    /// [`LoadedAdapter`] as JSON. Loading another model drops the embeddings.
    #[wasm_bindgen(js_name = loadEmbedding)]
    pub async fn load_embedding(
        &self,
        name: String,
        size: Option<f64>,
        #[wasm_bindgen(unchecked_param_type = "ReadChunk")] read: Function,
        #[wasm_bindgen(unchecked_optional_param_type = "OnLoadProgress")] progress: Option<Function>,
    ) -> Result<String, JsValue> {
        self.load_adapter(Adapter::Embedding, name, size, read, progress).await
    }

    /// Free a loaded LoRA; false when none has that name (or no model is loaded).
    #[wasm_bindgen(js_name = unloadLora)]
    pub fn unload_lora(&self, name: &str) -> bool {
        let Some(model) = self.model.borrow().clone() else { return false };
        let found = model.unload_lora(name);
        self.gpu.trim_pool();
        found
    }

    /// Remove an embedding; false when none has that name (or no model is loaded).
    #[wasm_bindgen(js_name = unloadEmbedding)]
    pub fn unload_embedding(&self, name: &str) -> Result<bool, JsError> {
        let Some(model) = self.model.borrow().clone() else { return Ok(false) };
        let found = model.unload_embedding(&self.gpu, name).map_err(js_err)?;
        self.gpu.trim_pool();
        Ok(found)
    }

    /// The loaded LoRAs as a JSON array of [`LoadedAdapter`], by name.
    pub fn loras(&self) -> String {
        let list = self.model.borrow().as_ref().map(|m| m.loras()).unwrap_or_default();
        adapters_json(list)
    }

    /// The loaded embeddings as a JSON array of [`LoadedAdapter`], in load order.
    pub fn embeddings(&self) -> String {
        let list = self.model.borrow().as_ref().map(|m| m.embeddings()).unwrap_or_default();
        adapters_json(list)
    }

    /// The memory plan `generate` would use for `settings` (JSON [`Settings`]), as JSON: text
    /// encoders resident or streamed, VAE whole or tiled, and the predicted peak
    /// (`predicted_peak_gpu_bytes`), from dry runs only (nothing is computed or allocated). Rejects
    /// with a clear message when nothing fits the `gpu_memory` budget.
    pub async fn plan(&self, settings: String) -> Result<String, JsError> {
        let s = self.settings(&settings)?.resolved().map_err(js_err)?;
        let model = self.model.borrow().clone().ok_or_else(|| JsError::new("no model is loaded"))?;
        let (w, h) = s.output_size();
        model.check_size(&self.gpu, w, h).map_err(js_err)?;
        let p = crate::pipeline::plan(&self.gpu, &model, &s).await.map_err(js_err)?;
        Ok(serde_json::to_string(&p).unwrap_or_default())
    }

    /// Prompt → PNG. `settings` is a JSON [`Settings`] object; `on_step` gets each step's preview
    /// and returns false to cancel (the promise then rejects with "cancelled"); `dump` keeps the
    /// intermediate tensors in [`Image::dump`].
    pub async fn generate(
        &self,
        settings: String,
        #[wasm_bindgen(unchecked_param_type = "OnStep")] on_step: Function,
        dump: Option<bool>,
    ) -> Result<Image, JsError> {
        let s = self.settings(&settings)?;
        let model = self.model.borrow().clone().ok_or_else(|| JsError::new("no model is loaded"))?;
        let mut step = |p: &crate::pipeline::Progress| -> bool {
            let o = Object::new();
            let rgba = Uint8ClampedArray::from(p.preview_rgba.as_slice());
            for (k, v) in [
                ("step", JsValue::from(p.step as u32)),
                ("total", JsValue::from(p.total as u32)),
                ("width", JsValue::from(p.preview_width as u32)),
                ("height", JsValue::from(p.preview_height as u32)),
                ("rgba", rgba.into()),
            ] {
                let _ = Reflect::set(&o, &JsValue::from_str(k), &v);
            }
            // A throwing callback cancels too: the page can no longer follow the run.
            on_step.call1(&JsValue::NULL, &o).map(|r| r.as_bool() != Some(false)).unwrap_or(false)
        };
        let out = crate::pipeline::generate_with(&self.gpu, &model, &s, dump.unwrap_or(false), &mut step)
            .await
            .map_err(js_err)?;
        let dump = out.dump.as_ref().map(|d| d.to_safetensors()).transpose().map_err(js_err)?;
        // Hand the activations back so an idle tab holds only the weights.
        self.gpu.trim_pool();
        Ok(Image {
            png: out.png,
            parameters: out.parameters,
            seed: out.seed,
            width: out.width,
            height: out.height,
            dump,
            report: serde_json::to_string(&out.report).unwrap_or_default(),
        })
    }
}

impl Engine {
    /// The settings JSON with the images of `setInitImage` / `setMask` filled in, validated.
    fn settings(&self, json: &str) -> Result<Settings, JsError> {
        let mut s: Settings =
            serde_json::from_str(json).map_err(|e| js_err(crate::Error::Input(format!("settings: {e}"))))?;
        if s.init_image.is_none() {
            s.init_image = self.init_image.borrow().clone();
        }
        if s.mask.is_none() {
            s.mask = self.mask.borrow().clone();
        }
        s.validate().map_err(js_err)?;
        Ok(s)
    }

    /// `loadLora` / `loadEmbedding`: the whole (small) file, then the model's validation.
    async fn load_adapter(
        &self,
        kind: Adapter,
        name: String,
        size: Option<f64>,
        read: Function,
        progress: Option<Function>,
    ) -> Result<String, JsValue> {
        let (what, action, limit) = match kind {
            Adapter::Lora => ("LoRA", "add a LoRA", MAX_LORA_BYTES),
            Adapter::Embedding => ("embedding", "add an embedding", MAX_EMBEDDING_BYTES),
        };
        self.model_or(action)?;
        let bytes = read_all(&name, what, size, &read, progress.as_ref(), limit).await?;
        let model = self.model_or(action)?;
        match kind {
            Adapter::Lora => model.load_lora(&self.gpu, &name, &name, &bytes),
            Adapter::Embedding => model.load_embedding(&self.gpu, &name, &name, &bytes),
        }
        .map_err(|e| file_err(e, true))?;
        self.gpu.check().map_err(js_err)?;
        let list = match kind {
            Adapter::Lora => model.loras(),
            Adapter::Embedding => model.embeddings(),
        };
        Ok(adapter_json(list, &name))
    }

    fn model_or(&self, what: &str) -> Result<Rc<Model>, JsValue> {
        self.model.borrow().clone().ok_or_else(|| JsError::new(&format!("load a model before you {what}")).into())
    }
}

/// `setInitImage` / `setMask`'s arguments as an [`InputImage`], checked by decoding it.
fn input_image(
    data: Option<Vec<u8>>,
    width: Option<u32>,
    height: Option<u32>,
    what: &str,
) -> Result<Option<InputImage>, JsError> {
    let Some(data) = data else { return Ok(None) };
    let img = match (width, height) {
        (None, None) => InputImage::Encoded { bytes: data },
        (Some(w), Some(h)) => InputImage::Rgba { width: w as usize, height: h as usize, rgba: data },
        _ => {
            return Err(JsError::new(&format!(
                "{what}: give both width and height (RGBA pixels) or neither (PNG/JPEG bytes)"
            )))
        }
    };
    img.decode(what).map_err(js_err)?;
    Ok(Some(img))
}

#[derive(Clone, Copy)]
enum Adapter {
    Lora,
    Embedding,
}

fn adapters_json(list: Vec<(String, String)>) -> String {
    let v: Vec<_> = list.into_iter().map(|(name, hash)| serde_json::json!({ "name": name, "hash": hash })).collect();
    serde_json::Value::Array(v).to_string()
}

fn adapter_json(list: Vec<(String, String)>, name: &str) -> String {
    let hash = list.into_iter().find(|(n, _)| n == name).map(|(_, h)| h).unwrap_or_default();
    serde_json::json!({ "name": name, "hash": hash }).to_string()
}

/// A whole small file from a `read()` callback: refused (as an `InvalidFileError`) past `limit`
/// bytes, whether announced by `size` or found while reading; a stream shorter than `size` is an
/// error too.
async fn read_all(
    name: &str,
    what: &str,
    size: Option<f64>,
    read: &Function,
    progress: Option<&Function>,
    limit: u64,
) -> Result<Vec<u8>, JsValue> {
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let too_big = |n: u64| {
        invalid_if(
            &format!(
                "{name}: {n} bytes ({:.1} MiB) is too large for a {what} file (at most {:.0} MiB here)",
                mib(n),
                mib(limit)
            ),
            true,
        )
    };
    let size = match size {
        Some(s) if !(s.is_finite() && s >= 0.0) => {
            return Err(JsError::new(&format!("{name}: size {s} is not a byte count")).into())
        }
        Some(s) => Some(s as u64),
        None => None,
    };
    if let Some(s) = size.filter(|&s| s > limit) {
        return Err(too_big(s));
    }
    let mut bytes = Vec::with_capacity(size.unwrap_or(0) as usize);
    let total = size.map(|s| JsValue::from(s as f64)).unwrap_or(JsValue::UNDEFINED);
    loop {
        let p = read.call0(&JsValue::NULL).map_err(|e| JsError::new(&js_message(&e)))?;
        let v = JsFuture::from(Promise::resolve(&p)).await.map_err(|e| JsError::new(&js_message(&e)))?;
        if v.is_undefined() || v.is_null() {
            break;
        }
        let arr = v
            .dyn_into::<Uint8Array>()
            .map_err(|_| JsError::new(&format!("{name}: read() must resolve to a Uint8Array")))?;
        let n = bytes.len() as u64 + arr.length() as u64;
        if n > limit {
            return Err(too_big(n));
        }
        if let Some(s) = size.filter(|&s| n > s) {
            return Err(JsError::new(&format!("{name}: read() gave more than the announced {s} bytes")).into());
        }
        let at = bytes.len();
        bytes.resize(n as usize, 0);
        arr.copy_to(&mut bytes[at..]);
        if let Some(f) = progress {
            let _ = f.call2(&JsValue::NULL, &JsValue::from(n as f64), &total);
        }
    }
    if let Some(s) = size.filter(|&s| bytes.len() as u64 != s) {
        return Err(JsError::new(&format!("{name}: the file ended at {} of {s} bytes", bytes.len())).into());
    }
    Ok(bytes)
}

/// The page's `readRange` callback as the reloader's byte source (one file: the checkpoint).
struct JsRanges {
    read: Function,
    name: String,
}

impl RangeSource for JsRanges {
    fn read<'a>(
        &'a self,
        file: usize,
        start: u64,
        buf: &'a mut [u8],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = crate::Result<()>> + 'a>> {
        Box::pin(async move {
            let err = |m: String| crate::Error::Weights(format!("{}: reading the cached copy again: {m}", self.name));
            if file != 0 {
                return Err(err(format!("no file {file}")));
            }
            let end = start + buf.len() as u64;
            let p = self
                .read
                .call2(&JsValue::NULL, &JsValue::from(start as f64), &JsValue::from(end as f64))
                .map_err(|e| err(js_message(&e)))?;
            let v = JsFuture::from(Promise::resolve(&p)).await.map_err(|e| err(js_message(&e)))?;
            let arr = v.dyn_into::<Uint8Array>().map_err(|_| err("readRange must resolve to a Uint8Array".into()))?;
            if arr.length() as usize != buf.len() {
                return Err(err(format!("asked for bytes {start}..{end}, got {} bytes", arr.length())));
            }
            arr.copy_to(buf);
            Ok(())
        })
    }
}

/// Resolves when the GPU queue has finished everything submitted so far.
async fn queue_idle(gpu: &Gpu) {
    gpu.queue.submit([]);
    let (tx, rx) = futures_channel::oneshot::channel();
    gpu.queue.on_submitted_work_done(move || {
        let _ = tx.send(());
    });
    let _ = rx.await;
}
