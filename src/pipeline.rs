//! Text to image, as diffusers' `StableDiffusionXLPipeline` does it: prompt → both text encoders →
//! CFG sampling loop (UNet on the GPU, the scheduler step on the host in f32 exactly as diffusers
//! computes it) → VAE decode → PNG with A1111 `parameters` text. Shared by the CLI and the web
//! worker; only the byte source of the weights and the event loop differ.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use serde::{Deserialize, Serialize};

use crate::embedding::Embedding;
use crate::gpu::{now_seconds, DType, Gpu, Tensor};
use crate::image::InputImage;
use crate::lora::{Adapted, Lora, LoraWeight, Targets};
use crate::model::clip::{encode_prompt, ClipConfig, ClipText, Naming};
use crate::model::unet::{Cond, UNet, UNetConfig};
use crate::model::vae::{check_tiling, sample_latents, to_rgb8, VaeConfig, VaeDecoder, VaeEncoder, VaeTiling};
use crate::ops::elementwise::concat_channels;
use crate::prompt::{PromptTokens, Rating};
use crate::rng::TorchRng;
use crate::sampler::{Prediction, Sampler, SamplerKind, MAX_STEPS};
use crate::tokenizer::{SdxlTokenizers, CONTEXT_LEN};
use crate::weights::{Component, FilePlan, ModelConfig, RangeSource, Weights};
use crate::{Error, Result};

/// Image sides are multiples of this (the VAE's 8× and diffusers' own check).
pub const SIDE_MULTIPLE: usize = 8;
pub const MIN_SIDE: usize = 64;
pub const MAX_SIDE: usize = 2048;
/// The smallest VAE tile accepted (and the planner's last resort): below it the per-tile
/// GroupNorm statistics of SDXL's 4 VAE levels rest on too few pixels.
pub const MIN_VAE_TILE: usize = 64;
/// Tile sizes the planner tries, largest first (those under the image's longer side).
const VAE_TILE_CANDIDATES: &[usize] = &[1024, 768, 512, 384, 256, 192, 128, 96, 64];
/// The largest hires-fix factor accepted (A1111's slider goes to 4).
pub const MAX_HIRES_SCALE: f32 = 4.0;
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
    /// The GPU memory the run must fit in (`--gpu-memory`): the planner chooses text-encoder
    /// residency and VAE tiling to fit, or refuses before any work.
    pub gpu_memory: MemSize,
    /// VAE tile size in pixels (diffusers' `tile_sample_min_size`); 0: the planner decides
    /// (whole when it fits, else the largest tiles that fit).
    pub vae_tile: usize,
    /// diffusers' `tile_overlap_factor`.
    pub vae_tile_overlap: f32,
    /// img2img / inpainting: the image to start from. `width`/`height` 0 take its size (rounded
    /// down to a multiple of 8, as diffusers' image processor does); another size resizes it
    /// with PIL's LANCZOS filter, as diffusers does.
    pub init_image: Option<InputImage>,
    /// Inpainting: white (≥ 0.5 after grayscale) = repaint, black = keep. Resized like the image
    /// when its size differs.
    pub mask: Option<InputImage>,
    /// img2img / inpainting strength in (0, 1]: `int(steps × strength)` steps run (diffusers'
    /// convention; A1111 runs `steps` steps over the same range instead).
    pub strength: f32,
    /// Hires fix (text-to-image only): 0 (off) or the upscale factor of the latents, 1 to 4.
    pub hires_scale: f32,
    /// Strength of the hires pass, in (0, 1].
    pub hires_strength: f32,
    /// Steps of the hires pass before the strength cut; 0: `steps`.
    pub hires_steps: usize,
    /// Loaded LoRAs to apply ([`Model::load_lora`]), each with its weight; `<lora:NAME:WEIGHT>`
    /// tags in the prompt add to these.
    pub loras: Vec<LoraWeight>,
}

/// A byte count written as `7.5G`, `512M`, `24GiB` (binary units) or a plain number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemSize(pub u64);

/// 8 GB is the most common discrete-GPU size, and WebGPU cannot tell us the real one; 7.5 GiB
/// leaves room for the display and the browser.
pub const DEFAULT_GPU_MEMORY: MemSize = MemSize(15 << 29);

impl std::str::FromStr for MemSize {
    type Err = String;
    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let t = text.trim();
        let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
        let (num, unit) = (t[..split].trim(), t[split..].trim().to_ascii_lowercase());
        if num.is_empty() {
            return Err(format!("memory size '{text}': no number (use e.g. 7.5G, 512M, 24GiB)"));
        }
        let shift = match unit.as_str() {
            "" | "b" => 0,
            "k" | "kb" | "kib" => 10,
            "m" | "mb" | "mib" => 20,
            "g" | "gb" | "gib" => 30,
            "t" | "tb" | "tib" => 40,
            _ => return Err(format!("memory size '{text}': unknown unit '{unit}' (use e.g. 7.5G, 512M, 24GiB)")),
        };
        let v: f64 =
            num.parse().map_err(|_| format!("memory size '{text}': '{num}' is not a number (use e.g. 7.5G)"))?;
        let bytes = v * (1u64 << shift) as f64;
        if !bytes.is_finite() || bytes < (1u64 << 20) as f64 || bytes > (1u64 << 50) as f64 {
            return Err(format!("memory size '{text}': must be from 1M to 1024T"));
        }
        Ok(MemSize(bytes as u64))
    }
}

impl std::fmt::Display for MemSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&fmt_bytes(self.0))
    }
}

impl Serialize for MemSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for MemSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(b) => format!("{b}").parse(),
            Raw::Text(t) => t.parse(),
        }
        .map_err(serde::de::Error::custom)
    }
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
            gpu_memory: DEFAULT_GPU_MEMORY,
            vae_tile: 0,
            vae_tile_overlap: 0.25,
            init_image: None,
            mask: None,
            strength: 0.75,
            hires_scale: 0.0,
            hires_strength: 0.5,
            hires_steps: 0,
            loras: Vec::new(),
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

    /// Everything checkable without a model: sizes, steps, CFG, sampler/schedule pairing, the
    /// img2img / inpainting / hires settings. Width and height may be 0 with an init image (see
    /// [`Settings::resolved`]).
    pub fn validate(&self) -> Result<()> {
        let from_image = self.init_image.is_some();
        for (what, v) in [("width", self.width), ("height", self.height)] {
            if v == 0 && from_image {
                continue;
            }
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
        if !(0.0..1.0).contains(&self.vae_tile_overlap) {
            return Err(Error::Input(format!("VAE tile overlap {}: must be from 0 to below 1", self.vae_tile_overlap)));
        }
        if self.vae_tile != 0 && (!self.vae_tile.is_multiple_of(SIDE_MULTIPLE) || self.vae_tile < MIN_VAE_TILE) {
            return Err(Error::Input(format!(
                "VAE tile {} px: must be 0 (decide from the budget) or a multiple of {SIDE_MULTIPLE} from {MIN_VAE_TILE}",
                self.vae_tile
            )));
        }
        let unit = |v: f32| v.is_finite() && v > 0.0 && v <= 1.0;
        if from_image && !unit(self.strength) {
            return Err(Error::Input(format!(
                "strength {}: must be above 0 and at most 1 (1 ignores the init image's content)",
                self.strength
            )));
        }
        if self.mask.is_some() && !from_image {
            return Err(Error::Input("a mask needs an init image to inpaint (--init-image)".into()));
        }
        if self.hires_scale != 0.0 {
            if from_image {
                return Err(Error::Input(
                    "the hires fix applies to text-to-image; with an init image, set the size instead".into(),
                ));
            }
            if !self.hires_scale.is_finite() || !(1.0..=MAX_HIRES_SCALE).contains(&self.hires_scale) {
                return Err(Error::Input(format!(
                    "hires scale {}: must be 0 (off) or from 1 to {MAX_HIRES_SCALE}",
                    self.hires_scale
                )));
            }
            if !unit(self.hires_strength) {
                return Err(Error::Input(format!(
                    "hires strength {}: must be above 0 and at most 1",
                    self.hires_strength
                )));
            }
            if self.hires_steps > MAX_STEPS {
                return Err(Error::Input(format!(
                    "hires steps {}: must be from 0 (= steps) to {MAX_STEPS}",
                    self.hires_steps
                )));
            }
            let (w, h) = self.hires_size();
            if w > MAX_SIDE || h > MAX_SIDE || w < MIN_SIDE || h < MIN_SIDE {
                return Err(Error::Input(format!(
                    "hires fix: {}x{} × {} = {w}x{h} is outside {MIN_SIDE} to {MAX_SIDE} px a side; lower --hires-scale",
                    self.width, self.height, self.hires_scale
                )));
            }
        }
        for l in self.loras.iter().chain(&crate::lora::take_lora_tags(&self.prompt)?.1) {
            l.check()?;
        }
        Ok(())
    }

    /// Whether the hires fix runs.
    pub fn hires(&self) -> bool {
        self.hires_scale != 0.0
    }

    /// The hires pass' image size, as A1111 computes it: `int(side × scale)` rounded down to the
    /// latent grid (A1111 interpolates the latents to `int(side × scale) // 8`).
    pub fn hires_size(&self) -> (usize, usize) {
        let f = |v: usize| ((v as f64 * self.hires_scale as f64) as usize) / SIDE_MULTIPLE * SIDE_MULTIPLE;
        (f(self.width), f(self.height))
    }

    /// The size of the output image: the hires size with the hires fix, else width × height.
    pub fn output_size(&self) -> (usize, usize) {
        if self.hires() {
            self.hires_size()
        } else {
            (self.width, self.height)
        }
    }

    /// These settings with width and height taken from the init image where they are 0
    /// (diffusers' `get_default_height_width`: the image's size rounded down to a multiple of
    /// 8), validated.
    pub fn resolved(&self) -> Result<Settings> {
        self.validate()?;
        let mut s = self.clone();
        if let Some(img) = &self.init_image {
            if s.width == 0 || s.height == 0 {
                let p = img.decode("init image")?;
                let (w, h) = crate::image::default_size(p.width, p.height, SIDE_MULTIPLE);
                if s.width == 0 {
                    s.width = w;
                }
                if s.height == 0 {
                    s.height = h;
                }
                for (what, v) in [("width", s.width), ("height", s.height)] {
                    if !(MIN_SIDE..=MAX_SIDE).contains(&v) {
                        return Err(Error::Input(format!(
                            "init image {}x{}: its {what} ({v} after rounding down to a multiple of {SIDE_MULTIPLE}) is outside {MIN_SIDE} to {MAX_SIDE}; set --width/--height to resize it",
                            p.width, p.height
                        )));
                    }
                }
            }
        }
        Ok(s)
    }

    /// Steps of the hires pass before the strength cut.
    pub fn hires_steps_or_default(&self) -> usize {
        if self.hires_steps == 0 {
            self.steps
        } else {
            self.hires_steps
        }
    }

    /// The LoRAs of this generation: `loras`, then the prompt's `<lora:…>` tags.
    pub fn all_loras(&self) -> Result<Vec<LoraWeight>> {
        let (_, tags) = crate::lora::take_lora_tags(&self.prompt)?;
        Ok(self.loras.iter().cloned().chain(tags).collect())
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
        self.parameters_with(model_name, &[])
    }

    /// [`Settings::parameters`] with extra `key: value` fields before `Version` (A1111's
    /// `Lora hashes` / `TI hashes`); values with `,` `:` or a newline are JSON-quoted as A1111's
    /// `infotext_utils.quote` does.
    pub fn parameters_with(&self, model_name: &str, extra: &[(&str, String)]) -> String {
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
        if self.init_image.is_some() {
            s.push_str(&format!(", Denoising strength: {}", self.strength));
            if self.mask.is_some() {
                // No blur is applied to the mask (diffusers' pipeline has none).
                s.push_str(", Mask blur: 0");
            }
        }
        if self.hires() {
            s.push_str(&format!(
                ", Denoising strength: {}, Hires upscale: {}, Hires steps: {}, Hires upscaler: Latent",
                self.hires_strength,
                self.hires_scale,
                self.hires_steps_or_default()
            ));
        }
        for (k, v) in extra {
            let quoted =
                if v.contains([',', ':', '\n']) { serde_json::to_string(v).unwrap_or_default() } else { v.clone() };
            s.push_str(&format!(", {k}: {quoted}"));
        }
        s.push_str(&format!(", Version: sdxl-web {}", env!("CARGO_PKG_VERSION")));
        s
    }
}

/// What the UNet needs from the text encoders, for one (prompt, negative, clip skip, CFG)
/// combination; kept on the GPU so re-running a prompt needs no encoder.
struct CondCache {
    key: String,
    context: Tensor,
    pooled: Tensor,
}

/// A loaded checkpoint: GPU weights by single-file name, the architecture and the tokenizers.
pub struct Model {
    /// For the `Model:` field of the infotext (the file name without extension).
    pub name: String,
    /// UNet and VAE weights (always resident).
    pub weights: Weights,
    /// Both text encoders' weights while resident; `None` once the planner released them.
    text: RefCell<Option<Weights>>,
    /// Bytes of the text encoders' weights (whether resident or not).
    text_bytes: u64,
    /// Where every tensor's bytes are in the model's files, to stream released weights back.
    plans: Vec<FilePlan>,
    source: Option<Box<dyn RangeSource>>,
    cond: RefCell<Option<CondCache>>,
    pub unet: UNetConfig,
    pub vae: VaeConfig,
    pub clip_l: ClipText,
    pub clip_g: ClipText,
    /// Shared with the planner's dry copies (building them parses the BPE merges).
    pub tokenizers: std::rc::Rc<SdxlTokenizers>,
    /// Every LoRA-able layer, by the names LoRA files use.
    targets: Rc<Targets>,
    /// Loaded LoRAs by name (GPU tensors, counted by the planner like weights).
    loras: RefCell<BTreeMap<String, Rc<Lora>>>,
    /// Loaded textual-inversion embeddings, in token-id order.
    embeddings: RefCell<Vec<Embedding>>,
    /// The tokenizers with the embeddings' tokens, and the rows they add to each token table.
    ti: RefCell<TextualInversion>,
}

/// What the loaded embeddings add to the text encoders.
#[derive(Clone)]
struct TextualInversion {
    tokenizers: Rc<SdxlTokenizers>,
    /// Token-table name → [n_total, hidden] F16 rows (ids from the vocabulary size on).
    rows: HashMap<String, Tensor>,
    /// Bumped on every change: part of the conditioning cache key.
    version: u64,
}

fn weight_bytes(w: &Weights) -> u64 {
    w.map.values().map(|t| t.byte_len_padded()).sum()
}
impl Model {
    /// `config` is what the loader found: inferred from the checkpoint's shapes, completed by its
    /// config.json files (diffusers folders) or the documented fallbacks (single files); the
    /// model code takes every number from it.
    pub fn new(weights: Weights, config: &ModelConfig, name: &str) -> Result<Model> {
        config.check()?;
        let clip_l = ClipText::new(ClipConfig::from_loaded(&config.text_encoder, Naming::Hf))?;
        let clip_g = ClipText::new(ClipConfig::from_loaded(&config.text_encoder_2, Naming::OpenClip))?;
        let shapes: HashMap<String, Vec<usize>> =
            weights.map.iter().map(|(k, t)| (k.clone(), t.shape().to_vec())).collect();
        let targets = Rc::new(Targets::new(&shapes, config.unet.num_res_blocks));
        let tokenizers = Rc::new(SdxlTokenizers::new()?);
        // The text encoders live apart: the planner may release them while the UNet runs.
        let (text, rest): (HashMap<String, Tensor>, HashMap<String, Tensor>) =
            weights.map.into_iter().partition(|(k, _)| k.starts_with("conditioner."));
        let text = Weights { map: text };
        Ok(Model {
            name: name.to_string(),
            weights: Weights { map: rest },
            text_bytes: weight_bytes(&text),
            text: RefCell::new(Some(text)),
            plans: Vec::new(),
            source: None,
            cond: RefCell::new(None),
            unet: config.unet.clone(),
            vae: config.vae.clone(),
            clip_l,
            clip_g,
            ti: RefCell::new(TextualInversion { tokenizers: tokenizers.clone(), rows: HashMap::new(), version: 0 }),
            tokenizers,
            targets,
            loras: RefCell::new(BTreeMap::new()),
            embeddings: RefCell::new(Vec::new()),
        })
    }

    /// Parse and upload a LoRA file (`bytes`: the whole `.safetensors`; `file` names it in
    /// errors) under `name`, replacing one of that name. A file that does not fit this model
    /// fails whole, with the first offending key named.
    pub fn load_lora(&self, gpu: &Gpu, name: &str, file: &str, bytes: &[u8]) -> Result<()> {
        if name.is_empty() || name.contains([':', '<', '>']) {
            return Err(Error::Input(format!("LoRA name '{name}': must be non-empty without ':', '<' or '>'")));
        }
        let lora = Lora::load(gpu, name, file, bytes, &self.targets)?;
        self.loras.borrow_mut().insert(name.to_string(), Rc::new(lora));
        Ok(())
    }

    /// Free a loaded LoRA; false when none has that name.
    pub fn unload_lora(&self, name: &str) -> bool {
        self.loras.borrow_mut().remove(name).is_some()
    }

    /// Names of the loaded LoRAs with their A1111 short hashes.
    pub fn loras(&self) -> Vec<(String, String)> {
        self.loras.borrow().values().map(|l| (l.name.clone(), l.hash.clone())).collect()
    }

    /// Add a textual-inversion embedding (`bytes`: the whole SDXL embedding file) under `name`
    /// (the word prompts use). Refused: a name already loaded or in the vocabulary, wrong widths,
    /// SD 1.x files.
    pub fn load_embedding(&self, gpu: &Gpu, name: &str, file: &str, bytes: &[u8]) -> Result<()> {
        let e = Embedding::parse(
            name,
            file,
            bytes,
            self.clip_l.cfg.hidden,
            self.clip_g.cfg.hidden,
            &self.tokenizers.clip_l,
        )?;
        if self.embeddings.borrow().iter().any(|x| x.name.eq_ignore_ascii_case(name)) {
            return Err(Error::Input(format!("an embedding named '{name}' is already loaded; unload it first")));
        }
        let mut all = self.embeddings.borrow().clone();
        all.push(e);
        self.set_embeddings(gpu, all)
    }

    /// Remove an embedding; false when none has that name.
    pub fn unload_embedding(&self, gpu: &Gpu, name: &str) -> Result<bool> {
        let mut all = self.embeddings.borrow().clone();
        let before = all.len();
        all.retain(|e| e.name != name);
        if all.len() == before {
            return Ok(false);
        }
        self.set_embeddings(gpu, all)?;
        Ok(true)
    }

    /// Names of the loaded embeddings with their A1111 short hashes.
    pub fn embeddings(&self) -> Vec<(String, String)> {
        self.embeddings.borrow().iter().map(|e| (e.name.clone(), e.hash.clone())).collect()
    }

    /// Rebuild the tokenizers and token-table rows for exactly `all` (ids in this order).
    fn set_embeddings(&self, gpu: &Gpu, all: Vec<Embedding>) -> Result<()> {
        let names: Vec<(String, usize)> = all.iter().map(|e| (e.name.clone(), e.n)).collect();
        let (l, _) = self.tokenizers.clip_l.with_embeddings(&names)?;
        let (g, _) = self.tokenizers.clip_g.with_embeddings(&names)?;
        let mut rows = HashMap::new();
        if !all.is_empty() {
            let total: usize = all.iter().map(|e| e.n).sum();
            for (clip, data) in [
                (&self.clip_l, all.iter().flat_map(|e| e.clip_l.iter().copied()).collect::<Vec<f32>>()),
                (&self.clip_g, all.iter().flat_map(|e| e.clip_g.iter().copied()).collect()),
            ] {
                let tok = match clip.cfg.naming {
                    Naming::Hf => "embeddings.token_embedding.weight",
                    Naming::OpenClip => "token_embedding.weight",
                };
                let t = Tensor::from_f32(gpu, &[total, clip.cfg.hidden], DType::F16, &data)?;
                rows.insert(format!("{}{tok}", clip.cfg.prefix), t);
            }
        }
        let version = self.ti.borrow().version + 1;
        *self.ti.borrow_mut() =
            TextualInversion { tokenizers: Rc::new(SdxlTokenizers { clip_l: l, clip_g: g }), rows, version };
        *self.embeddings.borrow_mut() = all;
        Ok(())
    }

    /// Lets the planner release the text encoders: `plans` (from the load) say where their bytes
    /// are, `source` reads them again (the file natively, the OPFS copy in the browser).
    pub fn with_source(mut self, plans: Vec<FilePlan>, source: Option<Box<dyn RangeSource>>) -> Model {
        self.plans = plans;
        self.source = source;
        self
    }

    /// Whether the text encoders can be released and streamed back (a byte source is known).
    pub fn can_release_text(&self) -> bool {
        !self.plans.is_empty() && self.source.is_some()
    }

    /// Whether the text encoders' weights are on the GPU now.
    pub fn text_resident(&self) -> bool {
        self.text.borrow().is_some()
    }

    /// Bytes of weights: (UNet + VAE, text encoders).
    pub fn weight_bytes(&self) -> (u64, u64) {
        (weight_bytes(&self.weights), self.text_bytes)
    }

    /// Bytes of the loaded LoRAs and embedding rows (always resident).
    pub fn adapter_bytes(&self) -> u64 {
        self.loras.borrow().values().map(|l| l.bytes()).sum::<u64>()
            + self.ti.borrow().rows.values().map(|t| t.byte_len_padded()).sum::<u64>()
    }

    /// A copy on a dry twin (`Gpu::dry_twin`): same tensors (shapes, sizes), same residency and
    /// cached conditioning, no memory. The planner runs candidate plans on it.
    pub fn dry_copy(&self, twin: &Gpu) -> Result<Model> {
        let copy = |w: &Weights| -> Result<Weights> {
            let map = w
                .map
                .iter()
                .map(|(k, t)| Ok((k.clone(), Tensor::empty_exact(twin, t.shape(), t.dtype())?)))
                .collect::<Result<HashMap<_, _>>>()?;
            Ok(Weights { map })
        };
        let text = self.text.borrow().as_ref().map(copy).transpose()?;
        let cond = match self.cond.borrow().as_ref() {
            Some(c) => Some(CondCache {
                key: c.key.clone(),
                context: Tensor::empty(twin, c.context.shape(), c.context.dtype())?,
                pooled: Tensor::empty(twin, c.pooled.shape(), c.pooled.dtype())?,
            }),
            None => None,
        };
        Ok(Model {
            name: self.name.clone(),
            weights: copy(&self.weights)?,
            text: RefCell::new(text),
            text_bytes: self.text_bytes,
            plans: self.plans.clone(),
            // A dry reload reads nothing; it only needs to know that a source exists.
            source: self.source.as_ref().map(|_| Box::new(NoSource) as Box<dyn RangeSource>),
            cond: RefCell::new(cond),
            unet: self.unet.clone(),
            vae: self.vae.clone(),
            clip_l: ClipText::new(self.clip_l.cfg.clone())?,
            clip_g: ClipText::new(self.clip_g.cfg.clone())?,
            tokenizers: self.tokenizers.clone(),
            targets: self.targets.clone(),
            // LoRAs and embedding rows are GPU tensors like the weights: the twin accounts them.
            loras: RefCell::new(
                self.loras
                    .borrow()
                    .iter()
                    .map(|(k, l)| Ok((k.clone(), Rc::new(l.dry_copy(twin)?))))
                    .collect::<Result<_>>()?,
            ),
            embeddings: RefCell::new(self.embeddings.borrow().clone()),
            ti: RefCell::new({
                let ti = self.ti.borrow();
                TextualInversion {
                    tokenizers: ti.tokenizers.clone(),
                    rows: ti
                        .rows
                        .iter()
                        .map(|(k, t)| Ok((k.clone(), Tensor::empty_exact(twin, t.shape(), t.dtype())?)))
                        .collect::<Result<_>>()?,
                    version: ti.version,
                }
            }),
        })
    }

    /// Loads a checkpoint (single file or diffusers folder, optional separate VAE) from disk; the
    /// files stay the source the text encoders are streamed back from. On a dry twin only the
    /// headers are read.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(
        gpu: &Gpu,
        model: &std::path::Path,
        vae: Option<&std::path::Path>,
        progress: impl FnMut(u64),
    ) -> Result<Model> {
        let sink = crate::weights::GpuSink::new(gpu);
        let loaded = if gpu.is_dry() {
            crate::weights::load_path_dry(model, vae, sink, DType::F16)?
        } else {
            crate::weights::load_path(model, vae, sink, DType::F16, crate::weights::DEFAULT_CHUNK, progress)?
        };
        let weights = loaded.sink.into_weights()?;
        let name = model.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
        let source = crate::weights::FileRanges::new(model, vae)?;
        Ok(Model::new(weights, &loaded.config, &name)?.with_source(loaded.plans, Some(Box::new(source))))
    }
    /// Latent downsampling of the VAE (8 for SDXL).
    pub fn vae_factor(&self) -> usize {
        self.vae.factor()
    }

    /// This model's UNet step, for the kernel timing's estimate (`engine.timing()`).
    pub fn step_model(&self) -> crate::timing::StepModel {
        crate::timing::StepModel { name: self.name.clone(), unet: self.unet.clone(), vae_factor: self.vae_factor() }
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

    /// What the model cannot do with these settings: inpainting UNets (9 input channels: latents,
    /// mask, masked-image latents) are refused (their pipeline semantics are not implemented),
    /// and a UNet whose input is not the VAE's latent is refused.
    pub fn check_inputs(&self, s: &Settings) -> Result<()> {
        let (u, z) = (self.unet.in_channels, self.vae.embed_dim);
        if u == 2 * z + 1 {
            return Err(Error::Input(format!(
                "this checkpoint's UNet is an inpainting UNet ({u} input channels: latents, mask and masked-image latents), which sdxl-web does not support; use a normal SDXL checkpoint (4 input channels){}",
                if s.mask.is_some() { " — it inpaints with --mask too" } else { "" }
            )));
        }
        if u != z {
            return Err(Error::Input(format!(
                "the UNet takes {u} input channels but the VAE makes {z}-channel latents"
            )));
        }
        Ok(())
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

/// The source a dry copy reports: a dry reload reads no bytes.
struct NoSource;

impl RangeSource for NoSource {
    fn read<'a>(
        &'a self,
        _file: usize,
        _start: u64,
        _buf: &'a mut [u8],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + 'a>> {
        Box::pin(std::future::ready(Err(Error::Gpu("internal: a dry copy cannot read weights".into()))))
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
    /// Memory, plan and timings (`--json`).
    pub report: Report,
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

/// Whether the text encoders stay on the GPU through the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TextEncoders {
    /// Kept loaded: a new prompt costs nothing extra.
    Resident,
    /// Released after encoding (the conditioning is cached per prompt); a new prompt streams them
    /// back from the file (natively) or the cached copy (browser).
    Streamed,
}

/// How a generation fits the memory budget: chosen by [`plan`], reported in [`Report::plan`].
#[derive(Clone, Debug, Serialize)]
pub struct MemoryPlan {
    /// The budget planned to (bytes).
    pub gpu_memory: u64,
    pub text_encoders: TextEncoders,
    /// 0: the VAE decodes the whole image at once; else tile size in pixels.
    pub vae_tile: usize,
    pub vae_tile_overlap: f32,
    /// The peak a dry run of this plan measured; the real run's `peak_gpu_bytes` equals it.
    pub predicted_peak_gpu_bytes: u64,
    /// Weights on the GPU: UNet + VAE, and the text encoders when resident.
    pub unet_vae_weight_bytes: u64,
    pub text_encoder_weight_bytes: u64,
    /// LoRAs and textual-inversion rows (resident, counted in the peak like weights).
    pub adapter_bytes: u64,
    /// Candidate plans dry-run before this one fitted.
    pub candidates_tried: usize,
}

/// Peak GPU memory and wall time of one stage.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stage {
    pub peak_gpu_bytes: u64,
    pub seconds: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Stages {
    /// Prompt encoding, including streaming the text encoders back when they were released.
    pub text: Stage,
    /// The VAE encode of an init image and every denoising step (both passes of the hires fix).
    pub unet: Stage,
    /// VAE decode and the image readback.
    pub vae: Stage,
}

/// What a generation did, for `sdxl generate --json` and the web API's `report`.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Highest GPU memory of the whole run (weights, activations, pool cache, staging, readback).
    pub peak_gpu_bytes: u64,
    pub stages: Stages,
    pub width: usize,
    pub height: usize,
    pub steps: usize,
    pub seed: u64,
    pub plan: MemoryPlan,
    /// The conditioning came from the per-prompt cache (no text encoder ran).
    pub conditioning_cached: bool,
    /// The text encoders were streamed back to the GPU for this run.
    pub text_encoders_reloaded: bool,
    /// Nothing ran on the GPU: allocations were only accounted (`--dry-run`).
    pub dry_run: bool,
    pub compute_path: String,
    /// Seconds from start to PNG (planning included).
    pub seconds: f64,
}

/// Chooses how a generation fits `s.gpu_memory`, by dry-running candidate plans on a dry twin of
/// the device (milliseconds each; the allocation sequence is the real run's): everything
/// resident and the VAE whole first; then text encoders streamed; then VAE tiles from the
/// largest down, each with resident and then streamed text encoders. Tiling changes the image
/// (per-tile GroupNorm), streaming only costs time, hence that order. An explicit `vae_tile`
/// fixes the tile size. Fails before any work when nothing fits.
pub async fn plan(gpu: &Gpu, model: &Model, s: &Settings) -> Result<MemoryPlan> {
    let s = &s.resolved()?;
    model.check_inputs(s)?;
    let (out_w, out_h) = s.output_size();
    let (lh, lw) = (out_h / model.vae_factor(), out_w / model.vae_factor());
    let tiles: Vec<usize> = if s.vae_tile > 0 {
        check_tiling(&model.vae, lh, lw, VaeTiling { tile_px: s.vae_tile, overlap: s.vae_tile_overlap })?;
        vec![s.vae_tile]
    } else {
        let long = out_w.max(out_h);
        std::iter::once(0)
            .chain(VAE_TILE_CANDIDATES.iter().copied().filter(|&t| {
                t < long
                    && check_tiling(&model.vae, lh, lw, VaeTiling { tile_px: t, overlap: s.vae_tile_overlap }).is_ok()
            }))
            .collect()
    };
    let texts: &[TextEncoders] = if model.can_release_text() {
        &[TextEncoders::Resident, TextEncoders::Streamed]
    } else {
        &[TextEncoders::Resident]
    };
    let (unet_vae, text) = model.weight_bytes();
    let budget = s.gpu_memory.0;
    let mut best: Option<MemoryPlan> = None;
    let mut tried = 0;
    for &tile in &tiles {
        for &t in texts {
            tried += 1;
            let mut p = MemoryPlan {
                gpu_memory: budget,
                text_encoders: t,
                vae_tile: tile,
                vae_tile_overlap: s.vae_tile_overlap,
                predicted_peak_gpu_bytes: 0,
                unet_vae_weight_bytes: unet_vae,
                text_encoder_weight_bytes: text,
                adapter_bytes: model.adapter_bytes(),
                candidates_tried: tried,
            };
            let twin = gpu.dry_twin();
            let dry = model.dry_copy(&twin)?;
            let out = run(&twin, &dry, s, &p, false, &mut |_| true).await?;
            p.predicted_peak_gpu_bytes = out.report.peak_gpu_bytes;
            if p.predicted_peak_gpu_bytes <= budget {
                return Ok(p);
            }
            if best.as_ref().is_none_or(|b| p.predicted_peak_gpu_bytes < b.predicted_peak_gpu_bytes) {
                best = Some(p);
            }
        }
    }
    let b = best.ok_or_else(|| Error::Input("no memory plan to try".into()))?;
    let text_part = if b.text_encoders == TextEncoders::Streamed { " with the text encoders streamed" } else { "" };
    let weights = unet_vae + if b.text_encoders == TextEncoders::Resident { text } else { 0 };
    Err(Error::Input(format!(
        "{}x{}{} does not fit the GPU memory budget: it needs at least {} (weights {}{text_part}, {}), but the budget is {}; raise --gpu-memory (web setting gpu_memory) if the GPU has more, or choose a smaller size",
        out_w,
        out_h,
        if s.hires() { " (hires fix)" } else { "" },
        fmt_bytes(b.predicted_peak_gpu_bytes),
        fmt_bytes(weights),
        if b.vae_tile > 0 { format!("VAE in {} px tiles", b.vae_tile) } else { "VAE whole".into() },
        fmt_bytes(budget)
    )))
}

/// Bytes for messages: GiB with two decimals from 1 GiB, else MiB.
pub fn fmt_bytes(b: u64) -> String {
    if b >= 1 << 30 {
        format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
    }
}

/// Prompt → image, with the intermediate tensors in `Output::dump` when `dump`. Plans the memory
/// first ([`plan`]), then runs. `on_step` returns false to cancel (→ [`Error::Cancelled`]);
/// every step awaits a GPU readback, so an event loop (the web worker's) runs between steps. On a
/// dry twin (`--dry-run`) the same path runs with nothing computed.
pub async fn generate_with(
    gpu: &Gpu,
    model: &Model,
    s: &Settings,
    dump: bool,
    on_step: &mut dyn FnMut(&Progress) -> bool,
) -> Result<Output> {
    let t0 = now_seconds();
    let s = &s.resolved()?;
    let (out_w, out_h) = s.output_size();
    model.check_size(gpu, out_w, out_h)?;
    let p = plan(gpu, model, s).await?;
    let mut out = run(gpu, model, s, &p, dump, on_step).await?;
    out.report.seconds = now_seconds() - t0;
    Ok(out)
}

/// The cache key of a conditioning: everything `encode_prompt` reads (the text the encoders
/// see, the LoRAs on them with their weights, the embeddings loaded).
fn cond_key(
    prompt: &str,
    negative: Option<&str>,
    s: &Settings,
    cfg_on: bool,
    loras: &[(Rc<Lora>, f32)],
    ti: u64,
) -> String {
    let text_loras: Vec<(&str, f32)> =
        loras.iter().filter(|(l, _)| l.touches_text()).map(|(l, w)| (l.name.as_str(), *w)).collect();
    serde_json::json!([prompt, negative, s.clip_skip, cfg_on, text_loras, ti]).to_string()
}

/// One generation under a given plan (also the planner's dry runs).
async fn run(
    gpu: &Gpu,
    model: &Model,
    s: &Settings,
    plan: &MemoryPlan,
    dump: bool,
    on_step: &mut dyn FnMut(&Progress) -> bool,
) -> Result<Output> {
    let t_start = now_seconds();
    let mut sampler = s.sampler()?;
    let mut d = dump.then(Dump::default);
    // LoRAs (settings + prompt tags) resolved to loaded files; embeddings' tokenizers and rows.
    let active: Vec<(Rc<Lora>, f32)> = s
        .all_loras()?
        .iter()
        .map(|lw| {
            let loaded = model.loras.borrow();
            let l = loaded.get(&lw.name).cloned().ok_or_else(|| {
                let names: Vec<&str> = loaded.keys().map(String::as_str).collect();
                Error::Input(format!(
                    "LoRA '{}' is not loaded (loaded: {})",
                    lw.name,
                    if names.is_empty() { "none".to_string() } else { names.join(", ") }
                ))
            })?;
            Ok((l, lw.weight))
        })
        .collect::<Result<_>>()?;
    let ti = model.ti.borrow().clone();
    let toks = &*ti.tokenizers;
    let emb_names: Vec<String> = model.embeddings.borrow().iter().map(|e| e.name.clone()).collect();
    // The text the encoders see: LoRA tags removed (A1111), `embedding:NAME` → NAME (ComfyUI).
    let prompt_text = crate::embedding::strip_prefix(&crate::lora::take_lora_tags(&s.prompt)?.0, &emb_names);
    let negative_text = s.negative.as_deref().map(|n| crate::embedding::strip_prefix(n, &emb_names));
    // Cached buffers from an earlier run would make the peak depend on history; the limit makes
    // the pool drop its cache before it could push the total past the budget.
    gpu.set_memory_limit(Some(plan.gpu_memory));
    gpu.trim_pool();
    gpu.reset_peak();
    let mut stages = Stages::default();
    let mut run_peak = 0u64;
    let mut end_stage = |stage: &mut Stage, t0: f64| {
        gpu.trim_pool();
        stage.peak_gpu_bytes = gpu.memory().peak;
        stage.seconds = now_seconds() - t0;
        run_peak = run_peak.max(stage.peak_gpu_bytes);
        gpu.reset_peak();
    };

    // Text conditioning. Batch order as diffusers: [negative, positive].
    let t0 = now_seconds();
    let mut pos = PromptTokens::new(&prompt_text, s.rating, toks)?;
    let mut neg = negative_text.as_deref().map(|n| PromptTokens::new(n, Rating::None, toks)).transpose()?;
    if let Some(n) = neg.as_mut() {
        PromptTokens::pad_pair(&mut pos, n, toks);
    }
    let chunks = pos.chunk_count();
    let cfg_on = s.cfg > 1.0;
    let skip = s.clip_skip;
    let key = cond_key(&prompt_text, negative_text.as_deref(), s, cfg_on, &active, ti.version);
    let cached = model.cond.borrow().as_ref().is_some_and(|c| c.key == key);
    let mut reloaded = false;
    if !cached {
        // The old conditioning is dead weight from here on.
        model.cond.borrow_mut().take();
        // Out of the cell while encoding (no borrow across an await); back in unless streamed.
        let held = model.text.borrow_mut().take();
        let tw = match held {
            Some(w) => w,
            None => {
                reloaded = true;
                let comps = [Component::TextEncoder, Component::TextEncoder2];
                crate::weights::reload_to_gpu(gpu, &model.plans, &comps, model.source.as_deref()).await?
            }
        };
        let tp = Adapted { base: &tw, loras: &active, rows: &ti.rows };
        let encoded = async {
            let cp = encode_prompt(gpu, &tp, &model.clip_l, &model.clip_g, Some(&pos), chunks, skip).await?;
            Ok::<_, Error>(if cfg_on {
                let cn = encode_prompt(gpu, &tp, &model.clip_l, &model.clip_g, neg.as_ref(), chunks, skip).await?;
                (batch2(gpu, &cn.context, &cp.context)?, batch2(gpu, &cn.pooled, &cp.pooled)?)
            } else {
                (cp.context, cp.pooled)
            })
        }
        .await;
        if plan.text_encoders == TextEncoders::Resident || !model.can_release_text() {
            *model.text.borrow_mut() = Some(tw);
        }
        let (context, pooled) = encoded?;
        *model.cond.borrow_mut() = Some(CondCache { key, context, pooled });
    } else if plan.text_encoders == TextEncoders::Streamed {
        model.text.borrow_mut().take();
    }
    let (context, pooled) = {
        let cond = model.cond.borrow();
        let cc = cond.as_ref().expect("conditioning set above");
        (cc.context.clone(), cc.pooled.clone())
    };
    let (context, pooled) = (&context, &pooled);
    let b = if cfg_on { 2 } else { 1 };
    let time_ids = time_ids(s.height, s.width, b);
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
    end_stage(&mut stages.text, t0);

    // The generator's draws, in diffusers' order (read from the installed pipelines' source):
    // - text-to-image: randn(latents) · init_noise_sigma, then euler_a's noise at every step.
    // - img2img (StableDiffusionXLImg2ImgPipeline.prepare_latents): the init image's VAE latent
    //   (`latent_dist.sample(generator)`), then the noise of `scheduler.add_noise`, then euler_a's.
    // - inpainting with a 4-channel UNet (StableDiffusionXLInpaintPipeline): the init image's VAE
    //   latent (drawn at strength 1 too: `return_image_latents`), the noise (pure-noise start at
    //   strength 1, else `add_noise`), then the masked image's VAE latent in `prepare_mask_latents`,
    //   which a 4-channel UNet never uses but which shifts every later draw, then euler_a's.
    // - hires fix: the text-to-image draws; then a fresh generator of the same seed: the noise of
    //   `add_noise` on the upscaled latents, then euler_a's.
    let t0 = now_seconds();
    let f = model.vae_factor();
    let (c, lh, lw) = (model.unet.in_channels, s.height / f, s.width / f);
    let n = c * lh * lw;
    let mut rng = TorchRng::new(s.seed);
    let p = &model.weights;
    let inputs = Inputs::prepare(s)?;
    let mut inpaint: Option<Inpaint> = None;
    let mut latents: Vec<f32> = match &inputs.image {
        None => {
            let sigma0 = sampler.init_noise_sigma();
            rng.randn(n).into_iter().map(|x| x * sigma0).collect()
        }
        Some(image) => {
            let t_start = sampler.start_at_strength(s.strength)?;
            let image_latents = vae_encode(gpu, model, image, s, &mut rng).await?;
            let noise = rng.randn(n);
            if let Some(d) = d.as_mut() {
                d.f32s.push(("image_latents".into(), vec![1, c, lh, lw], image_latents.clone()));
            }
            match &inputs.mask {
                None => sampler.add_noise(&image_latents, &noise, t_start)?,
                Some(mask) => {
                    // init_image · (mask < 0.5): the kept part only.
                    let plane = s.width * s.height;
                    let masked: Vec<f32> =
                        image.iter().enumerate().map(|(i, &v)| if mask[i % plane] < 0.5 { v } else { 0.0 }).collect();
                    let _ = vae_encode(gpu, model, &masked, s, &mut rng).await?;
                    let m = crate::image::nearest_resize(mask, s.height, s.width, lh, lw);
                    let start = if s.strength == 1.0 {
                        // is_strength_max: pure noise · init_noise_sigma.
                        let sigma0 = sampler.init_noise_sigma();
                        noise.iter().map(|&x| x * sigma0).collect()
                    } else {
                        sampler.add_noise(&image_latents, &noise, t_start)?
                    };
                    if let Some(d) = d.as_mut() {
                        d.f32s.push(("mask_latent".into(), vec![1, 1, lh, lw], m.clone()));
                    }
                    inpaint = Some(Inpaint { image_latents, noise, mask: m });
                    start
                }
            }
        }
    };
    if let Some(d) = d.as_mut() {
        d.f32s.push(("init_latents".into(), vec![1, c, lh, lw], latents.clone()));
    }

    let no_rows = HashMap::new();
    let up = Adapted { base: p, loras: &active, rows: &no_rows };
    let unet = UNet::new(model.unet.clone(), &up)?;
    let hires_sampler = if s.hires() {
        let mut h = Sampler::new(s.sampler, s.hires_steps_or_default(), s.karras, s.prediction())?;
        h.start_at_strength(s.hires_strength)?;
        Some(h)
    } else {
        None
    };
    let total =
        (sampler.steps() - sampler.next_step()) + hires_sampler.as_ref().map_or(0, |h| h.steps() - h.next_step());
    let mut pass =
        Pass { gpu, unet: &unet, context, pooled, cfg: cfg_on.then_some(s.cfg), c, factor: f, done: 0, total };
    latents = pass.denoise(&mut sampler, latents, (lh, lw), &mut rng, inpaint.as_ref(), &mut d, on_step).await?;
    let (mut lh, mut lw) = (lh, lw);
    if let Some(mut hs) = hires_sampler {
        // A1111's "Latent" upscaler: bilinear on the latents, then img2img on them (no VAE round
        // trip) with a fresh generator of the same seed.
        let (tw, th) = s.hires_size();
        let (nh, nw) = (th / f, tw / f);
        if let Some(d) = d.as_mut() {
            d.f32s.push(("first_pass".into(), vec![1, c, lh, lw], latents.clone()));
        }
        let up = crate::image::bilinear_resize(&latents, c, lh, lw, nh, nw);
        let mut rng2 = TorchRng::new(s.seed);
        let noise = rng2.randn(up.len());
        latents = hs.add_noise(&up, &noise, hs.next_step())?;
        if let Some(d) = d.as_mut() {
            d.f32s.push(("upscaled".into(), vec![1, c, nh, nw], up));
            d.f32s.push(("hires_init_latents".into(), vec![1, c, nh, nw], latents.clone()));
        }
        (lh, lw) = (nh, nw);
        latents = pass.denoise(&mut hs, latents, (lh, lw), &mut rng2, None, &mut d, on_step).await?;
    }
    if let Some(d) = d.as_mut() {
        d.f32s.push(("final_latents".into(), vec![1, c, lh, lw], latents.clone()));
    }
    let total_steps = pass.total;
    drop(unet);
    end_stage(&mut stages.unet, t0);

    let t0 = now_seconds();
    let vae = VaeDecoder::new(model.vae.clone(), p)?;
    let z = Tensor::from_f32(gpu, &[1, c, lh, lw], DType::F32, &latents)?;
    let image = if plan.vae_tile == 0 {
        vae.decode(gpu, &z)?
    } else {
        vae.decode_tiled(gpu, &z, VaeTiling { tile_px: plan.vae_tile, overlap: plan.vae_tile_overlap }).await?
    };
    drop(z);
    let (w, h) = (image.shape()[3], image.shape()[2]);
    let rgb = if gpu.is_dry() {
        image.to_vec_f32(gpu).await?;
        vec![0; w * h * 3]
    } else {
        to_rgb8(gpu, &image).await?.remove(0)
    };
    drop(image);
    gpu.check()?;
    end_stage(&mut stages.vae, t0);
    // A1111's hash fields: every LoRA applied, every embedding a prompt used.
    let mut extra = Vec::new();
    if !active.is_empty() {
        let v: Vec<String> =
            active.iter().map(|(l, _)| format!("{}: {}", l.name.replace([':', ','], ""), l.hash)).collect();
        extra.push(("Lora hashes", v.join(", ")));
    }
    let used: Vec<String> = {
        let embs = model.embeddings.borrow();
        let mut first = crate::tokenizer::VOCAB_SIZE as u32;
        let all_ids: Vec<u32> =
            pos.clip_l.iter().chain(neg.iter().flat_map(|n| n.clip_l.iter())).flat_map(|c| c.ids).collect();
        embs.iter()
            .filter_map(|e| {
                let id = first;
                first += e.n as u32;
                all_ids.contains(&id).then(|| format!("{}: {}", e.name.replace([':', ','], ""), e.hash))
            })
            .collect()
    };
    if !used.is_empty() {
        extra.push(("TI hashes", used.join(", ")));
    }
    let parameters = s.parameters_with(&model.name, &extra);
    let png = encode_png(&rgb, w, h, &parameters)?;
    let report = Report {
        peak_gpu_bytes: run_peak,
        stages,
        width: w,
        height: h,
        steps: total_steps,
        seed: s.seed,
        plan: plan.clone(),
        conditioning_cached: cached,
        text_encoders_reloaded: reloaded,
        dry_run: gpu.is_dry(),
        compute_path: gpu.info.compute_path.clone(),
        seconds: now_seconds() - t_start,
    };
    Ok(Output { png, rgb, width: w, height: h, seed: s.seed, parameters, dump: d, report })
}

/// SDXL's added time ids for b batch rows: original_size, crops_coords_top_left (0, 0),
/// target_size, each (h, w) in pixels (requires_aesthetics_score False).
fn time_ids(height: usize, width: usize, b: usize) -> Vec<[f32; 6]> {
    let (hf, wf) = (height as f32, width as f32);
    vec![[hf, wf, 0.0, 0.0, hf, wf]; b]
}

/// The preprocessed init image and mask (host, f32), at the settings' size.
struct Inputs {
    /// [3, height, width] in [-1, 1].
    image: Option<Vec<f32>>,
    /// [height, width], 0 (keep) or 1 (repaint).
    mask: Option<Vec<f32>>,
}

impl Inputs {
    fn prepare(s: &Settings) -> Result<Inputs> {
        let image = match &s.init_image {
            Some(img) => Some(crate::image::preprocess_image(&img.decode("init image")?, s.width, s.height)),
            None => None,
        };
        let mask = match &s.mask {
            Some(m) => Some(crate::image::preprocess_mask(&m.decode("mask")?, s.width, s.height)),
            None => None,
        };
        Ok(Inputs { image, mask })
    }
}

/// Inpainting state for the 4-channel UNet: after every step the known region (mask 0) is
/// replaced by the image latents re-noised to the next timestep (not re-noised after the last).
struct Inpaint {
    /// [1, c, h, w] scaled VAE latents of the init image.
    image_latents: Vec<f32>,
    /// [1, c, h, w] the noise drawn for the start, reused for every re-noising.
    noise: Vec<f32>,
    /// [h, w] the mask on the latent grid.
    mask: Vec<f32>,
}

/// The init image through the VAE encoder → scaled latents [1, c, h, w]; one draw from `rng`.
async fn vae_encode(gpu: &Gpu, model: &Model, image: &[f32], s: &Settings, rng: &mut TorchRng) -> Result<Vec<f32>> {
    let enc = VaeEncoder::new(model.vae.clone(), &model.weights)?;
    let x = Tensor::from_f32(gpu, &[1, 3, s.height, s.width], DType::F32, image)?;
    let moments = enc.encode(gpu, &x)?;
    drop(x);
    let m = moments.to_vec_f32(gpu).await?;
    drop(moments);
    gpu.check()?;
    Ok(sample_latents(&m, rng, model.vae.scaling_factor))
}

/// One denoising pass' fixed inputs; `denoise` runs a sampler's remaining steps.
struct Pass<'a> {
    gpu: &'a Gpu,
    unet: &'a UNet<'a>,
    context: &'a Tensor,
    pooled: &'a Tensor,
    /// The CFG scale when classifier-free guidance is on (batch [negative, positive]).
    cfg: Option<f32>,
    c: usize,
    /// Pixels per latent (the time ids are in pixels).
    factor: usize,
    /// Steps done and to do over all passes (for progress).
    done: usize,
    total: usize,
}

impl Pass<'_> {
    /// The sampler's steps from its next one to the end on `latents` [1, c, h, w]; the first
    /// UNet output goes to the dump as `unet_out_0` (first pass only).
    #[allow(clippy::too_many_arguments)]
    async fn denoise(
        &mut self,
        sampler: &mut Sampler,
        mut latents: Vec<f32>,
        (lh, lw): (usize, usize),
        rng: &mut TorchRng,
        inpaint: Option<&Inpaint>,
        d: &mut Option<Dump>,
        on_step: &mut dyn FnMut(&Progress) -> bool,
    ) -> Result<Vec<f32>> {
        let (gpu, c) = (self.gpu, self.c);
        let n = c * lh * lw;
        let b = if self.cfg.is_some() { 2 } else { 1 };
        let time_ids = time_ids(lh * self.factor, lw * self.factor, b);
        let first_pass = self.done == 0;
        for i in sampler.next_step()..sampler.steps() {
            let t = sampler.timesteps()[i];
            let x_in = sampler.model_input(&latents, i);
            let batch: Vec<f32> = if b == 2 { [x_in.as_slice(), x_in.as_slice()].concat() } else { x_in };
            let x = Tensor::from_f32(gpu, &[b, c, lh, lw], DType::F32, &batch)?;
            let ts = vec![t; b];
            let cond = Cond { timesteps: &ts, context: self.context, pooled: self.pooled, time_ids: &time_ids };
            let out = self.unet.forward(gpu, &x, &cond)?.to_vec_f32(gpu).await?;
            drop(x);
            gpu.check()?;
            if let Some(d) = d.as_mut().filter(|_| first_pass && self.done == 0) {
                d.f32s.push(("unet_out_0".into(), vec![b, c, lh, lw], out.clone()));
            }
            let eps: Vec<f32> = match self.cfg {
                Some(g) => {
                    let (u, t) = out.split_at(n);
                    u.iter().zip(t).map(|(&u, &t)| u + g * (t - u)).collect()
                }
                None => out,
            };
            if let Some(bad) = eps.iter().position(|v| !v.is_finite()) {
                return Err(Error::Numeric(format!(
                    "UNet output is not finite at step {} (element {bad})",
                    self.done + 1
                )));
            }
            // Preview of this step's x0 estimate.
            let k = sampler.coefficients(i)?;
            let x0: Vec<f32> =
                latents.iter().zip(&eps).map(|(&x, &e)| k.denoised_sample * x + k.denoised_model * e).collect();
            latents = sampler.step(&eps, i, &latents, rng)?;
            if let Some(ip) = inpaint {
                // (1 − mask) · init_latents_proper + mask · latents, the proper latents re-noised
                // to the next timestep (`add_noise` at the scheduler's step index), except after
                // the last step.
                let proper = if i + 1 < sampler.steps() {
                    sampler.add_noise(&ip.image_latents, &ip.noise, i + 1)?
                } else {
                    ip.image_latents.clone()
                };
                let plane = lh * lw;
                for (j, (l, &p)) in latents.iter_mut().zip(&proper).enumerate() {
                    let m = ip.mask[j % plane];
                    *l = (1.0 - m) * p + m * *l;
                }
            }
            self.done += 1;
            let progress = Progress {
                step: self.done,
                total: self.total,
                preview_width: lw,
                preview_height: lh,
                preview_rgba: latent_preview(&x0, c, lh, lw),
            };
            if !on_step(&progress) {
                return Err(Error::Cancelled);
            }
        }
        Ok(latents)
    }
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
        assert!(err(r#"{"prompt":"x","denoise":1}"#).contains("unknown field `denoise`"));
        assert!(err(r#"{"prompt":"x","init_image":{"bytes":[1]},"strength":1.5}"#).contains("strength 1.5"));
        assert!(err(r#"{"prompt":"x","mask":{"bytes":[1]}}"#).contains("needs an init image"));
        assert!(err(r#"{"prompt":"x","width":1024,"hires_scale":3}"#).contains("3072x"));
        let s = Settings::from_json(
            r#"{"prompt":"x","init_image":{"width":70,"height":65,"rgba":[]},"width":0,"height":0}"#,
        );
        let e = s.unwrap().resolved().unwrap_err().to_string();
        assert!(e.contains("init image: 0 RGBA bytes do not make a 70x65 image"), "{e}");
        let rgba = format!("[{}]", vec!["9"; 70 * 65 * 4].join(","));
        let j =
            format!(r#"{{"prompt":"x","init_image":{{"width":70,"height":65,"rgba":{rgba}}},"width":0,"height":0}}"#);
        let r = Settings::from_json(&j).unwrap().resolved().unwrap();
        assert_eq!((r.width, r.height), (64, 64), "rounded down to multiples of 8");
        assert!(err(r#"{"prompt":"x","width":100}"#).contains("width 100"));
        assert!(err(r#"{"prompt":"x","seed":-1}"#).contains("settings:"));
        // What JSON.stringify makes of a JS string holding a lone surrogate.
        let e = err(r#"{"prompt":"\ud800 tag"}"#);
        assert!(e.contains("settings:") && e.contains("hex escape"), "{e}");
    }
}
