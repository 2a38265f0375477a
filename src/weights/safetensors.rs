//! safetensors header parsing from the first bytes of a file: an 8-byte little-endian length,
//! then that many bytes of JSON mapping tensor names to dtype, shape and data offsets (relative
//! to the end of the header). Everything is validated before a single data byte is read, so a
//! bad file fails fast with the file and tensor named.

use std::collections::BTreeMap;

use crate::{Error, Result};

/// The safetensors format's own limit on the JSON header (it guards against allocation bombs).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Element types a safetensors file may declare. Only F16, F32 and BF16 can be loaded; the others
/// are known so their byte sizes validate and unused ones (e.g. CLIP's I64 `position_ids`) skip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[allow(non_camel_case_types)] // the format's own spelling
pub enum StoredDType {
    BOOL,
    U8,
    I8,
    F8_E5M2,
    F8_E4M3,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    I64,
    U64,
    F64,
}

impl StoredDType {
    pub fn parse(s: &str) -> Option<StoredDType> {
        use StoredDType::*;
        Some(match s {
            "BOOL" => BOOL,
            "U8" => U8,
            "I8" => I8,
            "F8_E5M2" => F8_E5M2,
            "F8_E4M3" => F8_E4M3,
            "I16" => I16,
            "U16" => U16,
            "F16" => F16,
            "BF16" => BF16,
            "I32" => I32,
            "U32" => U32,
            "F32" => F32,
            "I64" => I64,
            "U64" => U64,
            "F64" => F64,
            _ => return None,
        })
    }

    pub fn size(self) -> u64 {
        use StoredDType::*;
        match self {
            BOOL | U8 | I8 | F8_E5M2 | F8_E4M3 => 1,
            I16 | U16 | F16 | BF16 => 2,
            I32 | U32 | F32 => 4,
            I64 | U64 | F64 => 8,
        }
    }

    /// Whether the loader can convert this type to the GPU's F16/F32.
    pub fn is_loadable(self) -> bool {
        matches!(self, StoredDType::F16 | StoredDType::F32 | StoredDType::BF16)
    }

    pub fn name(self) -> &'static str {
        use StoredDType::*;
        match self {
            BOOL => "BOOL",
            U8 => "U8",
            I8 => "I8",
            F8_E5M2 => "F8_E5M2",
            F8_E4M3 => "F8_E4M3",
            I16 => "I16",
            U16 => "U16",
            F16 => "F16",
            BF16 => "BF16",
            I32 => "I32",
            U32 => "U32",
            F32 => "F32",
            I64 => "I64",
            U64 => "U64",
            F64 => "F64",
        }
    }
}

impl std::fmt::Display for StoredDType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One tensor of a safetensors file; `start..end` are absolute byte offsets in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: StoredDType,
    pub shape: Vec<usize>,
    pub start: u64,
    pub end: u64,
}

impl TensorEntry {
    pub fn numel(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }
}

/// A parsed, validated header. Tensors are sorted by file offset (the order their bytes arrive).
#[derive(Clone, Debug)]
pub struct Header {
    pub tensors: Vec<TensorEntry>,
    pub metadata: BTreeMap<String, String>,
    /// Absolute offset of the first data byte (8 + JSON length).
    pub data_start: u64,
    /// Absolute offset one past the last tensor byte: the smallest valid file length.
    pub data_end: u64,
}

impl Header {
    pub fn get(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// The JSON length from a file's first 8 bytes, checked against the format limit and (when known)
/// the file length.
pub fn header_len(file: &str, first8: &[u8], file_len: Option<u64>) -> Result<u64> {
    if first8.len() < 8 {
        return Err(if first8.is_empty() {
            Error::Weights(format!("{file}: the file is empty (not a safetensors file)"))
        } else {
            Error::Weights(format!(
                "{file}: only {} bytes long; a safetensors file starts with an 8-byte header length",
                first8.len()
            ))
        });
    }
    let n = u64::from_le_bytes(first8[..8].try_into().expect("8 bytes"));
    if n > MAX_HEADER_BYTES {
        return Err(Error::Weights(format!(
            "{file}: header length {n} bytes is over the safetensors limit of {MAX_HEADER_BYTES} \
             (not a safetensors file, or corrupt)"
        )));
    }
    if let Some(len) = file_len {
        if 8 + n > len {
            return Err(Error::Weights(format!(
                "{file}: header length {n} bytes reaches past the end of the {len}-byte file (truncated or not a safetensors file)"
            )));
        }
    }
    if n < 2 {
        return Err(Error::Weights(format!("{file}: header length {n} is too small for a JSON object")));
    }
    Ok(n)
}

/// Parse and validate the JSON header (`json` is exactly the header bytes after the length).
pub fn parse_header(file: &str, json: &[u8], file_len: Option<u64>) -> Result<Header> {
    let data_start = 8 + json.len() as u64;
    let text = std::str::from_utf8(json)
        .map_err(|e| Error::Weights(format!("{file}: header is not valid UTF-8 ({e}); not a safetensors file?")))?;
    let value: serde_json::Value = serde_json::from_str(text.trim_end_matches(' '))
        .map_err(|e| Error::Weights(format!("{file}: header is not valid JSON ({e}); not a safetensors file?")))?;
    let serde_json::Value::Object(map) = value else {
        return Err(Error::Weights(format!("{file}: header JSON is not an object")));
    };
    let mut tensors = Vec::with_capacity(map.len());
    let mut metadata = BTreeMap::new();
    for (name, v) in map {
        if name == "__metadata__" {
            if let serde_json::Value::Object(m) = v {
                for (k, v) in m {
                    if let serde_json::Value::String(s) = v {
                        metadata.insert(k, s);
                    }
                }
            }
            continue;
        }
        tensors.push(parse_entry(file, &name, &v, data_start)?);
    }
    tensors.sort_by_key(|t| (t.start, t.end));
    for w in tensors.windows(2) {
        if w[1].start < w[0].end {
            return Err(Error::Weights(format!(
                "{file}: tensors '{}' (bytes {}..{}) and '{}' (bytes {}..{}) overlap",
                w[0].name,
                w[0].start - data_start,
                w[0].end - data_start,
                w[1].name,
                w[1].start - data_start,
                w[1].end - data_start
            )));
        }
    }
    let data_end = tensors.last().map_or(data_start, |t| t.end);
    if let Some(len) = file_len {
        if let Some(t) = tensors.iter().find(|t| t.end > len) {
            return Err(Error::Weights(format!(
                "{file}: tensor '{}' needs bytes up to offset {} but the file is {len} bytes (truncated, or offsets out of range)",
                t.name, t.end
            )));
        }
    }
    Ok(Header { tensors, metadata, data_start, data_end })
}

fn parse_entry(file: &str, name: &str, v: &serde_json::Value, data_start: u64) -> Result<TensorEntry> {
    let bad = |what: &str| Error::Weights(format!("{file}: tensor '{name}': {what}"));
    let obj = v.as_object().ok_or_else(|| bad("header entry is not an object"))?;
    let dtype_s = obj.get("dtype").and_then(|d| d.as_str()).ok_or_else(|| bad("no \"dtype\" string"))?;
    let dtype = StoredDType::parse(dtype_s).ok_or_else(|| bad(&format!("unknown dtype \"{dtype_s}\"")))?;
    let shape_v = obj.get("shape").and_then(|s| s.as_array()).ok_or_else(|| bad("no \"shape\" array"))?;
    let mut shape = Vec::with_capacity(shape_v.len());
    for d in shape_v {
        let d = d.as_u64().ok_or_else(|| bad(&format!("shape entry {d} is not a non-negative integer")))?;
        shape.push(usize::try_from(d).map_err(|_| bad("shape entry too large"))?);
    }
    let offs = obj.get("data_offsets").and_then(|s| s.as_array()).ok_or_else(|| bad("no \"data_offsets\" array"))?;
    let (Some(b), Some(e), 2) =
        (offs.first().and_then(|x| x.as_u64()), offs.get(1).and_then(|x| x.as_u64()), offs.len())
    else {
        return Err(bad("\"data_offsets\" must be two non-negative integers"));
    };
    if e < b {
        return Err(bad(&format!("data_offsets [{b}, {e}] end before they begin")));
    }
    let numel =
        shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d as u64)).ok_or_else(|| bad("shape overflows"))?;
    let want = numel.checked_mul(dtype.size()).ok_or_else(|| bad("shape overflows"))?;
    if want != e - b {
        return Err(bad(&format!(
            "shape {shape:?} of {dtype} needs {want} bytes but data_offsets [{b}, {e}] span {}",
            e - b
        )));
    }
    let start = data_start.checked_add(b).ok_or_else(|| bad("offset overflows"))?;
    let end = data_start.checked_add(e).ok_or_else(|| bad("offset overflows"))?;
    Ok(TensorEntry { name: name.to_string(), dtype, shape, start, end })
}

/// Serialise a header for `tensors` laid out back to back in the given order (used by the random
/// checkpoint writer and tests). Returns the full prefix: 8-byte length + JSON padded to 8 bytes.
pub fn build_header(tensors: &[(String, StoredDType, Vec<usize>)], metadata: &BTreeMap<String, String>) -> Vec<u8> {
    let mut map = serde_json::Map::new();
    if !metadata.is_empty() {
        map.insert("__metadata__".into(), serde_json::to_value(metadata).expect("string map"));
    }
    let mut off = 0u64;
    for (name, dtype, shape) in tensors {
        let n: u64 = shape.iter().map(|&d| d as u64).product::<u64>() * dtype.size();
        map.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype.name(), "shape": shape, "data_offsets": [off, off + n]}),
        );
        off += n;
    }
    let mut json = serde_json::to_vec(&serde_json::Value::Object(map)).expect("json");
    // Pad with spaces so the data starts 8-byte aligned, as the reference writer does.
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + json.len());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out
}
