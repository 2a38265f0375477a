//! Prompt text to token chunks: A1111 emphasis syntax, `BREAK`, long-prompt chunking, rating
//! keyword. CPU only; the text encoders consume the [`Chunk`]s.
//!
//! Emphasis follows A1111's `modules/prompt_parser.py` `parse_prompt_attention`:
//! `(x)` ×1.1, `[x]` ÷1.1, `(x:1.3)` ×1.3, nesting multiplies, `\(` `\)` `\[` `\]` `\\` are
//! literals, a lone `\` vanishes, an unmatched `)` or `]` is literal text, an unclosed `(` / `[`
//! applies to the end of the prompt, and adjacent runs of equal weight are merged before
//! tokenizing (so `(a)(b)` tokenizes as `ab`). One deliberate difference: A1111 keeps `BREAK` as a
//! pseudo-fragment of weight -1 that enclosing brackets rescale, after which it is no longer
//! recognised and is fed to CLIP as the word "break" with weight -1.1; here `BREAK` always breaks.
//!
//! Chunking follows A1111's `tokenize_line` without its comma back-tracking: every 75 tokens (or
//! a `BREAK`) close a chunk, which is laid out as diffusers/ComfyUI lay out a sequence,
//! `[bos, tokens.., eos, pad..]` (77 ids), bos/eos/pad weighted 1.0. A `BREAK` closes the current
//! chunk even when it is empty (so a leading `BREAK` gives an all-padding first chunk, as in A1111);
//! an empty prompt gives one all-padding chunk.

use std::str::FromStr;
use std::sync::OnceLock;

use regex::Regex;

use crate::tokenizer::{SdxlTokenizers, Tokenizer, CONTEXT_LEN};
use crate::{Error, Result};

/// Prompt tokens per chunk: 77 positions less bos and eos.
pub const CHUNK_TOKENS: usize = CONTEXT_LEN - 2;
/// Longest prompt accepted, in bytes: far beyond any real prompt (2,000+ characters are
/// fine), small enough that tokenizing can never stall the page.
pub const MAX_PROMPT_BYTES: usize = 256 * 1024;

const ROUND_MULT: f64 = 1.1;
const SQUARE_MULT: f64 = 1.0 / 1.1;

/// One piece of a parsed prompt.
#[derive(Clone, Debug, PartialEq)]
pub enum Fragment {
    /// Text and its emphasis multiplier (f64, as A1111 computes it).
    Text { text: String, weight: f64 },
    /// The `BREAK` keyword: start a new chunk.
    Break,
}

/// One 77-position encoder input: ids and the per-position emphasis weights.
#[derive(Clone, Debug, PartialEq)]
pub struct Chunk {
    pub ids: [u32; CONTEXT_LEN],
    pub weights: [f32; CONTEXT_LEN],
}

impl Chunk {
    /// The chunk of an empty prompt for `tok`: `[bos, eos, pad..]`, all weights 1.
    pub fn empty(tok: &Tokenizer) -> Self {
        Self::from_tokens(tok, &[])
    }

    fn from_tokens(tok: &Tokenizer, toks: &[(u32, f32)]) -> Self {
        let ids: Vec<u32> = toks.iter().map(|t| t.0).collect();
        let mut weights = [1.0; CONTEXT_LEN];
        for (w, t) in weights[1..].iter_mut().zip(toks) {
            *w = t.1;
        }
        Self { ids: tok.wrap(&ids), weights }
    }
}

/// The rating keyword of the Nekoray-XL model card, appended to the prompt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rating {
    #[default]
    None,
    Sensitive,
    Questionable,
    Explicit,
}

impl Rating {
    /// `sensitive-rated` etc.; `None` for [`Rating::None`].
    pub fn keyword(self) -> Option<&'static str> {
        match self {
            Rating::None => None,
            Rating::Sensitive => Some("sensitive-rated"),
            Rating::Questionable => Some("questionable-rated"),
            Rating::Explicit => Some("explicit-rated"),
        }
    }

    /// `prompt` with `, <keyword>` appended (just the keyword for an empty prompt; no second
    /// comma when the prompt already ends with one). Appended as text, so like typing it.
    pub fn apply(self, prompt: &str) -> String {
        let Some(kw) = self.keyword() else {
            return prompt.to_string();
        };
        let p = prompt.trim_end();
        if p.is_empty() {
            kw.to_string()
        } else if p.ends_with(',') {
            format!("{p} {kw}")
        } else {
            format!("{p}, {kw}")
        }
    }
}

impl FromStr for Rating {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" | "" => Ok(Rating::None),
            "sensitive" => Ok(Rating::Sensitive),
            "questionable" => Ok(Rating::Questionable),
            "explicit" => Ok(Rating::Explicit),
            other => Err(Error::Input(format!("rating {other:?}: expected none, sensitive, questionable or explicit"))),
        }
    }
}

fn re_attention() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    // A1111's re_attention, alternatives in the same order (leftmost-first, like Python's re).
    RE.get_or_init(|| {
        Regex::new(r"\\\(|\\\)|\\\[|\\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|\]|[^\\()\[\]:]+|:")
            .expect("static regex")
    })
}

fn re_break() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"\s*\bBREAK\b\s*").expect("static regex"))
}

/// Parse A1111 emphasis syntax into text fragments with weights and `BREAK`s.
///
/// Fails only on a weight A1111 cannot read either (`(x:1.2.3)`) or a prompt over
/// [`MAX_PROMPT_BYTES`].
pub fn parse_prompt_attention(text: &str) -> Result<Vec<Fragment>> {
    check_len(text)?;
    // (text, weight) with None for BREAK: brackets never rescale a BREAK.
    let mut res: Vec<(String, Option<f64>)> = Vec::new();
    let mut round: Vec<usize> = Vec::new();
    let mut square: Vec<usize> = Vec::new();
    let multiply = |res: &mut Vec<(String, Option<f64>)>, start: usize, m: f64| {
        for (_, w) in res[start..].iter_mut() {
            if let Some(w) = w {
                *w *= m;
            }
        }
    };
    for caps in re_attention().captures_iter(text) {
        let t = &caps[0];
        let weight = caps.get(1).map(|m| m.as_str());
        if let Some(lit) = t.strip_prefix('\\') {
            res.push((lit.to_string(), Some(1.0)));
        } else if t == "(" {
            round.push(res.len());
        } else if t == "[" {
            square.push(res.len());
        } else if let (Some(w), Some(&start)) = (weight, round.last()) {
            let w: f64 =
                w.parse().map_err(|_| Error::Input(format!("prompt: cannot read emphasis weight {w:?} in {t:?}")))?;
            round.pop();
            multiply(&mut res, start, w);
        } else if t == ")" && !round.is_empty() {
            let start = round.pop().unwrap_or(0);
            multiply(&mut res, start, ROUND_MULT);
        } else if t == "]" && !square.is_empty() {
            let start = square.pop().unwrap_or(0);
            multiply(&mut res, start, SQUARE_MULT);
        } else {
            for (i, part) in re_break().split(t).enumerate() {
                if i > 0 {
                    res.push((String::new(), None));
                }
                res.push((part.to_string(), Some(1.0)));
            }
        }
    }
    for start in round {
        multiply(&mut res, start, ROUND_MULT);
    }
    for start in square {
        multiply(&mut res, start, SQUARE_MULT);
    }
    if res.is_empty() {
        res.push((String::new(), Some(1.0)));
    }
    // Merge runs of identical weights (exact f64 equality, as A1111).
    let mut out: Vec<Fragment> = Vec::with_capacity(res.len());
    for (text, w) in res {
        match (w, out.last_mut()) {
            (None, _) => out.push(Fragment::Break),
            (Some(w), Some(Fragment::Text { text: prev, weight })) if *weight == w => prev.push_str(&text),
            (Some(weight), _) => out.push(Fragment::Text { text, weight }),
        }
    }
    Ok(out)
}

fn check_len(text: &str) -> Result<()> {
    if text.len() > MAX_PROMPT_BYTES {
        return Err(Error::Input(format!("prompt is {} bytes, the limit is {MAX_PROMPT_BYTES}", text.len())));
    }
    Ok(())
}

/// Parse `text` and tokenize it with `tok` into 77-position chunks (see the module docs).
pub fn tokenize_prompt(text: &str, tok: &Tokenizer) -> Result<Vec<Chunk>> {
    let frags = parse_prompt_attention(text)?;
    let mut chunks = Vec::new();
    let mut cur: Vec<(u32, f32)> = Vec::with_capacity(CHUNK_TOKENS);
    for f in frags {
        match f {
            Fragment::Break => {
                chunks.push(Chunk::from_tokens(tok, &cur));
                cur.clear();
            }
            Fragment::Text { text, weight } => {
                let ids = tok.encode(&text)?;
                if ids.is_empty() {
                    continue;
                }
                let w = weight as f32;
                if !w.is_finite() {
                    return Err(Error::Input(format!(
                        "prompt: emphasis weight of {text:?} is {weight}, too many nested brackets?"
                    )));
                }
                for id in ids {
                    if cur.len() == CHUNK_TOKENS {
                        chunks.push(Chunk::from_tokens(tok, &cur));
                        cur.clear();
                    }
                    cur.push((id, w));
                }
            }
        }
    }
    if !cur.is_empty() || chunks.is_empty() {
        chunks.push(Chunk::from_tokens(tok, &cur));
    }
    Ok(chunks)
}

/// Append empty chunks ([`Chunk::empty`]) to the shorter list until both have as many chunks.
pub fn pad_to_same_len(a: &mut Vec<Chunk>, b: &mut Vec<Chunk>, tok: &Tokenizer) {
    let n = a.len().max(b.len());
    for v in [a, b] {
        v.resize_with(n, || Chunk::empty(tok));
    }
}

/// A prompt tokenized for both SDXL encoders, with equal chunk counts (the two contexts are
/// concatenated along channels, so their sequences must line up).
#[derive(Clone, Debug, PartialEq)]
pub struct PromptTokens {
    pub clip_l: Vec<Chunk>,
    pub clip_g: Vec<Chunk>,
}

impl PromptTokens {
    /// Apply `rating`, then tokenize for both encoders. bigG can need more chunks than CLIP-L
    /// (every `!` is its own token there: `!!` is 1 CLIP-L token but 2 bigG tokens); the shorter
    /// list is padded with empty chunks.
    pub fn new(text: &str, rating: Rating, toks: &SdxlTokenizers) -> Result<Self> {
        check_len(text)?;
        let text = rating.apply(text);
        let mut clip_l = tokenize_prompt(&text, &toks.clip_l)?;
        let mut clip_g = tokenize_prompt(&text, &toks.clip_g)?;
        let n = clip_l.len().max(clip_g.len());
        clip_l.resize_with(n, || Chunk::empty(&toks.clip_l));
        clip_g.resize_with(n, || Chunk::empty(&toks.clip_g));
        Ok(Self { clip_l, clip_g })
    }

    /// Chunks per encoder (equal for both).
    pub fn chunk_count(&self) -> usize {
        self.clip_l.len()
    }

    /// Pad a positive and a negative prompt to the same chunk count with empty chunks, as
    /// A1111 pads the shorter conditioning with the empty prompt's.
    pub fn pad_pair(pos: &mut Self, neg: &mut Self, toks: &SdxlTokenizers) {
        pad_to_same_len(&mut pos.clip_l, &mut neg.clip_l, &toks.clip_l);
        pad_to_same_len(&mut pos.clip_g, &mut neg.clip_g, &toks.clip_g);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::{BOS, EOS};

    /// Weights are products of a few f64 factors; A1111's own doctest prints them to ~1e-16.
    const WEIGHT_TOL: f64 = 1e-12;
    /// "a" is one token, `a</w>`, in both vocabularies.
    const A: u32 = 320;
    /// "," is `,</w>`.
    const COMMA: u32 = 267;

    fn toks() -> &'static SdxlTokenizers {
        static T: OnceLock<SdxlTokenizers> = OnceLock::new();
        T.get_or_init(|| SdxlTokenizers::new().expect("tokenizers"))
    }

    fn t(text: &str, weight: f64) -> Fragment {
        Fragment::Text { text: text.into(), weight }
    }

    fn assert_frags(got: &[Fragment], want: &[Fragment]) {
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            match (g, w) {
                (Fragment::Text { text: a, weight: x }, Fragment::Text { text: b, weight: y }) => {
                    assert_eq!(a, b, "{got:?} vs {want:?}");
                    assert!((x - y).abs() < WEIGHT_TOL, "{a:?}: weight {x} vs {y}");
                }
                (Fragment::Break, Fragment::Break) => {}
                _ => panic!("{got:?} vs {want:?}"),
            }
        }
    }

    fn parse(s: &str) -> Vec<Fragment> {
        parse_prompt_attention(s).expect("parses")
    }

    #[test]
    fn a1111_doctests() {
        assert_frags(&parse("normal text"), &[t("normal text", 1.0)]);
        assert_frags(&parse("an (important) word"), &[t("an ", 1.0), t("important", 1.1), t(" word", 1.0)]);
        assert_frags(&parse("(unbalanced"), &[t("unbalanced", 1.1)]);
        assert_frags(&parse(r"\(literal\]"), &[t("(literal]", 1.0)]);
        assert_frags(&parse("(unnecessary)(parens)"), &[t("unnecessaryparens", 1.1)]);
        assert_frags(
            &parse("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky)))."),
            &[
                t("a ", 1.0),
                t("house", 1.3 * 1.1 * 1.1),
                t(" ", 1.1),
                t("on", 1.0),
                t(" a ", 1.1),
                t("hill", 0.55),
                t(", sun, ", 1.1),
                t("sky", 1.1 * 1.1 * 1.1 * 1.1),
                t(".", 1.1),
            ],
        );
    }

    #[test]
    fn emphasis_forms() {
        assert_frags(&parse("((tag))"), &[t("tag", 1.21)]);
        assert_frags(&parse("[tag]"), &[t("tag", 1.0 / 1.1)]);
        assert_frags(&parse("[[tag]]"), &[t("tag", 1.0 / 1.21)]);
        assert_frags(&parse("(tag:1.3)"), &[t("tag", 1.3)]);
        // Spaces around the weight are allowed (A1111 >= 1.6).
        assert_frags(&parse("(tag : 0.5 )"), &[t("tag ", 0.5)]);
        assert_frags(&parse("(tag:-1)"), &[t("tag", -1.0)]);
        assert_frags(&parse("((tag:1.5))"), &[t("tag", 1.65)]);
        assert_frags(&parse("[(tag)]"), &[t("tag", 1.0)]);
        // Not a weight: plain text inside the brackets.
        assert_frags(&parse("(tag:abc)"), &[t("tag:abc", 1.1)]);
        assert!(parse_prompt_attention("(tag:1.2.3)").is_err());
    }

    #[test]
    fn escapes() {
        assert_frags(&parse(r"mejiro mcqueen \(umamusume\)"), &[t("mejiro mcqueen (umamusume)", 1.0)]);
        assert_frags(&parse(r"\[x\] \\ y"), &[t(r"[x] \ y", 1.0)]);
        // A backslash before anything else disappears, as in A1111.
        assert_frags(&parse(r"a\b"), &[t("ab", 1.0)]);
        assert_frags(&parse(r"end\"), &[t("end", 1.0)]);
        assert_frags(&parse(r"(\(x\))"), &[t("(x)", 1.1)]);
    }

    #[test]
    fn unbalanced_brackets() {
        assert_frags(&parse("a)b"), &[t("a)b", 1.0)]);
        assert_frags(&parse("]x["), &[t("]x", 1.0)]);
        assert_frags(&parse("x:1.5) y"), &[t("x:1.5) y", 1.0)]);
        assert_frags(&parse("(a:1.2"), &[t("a:1.2", 1.1)]);
        assert_frags(&parse("((a) b"), &[t("a", 1.21), t(" b", 1.1)]);
        assert_frags(&parse("[a (b"), &[t("a ", 1.0 / 1.1), t("b", 1.0)]);
        assert_frags(&parse("))]]((["), &[t("))]]", 1.0)]);
        assert_frags(&parse(""), &[t("", 1.0)]);
        // Nesting deep enough to overflow f32 is an error, never inf weights.
        let deep = format!("{}a{}", "(".repeat(2000), ")".repeat(2000));
        assert!(tokenize_prompt(&deep, &toks().clip_l).is_err());
        let ok = format!("{}a{}", "(".repeat(100), ")".repeat(100));
        let c = tokenize_prompt(&ok, &toks().clip_l).expect("100 levels");
        assert!((c[0].weights[1] as f64 / 1.1f64.powi(100) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn break_keyword() {
        assert_frags(&parse("a BREAK b"), &[t("a", 1.0), Fragment::Break, t("b", 1.0)]);
        assert_frags(&parse("aBREAK b, break, BREAKING"), &[t("aBREAK b, break, BREAKING", 1.0)]);
        // BREAK inside brackets still breaks (A1111 would feed "break" with weight -1.1).
        assert_frags(&parse("(a BREAK b)"), &[t("a", 1.1), Fragment::Break, t("b", 1.1)]);
        let l = &toks().clip_l;
        let c = tokenize_prompt("a BREAK a, a", l).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(&c[0].ids[..4], &[BOS, A, EOS, EOS]);
        assert_eq!(&c[1].ids[..6], &[BOS, A, COMMA, A, EOS, EOS]);
        // Leading BREAK: an empty first chunk; trailing BREAK: nothing.
        let c = tokenize_prompt("BREAK a", l).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0], Chunk::empty(l));
        assert_eq!(tokenize_prompt("a BREAK", l).unwrap().len(), 1);
        assert_eq!(tokenize_prompt("a BREAK BREAK a", l).unwrap().len(), 3);
        // 75 tokens then BREAK: no empty chunk in between.
        let p = format!("{}BREAK a", "a ".repeat(75));
        let c = tokenize_prompt(&p, l).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(&c[1].ids[..3], &[BOS, A, EOS]);
    }

    fn check_full(c: &Chunk) {
        assert_eq!(c.ids[0], BOS);
        assert!(c.ids[1..76].iter().all(|&i| i == A));
        assert_eq!(c.ids[76], EOS);
    }

    #[test]
    fn chunking_75_76_150() {
        for tok in [&toks().clip_l, &toks().clip_g] {
            let pad = tok.pad_id();
            let c = tokenize_prompt(&"a ".repeat(75), tok).unwrap();
            assert_eq!(c.len(), 1);
            check_full(&c[0]);

            let c = tokenize_prompt(&"a ".repeat(76), tok).unwrap();
            assert_eq!(c.len(), 2);
            check_full(&c[0]);
            assert_eq!(&c[1].ids[..3], &[BOS, A, EOS]);
            assert!(c[1].ids[3..].iter().all(|&i| i == pad));

            let c = tokenize_prompt(&"a ".repeat(150), tok).unwrap();
            assert_eq!(c.len(), 2);
            check_full(&c[0]);
            check_full(&c[1]);

            assert_eq!(tokenize_prompt(&"a ".repeat(151), tok).unwrap().len(), 3);
            let e = tokenize_prompt("  \n\t ", tok).unwrap();
            assert_eq!(e, vec![Chunk::empty(tok)]);
            assert_eq!(&e[0].ids[..3], &[BOS, EOS, pad]);
        }
    }

    #[test]
    fn per_token_weights() {
        let l = &toks().clip_l;
        let c = tokenize_prompt("(a) [a] (a:1.5) a", l).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(&c[0].ids[..6], &[BOS, A, A, A, A, EOS]);
        let w = &c[0].weights;
        assert_eq!(&w[..6], &[1.0, 1.1f64 as f32, (1.0 / 1.1f64) as f32, 1.5, 1.0, 1.0]);
        assert!(w[6..].iter().all(|&x| x == 1.0));
        // Weights follow their tokens across a chunk boundary.
        let p = format!("{}(a:0.5)", "a ".repeat(75));
        let c = tokenize_prompt(&p, l).unwrap();
        assert_eq!(c.len(), 2);
        assert!(c[0].weights.iter().all(|&x| x == 1.0));
        assert_eq!(&c[1].weights[..3], &[1.0, 0.5, 1.0]);
    }

    #[test]
    fn bang_is_pad_for_bigg() {
        let tk = toks();
        let p = PromptTokens::new("a!", Rating::None, tk).unwrap();
        assert_eq!(&p.clip_l[0].ids[..5], &[BOS, A, 256, EOS, EOS]);
        assert_eq!(&p.clip_g[0].ids[..5], &[BOS, A, 0, EOS, 0]);
        // "!!" is one CLIP-L token but two bigG tokens: 40 of them need 2 bigG chunks.
        let p = PromptTokens::new(&"!! ".repeat(40), Rating::None, tk).unwrap();
        assert_eq!(p.chunk_count(), 2);
        assert_eq!(p.clip_g.len(), 2);
        assert_eq!(p.clip_l[1], Chunk::empty(&tk.clip_l));
        // 80 bigG tokens: 75 + 5, each `!` id 0, then eos and pad 0.
        assert_eq!(&p.clip_g[1].ids[..8], &[BOS, 0, 0, 0, 0, 0, EOS, 0]);
        assert_eq!(&p.clip_l[0].ids[40..42], &[748, EOS]);
    }

    #[test]
    fn pad_positive_negative() {
        let tk = toks();
        let mut pos = PromptTokens::new(&"a ".repeat(150), Rating::None, tk).unwrap();
        let mut neg = PromptTokens::new("", Rating::None, tk).unwrap();
        assert_eq!((pos.chunk_count(), neg.chunk_count()), (2, 1));
        PromptTokens::pad_pair(&mut pos, &mut neg, tk);
        assert_eq!((pos.chunk_count(), neg.chunk_count()), (2, 2));
        assert_eq!(neg.clip_g.len(), 2);
        assert_eq!(neg.clip_l[1], Chunk::empty(&tk.clip_l));
        assert_eq!(&neg.clip_g[1].ids[..3], &[BOS, EOS, 0]);
        // Already equal: untouched.
        let before = pos.clone();
        let mut other = PromptTokens::new(&"a ".repeat(100), Rating::None, tk).unwrap();
        PromptTokens::pad_pair(&mut pos, &mut other, tk);
        assert_eq!(pos, before);
        assert_eq!(other.chunk_count(), 2);
    }

    #[test]
    fn rating_suffix() {
        assert_eq!(Rating::None.apply("1girl, solo"), "1girl, solo");
        assert_eq!(Rating::Sensitive.apply("1girl, solo"), "1girl, solo, sensitive-rated");
        assert_eq!(Rating::Questionable.apply("1girl, solo, "), "1girl, solo, questionable-rated");
        assert_eq!(Rating::Explicit.apply("  "), "explicit-rated");
        assert_eq!("Explicit".parse::<Rating>().unwrap(), Rating::Explicit);
        assert_eq!("none".parse::<Rating>().unwrap(), Rating::None);
        assert!("safe".parse::<Rating>().is_err());
        let tk = toks();
        let plain = PromptTokens::new("a, sensitive-rated", Rating::None, tk).unwrap();
        let rated = PromptTokens::new("a", Rating::Sensitive, tk).unwrap();
        assert_eq!(plain, rated);
        // "sensitive-rated" = sensitive, -, rated.
        let ids = tk.clip_l.encode("sensitive-rated").unwrap();
        assert_eq!(&rated.clip_l[0].ids[3..3 + ids.len()], &ids[..]);
    }

    #[test]
    fn never_panics() {
        let tk = toks();
        let long = "masterpiece, (best quality:1.2), [[lowres]], \\(x\\), BREAK ".repeat(60);
        assert!(long.len() > 2000);
        let inputs = [
            "",
            " ",
            "\n\n",
            "(",
            ")",
            "[",
            "]",
            ":",
            "\\",
            "(((",
            "]]]",
            "(:)",
            "(:1)",
            "[:1.2]",
            "(a:)",
            "(a:.)",
            "(a:+)",
            "((a:1.2)",
            "a:1.2)",
            "BREAK",
            "BREAK BREAK",
            "!!!",
            "\u{0}",
            "\u{feff}\u{200b}",
            "<|endoftext|>",
            "(<|startoftext|>:2)",
            &long,
        ];
        for p in inputs {
            for r in [Rating::None, Rating::Explicit] {
                if let Ok(t) = PromptTokens::new(p, r, tk) {
                    assert!(t.chunk_count() >= 1);
                    assert_eq!(t.clip_l.len(), t.clip_g.len());
                }
            }
        }
        let t = PromptTokens::new(&long, Rating::None, tk).unwrap();
        assert!(t.chunk_count() > 10);
        let huge = "a".repeat(MAX_PROMPT_BYTES + 1);
        assert!(matches!(PromptTokens::new(&huge, Rating::None, tk), Err(Error::Input(_))));
    }
}
