//! LoRA files, applied at run time and unfused as diffusers/PEFT does by default:
//! y = W·x + Σᵢ wᵢ·sᵢ·Bᵢ·(Aᵢ·x) for linear layers and the convolution equivalent (A a conv with
//! the base layer's kernel, stride and padding, B a 1×1 conv). Base weights are never touched,
//! so changing LoRAs or weights between generations cannot drift.
//!
//! Formats, detected from the keys and mapped onto the canonical single-file names
//! ([`crate::weights`]):
//! - kohya sd-scripts SDXL: `lora_unet_<ldm module path, '.' → '_'>`, `lora_te1_<CLIP-L
//!   transformers path>`, `lora_te2_<bigG transformers path>`, each with `lora_down.weight` (A),
//!   `lora_up.weight` (B) and optional `alpha` (scale alpha / rank; none: 1). LoCon convolutions
//!   have A [r, in, k, k], B [out, r, 1, 1].
//! - diffusers / PEFT (`save_lora_weights`): `unet.<diffusers module>.lora_A.weight` / `lora_B`,
//!   `text_encoder.…`, `text_encoder_2.…`; scale from the `lora_adapter_metadata` PEFT config
//!   (`r`, `lora_alpha`, `rank_pattern`, `alpha_pattern`, `use_rslora`) when present, else
//!   alpha / rank from `.alpha` tensors, else 1 (diffusers' `get_peft_kwargs`).
//!
//! bigG's q/k/v are one fused `in_proj_weight` [3h, h] here; a LoRA on `q_proj` targets its row
//! block 0, written `…attn.in_proj_weight#0` (k: `#1`, v: `#2`).
//!
//! Anything else (LyCORIS LoHa/LoKr, DoRA, SD 1.x LoRAs, other base shapes, unknown keys) is
//! refused with the first offending key named: a file is applied whole or not at all.

use std::collections::HashMap;

use crate::gpu::{DType, Gpu, Tensor};
use crate::weights::safetensors::{header_len, parse_header, Header, StoredDType, TensorEntry};
use crate::weights::{diffusers, Component};
use crate::{Error, Result};

/// The largest |weight| accepted for a LoRA: far beyond use (±2 is already extreme), small enough
/// to catch a typo like `--lora x:08`.
pub const MAX_LORA_WEIGHT: f32 = 20.0;

/// A layer a LoRA can attach to.
#[derive(Clone, Debug)]
pub struct Target {
    /// Canonical weight name, with `#j` for row block j of bigG's fused `in_proj_weight`.
    pub key: String,
    pub out: usize,
    pub inp: usize,
    /// Kernel side of a convolution; 0 for a linear layer.
    pub kernel: usize,
}

/// Every LoRA-able layer of one model, by the names LoRA files use.
pub struct Targets {
    /// kohya module name (`lora_unet_…`), diffusers text-encoder module name
    /// (`text_encoder.text_model.…`) or canonical module path (UNet, after diffusers → ldm) → target.
    names: HashMap<String, Target>,
    /// UNet blocks per level (num_res_blocks + 1), for diffusers → ldm names.
    unet_per: usize,
}

const TE1: &str = "conditioner.embedders.0.transformer.";
const TE2: &str = "conditioner.embedders.1.model.";
const UNET: &str = "model.diffusion_model.";

impl Targets {
    /// From the model's canonical weight names and shapes.
    pub fn new(shapes: &HashMap<String, Vec<usize>>, num_res_blocks: usize) -> Targets {
        let mut names = HashMap::new();
        for (name, shape) in shapes {
            // Embedding tables and the projection are 2-D but not layers LoRA trainers target.
            if name.contains("embedding")
                || name.ends_with("text_projection")
                || name.ends_with("text_projection.weight")
            {
                continue;
            }
            let target = |key: String, out: usize| {
                let (inp, kernel) = match shape.len() {
                    2 => (shape[1], 0),
                    _ => (shape[1], shape[2]),
                };
                Target { key, out, inp, kernel }
            };
            let layer = (shape.len() == 2) || (shape.len() == 4 && shape[2] == shape[3]);
            if !layer {
                continue;
            }
            if let Some(te2) = name.strip_prefix(TE2) {
                // OpenCLIP names; LoRA files name bigG's layers as transformers does.
                let Some(rest) = te2.strip_prefix("transformer.resblocks.") else { continue };
                let Some((i, rest)) = rest.split_once('.') else { continue };
                let hf = |m: &str| format!("text_model.encoder.layers.{i}.{m}");
                let mut add = |hf: String, t: Target| {
                    names.insert(format!("lora_te2_{}", hf.replace('.', "_")), t.clone());
                    names.insert(format!("text_encoder_2.{hf}"), t);
                };
                match rest {
                    "attn.in_proj_weight" => {
                        let h = shape[0] / 3;
                        for (j, m) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
                            add(hf(&format!("self_attn.{m}")), target(format!("{name}#{j}"), h));
                        }
                    }
                    "attn.out_proj.weight" => add(hf("self_attn.out_proj"), target(name.clone(), shape[0])),
                    "mlp.c_fc.weight" => add(hf("mlp.fc1"), target(name.clone(), shape[0])),
                    "mlp.c_proj.weight" => add(hf("mlp.fc2"), target(name.clone(), shape[0])),
                    _ => {}
                }
                continue;
            }
            let Some(module) = name.strip_suffix(".weight") else { continue };
            let t = target(name.clone(), shape[0]);
            if let Some(rel) = module.strip_prefix(TE1) {
                names.insert(format!("lora_te1_{}", rel.replace('.', "_")), t.clone());
                names.insert(format!("text_encoder.{rel}"), t);
            } else if let Some(rel) = module.strip_prefix(UNET) {
                names.insert(format!("lora_unet_{}", rel.replace('.', "_")), t.clone());
                names.insert(module.to_string(), t);
            }
        }
        Targets { names, unet_per: num_res_blocks + 1 }
    }

    /// The target of a module as a LoRA file names it (kohya or diffusers).
    fn find(&self, module: &str) -> Option<&Target> {
        if let Some(t) = self.names.get(module) {
            return Some(t);
        }
        if let Some(rest) = module.strip_prefix("unet.") {
            // diffusers → ldm; the upsampler conv sits after the attention (`.2.conv`) when the
            // level has one, else `.1.conv`: try both against the model's names.
            for has in [true, false] {
                let ldm = diffusers::unet_name(&format!("{rest}.weight"), self.unet_per, &|_| has);
                if let Some(t) = ldm.strip_suffix(".weight").and_then(|m| self.names.get(&format!("{UNET}{m}"))) {
                    return Some(t);
                }
            }
            return None;
        }
        // transformers ≥ 5 saves CLIP without the `text_model.` level.
        for p in ["text_encoder.", "text_encoder_2."] {
            if let Some(rest) = module.strip_prefix(p) {
                let full = format!("{p}{}", diffusers::with_text_model(rest));
                return self.names.get(&full);
            }
        }
        None
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// One low-rank update.
pub struct LoraLayer {
    /// A: [r, in] (linear) or [r, in, k, k] (conv), F16.
    pub down: Tensor,
    /// B: [out, r] (linear) or [out, r, 1, 1] (conv), F16.
    pub up: Tensor,
    /// alpha / r (alpha / √r with rsLoRA; 1 without alpha).
    pub scale: f32,
}

/// A LoRA file on the GPU.
pub struct Lora {
    pub name: String,
    /// `kohya` or `diffusers`.
    pub format: &'static str,
    /// By target key ([`Target::key`]).
    pub layers: HashMap<String, LoraLayer>,
    /// A1111's short hash: the first 12 hex digits of the SHA-256 of the tensor data (the bytes
    /// after the header; sd-scripts' `addnet_hash_safetensors`), or the file's `sshs_model_hash`.
    pub hash: String,
}

/// A layer parsed on the host, before upload.
struct HostLayer {
    key: String,
    down: (Vec<usize>, Vec<f32>),
    up: (Vec<usize>, Vec<f32>),
    scale: f32,
}

/// Values of a float tensor of an in-memory safetensors file, as f32.
fn values(file: &str, bytes: &[u8], t: &TensorEntry) -> Result<Vec<f32>> {
    let raw = &bytes[t.start as usize..t.end as usize];
    let v: Vec<f32> = match t.dtype {
        StoredDType::F16 => raw.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        StoredDType::BF16 => raw.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        StoredDType::F32 => raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        StoredDType::F64 => {
            raw.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32).collect()
        }
        d => {
            return Err(Error::Weights(format!(
                "{file}: tensor '{}' is stored as {d}; LoRA weights must be F16, BF16 or F32",
                t.name
            )))
        }
    };
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::Weights(format!("{file}: tensor '{}' has a non-finite value at element {i}", t.name)));
    }
    Ok(v)
}

/// The header of an in-memory safetensors file.
pub fn header_of(file: &str, bytes: &[u8]) -> Result<Header> {
    let n = header_len(file, &bytes[..bytes.len().min(8)], Some(bytes.len() as u64))?;
    let h = parse_header(file, &bytes[8..8 + n as usize], Some(bytes.len() as u64))?;
    if h.tensors.is_empty() {
        return Err(Error::Weights(format!("{file}: the file holds no tensors")));
    }
    Ok(h)
}

/// The PEFT config of one component from diffusers' `lora_adapter_metadata` (keys `unet.r`,
/// `unet.lora_alpha`, …).
struct PeftConfig {
    r: Option<f64>,
    alpha: Option<f64>,
    rank_pattern: Vec<(regex::Regex, f64)>,
    alpha_pattern: Vec<(regex::Regex, f64)>,
    rslora: bool,
}

impl PeftConfig {
    fn read(file: &str, meta: &serde_json::Map<String, serde_json::Value>, prefix: &str) -> Result<Option<Self>> {
        let get = |k: &str| meta.get(&format!("{prefix}.{k}"));
        if get("r").is_none() && get("lora_alpha").is_none() {
            return Ok(None);
        }
        if get("use_dora").and_then(|v| v.as_bool()) == Some(true) {
            return Err(Error::Weights(format!("{file}: a DoRA adapter (use_dora); only plain LoRA is supported")));
        }
        let pattern = |k: &str| -> Result<Vec<(regex::Regex, f64)>> {
            let Some(obj) = get(k).and_then(|v| v.as_object()) else { return Ok(Vec::new()) };
            obj.iter()
                .map(|(p, v)| {
                    // PEFT's get_pattern_key: the module name ends with the pattern at a '.' boundary.
                    let re = regex::Regex::new(&format!(r"^(?:.*\.)?(?:{p})$")).map_err(|e| {
                        Error::Weights(format!("{file}: lora_adapter_metadata {prefix}.{k} pattern '{p}': {e}"))
                    })?;
                    Ok((re, v.as_f64().unwrap_or(f64::NAN)))
                })
                .collect()
        };
        Ok(Some(PeftConfig {
            r: get("r").and_then(|v| v.as_f64()),
            alpha: get("lora_alpha").and_then(|v| v.as_f64()),
            rank_pattern: pattern("rank_pattern")?,
            alpha_pattern: pattern("alpha_pattern")?,
            rslora: get("use_rslora").and_then(|v| v.as_bool()).unwrap_or(false),
        }))
    }

    /// PEFT's scaling of `module` (relative to the component) with actual rank `rank`.
    fn scale(&self, module: &str, rank: usize) -> f32 {
        let find = |p: &[(regex::Regex, f64)]| p.iter().find(|(re, _)| re.is_match(module)).map(|(_, v)| *v);
        let r = find(&self.rank_pattern).or(self.r).unwrap_or(rank as f64);
        let alpha = find(&self.alpha_pattern).or(self.alpha).unwrap_or(r);
        (if self.rslora { alpha / r.sqrt() } else { alpha / r }) as f32
    }
}

/// Explain a file whose keys are not a LoRA we apply.
fn unsupported(file: &str, h: &Header) -> Error {
    let find = |f: &dyn Fn(&str) -> bool| h.tensors.iter().map(|t| t.name.as_str()).find(|n| f(n));
    if let Some(k) = find(&|n| n.contains("hada_w1") || n.contains("hada_w2")) {
        return Error::Weights(format!(
            "{file}: a LyCORIS LoHa file (key '{k}'); only LoRA / LoCon (lora_down/lora_up, lora_A/lora_B) is supported"
        ));
    }
    if let Some(k) = find(&|n| n.contains("lokr_w")) {
        return Error::Weights(format!(
            "{file}: a LyCORIS LoKr file (key '{k}'); only LoRA / LoCon (lora_down/lora_up, lora_A/lora_B) is supported"
        ));
    }
    if let Some(k) = find(&|n| n.contains(".lora.down.") || n.contains(".lora_linear_layer.")) {
        return Error::Weights(format!(
            "{file}: the pre-PEFT diffusers LoRA format (key '{k}'); save it again with a current diffusers (lora_A/lora_B keys) or use the kohya file"
        ));
    }
    if let Some(k) = find(&|n| n.starts_with("model.diffusion_model.") || n.starts_with("conditioner.")) {
        return Error::Weights(format!("{file}: a model checkpoint (key '{k}'), not a LoRA"));
    }
    if let Some(k) = find(&|n| n == "clip_l" || n == "clip_g" || n == "emb_params" || n.starts_with("string_to_param"))
    {
        return Error::Weights(format!(
            "{file}: a textual-inversion embedding (key '{k}'), not a LoRA; load it as an embedding"
        ));
    }
    let first = &h.tensors[0].name;
    Error::Weights(format!(
        "{file}: not a LoRA file we know: key '{first}' is neither kohya (lora_unet_…/lora_te1_…/lora_te2_… with lora_down/lora_up/alpha) nor diffusers/PEFT (unet.…/text_encoder.…/text_encoder_2.… with lora_A/lora_B)"
    ))
}

/// Why a module name matches no layer: an SD 1.x/2.x LoRA, or a LoRA for another model.
fn no_target(file: &str, key: &str, module: &str) -> Error {
    let sd1 = module.starts_with("lora_te_")
        || module.starts_with("lora_unet_down_blocks_")
        || module.starts_with("lora_unet_mid_block_")
        || module.starts_with("lora_unet_up_blocks_");
    if sd1 {
        return Error::Weights(format!(
            "{file}: key '{key}' is an SD 1.x/2.x LoRA name (kohya trains those on the diffusers UNet with one text encoder); only SDXL LoRAs (lora_unet_input_blocks_…, lora_te1_…, lora_te2_…) apply to this model"
        ));
    }
    Error::Weights(format!(
        "{file}: key '{key}': module '{module}' matches no linear or convolution layer of this model (expected SDXL names: kohya lora_unet_<ldm path>/lora_te1_/lora_te2_, or diffusers unet./text_encoder./text_encoder_2.); a LoRA for another model?"
    ))
}

/// Parse a LoRA file held in memory against the model's layers. Everything is checked before
/// anything is uploaded.
fn parse(file: &str, bytes: &[u8], targets: &Targets) -> Result<(&'static str, Vec<HostLayer>, String)> {
    let h = header_of(file, bytes)?;
    let kohya = h.tensors.iter().any(|t| t.name.starts_with("lora_unet_") || t.name.starts_with("lora_te"));
    let peft = h.tensors.iter().any(|t| t.name.contains(".lora_A.") || t.name.contains(".lora_B."));
    if !kohya && !peft || h.tensors.iter().any(|t| t.name.contains("hada_w") || t.name.contains("lokr_w")) {
        return Err(unsupported(file, &h));
    }
    let format = if kohya { "kohya" } else { "diffusers" };
    // module → (down, up, alpha) entries, in file order.
    let mut order: Vec<String> = Vec::new();
    let mut parts: HashMap<String, [Option<&TensorEntry>; 3]> = HashMap::new();
    for t in &h.tensors {
        let n = t.name.as_str();
        let split = if kohya {
            n.split_once('.').and_then(|(m, s)| match s {
                "lora_down.weight" => Some((m, 0)),
                "lora_up.weight" => Some((m, 1)),
                "alpha" => Some((m, 2)),
                _ => None,
            })
        } else {
            [(".lora_A.weight", 0), (".lora_B.weight", 1), (".alpha", 2)]
                .iter()
                .find_map(|(s, i)| n.strip_suffix(s).map(|m| (m, *i)))
        };
        let Some((module, slot)) = split else {
            let what = if n.contains("dora_scale") || n.contains("magnitude") {
                "DoRA is not supported"
            } else if kohya {
                "kohya keys end in .lora_down.weight, .lora_up.weight or .alpha"
            } else {
                "diffusers keys end in .lora_A.weight, .lora_B.weight or .alpha"
            };
            return Err(Error::Weights(format!("{file}: unexpected key '{n}' ({what})")));
        };
        let e = parts.entry(module.to_string()).or_insert_with(|| {
            order.push(module.to_string());
            [None; 3]
        });
        e[slot] = Some(t);
    }
    let meta: serde_json::Map<String, serde_json::Value> = match h.metadata.get("lora_adapter_metadata") {
        Some(m) => serde_json::from_str(m)
            .map_err(|e| Error::Weights(format!("{file}: lora_adapter_metadata is not a JSON object: {e}")))?,
        None => serde_json::Map::new(),
    };
    let configs: HashMap<&str, Option<PeftConfig>> = ["unet", "text_encoder", "text_encoder_2"]
        .into_iter()
        .map(|p| Ok((p, PeftConfig::read(file, &meta, p)?)))
        .collect::<Result<_>>()?;
    let mut layers = Vec::with_capacity(order.len());
    let mut seen: HashMap<String, String> = HashMap::new();
    for module in &order {
        let [down, up, alpha] = parts[module];
        let key_of = |s: Option<&TensorEntry>| s.map(|t| t.name.clone()).unwrap_or_else(|| module.clone());
        let (Some(down), Some(up)) = (down, up) else {
            let (have, miss) = if down.is_some() { (down, "up (B)") } else { (up.or(alpha), "down (A)") };
            return Err(Error::Weights(format!("{file}: key '{}' has no matching {miss} weight", key_of(have))));
        };
        let Some(t) = targets.find(module) else { return Err(no_target(file, &down.name, module)) };
        if let Some(other) = seen.insert(t.key.clone(), module.clone()) {
            return Err(Error::Weights(format!("{file}: modules '{other}' and '{module}' both target '{}'", t.key)));
        }
        let (ds, us) = (&down.shape, &up.shape);
        let r = ds.first().copied().unwrap_or(0);
        let ones = |s: &[usize]| s.iter().all(|&d| d == 1);
        let down_ok = r > 0
            && ds.len() >= 2
            && ds[1] == t.inp
            && if t.kernel == 0 { ones(&ds[2..]) } else { ds.len() == 4 && ds[2] == t.kernel && ds[3] == t.kernel };
        let up_ok = us.len() >= 2 && us[0] == t.out && us[1] == r && ones(&us[2..]);
        if !down_ok || !up_ok {
            let want = if t.kernel == 0 {
                format!("down [r, {}] and up [{}, r]", t.inp, t.out)
            } else {
                format!("down [r, {}, {k}, {k}] and up [{}, r, 1, 1]", t.inp, t.out, k = t.kernel)
            };
            return Err(Error::Weights(format!(
                "{file}: '{}' has shape {ds:?} with up {us:?}, but the model's layer '{}' needs {want} (a LoRA for another base model?)",
                down.name, t.key
            )));
        }
        let scale = if let Some(a) = alpha {
            let v = values(file, bytes, a)?;
            if v.len() != 1 {
                return Err(Error::Weights(format!("{file}: '{}' must be a scalar, has shape {:?}", a.name, a.shape)));
            }
            v[0] / r as f32
        } else if kohya {
            1.0
        } else {
            let (comp, rel) = module.split_once('.').unwrap_or((module, ""));
            configs.get(comp).and_then(|c| c.as_ref()).map(|c| c.scale(rel, r)).unwrap_or(1.0)
        };
        if !scale.is_finite() {
            return Err(Error::Weights(format!("{file}: module '{module}' has a non-finite scale")));
        }
        let mut dshape = vec![r, t.inp];
        let mut ushape = vec![t.out, r];
        if t.kernel > 0 {
            dshape.extend([t.kernel, t.kernel]);
            ushape.extend([1, 1]);
        }
        layers.push(HostLayer {
            key: t.key.clone(),
            down: (dshape, values(file, bytes, down)?),
            up: (ushape, values(file, bytes, up)?),
            scale,
        });
    }
    let hash = match h.metadata.get("sshs_model_hash") {
        Some(s) if s.len() >= 12 => s[..12].to_string(),
        _ => crate::sha256::hex(&bytes[h.data_start as usize..])[..12].to_string(),
    };
    Ok((format, layers, hash))
}

impl Lora {
    /// Parse `bytes` (a whole `.safetensors` file; `file` names it in errors) against the model's
    /// layers and upload it. Nothing is uploaded unless the whole file is valid.
    pub fn load(gpu: &Gpu, name: &str, file: &str, bytes: &[u8], targets: &Targets) -> Result<Lora> {
        let (format, host, hash) = parse(file, bytes, targets)?;
        let mut layers = HashMap::with_capacity(host.len());
        for l in host {
            let down = Tensor::from_f32(gpu, &l.down.0, DType::F16, &l.down.1)?;
            let up = Tensor::from_f32(gpu, &l.up.0, DType::F16, &l.up.1)?;
            layers.insert(l.key, LoraLayer { down, up, scale: l.scale });
        }
        Ok(Lora { name: name.to_string(), format, layers, hash })
    }

    /// The same layers as allocations on a dry twin (the planner's dry runs).
    pub fn dry_copy(&self, twin: &Gpu) -> Result<Lora> {
        let layers = self
            .layers
            .iter()
            .map(|(k, l)| {
                Ok((
                    k.clone(),
                    LoraLayer {
                        down: Tensor::empty_exact(twin, l.down.shape(), l.down.dtype())?,
                        up: Tensor::empty_exact(twin, l.up.shape(), l.up.dtype())?,
                        scale: l.scale,
                    },
                ))
            })
            .collect::<Result<_>>()?;
        Ok(Lora { name: self.name.clone(), format: self.format, layers, hash: self.hash.clone() })
    }

    /// GPU bytes of the LoRA's tensors.
    pub fn bytes(&self) -> u64 {
        self.layers.values().map(|l| l.down.byte_len_padded() + l.up.byte_len_padded()).sum()
    }

    /// Whether any layer is in the text encoders (their conditioning then depends on the LoRA).
    pub fn touches_text(&self) -> bool {
        self.layers.keys().any(|k| k.starts_with(Component::TextEncoder.prefix()) || k.starts_with(TE2))
    }
}

/// One LoRA reference in the settings or a prompt: a loaded LoRA's name and its weight.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraWeight {
    pub name: String,
    #[serde(default = "one")]
    pub weight: f32,
}

fn one() -> f32 {
    1.0
}

impl LoraWeight {
    pub fn check(&self) -> Result<()> {
        if !self.weight.is_finite() || self.weight.abs() > MAX_LORA_WEIGHT {
            return Err(Error::Input(format!(
                "LoRA '{}': weight {} must be from -{MAX_LORA_WEIGHT} to {MAX_LORA_WEIGHT}",
                self.name, self.weight
            )));
        }
        Ok(())
    }
}

/// A1111's extra-network tag syntax (`re_extra_net`, `<(\w+):([^>]+)>`).
fn re_extra_net() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| regex::Regex::new(r"<(\w+):([^>]+)>").expect("static regex"))
}

/// A1111's `<lora:NAME>` / `<lora:NAME:WEIGHT>` tags: the prompt without them (removed, as
/// A1111's `extra_networks.parse_prompt` does, so the encoders never see them) and the LoRAs they
/// name. Other extra-network tags (`<hypernet:…>`) are left in the text.
pub fn take_lora_tags(prompt: &str) -> Result<(String, Vec<LoraWeight>)> {
    let mut found = Vec::new();
    let mut err = None;
    let text = re_extra_net().replace_all(prompt, |c: &regex::Captures| {
        if &c[1] != "lora" {
            return c[0].to_string();
        }
        let args: Vec<&str> = c[2].split(':').collect();
        let weight = match args.get(1) {
            None => Ok(1.0),
            Some(w) => w.trim().parse::<f32>().map_err(|_| format!("weight '{w}' is not a number")),
        };
        match (args.len(), weight) {
            (1 | 2, Ok(weight)) => found.push(LoraWeight { name: args[0].trim().to_string(), weight }),
            (_, Err(e)) => err = Some(format!("prompt tag '{}': {e}", &c[0])),
            _ => {
                err = Some(format!(
                    "prompt tag '{}': separate text-encoder and UNet weights are not supported; use <lora:NAME:WEIGHT>",
                    &c[0]
                ))
            }
        }
        String::new()
    });
    if let Some(e) = err {
        return Err(Error::Input(e));
    }
    for l in &found {
        l.check()?;
    }
    Ok((text.into_owned(), found))
}

/// The model's parameters with LoRAs and textual-inversion rows attached: what the model code
/// sees during a generation (see [`crate::model::Params::lora`]).
pub struct Adapted<'a> {
    pub base: &'a dyn crate::model::Params,
    /// Active LoRAs and their weights.
    pub loras: &'a [(std::rc::Rc<Lora>, f32)],
    /// Token-embedding table name → the rows appended to it ([n, hidden] F16).
    pub rows: &'a HashMap<String, Tensor>,
}

impl crate::model::Params for Adapted<'_> {
    fn get(&self, name: &str) -> Result<&Tensor> {
        self.base.get(name)
    }
    fn lora(&self, key: &str) -> Vec<(&Tensor, &Tensor, f32)> {
        self.loras
            .iter()
            .filter_map(|(l, w)| l.layers.get(key).map(|x| (&x.down, &x.up, w * x.scale)))
            .filter(|(_, _, c)| *c != 0.0)
            .collect()
    }
    fn added_rows(&self, name: &str) -> Option<&Tensor> {
        self.rows.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lora_tags() {
        let (t, l) = take_lora_tags("1girl, <lora:style_a:0.8>, smile <lora:b> <hypernet:x:1>").unwrap();
        assert_eq!(t, "1girl, , smile  <hypernet:x:1>");
        assert_eq!(
            l,
            vec![LoraWeight { name: "style_a".into(), weight: 0.8 }, LoraWeight { name: "b".into(), weight: 1.0 }]
        );
        let (_, l) = take_lora_tags("<lora:neg:-0.5>").unwrap();
        assert_eq!(l[0].weight, -0.5);
        assert!(take_lora_tags("<lora:x:abc>").unwrap_err().to_string().contains("'abc' is not a number"));
        assert!(take_lora_tags("<lora:x:1:0.5>").unwrap_err().to_string().contains("separate"));
        assert!(take_lora_tags("<lora:x:99>").unwrap_err().to_string().contains("must be from"));
    }
}
