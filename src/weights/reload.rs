//! Reloading some components of a model that was loaded before, from the byte ranges its file
//! plans recorded: the memory planner releases the text encoders while the UNet runs and streams
//! them back for a new prompt (from the file natively, from the OPFS copy in the browser).
//!
//! Push-style like [`super::Loader`], so native (seek + read) and web (async range reads) drive
//! it the same way: create with the plans, read [`Reloader::ranges`] in order, `push` the bytes.

use super::stream::{convert, transpose, DestTensor, TensorSink};
use super::{Component, FilePlan, StoredDType};
use crate::gpu::DType;
use crate::{Error, Result};

/// One source tensor to read: its byte range in its file and where it goes.
struct Job {
    file: usize,
    start: u64,
    end: u64,
    dtype: StoredDType,
    dest: usize,
    elem_offset: u64,
    transpose: Option<(usize, usize)>,
}

pub struct Reloader<S: TensorSink> {
    sink: S,
    target: DType,
    dests: Vec<(DestTensor, u64)>,
    jobs: Vec<Job>,
    /// Current job and bytes of it received.
    next: usize,
    got: u64,
    /// Elements of the current job written (or gathered).
    done: u64,
    carry: Vec<u8>,
    gather: Vec<u8>,
    scratch: Vec<u8>,
}

impl<S: TensorSink> Reloader<S> {
    /// Creates (through the sink) every canonical tensor of `comps` found in `plans`, in the order
    /// the first load created them.
    pub fn new(mut sink: S, target: DType, plans: &[FilePlan], comps: &[Component]) -> Result<Self> {
        let mut dests = Vec::new();
        let mut jobs = Vec::new();
        for (fi, plan) in plans.iter().enumerate() {
            let mut base = Vec::new();
            for cp in &plan.components {
                if !comps.contains(&cp.comp) {
                    base.push(None);
                    continue;
                }
                base.push(Some(dests.len()));
                for (name, shape) in &cp.tensors {
                    let t =
                        DestTensor { name: format!("{}{name}", cp.comp.prefix()), shape: shape.clone(), dtype: target };
                    sink.create(dests.len(), &t)?;
                    let n = t.numel();
                    dests.push((t, n));
                }
            }
            for p in &plan.pieces {
                let Some(tg) = &p.target else { continue };
                let Some(ci) = plan.components.iter().position(|c| c.comp == tg.comp) else { continue };
                let Some(b) = base[ci] else { continue };
                jobs.push(Job {
                    file: fi,
                    start: p.src.start,
                    end: p.src.end,
                    dtype: p.src.dtype,
                    dest: b + tg.dest,
                    elem_offset: tg.elem_offset,
                    transpose: tg.transpose,
                });
            }
        }
        if dests.is_empty() {
            return Err(Error::Weights(format!("nothing to reload: no {comps:?} in the model's files")));
        }
        // Empty tensors need no bytes.
        for (j, d) in dests.iter().enumerate() {
            if d.1 == 0 {
                sink.finish(j)?;
            }
        }
        let mut r = Reloader {
            sink,
            target,
            dests,
            jobs,
            next: 0,
            got: 0,
            done: 0,
            carry: Vec::new(),
            gather: Vec::new(),
            scratch: Vec::new(),
        };
        r.skip_empty()?;
        Ok(r)
    }

    /// (file index, start, end) byte ranges to push, in order; adjacent tensors are merged.
    pub fn ranges(&self) -> Vec<(usize, u64, u64)> {
        let mut out: Vec<(usize, u64, u64)> = Vec::new();
        for j in self.jobs.iter().filter(|j| j.end > j.start) {
            match out.last_mut() {
                Some(last) if last.0 == j.file && last.2 == j.start => last.2 = j.end,
                _ => out.push((j.file, j.start, j.end)),
            }
        }
        out
    }

    /// Total bytes `ranges` cover.
    pub fn bytes(&self) -> u64 {
        self.jobs.iter().map(|j| j.end - j.start).sum()
    }

    fn skip_empty(&mut self) -> Result<()> {
        while self.jobs.get(self.next).is_some_and(|j| j.end == j.start) {
            self.next += 1;
        }
        Ok(())
    }

    /// The next bytes of the concatenated ranges.
    pub fn push(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let Some(job) = self.jobs.get(self.next) else {
                return Err(Error::Weights(format!("reload: {} bytes more than the ranges hold", data.len())));
            };
            let (dest, off, tr, dt, len) = (job.dest, job.elem_offset, job.transpose, job.dtype, job.end - job.start);
            let n = ((len - self.got) as usize).min(data.len());
            let (bytes, rest) = data.split_at(n);
            data = rest;
            self.got += n as u64;
            let es = dt.size() as usize;
            let mut b = bytes;
            if !self.carry.is_empty() {
                let k = (es - self.carry.len()).min(b.len());
                self.carry.extend_from_slice(&b[..k]);
                b = &b[k..];
                if self.carry.len() == es {
                    let one = std::mem::take(&mut self.carry);
                    self.emit(dest, off, tr.is_some(), dt, &one)?;
                }
            }
            let whole = b.len() / es * es;
            for part in b[..whole].chunks(super::stream::SCRATCH_ELEMS * es) {
                self.emit(dest, off, tr.is_some(), dt, part)?;
            }
            self.carry.extend_from_slice(&b[whole..]);
            if self.got == len {
                if let Some((rows, cols)) = tr {
                    let g = std::mem::take(&mut self.gather);
                    let t = transpose(&g, rows, cols, self.target.size());
                    self.write(dest, off, &t)?;
                }
                self.next += 1;
                self.got = 0;
                self.done = 0;
                self.skip_empty()?;
            }
        }
        Ok(())
    }

    fn emit(&mut self, dest: usize, off: u64, gather: bool, src: StoredDType, bytes: &[u8]) -> Result<()> {
        let at = off + self.done;
        self.done += (bytes.len() / src.size() as usize) as u64;
        let mut scratch = std::mem::take(&mut self.scratch);
        let out: &[u8] =
            if matches!((src, self.target), (StoredDType::F16, DType::F16) | (StoredDType::F32, DType::F32)) {
                bytes
            } else {
                convert(src, self.target, bytes, &mut scratch);
                &scratch
            };
        let r = if gather {
            self.gather.extend_from_slice(out);
            Ok(())
        } else {
            self.write(dest, at, out)
        };
        self.scratch = scratch;
        r
    }

    fn write(&mut self, id: usize, elem_at: u64, bytes: &[u8]) -> Result<()> {
        let es = self.target.size() as u64;
        self.sink.write(id, elem_at * es, bytes)?;
        let d = &mut self.dests[id];
        d.1 -= bytes.len() as u64 / es;
        if d.1 == 0 {
            self.sink.finish(id)?;
        }
        Ok(())
    }

    /// Every range was pushed: the sink with complete tensors.
    pub fn finish(self) -> Result<S> {
        if let Some(j) = self.jobs.get(self.next) {
            return Err(Error::Weights(format!(
                "reload ended early: bytes {}..{} of file {} were not received",
                j.start + self.got,
                j.end,
                j.file
            )));
        }
        if let Some((t, _)) = self.dests.iter().find(|(_, left)| *left != 0) {
            return Err(Error::Weights(format!("reload: tensor '{}' was not completely loaded", t.name)));
        }
        Ok(self.sink)
    }
}

/// Reads byte ranges of a model's files again, by file index in load order: a native file, the
/// browser's OPFS copy or a `File`. Boxed futures so native (ready at once) and web (a JS
/// promise) share one driver.
pub trait RangeSource {
    fn read<'a>(
        &'a self,
        file: usize,
        start: u64,
        buf: &'a mut [u8],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + 'a>>;
}

/// Bytes read per range request while reloading (one such buffer is the host memory it needs).
pub const RELOAD_CHUNK: usize = 8 << 20;

/// Streams the tensors of `comps` back to the GPU from `source`. On a dry device nothing is read:
/// zeros go through the same path, so the accounting is the real run's.
pub async fn reload_to_gpu(
    gpu: &crate::gpu::Gpu,
    plans: &[FilePlan],
    comps: &[Component],
    source: Option<&dyn RangeSource>,
) -> Result<super::Weights> {
    let mut r = Reloader::new(super::GpuSink::new(gpu), DType::F16, plans, comps)?;
    let mut buf = vec![0u8; RELOAD_CHUNK];
    for (file, start, end) in r.ranges() {
        let mut pos = start;
        while pos < end {
            let n = (end - pos).min(RELOAD_CHUNK as u64) as usize;
            if !gpu.is_dry() {
                let src = source.ok_or_else(|| {
                    Error::Weights("the text encoders were released and this model has no source to reload them".into())
                })?;
                src.read(file, pos, &mut buf[..n]).await?;
            }
            r.push(&buf[..n])?;
            pos += n as u64;
        }
        gpu.queue_idle().await?;
    }
    r.finish()?.into_weights()
}
