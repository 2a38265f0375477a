//! Random-weight checkpoints with exact SDXL names and shapes (from the same canonical lists the
//! loader validates against), for benchmarks and memory tests: written to disk by
//! `sdxl dev random-checkpoint`, or generated on the fly by [`SyntheticSource`].

use std::collections::BTreeMap;
use std::io::Write;

use super::config::ComponentConfig;
use super::safetensors::build_header;
use super::stream::ChunkSource;
use super::{Component, ModelConfig, StoredDType};
use crate::{Error, Result};

/// All tensors of a single-file checkpoint for `cfg`, each component stored as `dtype(c)`.
pub fn checkpoint_tensors(
    cfg: &ModelConfig,
    dtype: impl Fn(Component) -> StoredDType,
) -> Vec<(String, StoredDType, Vec<usize>)> {
    let parts = [
        (Component::Unet, ComponentConfig::Unet(cfg.unet.clone())),
        (Component::TextEncoder, ComponentConfig::Clip(cfg.text_encoder.clone())),
        (Component::TextEncoder2, ComponentConfig::Clip(cfg.text_encoder_2.clone())),
        (Component::Vae, ComponentConfig::Vae(cfg.vae.clone())),
    ];
    let mut out = Vec::new();
    for (c, cc) in parts {
        for (name, shape) in cc.tensors(c) {
            out.push((format!("{}{name}", c.prefix()), dtype(c), shape));
        }
    }
    out
}

/// xorshift64*: fast, deterministic, good enough for filler weights.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Random f16 weights in ±[2^-7, 2^-6): finite, small, cheap (4 per draw).
    pub fn fill_f16(&mut self, out: &mut [u8]) {
        for c in out.chunks_mut(8) {
            let r = self.next_u64();
            for (k, pair) in c.chunks_mut(2).enumerate() {
                let h = (((r >> (16 * k)) as u16) & 0x83FF) | (8 << 10);
                pair.copy_from_slice(&h.to_le_bytes()[..pair.len()]);
            }
        }
    }
}

type TensorList = Vec<(String, StoredDType, Vec<usize>)>;

/// The f16 tensor list of `cfg` and its safetensors header, `note` in the metadata.
fn f16_header(cfg: &ModelConfig, note: &str) -> (TensorList, Vec<u8>) {
    let tensors = checkpoint_tensors(cfg, |_| StoredDType::F16);
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    meta.insert("sdxl-web".to_string(), note.to_string());
    let header = build_header(&tensors, &meta);
    (tensors, header)
}

/// Write a random-weight single-file checkpoint; returns the bytes written. Memory: one 8 MiB buffer.
pub fn write_random_checkpoint(path: &std::path::Path, cfg: &ModelConfig, seed: u64) -> Result<u64> {
    let io = |e| Error::Io { path: path.display().to_string(), source: e };
    let (tensors, header) = f16_header(cfg, "random weights (sdxl dev random-checkpoint)");
    let mut f = std::io::BufWriter::with_capacity(8 << 20, std::fs::File::create(path).map_err(io)?);
    f.write_all(&header).map_err(io)?;
    let mut total = header.len() as u64;
    let mut rng = Rng::new(seed);
    let mut buf = vec![0u8; 8 << 20];
    for (_, dt, shape) in &tensors {
        let mut left = shape.iter().map(|&d| d as u64).product::<u64>() * dt.size();
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            rng.fill_f16(&mut buf[..n]);
            f.write_all(&buf[..n]).map_err(io)?;
            left -= n as u64;
            total += n as u64;
        }
    }
    f.flush().map_err(io)?;
    Ok(total)
}

/// A checkpoint whose weights are all zero, written as a header plus a hole: the file has the
/// full size (6.9 GB for SDXL) but takes no disk space on file systems with sparse files. Dry runs
/// read only its header, so the memory plan at full size can be tested anywhere.
pub fn write_sparse_checkpoint(path: &std::path::Path, cfg: &ModelConfig) -> Result<u64> {
    let io = |e| Error::Io { path: path.display().to_string(), source: e };
    let (tensors, header) = f16_header(cfg, "zero weights, sparse (sdxl dev random-checkpoint --sparse)");
    let data: u64 = tensors.iter().map(|(_, dt, s)| s.iter().map(|&d| d as u64).product::<u64>() * dt.size()).sum();
    let mut f = std::fs::File::create(path).map_err(io)?;
    f.write_all(&header).map_err(io)?;
    let total = header.len() as u64 + data;
    f.set_len(total).map_err(io)?;
    Ok(total)
}

/// A checkpoint generated on the fly (header + random bytes): feeds the loader gigabytes without
/// touching the disk.
pub struct SyntheticSource {
    header: Vec<u8>,
    total: u64,
    pos: u64,
    rng: Rng,
}

impl SyntheticSource {
    pub fn new(tensors: &[(String, StoredDType, Vec<usize>)], seed: u64) -> SyntheticSource {
        let header = build_header(tensors, &BTreeMap::new());
        let data: u64 = tensors.iter().map(|(_, d, s)| s.iter().map(|&x| x as u64).product::<u64>() * d.size()).sum();
        SyntheticSource { total: header.len() as u64 + data, header, pos: 0, rng: Rng::new(seed) }
    }
}

impl ChunkSource for SyntheticSource {
    fn label(&self) -> String {
        "synthetic.safetensors".into()
    }
    fn total_len(&self) -> Option<u64> {
        Some(self.total)
    }
    fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        let n = (self.total - self.pos).min(buf.len() as u64) as usize;
        let mut filled = 0;
        if self.pos < self.header.len() as u64 {
            let h = &self.header[self.pos as usize..];
            filled = h.len().min(n);
            buf[..filled].copy_from_slice(&h[..filled]);
        }
        // Random f16 bit patterns are valid input for every loadable dtype (F32/BF16 read them
        // as other finite numbers or NaN, which convert without error).
        self.rng.fill_f16(&mut buf[filled..n]);
        self.pos += n as u64;
        Ok(n)
    }
}
