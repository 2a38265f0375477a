//! CLIP BPE tokenizer, identical to what diffusers' `StableDiffusionXLPipeline` gets from
//! transformers' `CLIPTokenizer` (the `tokenizers`-backed one).
//!
//! The vocabulary is the official CLIP `bpe_simple_vocab_16e6.txt.gz` (via PyPI `open_clip_torch`):
//! the first 48,894 merges are embedded gzip-compressed (`src/tokenizer/clip_merges.txt.gz`,
//! written by `tests/fixtures/gen_tokenizer.py`) and the 49,408-entry vocabulary is derived from
//! them exactly as open_clip / HF `vocab.json` do.
//!
//! Pipeline, as transformers builds it (no ftfy, no HTML unescaping):
//! NFC → every whitespace run to one space → lowercase; split on CLIP's regex; byte-level BPE
//! with `</w>` word ends. Special tokens are matched in the raw text first: `<|startoftext|>`,
//! `<|endoftext|>`, and for SDXL's `tokenizer_2` (bigG) also its pad token `"!"`, so every `!`
//! in a prompt becomes id 0 there while CLIP-L keeps `!</w>` = 256.

use std::io::Read;

use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Lowercase, Replace, Sequence as NormSeq, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSeq;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use crate::{Error, Result};

/// Token id of `<|startoftext|>`.
pub const BOS: u32 = 49406;
/// Token id of `<|endoftext|>`.
pub const EOS: u32 = 49407;
/// Sequence length of both SDXL text encoders.
pub const CONTEXT_LEN: usize = 77;
/// Vocabulary size of both encoders.
pub const VOCAB_SIZE: usize = 49408;

const MERGES_GZ: &[u8] = include_bytes!("tokenizer/clip_merges.txt.gz");
/// 49152 - 256 - 2: how many merges CLIP uses (256 + 256 byte tokens + merges + 2 specials = 49408).
const N_MERGES: usize = 48894;
const CLIP_SPLIT: &str = r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

type Inner = tokenizers::Tokenizer;

/// One SDXL text-encoder tokenizer (CLIP-L or OpenCLIP bigG).
#[derive(Clone)]
pub struct Tokenizer {
    inner: Inner,
    pad: u32,
    /// Textual-inversion tokens: the id of `name` → the ids of `name`, `name_1`, … (all vectors).
    expand: std::collections::HashMap<u32, Vec<u32>>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").field("pad", &self.pad).finish()
    }
}

/// Both SDXL tokenizers, built once.
#[derive(Clone, Debug)]
pub struct SdxlTokenizers {
    /// `tokenizer` of the SDXL pipeline (CLIP ViT-L/14), pads with eos.
    pub clip_l: Tokenizer,
    /// `tokenizer_2` (OpenCLIP ViT-bigG/14), pads with `"!"` = id 0.
    pub clip_g: Tokenizer,
}

impl SdxlTokenizers {
    pub fn new() -> Result<Self> {
        Ok(Self { clip_l: Tokenizer::clip_l()?, clip_g: Tokenizer::clip_g()? })
    }
}

impl Tokenizer {
    /// CLIP-L tokenizer (SDXL `tokenizer`): pad token `<|endoftext|>` = 49407.
    pub fn clip_l() -> Result<Self> {
        Self::build(false)
    }

    /// OpenCLIP bigG tokenizer (SDXL `tokenizer_2`): pad token `"!"` = 0, which also makes every
    /// `!` in the text a special token.
    pub fn clip_g() -> Result<Self> {
        Self::build(true)
    }

    fn build(bang_pad: bool) -> Result<Self> {
        let err = |what: &str, e: &dyn std::fmt::Display| Error::Input(format!("tokenizer {what}: {e}"));
        let mut text = String::new();
        flate2::read::GzDecoder::new(MERGES_GZ).read_to_string(&mut text).map_err(|e| err("embedded merges", &e))?;
        let merges: Vec<(String, String)> =
            text.lines().filter_map(|l| l.split_once(' ')).map(|(a, b)| (a.to_string(), b.to_string())).collect();
        if merges.len() != N_MERGES {
            return Err(Error::Input(format!(
                "tokenizer embedded merges: {} entries, expected {N_MERGES}",
                merges.len()
            )));
        }
        let bytes = byte_symbols();
        let words = bytes
            .iter()
            .cloned()
            .chain(bytes.iter().map(|s| format!("{s}</w>")))
            .chain(merges.iter().map(|(a, b)| format!("{a}{b}")))
            .chain(["<|startoftext|>".to_string(), "<|endoftext|>".to_string()]);
        let vocab: Vocab = words.enumerate().map(|(i, w)| (w, i as u32)).collect();
        if vocab.len() != VOCAB_SIZE {
            return Err(Error::Input(format!(
                "tokenizer vocabulary: {} distinct entries, expected {VOCAB_SIZE}",
                vocab.len()
            )));
        }
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .continuing_subword_prefix(String::new())
            .end_of_word_suffix("</w>".to_string())
            .unk_token("<|endoftext|>".to_string())
            .build()
            .map_err(|e| err("BPE", &e))?;
        let mut inner = Inner::new(bpe);
        let ws = Replace::new(tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()), " ")
            .map_err(|e| err("normalizer", &e))?;
        inner.with_normalizer(Some(NormSeq::new(vec![NFC.into(), ws.into(), Lowercase.into()])));
        let split = Split::new(SplitPattern::Regex(CLIP_SPLIT.into()), SplitDelimiterBehavior::Removed, true)
            .map_err(|e| err("pre-tokenizer", &e))?;
        inner.with_pre_tokenizer(Some(PreSeq::new(vec![split.into(), ByteLevel::new(false, true, true).into()])));
        // Specials match in the raw text (normalized = false), as transformers registers them.
        let mut specials = Vec::new();
        if bang_pad {
            specials.push(AddedToken::from("!", true));
        }
        specials.push(AddedToken::from("<|startoftext|>", true));
        specials.push(AddedToken::from("<|endoftext|>", true));
        inner.add_special_tokens(&specials);
        let pad = if bang_pad { 0 } else { EOS };
        Ok(Self { inner, pad, expand: Default::default() })
    }

    /// The id that fills a sequence after its eos: 49407 for CLIP-L, 0 for bigG.
    pub fn pad_id(&self) -> u32 {
        self.pad
    }

    /// Token ids of `text`, without bos/eos and without truncation.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc =
            self.inner.encode_fast(text, false).map_err(|e| Error::Input(format!("cannot tokenize prompt: {e}")))?;
        let ids = enc.get_ids();
        if self.expand.is_empty() {
            return Ok(ids.to_vec());
        }
        Ok(ids.iter().flat_map(|i| self.expand.get(i).cloned().unwrap_or_else(|| vec![*i])).collect())
    }

    /// Whether `word` is a vocabulary entry (as a subword or a whole word) or an added token:
    /// diffusers refuses such a textual-inversion name ("already in tokenizer vocabulary").
    pub fn in_vocab(&self, word: &str) -> bool {
        let w = word.to_lowercase();
        self.inner.token_to_id(&w).is_some() || self.inner.token_to_id(&format!("{w}</w>")).is_some()
    }

    /// A copy with textual-inversion tokens: for each (name, n vectors), `name`, `name_1`, …,
    /// `name_{n-1}` become added tokens, as diffusers' `load_textual_inversion` adds them
    /// (transformers `add_tokens`: matched in the normalized, lower-cased text, even inside
    /// words), with ids from [`VOCAB_SIZE`] on in order; `name` in a prompt then stands for all n
    /// ids (diffusers' `maybe_convert_prompt`). Returns the tokenizer and each name's first id.
    pub fn with_embeddings(&self, embs: &[(String, usize)]) -> Result<(Tokenizer, Vec<u32>)> {
        let mut t = self.clone();
        let mut firsts = Vec::new();
        let mut next = VOCAB_SIZE as u32;
        for (name, n) in embs {
            let tokens: Vec<String> =
                (0..*n).map(|i| if i == 0 { name.clone() } else { format!("{name}_{i}") }).collect();
            let added: Vec<AddedToken> = tokens.iter().map(|w| AddedToken::from(w.clone(), false)).collect();
            t.inner.add_tokens(&added);
            let ids: Vec<u32> = tokens.iter().filter_map(|w| t.inner.token_to_id(w)).collect();
            let want: Vec<u32> = (next..next + *n as u32).collect();
            if ids != want {
                return Err(Error::Input(format!(
                    "embedding '{name}': its tokens got ids {ids:?}, expected {want:?} (a name clash with another embedding?)"
                )));
            }
            next += *n as u32;
            firsts.push(want[0]);
            t.expand.insert(want[0], want);
        }
        Ok((t, firsts))
    }

    /// What diffusers feeds the encoder: bos, the first 75 ids, eos, then pad to 77
    /// (`padding="max_length", max_length=77, truncation=True`).
    pub fn encode_padded(&self, text: &str) -> Result<[u32; CONTEXT_LEN]> {
        let ids = self.encode(text)?;
        Ok(self.wrap(&ids[..ids.len().min(CONTEXT_LEN - 2)]))
    }

    /// `[bos, content.., eos, pad..]`; `content` must hold at most 75 ids (longer is cut).
    pub fn wrap(&self, content: &[u32]) -> [u32; CONTEXT_LEN] {
        let content = &content[..content.len().min(CONTEXT_LEN - 2)];
        let mut out = [self.pad; CONTEXT_LEN];
        out[0] = BOS;
        out[1..=content.len()].copy_from_slice(content);
        out[content.len() + 1] = EOS;
        out
    }
}

/// GPT-2/CLIP byte-to-symbol table, in byte order 0..=255 re-ordered as CLIP does: printable
/// bytes first (at their own code point), then the rest mapped to U+0100 onwards.
fn byte_symbols() -> Vec<String> {
    let printable = |b: u32| (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
    let mut bs: Vec<u32> = (0..256).filter(|&b| printable(b)).collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256 {
        if !printable(b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    cs.into_iter().map(|c| char::from_u32(c).map(String::from).unwrap_or_default()).collect()
}
