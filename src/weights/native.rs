//! Native file access: layout detection, header-only inspection and whole-model loads.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::safetensors::{header_len, parse_header};
use super::stream::{feed, inspect_headers, Loader};
use super::{ChunkSource, Component, ConfigFiles, FileRole, Header, Inspection, Loaded, TensorSink};
use crate::gpu::DType;
use crate::{Error, Result};

/// Read size for native loads: big enough for full-speed sequential reads, small enough to be
/// negligible next to the 64 MiB budget.
pub const DEFAULT_CHUNK: usize = 16 << 20;

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::Io { path: path.display().to_string(), source: e }
}

/// A file read front to back.
pub struct FileSource {
    path: PathBuf,
    file: File,
    len: u64,
}

impl FileSource {
    pub fn open(path: &Path) -> Result<FileSource> {
        let file = File::open(path).map_err(|e| io_err(path, e))?;
        let meta = file.metadata().map_err(|e| io_err(path, e))?;
        if meta.is_dir() {
            return Err(Error::Weights(format!("{} is a directory, expected a .safetensors file", path.display())));
        }
        Ok(FileSource { path: path.to_path_buf(), file, len: meta.len() })
    }
}

impl ChunkSource for FileSource {
    fn label(&self) -> String {
        self.path.display().to_string()
    }
    fn total_len(&self) -> Option<u64> {
        Some(self.len)
    }
    fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        loop {
            match self.file.read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err(&self.path, e)),
            }
        }
    }
}

/// Read and validate only the header of a safetensors file.
pub fn read_header(path: &Path) -> Result<Header> {
    let mut src = FileSource::open(path)?;
    let label = src.label();
    let mut first = [0u8; 8];
    let mut got = 0;
    while got < 8 {
        let n = src.read(&mut first[got..])?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let n = header_len(&label, &first[..got], Some(src.len))? as usize;
    let mut json = vec![0u8; n];
    src.file.read_exact(&mut json).map_err(|e| io_err(path, e))?;
    parse_header(&label, &json, Some(src.len))
}

/// The component files of a diffusers folder. `prefer_fp16` picks `*.fp16.safetensors` variants
/// when both exist (fewer bytes to read for an f16 load).
pub fn diffusers_files(dir: &Path, prefer_fp16: bool) -> Result<Vec<(PathBuf, Component)>> {
    let looks = dir.join("model_index.json").is_file() || dir.join("unet").is_dir();
    if !looks {
        return Err(Error::Weights(format!(
            "{} is a directory but not a diffusers model (no model_index.json and no unet/ folder); \
             pass an SDXL .safetensors checkpoint or a diffusers SDXL folder",
            dir.display()
        )));
    }
    let mut out = Vec::new();
    for c in Component::ALL {
        let sub = dir.join(c.name());
        let stem = match c {
            Component::Unet | Component::Vae => "diffusion_pytorch_model",
            _ => "model",
        };
        let plain = sub.join(format!("{stem}.safetensors"));
        let fp16 = sub.join(format!("{stem}.fp16.safetensors"));
        let pick = match (plain.is_file(), fp16.is_file()) {
            (true, true) => Some(if prefer_fp16 { fp16 } else { plain }),
            (true, false) => Some(plain),
            (false, true) => Some(fp16),
            (false, false) => None,
        };
        let Some(p) = pick else {
            let why = if sub.join(format!("{stem}.safetensors.index.json")).is_file()
                || sub.join(format!("{stem}.fp16.safetensors.index.json")).is_file()
            {
                "sharded weights (*.safetensors.index.json) are not supported; merge the shards into one file"
            } else if sub.join(format!("{stem}.bin")).is_file() || sub.join("pytorch_model.bin").is_file() {
                "only pickle .bin weights found; convert them to safetensors"
            } else if !sub.is_dir() {
                "the folder is missing"
            } else {
                "no safetensors file"
            };
            return Err(Error::Weights(format!(
                "{}: diffusers {}/{stem}.safetensors not found: {why}",
                dir.display(),
                c.name()
            )));
        };
        out.push((p, c));
    }
    Ok(out)
}

/// The files of a model (checkpoint file or diffusers folder, plus an optional VAE) and their roles.
pub fn model_files(
    model: &Path,
    vae: Option<&Path>,
    target: DType,
) -> Result<(&'static str, Vec<(PathBuf, FileRole)>)> {
    let meta = std::fs::metadata(model).map_err(|e| io_err(model, e))?;
    let mut files = Vec::new();
    let layout = if meta.is_dir() {
        for (p, c) in diffusers_files(model, target == DType::F16)? {
            if c == Component::Vae && vae.is_some() {
                continue;
            }
            files.push((p, FileRole::Diffusers(c)));
        }
        "diffusers"
    } else {
        files.push((model.to_path_buf(), FileRole::SingleFile { with_vae: vae.is_none() }));
        "single-file"
    };
    if let Some(v) = vae {
        files.push((v.to_path_buf(), FileRole::Vae));
    }
    Ok((layout, files))
}

/// The `config.json` beside each diffusers component file (`unet/config.json`, ...), for the
/// components loaded from the folder (a `--vae` override has no config: it gets the fallbacks).
/// A component without one is inferred from its weights alone, as in a single file.
pub fn diffusers_configs(files: &[(PathBuf, FileRole)]) -> Result<ConfigFiles> {
    let mut configs = ConfigFiles::default();
    for (p, role) in files {
        let FileRole::Diffusers(c) = role else { continue };
        let Some(cfg) = p.parent().map(|d| d.join("config.json")).filter(|c| c.is_file()) else { continue };
        let text = std::fs::read_to_string(&cfg).map_err(|e| io_err(&cfg, e))?;
        configs.add(*c, cfg.display().to_string(), &text)?;
    }
    Ok(configs)
}

/// What `sdxl inspect` prints: headers and config.json files only, no GPU, no data reads.
pub fn inspect_path(model: &Path, vae: Option<&Path>) -> Result<Inspection> {
    let (layout, files) = model_files(model, vae, DType::F16)?;
    let configs = diffusers_configs(&files)?;
    let headers = files
        .into_iter()
        .map(|(p, r)| Ok((p.display().to_string(), r, read_header(&p)?)))
        .collect::<Result<Vec<_>>>()?;
    inspect_headers(layout, &headers, &configs)
}

/// Load a model from disk into `sink`, streaming `chunk` bytes at a time.
pub fn load_path<S: TensorSink>(
    model: &Path,
    vae: Option<&Path>,
    sink: S,
    target: DType,
    chunk: usize,
    progress: impl FnMut(u64),
) -> Result<Loaded<S>> {
    let (layout, files) = model_files(model, vae, target)?;
    let configs = diffusers_configs(&files)?;
    let sources = files
        .iter()
        .map(|(p, r)| Ok((Box::new(FileSource::open(p)?) as Box<dyn ChunkSource>, *r)))
        .collect::<Result<Vec<_>>>()?;
    feed(Loader::new(sink, target, layout).with_configs(configs), sources, chunk, progress)
}

/// Random access to a model's files (in `model_files` order) for reloading released components.
pub struct FileRanges {
    files: Vec<(PathBuf, std::sync::Mutex<Option<File>>)>,
}

impl FileRanges {
    pub fn new(model: &Path, vae: Option<&Path>) -> Result<FileRanges> {
        let (_, files) = model_files(model, vae, DType::F16)?;
        Ok(FileRanges { files: files.into_iter().map(|(p, _)| (p, std::sync::Mutex::new(None))).collect() })
    }

    fn read_sync(&self, file: usize, start: u64, buf: &mut [u8]) -> Result<()> {
        use std::io::{Seek, SeekFrom};
        let (path, f) = self.files.get(file).ok_or_else(|| Error::Weights(format!("reload: no file {file}")))?;
        let mut guard = f.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(File::open(path).map_err(|e| io_err(path, e))?);
        }
        let fh = guard.as_mut().expect("opened above");
        fh.seek(SeekFrom::Start(start)).map_err(|e| io_err(path, e))?;
        fh.read_exact(buf).map_err(|e| {
            let why = if e.kind() == std::io::ErrorKind::UnexpectedEof {
                std::io::Error::new(e.kind(), "the file is shorter than when it was loaded (changed on disk?)")
            } else {
                e
            };
            io_err(path, why)
        })
    }
}

impl super::reload::RangeSource for FileRanges {
    fn read<'a>(
        &'a self,
        file: usize,
        start: u64,
        buf: &'a mut [u8],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + 'a>> {
        let r = self.read_sync(file, start, buf);
        Box::pin(std::future::ready(r))
    }
}

/// A dry load (`--dry-run`): every file planned from its header and every destination created
/// through `sink` in the order a real load creates them, without reading a data byte.
pub fn load_path_dry<S: TensorSink>(model: &Path, vae: Option<&Path>, mut sink: S, target: DType) -> Result<Loaded<S>> {
    let (layout, files) = model_files(model, vae, target)?;
    let configs = diffusers_configs(&files)?;
    let mut plans = Vec::new();
    let mut tensors = Vec::new();
    for (p, role) in &files {
        let label = p.display().to_string();
        let plan = super::plan_file(&label, *role, &read_header(p)?, &configs)?;
        for cp in &plan.components {
            for (name, shape) in &cp.tensors {
                let t = super::DestTensor {
                    name: format!("{}{name}", cp.comp.prefix()),
                    shape: shape.clone(),
                    dtype: target,
                };
                sink.create(tensors.len(), &t)?;
                tensors.push(t);
            }
        }
        plans.push(plan);
    }
    let inspection = super::summarize(layout, &plans)?;
    Ok(Loaded { sink, config: inspection.config.clone(), inspection, tensors, plans })
}
