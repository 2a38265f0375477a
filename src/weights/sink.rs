//! Tensor sinks: the GPU one (a buffer per tensor, pieces written with `queue.write_buffer` as
//! they arrive), a host one for tests and tools, and a discarding one for measurements.

use std::collections::HashMap;

use super::stream::{DestTensor, TensorSink};
use crate::gpu::{Gpu, Tensor};
use crate::{Error, Result};

/// Discards everything (counts bytes): measures the loader without any destination memory.
#[derive(Default)]
pub struct NullSink {
    pub bytes: u64,
    pub tensors: usize,
}

impl TensorSink for NullSink {
    fn create(&mut self, _id: usize, _t: &DestTensor) -> Result<()> {
        self.tensors += 1;
        Ok(())
    }
    fn write(&mut self, _id: usize, _off: u64, bytes: &[u8]) -> Result<()> {
        self.bytes += bytes.len() as u64;
        Ok(())
    }
    fn finish(&mut self, _id: usize) -> Result<()> {
        Ok(())
    }
}

/// Keeps every tensor in host memory (tests, small models); checks writes stay in bounds and
/// cover each tensor exactly.
#[derive(Default)]
pub struct CpuSink {
    pub tensors: Vec<(DestTensor, Vec<u8>)>,
    written: Vec<u64>,
}

impl CpuSink {
    pub fn into_map(self) -> HashMap<String, (DestTensor, Vec<u8>)> {
        self.tensors.into_iter().map(|(t, b)| (t.name.clone(), (t, b))).collect()
    }
}

impl TensorSink for CpuSink {
    fn create(&mut self, id: usize, t: &DestTensor) -> Result<()> {
        if id != self.tensors.len() {
            return Err(Error::Weights(format!("sink: tensor id {id} out of order")));
        }
        self.tensors.push((t.clone(), vec![0; t.byte_len() as usize]));
        self.written.push(0);
        Ok(())
    }
    fn write(&mut self, id: usize, off: u64, bytes: &[u8]) -> Result<()> {
        let (t, buf) = &mut self.tensors[id];
        let end = off as usize + bytes.len();
        if end > buf.len() {
            return Err(Error::Weights(format!("sink: write past the end of '{}'", t.name)));
        }
        buf[off as usize..end].copy_from_slice(bytes);
        self.written[id] += bytes.len() as u64;
        Ok(())
    }
    fn finish(&mut self, id: usize) -> Result<()> {
        let (t, buf) = &self.tensors[id];
        if self.written[id] != buf.len() as u64 {
            return Err(Error::Weights(format!(
                "sink: '{}' finished with {} of {} bytes",
                t.name,
                self.written[id],
                buf.len()
            )));
        }
        Ok(())
    }
}

/// Queue writes are staged by wgpu until a submit; submitting (and on native waiting) every
/// this many bytes keeps the staging memory bounded.
const SUBMIT_EVERY: u64 = 32 << 20;

/// Uploads each tensor into its own GPU buffer. `queue.write_buffer` needs 4-byte aligned offsets
/// and sizes, so the unaligned edges of a piece (f16 data can end mid-word) are held per word
/// until the word is complete or the tensor ends.
pub struct GpuSink<'a> {
    gpu: &'a Gpu,
    tensors: Vec<Option<Tensor>>,
    names: Vec<String>,
    edges: HashMap<(usize, u64), ([u8; 4], u8)>,
    since_submit: u64,
    ok: bool,
}

impl<'a> GpuSink<'a> {
    pub fn new(gpu: &'a Gpu) -> Self {
        GpuSink { gpu, tensors: Vec::new(), names: Vec::new(), edges: HashMap::new(), since_submit: 0, ok: false }
    }

    /// The loaded tensors by canonical name (call after a successful load).
    pub fn into_weights(mut self) -> Result<Weights> {
        self.submit()?;
        self.ok = true;
        let mut map = HashMap::new();
        for (name, t) in std::mem::take(&mut self.names).into_iter().zip(std::mem::take(&mut self.tensors)) {
            let t = t.ok_or_else(|| Error::Weights(format!("tensor '{name}' was never created")))?;
            map.insert(name, t);
        }
        Ok(Weights { map })
    }

    /// Submit the queued uploads and (natively) wait for them: their staging is freed.
    fn submit(&mut self) -> Result<()> {
        self.gpu.end_staging(std::mem::take(&mut self.since_submit));
        if self.gpu.is_dry() {
            return Ok(());
        }
        self.gpu.queue.submit([]);
        #[cfg(not(target_arch = "wasm32"))]
        self.gpu
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for uploads: {e}")))?;
        Ok(())
    }

    fn edge_byte(&mut self, id: usize, pos: u64, b: u8) {
        let word = pos & !3;
        let e = self.edges.entry((id, word)).or_insert(([0; 4], 0));
        e.0[(pos & 3) as usize] = b;
        e.1 |= 1 << (pos & 3);
    }

    fn flush_word(&mut self, id: usize, word: u64) {
        if let Some((bytes, mask)) = self.edges.get(&(id, word)).copied() {
            if mask == 0xF {
                self.edges.remove(&(id, word));
                let t = self.tensors[id].as_ref().expect("created");
                self.gpu.write_buffer(t.buffer(), word, &bytes);
            }
        }
    }
}

impl Drop for GpuSink<'_> {
    fn drop(&mut self) {
        self.gpu.end_staging(std::mem::take(&mut self.since_submit));
        if !self.ok {
            // A failed load: drop every buffer and hand the memory back to the driver.
            self.tensors.clear();
            self.gpu.trim_pool();
        }
    }
}

impl TensorSink for GpuSink<'_> {
    fn create(&mut self, id: usize, t: &DestTensor) -> Result<()> {
        if id != self.tensors.len() {
            return Err(Error::Weights(format!("sink: tensor id {id} out of order")));
        }
        let tensor = Tensor::empty_exact(self.gpu, &t.shape, t.dtype)
            .map_err(|e| Error::Gpu(format!("allocating '{}': {e}", t.name)))?;
        self.tensors.push(Some(tensor));
        self.names.push(t.name.clone());
        Ok(())
    }

    fn write(&mut self, id: usize, off: u64, bytes: &[u8]) -> Result<()> {
        let end = off + bytes.len() as u64;
        let a0 = off.next_multiple_of(4).min(end);
        let a1 = (end & !3).max(a0);
        if a1 > a0 {
            let t = self.tensors[id].as_ref().expect("created");
            self.gpu.write_buffer(t.buffer(), a0, &bytes[(a0 - off) as usize..(a1 - off) as usize]);
        }
        for p in (off..a0).chain(a1..end) {
            self.edge_byte(id, p, bytes[(p - off) as usize]);
        }
        for w in [off & !3, a1] {
            self.flush_word(id, w);
        }
        // Queued until the next submit: counted as staging until then.
        self.gpu.begin_staging(bytes.len() as u64);
        self.since_submit += bytes.len() as u64;
        if self.since_submit >= SUBMIT_EVERY {
            self.submit()?;
        }
        Ok(())
    }

    fn finish(&mut self, id: usize) -> Result<()> {
        let len = self.tensors[id].as_ref().expect("created").byte_len();
        // The last word's bytes past the tensor are padding: anything will do.
        let last = len & !3;
        if !len.is_multiple_of(4) {
            for p in len..last + 4 {
                self.edge_byte(id, p, 0);
            }
            self.flush_word(id, last);
        }
        if let Some(((_, w), (_, m))) = self.edges.iter().find(|((i, _), _)| *i == id) {
            return Err(Error::Weights(format!(
                "internal: '{}' finished with bytes missing in word {w} (mask {m:#x})",
                self.names[id]
            )));
        }
        Ok(())
    }
}

/// Loaded GPU weights by canonical (single-file) name.
pub struct Weights {
    pub map: HashMap<String, Tensor>,
}

impl Weights {
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.map.get(name).ok_or_else(|| Error::Weights(format!("missing tensor '{name}'")))
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl crate::model::Params for Weights {
    fn get(&self, name: &str) -> Result<&Tensor> {
        Weights::get(self, name)
    }
}
