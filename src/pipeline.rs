//! Text to image, as diffusers' `StableDiffusionXLPipeline` does it: prompt → both text encoders →
//! CFG sampling loop (UNet on the GPU, the scheduler step on the host in f32 exactly as diffusers
//! computes it) → VAE decode → PNG with A1111 `parameters` text. Shared by the CLI and the web
//! worker; only the byte source of the weights and the event loop differ.

use serde::{Deserialize, Serialize};

use crate::gpu::{DType, Gpu, Tensor};
use crate::model::clip::{encode_prompt, ClipConfig, ClipText, Naming};
use crate::model::unet::{Cond, UNet, UNetConfig};
use crate::model::vae::{to_rgb8, VaeConfig, VaeDecoder};
use crate::ops::elementwise::concat_channels;
use crate::prompt::{PromptTokens, Rating};
use crate::rng::TorchRng;
use crate::sampler::{Prediction, Sampler, SamplerKind, MAX_STEPS};
use crate::tokenizer::{SdxlTokenizers, CONTEXT_LEN};
use crate::weights::{ModelConfig, Weights};
use crate::{Error, Result};

/// Image sides are multiples of this (the VAE's 8× and diffusers' own check).
pub const SIDE_MULTIPLE: usize = 8;
pub const MIN_SIDE: usize = 64;
pub const MAX_SIDE: usize = 2048;
/// The largest CFG scale accepted; beyond it images are pure saturation.
pub const MAX_CFG: f32 = 100.0;
/// The Nekoray-XL model card's resolution buckets (width, height), 1024² first.
pub const BUCKETS: &[(usize, usize)] = &[
    (1024, 1024),
    (960, 1024),
    (1024, 960),
    (960, 1088),
    (1088, 960),
    (896, 1088),
    (1088, 896),
    (896, 1152),
    (1152, 896),
    (832, 1152),
    (1152, 832),
    (832, 1216),
    (1216, 832),
    (768, 1280),
    (1280, 768),
    (768, 1344),
    (1344, 768),
    (704, 1344),
    (1344, 704),
    (704, 1408),
    (1408, 704),
    (704, 1472),
    (1472, 704),
    (640, 1536),
    (1536, 640),
    (640, 1600),
    (1600, 640),
    (576, 1664),
    (1664, 576),
    (576, 1728),
    (1728, 576),
    (576, 1792),
    (1792, 576),
    (512, 1856),
    (1856, 512),
    (512, 1920),
    (1920, 512),
    (512, 1984),
    (1984, 512),
    (512, 2048),
    (2048, 512),
];

/// One generation's settings. JSON from the web worker uses these field names; missing fields
/// take the defaults (1024², 25 steps, CFG 7, euler_a).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub prompt: String,
    /// `None`: no negative prompt (zero conditioning, diffusers' force_zeros_for_empty_prompt);
    /// `Some("")` encodes the empty string.
    pub negative: Option<String>,
    pub width: usize,
    pub height: usize,
    pub steps: usize,
    pub cfg: f32,
    pub seed: u64,
    pub sampler: SamplerKind,
    pub karras: bool,
    pub rating: Rating,
    /// Extra text-encoder layers skipped beyond the penultimate (diffusers' `clip_skip`).
    pub clip_skip: usize,
    pub v_prediction: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            prompt: String::new(),
            negative: None,
            width: 1024,
            height: 1024,
            steps: 25,
            cfg: 7.0,
            seed: 0,
            sampler: SamplerKind::EulerAncestral,
            karras: false,
            rating: Rating::None,
            clip_skip: 0,
            v_prediction: false,
        }
    }
}

/// A1111's name for each sampler (its infotext `Sampler:` field).
fn a1111_sampler(k: SamplerKind) -> &'static str {
    match k {
        SamplerKind::Euler => "Euler",
        SamplerKind::EulerAncestral => "Euler a",
        SamplerKind::DpmPp2m => "DPM++ 2M",
        SamplerKind::Ddim => "DDIM",
    }
}

impl Settings {
    /// Settings from JSON (the web worker's form); unknown fields and bad values are errors that
    /// name the field. Text from the web is always valid UTF-8 by the time it is a Rust `String`
    /// (JS strings are UTF-16; `JSON.stringify` escapes a lone surrogate as `\udXXX`, which
    /// serde_json rejects with an error here), so this is the one place web text can go wrong.
    pub fn from_json(json: &str) -> Result<Settings> {
        let s: Settings = serde_json::from_str(json).map_err(|e| Error::Input(format!("settings: {e}")))?;
        s.validate()?;
        Ok(s)
    }

    /// Everything checkable without a model: sizes, steps, CFG, sampler/schedule pairing.
    pub fn validate(&self) -> Result<()> {
        for (what, v) in [("width", self.width), ("height", self.height)] {
            if v % SIDE_MULTIPLE != 0 || !(MIN_SIDE..=MAX_SIDE).contains(&v) {
                return Err(Error::Input(format!(
                    "{what} {v}: must be a multiple of {SIDE_MULTIPLE} from {MIN_SIDE} to {MAX_SIDE}"
                )));
            }
        }
        if self.steps == 0 || self.steps > MAX_STEPS {
            return Err(Error::Input(format!("steps {}: must be from 1 to {MAX_STEPS}", self.steps)));
        }
        if !self.cfg.is_finite() || self.cfg < 0.0 || self.cfg > MAX_CFG {
            return Err(Error::Input(format!("CFG scale {}: must be from 0 to {MAX_CFG}", self.cfg)));
        }
        self.sampler()?;
        Ok(())
    }

    /// One of the model card's resolution buckets (other sizes work, but the model was not trained on them).
    pub fn is_bucket(&self) -> bool {
        BUCKETS.contains(&(self.width, self.height))
    }

    /// The prompt the encoders see (rating keyword appended).
    pub fn full_prompt(&self) -> String {
        self.rating.apply(&self.prompt)
    }

    fn prediction(&self) -> Prediction {
        if self.v_prediction {
            Prediction::VPrediction
        } else {
            Prediction::Epsilon
        }
    }

    fn sampler(&self) -> Result<Sampler> {
        Sampler::new(self.sampler, self.steps, self.karras, self.prediction())
    }

    /// A1111 infotext (PNG `parameters`): prompt line(s), `Negative prompt:` line when there is
    /// one, then the settings line that A1111's `parse_generation_parameters` reads.
    pub fn parameters(&self, model_name: &str) -> String {
        let mut s = self.full_prompt();
        if let Some(n) = &self.negative {
            s.push_str(&format!("\nNegative prompt: {n}"));
        }
        s.push_str(&format!(
            "\nSteps: {}, Sampler: {}, Schedule type: {}, CFG scale: {}, Seed: {}, Size: {}x{}, Model: {}",
            self.steps,
            a1111_sampler(self.sampler),
            if self.karras { "Karras" } else { "Automatic" },
            self.cfg,
            self.seed,
            self.width,
            self.height,
            model_name.replace(',', " ")
        ));
        if self.clip_skip > 0 {
            // A1111 counts the penultimate layer as clip skip 2 for SDXL's default.
            s.push_str(&format!(", Clip skip: {}", self.clip_skip + 2));
        }
        if self.v_prediction {
            s.push_str(", Prediction: v");
        }
        s.push_str(&format!(", Version: sdxl-web {}", env!("CARGO_PKG_VERSION")));
        s
    }
}

/// A loaded checkpoint: GPU weights by single-file name, the architecture and the tokenizers.
pub struct Model {
    /// For the `Model:` field of the infotext (the file name without extension).
    pub name: String,
    pub weights: Weights,
    pub unet: UNetConfig,
    pub vae: VaeConfig,
    pub clip_l: ClipText,
    pub clip_g: ClipText,
    pub tokenizers: SdxlTokenizers,
}

impl Model {
    /// `config` is what the loader found: inferred from the checkpoint's shapes, completed by its
    /// config.json files (diffusers folders) or the documented fallbacks (single files); the
    /// model code takes every number from it.
    pub fn new(weights: Weights, config: &ModelConfig, name: &str) -> Result<Model> {
        config.check()?;
        let clip_l = ClipText::new(ClipConfig::from_loaded(&config.text_encoder, Naming::Hf))?;
        let clip_g = ClipText::new(ClipConfig::from_loaded(&config.text_encoder_2, Naming::OpenClip))?;
        Ok(Model {
            name: name.to_string(),
            weights,
            unet: config.unet.clone(),
            vae: config.vae.clone(),
            clip_l,
            clip_g,
            tokenizers: SdxlTokenizers::new()?,
        })
    }

    /// Loads a checkpoint (single file or diffusers folder, optional separate VAE) from disk.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(
        gpu: &Gpu,
        model: &std::path::Path,
        vae: Option<&std::path::Path>,
        progress: impl FnMut(u64),
    ) -> Result<Model> {
        let sink = crate::weights::GpuSink::new(gpu);
        let loaded = crate::weights::load_path(model, vae, sink, DType::F16, crate::weights::DEFAULT_CHUNK, progress)?;
        let weights = loaded.sink.into_weights()?;
        let name = model.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
        Model::new(weights, &loaded.config, &name)
    }

    /// Latent downsampling of the VAE (8 for SDXL).
    pub fn vae_factor(&self) -> usize {
        1 << (self.vae.ch_mult.len() - 1)
    }

    /// Bytes of the largest single buffer a generation at this size allocates: the VAE decoder's
    /// F32 activations at the resolution where the channel count is still high (SDXL at 1024²:
    /// the 256-channel upsample conv at full size, 1 GiB).
    pub fn largest_buffer(&self, width: usize, height: usize) -> u64 {
        let v = &self.vae;
        let top = v.ch_mult.len() - 1;
        (0..=top)
            .map(|l| {
                let ch = v.ch * v.ch_mult[l].max(if l < top { v.ch_mult[l + 1] } else { 0 });
                let pixels = (width >> l) as u64 * (height >> l) as u64;
                ch as u64 * pixels * 4
            })
            .max()
            .unwrap_or(0)
    }

    /// A clear error when this device cannot hold a generation of this size.
    pub fn check_size(&self, gpu: &Gpu, width: usize, height: usize) -> Result<()> {
        let need = self.largest_buffer(width, height);
        let max = gpu.limits.max_buffer_size;
        if need > max {
            return Err(Error::Gpu(format!(
                "{width}x{height} needs a {} MiB buffer for the VAE decoder, but this device allows at most {} MiB per buffer; choose a smaller size",
                need >> 20,
                max >> 20
            )));
        }
        Ok(())
    }
}

/// What each step reports: the step just finished and a small preview of the current x0 estimate
/// (one pixel per latent, a linear latent → RGB map).
pub struct Progress {
    /// 1-based: `step` of `total` steps are done.
    pub step: usize,
    pub total: usize,
    pub preview_width: usize,
    pub preview_height: usize,
    pub preview_rgba: Vec<u8>,
}

/// Intermediate tensors for comparison with a reference (`sdxl generate --dump`).
#[derive(Default)]
pub struct Dump {
    /// (name, shape, values): f32 tensors, token ids as i32.
    pub f32s: Vec<(String, Vec<usize>, Vec<f32>)>,
    pub ids: Vec<(String, Vec<usize>, Vec<i32>)>,
}

impl Dump {
    /// One safetensors file (F32 tensors, I32 ids): `sdxl generate --dump` and the web API.
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        use safetensors::tensor::{Dtype, TensorView};
        let bytes: Vec<(String, Vec<usize>, Dtype, Vec<u8>)> = self
            .f32s
            .iter()
            .map(|(n, s, v)| (n.clone(), s.clone(), Dtype::F32, bytemuck::cast_slice(v).to_vec()))
            .chain(
                self.ids.iter().map(|(n, s, v)| (n.clone(), s.clone(), Dtype::I32, bytemuck::cast_slice(v).to_vec())),
            )
            .collect();
        let err = |e: safetensors::SafeTensorError| Error::Input(format!("dump: {e}"));
        let views = bytes
            .iter()
            .map(|(n, s, dt, b)| Ok((n.as_str(), TensorView::new(*dt, s.clone(), b).map_err(err)?)))
            .collect::<Result<Vec<_>>>()?;
        safetensors::tensor::serialize(views, None).map_err(err)
    }
}

pub struct Output {
    pub png: Vec<u8>,
    /// Interleaved RGB8, `width × height × 3`.
    pub rgb: Vec<u8>,
    pub width: usize,
    pub height: usize,
    pub seed: u64,
    pub parameters: String,
    pub dump: Option<Dump>,
}

/// SDXL latent → RGB in [-1, 1] (a least-squares fit, as ComfyUI's SDXL latent previews use).
const LATENT_RGB: [[f32; 3]; 4] =
    [[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068], [0.1076, 0.1111, -0.0362], [-0.3165, -0.2492, -0.2188]];
const LATENT_RGB_BIAS: [f32; 3] = [0.1084, -0.0175, -0.0011];

/// RGBA preview of latents [C, h, w] (first 4 channels).
pub fn latent_preview(latents: &[f32], c: usize, h: usize, w: usize) -> Vec<u8> {
    let plane = h * w;
    let mut out = vec![255u8; plane * 4];
    for p in 0..plane {
        for (k, o) in out[p * 4..p * 4 + 3].iter_mut().enumerate() {
            let mut v = LATENT_RGB_BIAS[k];
            for (ch, f) in LATENT_RGB.iter().enumerate().take(c) {
                v += latents[ch * plane + p] * f[k];
            }
            *o = ((v + 1.0) * 127.5).clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// Prompt → image; see [`generate_with`].
pub async fn generate(
    gpu: &Gpu,
    model: &Model,
    s: &Settings,
    on_step: &mut dyn FnMut(&Progress) -> bool,
) -> Result<Output> {
    generate_with(gpu, model, s, false, on_step).await
}

/// Prompt → image, with the intermediate tensors in `Output::dump` when `dump`. `on_step` returns false to cancel (→ [`Error::Cancelled`]); every step awaits
/// a GPU readback, so an event loop (the web worker's) runs between steps.
pub async fn generate_with(
    gpu: &Gpu,
    model: &Model,
    s: &Settings,
    dump: bool,
    on_step: &mut dyn FnMut(&Progress) -> bool,
) -> Result<Output> {
    s.validate()?;
    model.check_size(gpu, s.width, s.height)?;
    let mut sampler = s.sampler()?;
    let mut d = dump.then(Dump::default);
    let (toks, p) = (&model.tokenizers, &model.weights);

    // Text conditioning. Batch order as diffusers: [negative, positive].
    let mut pos = PromptTokens::new(&s.prompt, s.rating, toks)?;
    let mut neg = s.negative.as_deref().map(|n| PromptTokens::new(n, Rating::None, toks)).transpose()?;
    if let Some(n) = neg.as_mut() {
        PromptTokens::pad_pair(&mut pos, n, toks);
    }
    let chunks = pos.chunk_count();
    let cfg_on = s.cfg > 1.0;
    let skip = s.clip_skip;
    let cp = encode_prompt(gpu, p, &model.clip_l, &model.clip_g, Some(&pos), chunks, skip).await?;
    let (context, pooled) = if cfg_on {
        let cn = encode_prompt(gpu, p, &model.clip_l, &model.clip_g, neg.as_ref(), chunks, skip).await?;
        (batch2(gpu, &cn.context, &cp.context)?, batch2(gpu, &cn.pooled, &cp.pooled)?)
    } else {
        (cp.context, cp.pooled)
    };
    let b = if cfg_on { 2 } else { 1 };
    // original_size, crops_coords_top_left, target_size, each (h, w).
    let (hf, wf) = (s.height as f32, s.width as f32);
    let time_ids = vec![[hf, wf, 0.0, 0.0, hf, wf]; b];
    if let Some(d) = d.as_mut() {
        let n = chunks * CONTEXT_LEN;
        let prompts: Vec<&PromptTokens> = neg.iter().filter(|_| cfg_on).chain([&pos]).collect();
        let flat = |f: &dyn Fn(&PromptTokens) -> &[crate::prompt::Chunk]| -> Vec<i32> {
            prompts.iter().flat_map(|t| f(t).iter().flat_map(|c| c.ids.map(|i| i as i32))).collect()
        };
        d.ids.push(("ids_l".into(), vec![prompts.len(), n], flat(&|t| &t.clip_l)));
        d.ids.push(("ids_g".into(), vec![prompts.len(), n], flat(&|t| &t.clip_g)));
        d.f32s.push(("context".into(), context.shape().to_vec(), context.to_vec_f32(gpu).await?));
        d.f32s.push(("pooled".into(), pooled.shape().to_vec(), pooled.to_vec_f32(gpu).await?));
        d.f32s.push(("add_time_ids".into(), vec![b, 6], time_ids.iter().flatten().copied().collect()));
    }

    // Initial latents: torch.randn(shape, generator=cpu generator) · init_noise_sigma.
    let f = model.vae_factor();
    let (c, lh, lw) = (model.unet.in_channels, s.height / f, s.width / f);
    let n = c * lh * lw;
    let mut rng = TorchRng::new(s.seed);
    let sigma0 = sampler.init_noise_sigma();
    let mut latents: Vec<f32> = rng.randn(n).into_iter().map(|x| x * sigma0).collect();
    if let Some(d) = d.as_mut() {
        d.f32s.push(("init_latents".into(), vec![1, c, lh, lw], latents.clone()));
    }

    let unet = UNet::new(model.unet.clone(), p)?;
    let total = sampler.steps();
    for i in 0..total {
        let t = sampler.timesteps()[i];
        let x_in = sampler.model_input(&latents, i);
        let batch: Vec<f32> = if cfg_on { [x_in.as_slice(), x_in.as_slice()].concat() } else { x_in };
        let x = Tensor::from_f32(gpu, &[b, c, lh, lw], DType::F32, &batch)?;
        let ts = vec![t; b];
        let cond = Cond { timesteps: &ts, context: &context, pooled: &pooled, time_ids: &time_ids };
        let out = unet.forward(gpu, &x, &cond)?.to_vec_f32(gpu).await?;
        gpu.check()?;
        if let Some(d) = d.as_mut().filter(|_| i == 0) {
            d.f32s.push(("unet_out_0".into(), vec![b, c, lh, lw], out.clone()));
        }
        let eps: Vec<f32> = if cfg_on {
            let (u, t) = out.split_at(n);
            u.iter().zip(t).map(|(&u, &t)| u + s.cfg * (t - u)).collect()
        } else {
            out
        };
        if let Some(bad) = eps.iter().position(|v| !v.is_finite()) {
            return Err(Error::Numeric(format!("UNet output is not finite at step {} (element {bad})", i + 1)));
        }
        // Preview of this step's x0 estimate.
        let k = sampler.coefficients(i)?;
        let x0: Vec<f32> =
            latents.iter().zip(&eps).map(|(&x, &e)| k.denoised_sample * x + k.denoised_model * e).collect();
        latents = sampler.step(&eps, i, &latents, &mut rng)?;
        let progress = Progress {
            step: i + 1,
            total,
            preview_width: lw,
            preview_height: lh,
            preview_rgba: latent_preview(&x0, c, lh, lw),
        };
        if !on_step(&progress) {
            return Err(Error::Cancelled);
        }
    }
    if let Some(d) = d.as_mut() {
        d.f32s.push(("final_latents".into(), vec![1, c, lh, lw], latents.clone()));
    }

    let vae = VaeDecoder::new(model.vae.clone(), p)?;
    let z = Tensor::from_f32(gpu, &[1, c, lh, lw], DType::F32, &latents)?;
    let image = vae.decode(gpu, &z)?;
    let rgb = to_rgb8(gpu, &image).await?.remove(0);
    gpu.check()?;
    let (w, h) = (image.shape()[3], image.shape()[2]);
    let parameters = s.parameters(&model.name);
    let png = encode_png(&rgb, w, h, &parameters)?;
    Ok(Output { png, rgb, width: w, height: h, seed: s.seed, parameters, dump: d })
}

/// [1, ...] ++ [1, ...] → [2, ...] (a concat along a new leading batch dimension).
fn batch2(gpu: &Gpu, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let per = a.numel();
    let mut shape = a.shape().to_vec();
    shape[0] = 2;
    concat_channels(gpu, &[&a.reshape(&[1, 1, per])?, &b.reshape(&[1, 1, per])?])?.reshape(&shape)
}

/// RGB8 → PNG with a `parameters` text chunk (tEXt when Latin-1, else iTXt, as PIL writes it).
pub fn encode_png(rgb: &[u8], width: usize, height: usize, parameters: &str) -> Result<Vec<u8>> {
    let err = |e: png::EncodingError| Error::Input(format!("PNG encoding: {e}"));
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width as u32, height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        if parameters.chars().all(|c| (c as u32) < 256) {
            enc.add_text_chunk("parameters".into(), parameters.into()).map_err(err)?;
        } else {
            enc.add_itxt_chunk("parameters".into(), parameters.into()).map_err(err)?;
        }
        let mut writer = enc.write_header().map_err(err)?;
        writer.write_image_data(rgb).map_err(err)?;
        writer.finish().map_err(err)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_from_web_json() {
        let s = Settings::from_json(r#"{"prompt":"1girl, solo","negative":"","width":832,"height":1216,"seed":4294967295,"sampler":"dpmpp_2m","karras":true,"rating":"sensitive"}"#).unwrap();
        assert_eq!(
            (s.width, s.height, s.seed, s.sampler, s.karras),
            (832, 1216, 4294967295, SamplerKind::DpmPp2m, true)
        );
        assert_eq!((s.negative.as_deref(), s.steps, s.rating), (Some(""), 25, Rating::Sensitive));
        assert_eq!(Settings::from_json(r#"{"prompt":"x","negative":null}"#).unwrap().negative, None);
        let err = |j: &str| Settings::from_json(j).unwrap_err().to_string();
        assert!(err(r#"{"prompt":"x","sampler":"plms"}"#).contains("unknown variant `plms`"));
        assert!(err(r#"{"prompt":"x","strength":1}"#).contains("unknown field `strength`"));
        assert!(err(r#"{"prompt":"x","width":100}"#).contains("width 100"));
        assert!(err(r#"{"prompt":"x","seed":-1}"#).contains("settings:"));
        // What JSON.stringify makes of a JS string holding a lone surrogate.
        let e = err(r#"{"prompt":"\ud800 tag"}"#);
        assert!(e.contains("settings:") && e.contains("hex escape"), "{e}");
    }
}
