//! Tokenizer parity with transformers' CLIPTokenizer as diffusers' SDXL pipeline loads it,
//! on the prompts of tests/fixtures/tokenizer_cases.json (written by gen_tokenizer.py).

use sdxl_web::prompt::{tokenize_prompt, Rating};
use sdxl_web::tokenizer::{SdxlTokenizers, Tokenizer, BOS, EOS};
use serde::Deserialize;

#[derive(Deserialize)]
struct Expected {
    /// `tok(prompt).input_ids`: bos, every token, eos.
    ids: Vec<u32>,
    /// `tok(prompt, padding="max_length", max_length=77, truncation=True).input_ids`.
    padded: Vec<u32>,
}

#[derive(Deserialize)]
struct Case {
    prompt: String,
    clip_l: Expected,
    clip_g: Expected,
}

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

fn fixture() -> Fixture {
    let text = include_str!("fixtures/tokenizer_cases.json");
    serde_json::from_str(text).expect("tokenizer_cases.json parses")
}

fn check(name: &str, tok: &Tokenizer, case: &Case, want: &Expected) -> Result<(), String> {
    let p = &case.prompt;
    let ids = tok.encode(p).map_err(|e| format!("{name} {p:?}: {e}"))?;
    let mut full = vec![BOS];
    full.extend(&ids);
    full.push(EOS);
    if full != want.ids {
        return Err(format!("{name} {p:?}:\n  got  {full:?}\n  want {:?}", want.ids));
    }
    let padded = tok.encode_padded(p).map_err(|e| format!("{name} {p:?}: {e}"))?;
    if padded[..] != want.padded[..] {
        return Err(format!("{name} {p:?} padded:\n  got  {padded:?}\n  want {:?}", want.padded));
    }
    Ok(())
}

#[test]
fn ids_match_transformers_for_both_encoders() {
    let f = fixture();
    assert!(f.cases.len() >= 30, "fixture has {} prompts", f.cases.len());
    let t = SdxlTokenizers::new().expect("tokenizers build");
    let mut failures = Vec::new();
    for case in &f.cases {
        for (name, tok, want) in [("clip_l", &t.clip_l, &case.clip_l), ("clip_g", &t.clip_g, &case.clip_g)] {
            if let Err(e) = check(name, tok, case, want) {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

/// The fixture exercises the traps it is meant to: "!" differs between the encoders, long
/// prompts exceed one chunk.
#[test]
fn fixture_covers_the_traps() {
    let f = fixture();
    assert!(f.cases.iter().any(|c| c.clip_l.ids.contains(&256) && c.clip_g.ids.contains(&0)));
    assert!(f.cases.iter().any(|c| c.clip_l.ids.len() != c.clip_g.ids.len()));
    assert!(f.cases.iter().any(|c| c.clip_l.ids.len() > 77 * 5));
}

/// For prompts without emphasis syntax or BREAK that fit in 75 tokens, the prompt path's one
/// chunk is exactly what diffusers feeds the encoders.
#[test]
fn plain_prompts_chunk_like_diffusers() {
    let f = fixture();
    let t = SdxlTokenizers::new().expect("tokenizers build");
    let mut checked = 0;
    for case in &f.cases {
        let p = &case.prompt;
        if p.contains(['(', ')', '[', ']', '\\', ':']) || p.contains("BREAK") || case.clip_g.ids.len() > 77 {
            continue;
        }
        for (tok, want) in [(&t.clip_l, &case.clip_l), (&t.clip_g, &case.clip_g)] {
            let chunks = tokenize_prompt(p, tok).expect("tokenizes");
            assert_eq!(chunks.len(), 1, "{p:?}");
            assert_eq!(chunks[0].ids[..], want.padded[..], "{p:?}");
            assert!(chunks[0].weights.iter().all(|&w| w == 1.0));
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} plain prompts");
    // Rating None leaves the text alone.
    assert_eq!(Rating::None.apply("x"), "x");
}
