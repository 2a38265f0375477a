//! Textual-inversion embeddings in the SDXL format: a safetensors file with `clip_l` [n, 768]
//! and `clip_g` [n, 1280] (the widths of the loaded model's encoders): n new tokens for each
//! tokenizer, as diffusers' `load_textual_inversion` adds them (clip_l into text_encoder /
//! tokenizer, clip_g into text_encoder_2 / tokenizer_2). In a prompt the embedding is its name
//! (A1111: the file's stem) or `embedding:name` (ComfyUI).

use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// The most vectors an embedding may have: they must fit one 75-token chunk.
pub const MAX_VECTORS: usize = crate::prompt::CHUNK_TOKENS;

/// An embedding on the host (tiny: n × (768 + 1280) values).
#[derive(Clone, Debug)]
pub struct Embedding {
    pub name: String,
    /// Vectors (tokens) per encoder.
    pub n: usize,
    /// [n, hidden_l] row-major.
    pub clip_l: Vec<f32>,
    /// [n, hidden_g] row-major.
    pub clip_g: Vec<f32>,
    /// A1111's short hash: the first 12 hex digits of the SHA-256 of the whole file.
    pub hash: String,
}

/// Characters that would make the name unusable in a prompt (A1111 emphasis / tag syntax,
/// separators).
fn bad_char(c: char) -> bool {
    c.is_whitespace() || "()[]{}<>:,\\|\"'".contains(c)
}

impl Embedding {
    /// Parse `bytes` (the whole file; `file` names it in errors) for encoders of widths
    /// `hidden_l` / `hidden_g`; `tok` is the base CLIP-L tokenizer, for the vocabulary check.
    pub fn parse(
        name: &str,
        file: &str,
        bytes: &[u8],
        hidden_l: usize,
        hidden_g: usize,
        tok: &Tokenizer,
    ) -> Result<Self> {
        if name.is_empty() || name.chars().any(bad_char) {
            return Err(Error::Input(format!(
                "embedding name '{name}': must be non-empty without spaces or any of ()[]{{}}<>:,\\|\"'"
            )));
        }
        if tok.in_vocab(name) {
            return Err(Error::Input(format!(
                "embedding name '{name}' is a word of the CLIP vocabulary, so prompts could not tell them apart (diffusers refuses it too); rename the file"
            )));
        }
        let h = crate::lora::header_of(file, bytes)?;
        let find = |k: &str| h.tensors.iter().find(|t| t.name == k);
        if let Some(t) = h.tensors.iter().find(|t| t.name == "emb_params" || t.name.starts_with("string_to_param")) {
            return Err(Error::Weights(format!(
                "{file}: an SD 1.x/2.x embedding (key '{}' {:?}); SDXL embeddings have 'clip_l' [n, {hidden_l}] and 'clip_g' [n, {hidden_g}]",
                t.name, t.shape
            )));
        }
        let (Some(l), Some(g)) = (find("clip_l"), find("clip_g")) else {
            let first = &h.tensors[0];
            let sd1 = h.tensors.len() == 1 && first.shape.len() == 2;
            return Err(Error::Weights(format!(
                "{file}: {}: key '{}' {:?}; SDXL embeddings have 'clip_l' [n, {hidden_l}] and 'clip_g' [n, {hidden_g}]",
                if sd1 { "a single-table (SD 1.x/2.x) embedding" } else { "not an SDXL embedding" },
                first.name,
                first.shape
            )));
        };
        let n = l.shape.first().copied().unwrap_or(0);
        for (t, w) in [(l, hidden_l), (g, hidden_g)] {
            if t.shape.len() != 2 || t.shape[1] != w || t.shape[0] != n || n == 0 || n > MAX_VECTORS {
                return Err(Error::Weights(format!(
                    "{file}: '{}' has shape {:?}, expected [n, {w}] with the same 1..={MAX_VECTORS} vectors as 'clip_l' (an embedding for another model?)",
                    t.name, t.shape
                )));
            }
        }
        let vals = |t: &crate::weights::TensorEntry| -> Result<Vec<f32>> {
            let raw = &bytes[t.start as usize..t.end as usize];
            let v: Vec<f32> = match t.dtype {
                crate::weights::StoredDType::F16 => {
                    raw.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
                }
                crate::weights::StoredDType::BF16 => {
                    raw.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
                }
                crate::weights::StoredDType::F32 => {
                    raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
                }
                d => {
                    return Err(Error::Weights(format!(
                        "{file}: '{}' is stored as {d}; expected F16, BF16 or F32",
                        t.name
                    )))
                }
            };
            if v.iter().any(|x| !x.is_finite()) {
                return Err(Error::Weights(format!("{file}: '{}' has non-finite values", t.name)));
            }
            Ok(v)
        };
        Ok(Embedding {
            name: name.to_string(),
            n,
            clip_l: vals(l)?,
            clip_g: vals(g)?,
            hash: crate::sha256::hex(bytes)[..12].to_string(),
        })
    }
}

/// ComfyUI's `embedding:NAME` (optionally with the file extension) → `NAME`, for loaded names.
pub fn strip_prefix(prompt: &str, names: &[String]) -> String {
    if !prompt.contains("embedding:") {
        return prompt.to_string();
    }
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = RE.get_or_init(|| regex::Regex::new(r"embedding:([^\s,()\[\]:<>]+)").expect("static regex"));
    re.replace_all(prompt, |c: &regex::Captures| {
        let n = c[1].trim_end_matches(".safetensors");
        if names.iter().any(|x| x.eq_ignore_ascii_case(n)) {
            n.to_string()
        } else {
            c[0].to_string()
        }
    })
    .into_owned()
}
