//! The streaming loader: a push state machine fed each file's bytes in order, in chunks of any
//! size. Per file it reads the header from the first bytes, plans (maps names, infers the
//! config, validates every tensor), asks the sink to create each destination, then converts and
//! forwards bytes as they arrive. Host memory: the caller's chunk, the header, a conversion
//! scratch of at most [`SCRATCH_ELEMS`] elements and, for transposed tensors only
//! (`text_projection`, 3 MiB at SDXL size), that one tensor.

use half::{bf16, f16};

use super::safetensors::{header_len, parse_header};
use super::{plan_file, summarize, Component, ConfigFiles, FilePlan, FileRole, Inspection, ModelConfig, StoredDType};
use crate::gpu::DType;
use crate::{Error, Result};

/// Elements converted per step: bounds the scratch buffer to 2 MiB (f32 output).
pub const SCRATCH_ELEMS: usize = 512 * 1024;

/// Largest tensor the loader will hold whole to transpose it (SDXL's is 3 MiB at f16).
pub const MAX_TRANSPOSE_BYTES: u64 = 64 << 20;

/// A destination tensor: canonical full name (component prefix included), shape, GPU dtype.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: DType,
}

impl DestTensor {
    pub fn numel(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }
    pub fn byte_len(&self) -> u64 {
        self.numel() * self.dtype.size() as u64
    }
}

/// Where loaded tensors go. `id`s are dense, in creation order. Bytes are already in the
/// destination dtype; writes to one tensor never overlap and together cover it exactly once,
/// then `finish` is called. On any error the loader stops and the sink is dropped, which must
/// release everything it holds.
pub trait TensorSink {
    fn create(&mut self, id: usize, t: &DestTensor) -> Result<()>;
    fn write(&mut self, id: usize, byte_offset: u64, bytes: &[u8]) -> Result<()>;
    fn finish(&mut self, id: usize) -> Result<()>;
}

/// A byte source read in order: a native file, a synthetic stream, a web reader.
pub trait ChunkSource {
    /// A name for messages (the path or URL).
    fn label(&self) -> String;
    /// Total length when known up front (lets the header be checked against it).
    fn total_len(&self) -> Option<u64>;
    /// Fill `buf` with the next bytes; 0 means the end.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize>;
}

struct Dest {
    t: DestTensor,
    remaining: u64,
}

enum Phase {
    Len(Vec<u8>),
    Json { need: usize, buf: Vec<u8> },
    Body,
}

struct FileState {
    label: String,
    role: FileRole,
    len: Option<u64>,
    pos: u64,
    phase: Phase,
    plan: Option<FilePlan>,
    /// First dest id of each of the plan's components.
    base: Vec<usize>,
    next: usize,
    /// Elements of the current piece already forwarded.
    done: u64,
    /// Bytes of a partly received element (chunks may split elements).
    carry: Vec<u8>,
    /// The current piece, converted, while it is gathered for a transpose.
    gather: Vec<u8>,
}

/// What a finished load produced.
pub struct Loaded<S> {
    pub sink: S,
    pub config: ModelConfig,
    pub inspection: Inspection,
    /// Every destination, by id.
    pub tensors: Vec<DestTensor>,
    /// Each file's plan, in load order: where every tensor's bytes are, for a later
    /// [`super::reload::Reloader`] of some components.
    pub plans: Vec<FilePlan>,
}

pub struct Loader<S: TensorSink> {
    sink: S,
    target: DType,
    dests: Vec<Dest>,
    file: Option<FileState>,
    plans: Vec<FilePlan>,
    layout: &'static str,
    configs: ConfigFiles,
    failed: bool,
    scratch: Vec<u8>,
}

impl<S: TensorSink> Loader<S> {
    /// `layout` is reported by `inspect` ("single-file" or "diffusers").
    pub fn new(sink: S, target: DType, layout: &'static str) -> Self {
        Loader {
            sink,
            target,
            dests: Vec::new(),
            file: None,
            plans: Vec::new(),
            layout,
            configs: ConfigFiles::default(),
            failed: false,
            scratch: Vec::new(),
        }
    }

    /// The config.json files of the components to come (a diffusers folder's): each component's
    /// inferred config is completed by its file and refused when they disagree.
    pub fn with_configs(mut self, configs: ConfigFiles) -> Self {
        self.configs = configs;
        self
    }

    fn guard<T>(&mut self, r: Result<T>) -> Result<T> {
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    fn check_ok(&self) -> Result<()> {
        if self.failed {
            return Err(Error::Weights("the load already failed; start a new one".into()));
        }
        Ok(())
    }

    pub fn begin_file(&mut self, label: impl Into<String>, role: FileRole, len: Option<u64>) -> Result<()> {
        self.check_ok()?;
        if let Some(f) = &self.file {
            let e = Err(Error::Weights(format!("{}: a new file began before this one ended", f.label)));
            return self.guard(e);
        }
        self.file = Some(FileState {
            label: label.into(),
            role,
            len,
            pos: 0,
            phase: Phase::Len(Vec::with_capacity(8)),
            plan: None,
            base: Vec::new(),
            next: 0,
            done: 0,
            carry: Vec::new(),
            gather: Vec::new(),
        });
        Ok(())
    }

    /// Feed the current file's next bytes.
    pub fn push(&mut self, data: &[u8]) -> Result<()> {
        self.check_ok()?;
        let r = self.push_inner(data);
        self.guard(r)
    }

    fn push_inner(&mut self, mut data: &[u8]) -> Result<()> {
        let Some(mut f) = self.file.take() else {
            return Err(Error::Weights("bytes pushed with no file begun".into()));
        };
        let r = (|| {
            while !data.is_empty() {
                match &mut f.phase {
                    Phase::Len(buf) => {
                        let n = (8 - buf.len()).min(data.len());
                        buf.extend_from_slice(&data[..n]);
                        data = &data[n..];
                        f.pos += n as u64;
                        if buf.len() == 8 {
                            let need = header_len(&f.label, buf, f.len)? as usize;
                            // Grow as bytes arrive: a lying length costs nothing until read.
                            f.phase = Phase::Json { need, buf: Vec::with_capacity(need.min(1 << 20)) };
                        }
                    }
                    Phase::Json { need, buf } => {
                        let n = (*need - buf.len()).min(data.len());
                        buf.extend_from_slice(&data[..n]);
                        data = &data[n..];
                        f.pos += n as u64;
                        if buf.len() == *need {
                            let header = parse_header(&f.label, buf, f.len)?;
                            let plan = plan_file(&f.label, f.role, &header, &self.configs)?;
                            self.start_plan(&mut f, plan)?;
                            f.phase = Phase::Body;
                        }
                    }
                    Phase::Body => {
                        let n = self.body(&mut f, data)?;
                        data = &data[n..];
                    }
                }
            }
            Ok(())
        })();
        self.file = Some(f);
        r
    }

    fn start_plan(&mut self, f: &mut FileState, plan: FilePlan) -> Result<()> {
        for cp in &plan.components {
            f.base.push(self.dests.len());
            for (name, shape) in &cp.tensors {
                let t = DestTensor {
                    name: format!("{}{name}", cp.comp.prefix()),
                    shape: shape.clone(),
                    dtype: self.target,
                };
                let id = self.dests.len();
                self.sink.create(id, &t)?;
                self.dests.push(Dest { remaining: t.numel(), t });
            }
        }
        for p in &plan.pieces {
            if let Some(tg) = &p.target {
                if tg.transpose.is_some() && p.src.numel() * self.target.size() as u64 > MAX_TRANSPOSE_BYTES {
                    return Err(Error::Weights(format!(
                        "{}: tensor '{}' needs a transpose and is over {} MiB",
                        f.label,
                        p.src.name,
                        MAX_TRANSPOSE_BYTES >> 20
                    )));
                }
            }
        }
        f.plan = Some(plan);
        Ok(())
    }

    /// Consume body bytes at `f.pos`; returns how many were used (all, or up to a piece end).
    fn body(&mut self, f: &mut FileState, data: &[u8]) -> Result<usize> {
        let plan = f.plan.take().expect("body after plan");
        let r = self.body_with(f, &plan, data);
        f.plan = Some(plan);
        r
    }

    fn body_with(&mut self, f: &mut FileState, plan: &FilePlan, data: &[u8]) -> Result<usize> {
        let Some(piece) = plan.pieces.get(f.next) else {
            // Trailing bytes after the last tensor carry nothing; skip them.
            f.pos += data.len() as u64;
            return Ok(data.len());
        };
        if f.pos < piece.src.start {
            let n = (piece.src.start - f.pos).min(data.len() as u64) as usize;
            f.pos += n as u64;
            return Ok(n);
        }
        let n = (piece.src.end - f.pos).min(data.len() as u64) as usize;
        let bytes = &data[..n];
        f.pos += n as u64;
        if let Some(tg) = &piece.target {
            let id =
                f.base[plan.components.iter().position(|c| c.comp == tg.comp).expect("planned component")] + tg.dest;
            let src_dt = piece.src.dtype;
            let es = src_dt.size() as usize;
            let mut rest = bytes;
            if !f.carry.is_empty() {
                let k = (es - f.carry.len()).min(rest.len());
                f.carry.extend_from_slice(&rest[..k]);
                rest = &rest[k..];
                if f.carry.len() == es {
                    let one = std::mem::take(&mut f.carry);
                    self.emit(f, id, tg.elem_offset, tg.transpose.is_some(), src_dt, &one)?;
                }
            }
            let whole = rest.len() / es * es;
            for part in rest[..whole].chunks(SCRATCH_ELEMS * es) {
                self.emit(f, id, tg.elem_offset, tg.transpose.is_some(), src_dt, part)?;
            }
            f.carry.extend_from_slice(&rest[whole..]);
            if f.pos == piece.src.end {
                if let Some((rows, cols)) = tg.transpose {
                    let g = std::mem::take(&mut f.gather);
                    let t = transpose(&g, rows, cols, self.target.size());
                    self.write(id, tg.elem_offset, &t)?;
                }
            }
        }
        if f.pos == piece.src.end {
            f.next += 1;
            f.done = 0;
        }
        Ok(n)
    }

    /// Convert whole source elements and forward (or gather) them.
    fn emit(
        &mut self,
        f: &mut FileState,
        id: usize,
        off: u64,
        gather: bool,
        src: StoredDType,
        bytes: &[u8],
    ) -> Result<()> {
        let at = off + f.done;
        f.done += (bytes.len() / src.size() as usize) as u64;
        if same_type(src, self.target) {
            if gather {
                f.gather.extend_from_slice(bytes);
                return Ok(());
            }
            return self.write(id, at, bytes);
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        convert(src, self.target, bytes, &mut scratch);
        let r = if gather {
            f.gather.extend_from_slice(&scratch);
            Ok(())
        } else {
            self.write(id, at, &scratch)
        };
        // Keep the allocation for the next step.
        self.scratch = scratch;
        r
    }

    fn write(&mut self, id: usize, elem_at: u64, bytes: &[u8]) -> Result<()> {
        let es = self.target.size() as u64;
        self.sink.write(id, elem_at * es, bytes)?;
        let d = &mut self.dests[id];
        d.remaining -= bytes.len() as u64 / es;
        if d.remaining == 0 {
            self.sink.finish(id)?;
        }
        Ok(())
    }

    /// The current file's bytes are over: check nothing is missing.
    pub fn end_file(&mut self) -> Result<()> {
        self.check_ok()?;
        let r = self.end_inner();
        self.guard(r)
    }

    fn end_inner(&mut self) -> Result<()> {
        let Some(f) = self.file.take() else {
            return Err(Error::Weights("end of file with no file begun".into()));
        };
        let label = &f.label;
        match &f.phase {
            // Fewer than 8 bytes arrived, so this always reports the empty / short file.
            Phase::Len(buf) => header_len(label, buf, Some(f.pos)).map(|_| ()),
            Phase::Json { need, buf } => Err(Error::Weights(format!(
                "{label}: truncated: the file ends {} bytes into its {need}-byte header",
                buf.len()
            ))),
            Phase::Body => {
                let plan = f.plan.as_ref().expect("body after plan");
                // Empty tensors at the very end need no bytes.
                let next = f.next
                    + plan.pieces[f.next.min(plan.pieces.len())..]
                        .iter()
                        .take_while(|p| p.src.start == p.src.end && p.src.start == f.pos)
                        .count();
                if let Some(p) = plan.pieces.get(next) {
                    return Err(Error::Weights(format!(
                        "{label}: truncated: the file ends at byte {} but tensor '{}' needs bytes {}..{}",
                        f.pos, p.src.name, p.src.start, p.src.end
                    )));
                }
                if let Some(len) = f.len {
                    if f.pos != len {
                        return Err(Error::Weights(format!(
                            "{label}: the stream ended at byte {} but the file is {len} bytes",
                            f.pos
                        )));
                    }
                }
                self.plans.push(f.plan.expect("plan"));
                Ok(())
            }
        }
    }

    /// All files are in: check the four components are complete and consistent.
    pub fn finish(self) -> Result<Loaded<S>> {
        self.check_ok()?;
        if let Some(f) = &self.file {
            return Err(Error::Weights(format!("{}: finished before the file ended", f.label)));
        }
        let inspection = summarize(self.layout, &self.plans)?;
        if let Some(d) = self.dests.iter().find(|d| d.remaining != 0) {
            return Err(Error::Weights(format!("tensor '{}' was not completely loaded", d.t.name)));
        }
        Ok(Loaded {
            sink: self.sink,
            config: inspection.config.clone(),
            inspection,
            tensors: self.dests.into_iter().map(|d| d.t).collect(),
            plans: self.plans,
        })
    }
}

fn same_type(src: StoredDType, dst: DType) -> bool {
    matches!((src, dst), (StoredDType::F16, DType::F16) | (StoredDType::F32, DType::F32))
}

/// Convert little-endian F16/BF16/F32 elements to the destination type into `out` (cleared
/// first). F32 → F16 and BF16 → F16 round to nearest even (one rounding: bf16 → f32 is exact).
pub fn convert(src: StoredDType, dst: DType, bytes: &[u8], out: &mut Vec<u8>) {
    let (ss, ds) = (src.size() as usize, dst.size());
    let n = bytes.len() / ss;
    out.clear();
    out.resize(n * ds, 0);
    let to_f32 = |c: &[u8]| -> f32 {
        match src {
            StoredDType::F16 => f16::from_le_bytes([c[0], c[1]]).to_f32(),
            StoredDType::BF16 => bf16::from_le_bytes([c[0], c[1]]).to_f32(),
            // plan_file admits only F16, BF16 and F32.
            _ => f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
        }
    };
    for (c, o) in bytes.chunks_exact(ss).zip(out.chunks_exact_mut(ds)) {
        let x = to_f32(c);
        match dst {
            DType::F16 => o.copy_from_slice(&f16::from_f32(x).to_le_bytes()),
            DType::F32 => o.copy_from_slice(&x.to_le_bytes()),
        }
    }
}

/// Transpose a row-major rows × cols matrix of `es`-byte elements.
pub(crate) fn transpose(src: &[u8], rows: usize, cols: usize, es: usize) -> Vec<u8> {
    let mut out = vec![0u8; src.len()];
    for r in 0..rows {
        for c in 0..cols {
            let s = (r * cols + c) * es;
            let d = (c * rows + r) * es;
            out[d..d + es].copy_from_slice(&src[s..s + es]);
        }
    }
    out
}

/// Stream whole sources through a loader with a `chunk`-byte buffer (the only large host buffer).
pub fn load_sources<S: TensorSink>(
    sink: S,
    target: DType,
    layout: &'static str,
    files: Vec<(Box<dyn ChunkSource + '_>, FileRole)>,
    chunk: usize,
    progress: impl FnMut(u64),
) -> Result<Loaded<S>> {
    feed(Loader::new(sink, target, layout), files, chunk, progress)
}

/// Stream whole sources through `loader` (see [`load_sources`]).
pub fn feed<S: TensorSink>(
    mut loader: Loader<S>,
    files: Vec<(Box<dyn ChunkSource + '_>, FileRole)>,
    chunk: usize,
    mut progress: impl FnMut(u64),
) -> Result<Loaded<S>> {
    let mut buf = vec![0u8; chunk.max(1)];
    let mut total = 0u64;
    for (mut src, role) in files {
        loader.begin_file(src.label(), role, src.total_len())?;
        loop {
            let n = src.read(&mut buf)?;
            if n == 0 {
                break;
            }
            loader.push(&buf[..n])?;
            total += n as u64;
            progress(total);
        }
        loader.end_file()?;
    }
    loader.finish()
}

/// Plan every file of a model from headers (and config.json files) only: what `inspect` prints.
pub fn inspect_headers(
    layout: &'static str,
    files: &[(String, FileRole, super::Header)],
    configs: &ConfigFiles,
) -> Result<Inspection> {
    let plans = files.iter().map(|(l, r, h)| plan_file(l, *r, h, configs)).collect::<Result<Vec<_>>>()?;
    summarize(layout, &plans)
}

/// Which component a file role feeds, for progress messages.
pub fn role_components(role: FileRole) -> Vec<Component> {
    match role {
        FileRole::SingleFile { with_vae } => {
            Component::ALL.into_iter().filter(|&c| with_vae || c != Component::Vae).collect()
        }
        FileRole::Vae => vec![Component::Vae],
        FileRole::Diffusers(c) => vec![c],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }
    fn halves(b: &[u8]) -> Vec<u16> {
        b.chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect()
    }

    #[test]
    fn f32_to_f16_rounds_to_nearest_even() {
        let ulp = 2f32.powi(-10);
        let mut out = Vec::new();
        // Ties: 1 + ulp/2 → 1 (even); 1 + 3ulp/2 → 1 + 2ulp (even); just above a tie rounds up.
        let input = [1.0 + ulp / 2.0, 1.0 + 1.5 * ulp, 1.0 + ulp / 2.0 + 2f32.powi(-20), 65520.0, 65519.0, -0.0, 1e-8];
        convert(StoredDType::F32, DType::F16, &f32s(&input), &mut out);
        assert_eq!(halves(&out), [0x3C00, 0x3C02, 0x3C01, 0x7C00, 0x7BFF, 0x8000, 0x0000]);
    }

    #[test]
    fn bf16_converts_exactly_to_f32_and_rounds_once_to_f16() {
        // bf16: 1.0, -2.0, 1 + 2^-7, 2^-20 (an f16 subnormal), 1e38 (overflows f16).
        let bf: [u16; 5] = [0x3F80, 0xC000, 0x3F81, 0x3580, 0x7E96];
        let bytes: Vec<u8> = bf.iter().flat_map(|x| x.to_le_bytes()).collect();
        let mut out = Vec::new();
        convert(StoredDType::BF16, DType::F32, &bytes, &mut out);
        let f: Vec<f32> = out.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(&f[..4], &[1.0, -2.0, 1.0 + 2f32.powi(-7), 2f32.powi(-20)]);
        convert(StoredDType::BF16, DType::F16, &bytes, &mut out);
        assert_eq!(halves(&out), [0x3C00, 0xC000, 0x3C08, 0x0010, 0x7C00]);
    }

    #[test]
    fn transpose_swaps_axes() {
        let src: Vec<u8> = (0u8..12).collect(); // 2 × 3 of 2-byte elements
        assert_eq!(transpose(&src, 2, 3, 2), [0, 1, 6, 7, 2, 3, 8, 9, 4, 5, 10, 11]);
    }
}
