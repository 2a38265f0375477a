//! Checkpoint loading: safetensors headers, the SDXL layouts' name maps, config inference and the
//! streaming loader that moves tensors to the GPU as their bytes arrive.
//!
//! # Canonical names
//!
//! Every layout is mapped onto ONE naming: the SDXL single-file ("original", sgm/ldm) keys and
//! shapes, exactly as in `sd_xl_base_1.0.safetensors` (the layout of A1111/ComfyUI finetunes such
//! as Nekoray-XL, so the main target loads with no renaming at all):
//!
//! | component        | prefix                                          | naming                         |
//! |------------------|-------------------------------------------------|--------------------------------|
//! | `unet`           | `model.diffusion_model.`                        | ldm `input_blocks.N.M.…`       |
//! | `text_encoder`   | `conditioner.embedders.0.transformer.`          | transformers CLIP `text_model.…` |
//! | `text_encoder_2` | `conditioner.embedders.1.model.`                | OpenCLIP: fused `attn.in_proj_weight` (rows q, k, v), `text_projection` [hidden, proj] applied as x·P |
//! | `vae`            | `first_stage_model.`                            | ldm `encoder.down.N…`, `decoder.up.N…` (index = resolution level), attention q/k/v/proj_out as [C, C, 1, 1] |
//!
//! Diffusers folders are mapped onto these names as diffusers' own
//! `convert_diffusers_to_original_sdxl.py` does (q/k/v fused into `in_proj_*`, `text_projection`
//! transposed, the decoder's up-block index reversed, linear attention weights seen as 1×1 convs).
//! Model code therefore only ever asks for single-file names (full keys, prefix included).
//!
//! # Configuration
//!
//! Each component's configuration is inferred from its canonical shapes ([`config::infer`]),
//! completed and checked by its diffusers `config.json` when the files come from a folder
//! ([`ConfigFiles`], read by the native loader), else by documented fallbacks; the UNet's
//! label_emb split is resolved once per model against text_encoder_2 ([`ModelConfig::assemble`]).
//! The model code takes every number from the resulting [`ModelConfig`].
//!
//! # Streaming
//!
//! [`stream::Loader`] is a push state machine: feed it each file's bytes in order, in chunks of
//! any size (a native read, a fetch body stream, `File` slices). It parses the header from the
//! first bytes, validates and plans everything, allocates each destination through a
//! [`stream::TensorSink`], then converts (F32/BF16 → F16 round-to-nearest-even, or → F32) and
//! hands bytes to the sink as they arrive. Host memory beyond the caller's chunk is the header,
//! a ≤ 2 MiB conversion scratch and, for `text_projection` only, one small tensor being transposed.

pub mod config;
pub mod diffusers;
pub mod random;
pub mod reload;
pub mod safetensors;
pub mod single_file;
pub mod sink;
pub mod stream;

#[cfg(not(target_arch = "wasm32"))]
mod native;
#[cfg(not(target_arch = "wasm32"))]
pub use native::{
    diffusers_configs, diffusers_files, inspect_path, load_path, load_path_dry, model_files, read_header, FileRanges,
    FileSource, DEFAULT_CHUNK,
};

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

pub use config::{ClipConfig, ComponentConfig, ConfigFile, ConfigFiles, ModelConfig, UnetConfig, VaeConfig};
pub use reload::{reload_to_gpu, RangeSource, Reloader};
pub use safetensors::{Header, StoredDType, TensorEntry};
pub use sink::{CpuSink, GpuSink, NullSink, Weights};
pub use stream::{feed, load_sources, ChunkSource, DestTensor, Loaded, Loader, TensorSink};

use crate::{Error, Result};

/// The four SDXL components.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    Unet,
    Vae,
    TextEncoder,
    TextEncoder2,
}

impl Component {
    pub const ALL: [Component; 4] = [Component::Unet, Component::Vae, Component::TextEncoder, Component::TextEncoder2];

    /// The component's key prefix in the canonical (single-file) naming.
    pub fn prefix(self) -> &'static str {
        match self {
            Component::Unet => "model.diffusion_model.",
            Component::Vae => "first_stage_model.",
            Component::TextEncoder => "conditioner.embedders.0.transformer.",
            Component::TextEncoder2 => "conditioner.embedders.1.model.",
        }
    }

    /// The name used in `inspect` output and diffusers folders.
    pub fn name(self) -> &'static str {
        match self {
            Component::Unet => "unet",
            Component::Vae => "vae",
            Component::TextEncoder => "text_encoder",
            Component::TextEncoder2 => "text_encoder_2",
        }
    }
}

/// What a file provides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileRole {
    /// An SDXL single-file checkpoint; `with_vae: false` when a separate VAE file overrides its own.
    SingleFile { with_vae: bool },
    /// A separate VAE file (single-file naming with or without `first_stage_model.`, or diffusers').
    Vae,
    /// One component file of a diffusers folder.
    Diffusers(Component),
}

/// Where one source tensor goes: part (or all) of a canonical destination tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub comp: Component,
    /// Canonical name relative to the component prefix.
    pub name: String,
    /// Element offset of this piece inside the destination (q/k/v fused into `in_proj_*`).
    pub elem_offset: u64,
    /// The piece's shape as the destination sees it (after any transpose).
    pub shape: Vec<usize>,
    /// The source is stored as the transpose of `shape` (diffusers' `text_projection.weight`).
    pub transpose: bool,
}

/// A source tensor's place in the plan.
#[derive(Clone, Debug)]
pub struct Piece {
    pub src: TensorEntry,
    /// `None`: not used (skipped).
    pub target: Option<PieceTarget>,
}

#[derive(Clone, Debug)]
pub struct PieceTarget {
    pub comp: Component,
    /// Index into the plan's component's canonical tensor list.
    pub dest: usize,
    pub elem_offset: u64,
    /// Source rows × cols when the source must be transposed into the destination.
    pub transpose: Option<(usize, usize)>,
}

/// One component found in a file: its inferred configuration and canonical tensors.
#[derive(Clone, Debug)]
pub struct ComponentPlan {
    pub comp: Component,
    pub config: ComponentConfig,
    /// The config.json that completed and checked `config`, if any.
    pub config_file: Option<String>,
    pub tensors: Vec<(String, Vec<usize>)>,
    pub stored: BTreeSet<StoredDType>,
}

impl ComponentPlan {
    pub fn params(&self) -> u64 {
        config::param_count(&self.tensors)
    }
    /// Stored dtype(s) as text: `F16`, or `F16+F32` for mixed files.
    pub fn dtype_label(&self) -> String {
        self.stored.iter().map(|d| d.name()).collect::<Vec<_>>().join("+")
    }
}

/// Everything decided from one file's header, before any data byte is read.
#[derive(Clone, Debug)]
pub struct FilePlan {
    pub file: String,
    pub components: Vec<ComponentPlan>,
    /// All tensors of the file in file order.
    pub pieces: Vec<Piece>,
    pub data_start: u64,
    pub data_end: u64,
}

/// Shapes equal up to trailing 1-sized dimensions (a linear [C, C] is a 1×1 conv [C, C, 1, 1]).
fn same_shape(a: &[usize], b: &[usize]) -> bool {
    fn trim(s: &[usize]) -> &[usize] {
        let mut n = s.len();
        while n > 1 && s[n - 1] == 1 {
            n -= 1;
        }
        &s[..n]
    }
    trim(a) == trim(b)
}

/// Map, infer, validate and plan one file from its header; `configs` are the diffusers
/// config.json files of the components loaded from a folder (none for single files).
pub fn plan_file(file: &str, role: FileRole, header: &Header, configs: &ConfigFiles) -> Result<FilePlan> {
    let routes: Vec<Option<Route>> = match role {
        FileRole::SingleFile { with_vae } => single_file::routes(file, header, with_vae)?,
        FileRole::Vae => single_file::vae_routes(file, header)?,
        FileRole::Diffusers(c) => diffusers::routes(file, c, header)?,
    };
    let mut comps: Vec<Component> =
        routes.iter().flatten().map(|r| r.comp).collect::<BTreeSet<_>>().into_iter().collect();
    let expected: Vec<Component> = match role {
        FileRole::SingleFile { with_vae } => {
            Component::ALL.into_iter().filter(|&c| with_vae || c != Component::Vae).collect()
        }
        FileRole::Vae => vec![Component::Vae],
        FileRole::Diffusers(c) => vec![c],
    };
    for c in &expected {
        if !comps.contains(c) {
            return Err(Error::Weights(format!(
                "{file}: no {} tensors (expected keys starting with '{}'){}",
                c.name(),
                c.prefix(),
                if *c == Component::Vae && matches!(role, FileRole::SingleFile { .. }) {
                    "; pass a separate VAE with --vae"
                } else {
                    ""
                }
            )));
        }
    }
    comps.retain(|c| expected.contains(c));
    let mut plans = Vec::new();
    let mut index: HashMap<Component, (usize, HashMap<String, usize>)> = HashMap::new();
    for &c in &comps {
        let shapes: config::Shapes = routes
            .iter()
            .flatten()
            .filter(|r| r.comp == c && r.elem_offset == 0)
            .map(|r| (r.name.clone(), r.shape.clone()))
            .collect();
        let declared = configs.get(c);
        let cfg = config::infer(file, c, &shapes, declared)?;
        let tensors = cfg.tensors(c);
        let names = tensors.iter().enumerate().map(|(i, (n, _))| (n.clone(), i)).collect();
        index.insert(c, (plans.len(), names));
        plans.push(ComponentPlan {
            comp: c,
            config: cfg,
            config_file: declared.map(|d| d.file.clone()),
            tensors,
            stored: BTreeSet::new(),
        });
    }
    let mut covered: Vec<Vec<u64>> = plans.iter().map(|p| vec![0; p.tensors.len()]).collect();
    let mut pieces = Vec::with_capacity(header.tensors.len());
    for (src, route) in header.tensors.iter().zip(routes) {
        let target = match route {
            Some(r) if index.contains_key(&r.comp) => {
                let (pi, names) = &index[&r.comp];
                let plan = &mut plans[*pi];
                let full = |n: &str| format!("{}{n}", r.comp.prefix());
                let Some(&dest) = names.get(&r.name) else {
                    return Err(Error::Weights(format!(
                        "{file}: unexpected tensor '{}'{}: the {} configuration inferred from this file has no such tensor",
                        src.name,
                        if full(&r.name) != src.name { format!(" (maps to '{}')", full(&r.name)) } else { String::new() },
                        r.comp.name()
                    )));
                };
                if !src.dtype.is_loadable() {
                    return Err(Error::Weights(format!(
                        "{file}: tensor '{}' is stored as {}; only F16, F32 and BF16 weights can be loaded",
                        src.name, src.dtype
                    )));
                }
                plan.stored.insert(src.dtype);
                let want = &plan.tensors[dest].1;
                let want_n: u64 = want.iter().map(|&d| d as u64).product();
                let piece_n = src.numel();
                let ok = if r.elem_offset == 0 && piece_n == want_n {
                    same_shape(&r.shape, want)
                } else {
                    // A row block of a fused tensor: same trailing dims, inside the destination.
                    r.shape.len() == want.len()
                        && r.shape[1..] == want[1..]
                        && r.elem_offset + piece_n <= want_n
                        && piece_n == r.shape.iter().map(|&d| d as u64).product::<u64>()
                };
                if !ok {
                    return Err(Error::Weights(format!(
                        "{file}: tensor '{}' has shape {:?} but the inferred {} configuration needs {:?}{}",
                        src.name,
                        src.shape,
                        r.comp.name(),
                        want,
                        if r.elem_offset != 0 || piece_n != want_n {
                            format!(" (this tensor fills part of '{}')", full(&r.name))
                        } else {
                            String::new()
                        }
                    )));
                }
                covered[*pi][dest] += piece_n;
                if covered[*pi][dest] > want_n {
                    return Err(Error::Weights(format!(
                        "{file}: tensor '{}' is given more than once (another tensor already filled it)",
                        full(&r.name)
                    )));
                }
                let transpose = r.transpose.then(|| (src.shape[0], src.shape[1]));
                Some(PieceTarget { comp: r.comp, dest, elem_offset: r.elem_offset, transpose })
            }
            _ => None,
        };
        pieces.push(Piece { src: src.clone(), target });
    }
    for (pi, plan) in plans.iter().enumerate() {
        let missing: Vec<String> = plan
            .tensors
            .iter()
            .zip(&covered[pi])
            .filter(|((_, s), &c)| c != s.iter().map(|&d| d as u64).product::<u64>())
            .map(|((n, s), _)| format!("'{}{n}' {s:?}", plan.comp.prefix()))
            .collect();
        if !missing.is_empty() {
            let more = if missing.len() > 3 { format!(" and {} more", missing.len() - 3) } else { String::new() };
            return Err(Error::Weights(format!(
                "{file}: missing tensor {}{more} (required by the {} configuration inferred from this file)",
                missing[..missing.len().min(3)].join(", "),
                plan.comp.name()
            )));
        }
    }
    Ok(FilePlan {
        file: file.to_string(),
        components: plans,
        pieces,
        data_start: header.data_start,
        data_end: header.data_end,
    })
}

/// The result of `inspect`: what a model (and optional VAE) would load, from headers only.
#[derive(Clone, Debug, Serialize)]
pub struct Inspection {
    pub layout: &'static str,
    pub components: std::collections::BTreeMap<&'static str, ComponentSummary>,
    pub config: ModelConfig,
}

#[derive(Clone, Debug, Serialize)]
pub struct ComponentSummary {
    pub params: u64,
    pub dtype: String,
    pub file: String,
    /// The config.json read with it (diffusers folders); absent: the `FALLBACK_*` values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_file: Option<String>,
}

/// Combine per-file plans into the model's summary (checks each component appears once).
pub fn summarize(layout: &'static str, plans: &[FilePlan]) -> Result<Inspection> {
    let mut found: HashMap<Component, (&ComponentPlan, &str)> = HashMap::new();
    for fp in plans {
        for cp in &fp.components {
            if let Some((_, other)) = found.insert(cp.comp, (cp, &fp.file)) {
                return Err(Error::Weights(format!("both {other} and {} provide the {}", fp.file, cp.comp.name())));
            }
        }
    }
    let get = |c: Component| {
        found
            .get(&c)
            .map(|(p, _)| p.config.clone())
            .ok_or_else(|| Error::Weights(format!("no {} was loaded", c.name())))
    };
    let (ComponentConfig::Unet(unet), ComponentConfig::Vae(vae), ComponentConfig::Clip(te), ComponentConfig::Clip(te2)) =
        (get(Component::Unet)?, get(Component::Vae)?, get(Component::TextEncoder)?, get(Component::TextEncoder2)?)
    else {
        // infer() returns the matching kind for each component; an internal error otherwise.
        return Err(Error::Weights("internal: component configs of the wrong kind".into()));
    };
    let unet_config_file = found[&Component::Unet].0.config_file.as_deref();
    let config = ModelConfig::assemble(unet, vae, te, te2, unet_config_file)?;
    let components = found
        .iter()
        .map(|(c, (p, f))| {
            let s = ComponentSummary {
                params: p.params(),
                dtype: p.dtype_label(),
                file: f.to_string(),
                config_file: p.config_file.clone(),
            };
            (c.name(), s)
        })
        .collect();
    Ok(Inspection { layout, components, config })
}
