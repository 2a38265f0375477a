//! The diffusers folder layout (`unet/`, `vae/`, `text_encoder/`, `text_encoder_2/`), mapped onto
//! the canonical single-file names as diffusers' `scripts/convert_diffusers_to_original_sdxl.py`
//! does, generalised to any level count / res blocks per level so small test models share the
//! code path: UNet down/mid/up blocks → `input_blocks`/`middle_block`/`output_blocks`; VAE
//! `up_blocks.i` → `up.{L-1-i}`; bigG `q/k/v_proj` → row blocks of `in_proj_*`, and
//! `text_projection.weight` (a Linear, x·Wᵀ) → `text_projection` = Wᵀ (x·P).

use super::{single_file, Component, Header, Route, TensorEntry};
use crate::{Error, Result};

/// Which diffusers component a lone file looks like (for error messages).
pub fn guess_component(h: &Header) -> Option<Component> {
    let has = |p: &str| h.tensors.iter().any(|t| t.name.starts_with(p));
    if has("down_blocks.") && has("conv_in.") {
        Some(Component::Unet)
    } else if has("encoder.down_blocks.") || has("decoder.up_blocks.") {
        Some(Component::Vae)
    } else if has("text_projection.weight") && (has("text_model.") || has("encoder.layers.")) {
        Some(Component::TextEncoder2)
    } else if has("text_model.") || (has("embeddings.token_embedding.") && has("encoder.layers.")) {
        Some(Component::TextEncoder)
    } else {
        None
    }
}

fn route(comp: Component, t: &TensorEntry, name: String) -> Route {
    Route { comp, name, elem_offset: 0, shape: t.shape.clone(), transpose: false }
}

/// `a.b.c` → ("a", "b.c").
fn head(s: &str) -> (&str, &str) {
    s.split_once('.').unwrap_or((s, ""))
}

/// "{i}.{rest}" → (i, rest)
fn index(s: &str) -> Option<(usize, &str)> {
    let (i, rest) = head(s);
    Some((i.parse().ok()?, rest))
}

pub fn routes(file: &str, comp: Component, h: &Header) -> Result<Vec<Option<Route>>> {
    if let Some(k) = single_file::lora_key(h) {
        return Err(Error::Weights(format!(
            "{file} looks like a LoRA (keys like '{k}'), not a diffusers {}",
            comp.name()
        )));
    }
    let looks = guess_component(h);
    let ok = match comp {
        // bigG also has text_model.*; CLIP-L has no text_projection.
        Component::TextEncoder => matches!(looks, Some(Component::TextEncoder)),
        c => looks == Some(c),
    };
    if !ok {
        let what =
            looks.map(|c| format!("a diffusers {}", c.name())).unwrap_or_else(|| "no diffusers component".into());
        return Err(Error::Weights(format!(
            "{file}: expected a diffusers {} file but its tensors look like {what}",
            comp.name()
        )));
    }
    Ok(match comp {
        Component::Unet => unet_routes(h),
        Component::Vae => vae_routes_prefixed(h, "")?,
        Component::TextEncoder => h
            .tensors
            .iter()
            .map(|t| {
                let n = with_text_model(&t.name);
                (n != "text_model.embeddings.position_ids").then(|| route(comp, t, n))
            })
            .collect(),
        Component::TextEncoder2 => h.tensors.iter().map(open_clip_route).collect(),
    })
}

fn unet_res(rest: &str) -> String {
    let (first, tail) = head(rest);
    let m = match first {
        "norm1" => "in_layers.0",
        "conv1" => "in_layers.2",
        "norm2" => "out_layers.0",
        "conv2" => "out_layers.3",
        "time_emb_proj" => "emb_layers.1",
        "conv_shortcut" => "skip_connection",
        other => other,
    };
    format!("{m}.{tail}")
}

fn unet_routes(h: &Header) -> Vec<Option<Route>> {
    let has = |p: &str| h.tensors.iter().any(|t| t.name.starts_with(p));
    let lpb = (0..).take_while(|j| has(&format!("down_blocks.0.resnets.{j}."))).count();
    let per = lpb + 1;
    h.tensors.iter().map(|t| Some(route(Component::Unet, t, unet_name(&t.name, per, &has)))).collect()
}

/// Diffusers UNet name → ldm name; unknown names pass through (and then fail as unexpected).
pub fn unet_name(n: &str, per: usize, has: &dyn Fn(&str) -> bool) -> String {
    const TOP: [(&str, &str); 7] = [
        ("time_embedding.linear_1.", "time_embed.0."),
        ("time_embedding.linear_2.", "time_embed.2."),
        ("add_embedding.linear_1.", "label_emb.0.0."),
        ("add_embedding.linear_2.", "label_emb.0.2."),
        ("conv_in.", "input_blocks.0.0."),
        ("conv_norm_out.", "out.0."),
        ("conv_out.", "out.2."),
    ];
    for (d, o) in TOP {
        if let Some(rest) = n.strip_prefix(d) {
            return format!("{o}{rest}");
        }
    }
    let mapped = (|| {
        let (blk, rest) = head(n);
        match blk {
            "down_blocks" => {
                let (i, rest) = index(rest)?;
                let (kind, rest) = head(rest);
                if kind == "downsamplers" {
                    let rest = rest.strip_prefix("0.conv.")?;
                    return Some(format!("input_blocks.{}.0.op.{rest}", (i + 1) * per));
                }
                let (j, rest) = index(rest)?;
                match kind {
                    "resnets" => Some(format!("input_blocks.{}.0.{}", 1 + i * per + j, unet_res(rest))),
                    "attentions" => Some(format!("input_blocks.{}.1.{rest}", 1 + i * per + j)),
                    _ => None,
                }
            }
            "mid_block" => {
                let (kind, rest) = head(rest);
                let (j, rest) = index(rest)?;
                match kind {
                    "resnets" => Some(format!("middle_block.{}.{}", 2 * j, unet_res(rest))),
                    "attentions" if j == 0 => Some(format!("middle_block.1.{rest}")),
                    _ => None,
                }
            }
            "up_blocks" => {
                let (i, rest) = index(rest)?;
                let (kind, rest) = head(rest);
                if kind == "upsamplers" {
                    let rest = rest.strip_prefix("0.conv.")?;
                    // The upsampler follows the attention when the level has one.
                    let sub = if has(&format!("up_blocks.{i}.attentions.")) { 2 } else { 1 };
                    return Some(format!("output_blocks.{}.{sub}.conv.{rest}", i * per + per - 1));
                }
                let (j, rest) = index(rest)?;
                match kind {
                    "resnets" => Some(format!("output_blocks.{}.0.{}", i * per + j, unet_res(rest))),
                    "attentions" => Some(format!("output_blocks.{}.1.{rest}", i * per + j)),
                    _ => None,
                }
            }
            _ => None,
        }
    })();
    mapped.unwrap_or_else(|| n.to_string())
}

fn vae_res(rest: &str) -> String {
    match rest.strip_prefix("conv_shortcut.") {
        Some(t) => format!("nin_shortcut.{t}"),
        None => rest.to_string(),
    }
}

/// Diffusers VAE routes; `prefix` is stripped first (`vae.` or `first_stage_model.` in some
/// separately distributed VAE files). Tensors outside the prefix are skipped.
pub fn vae_routes_prefixed(h: &Header, prefix: &str) -> Result<Vec<Option<Route>>> {
    let has = |p: &str| h.tensors.iter().any(|t| t.name.starts_with(&format!("{prefix}{p}")));
    let levels = (0..).take_while(|i| has(&format!("decoder.up_blocks.{i}."))).count();
    Ok(h.tensors
        .iter()
        .map(|t| {
            let rel = t.name.strip_prefix(prefix)?;
            Some(route(Component::Vae, t, vae_name(rel, levels)))
        })
        .collect())
}

fn vae_name(n: &str, levels: usize) -> String {
    let mapped = (|| {
        let (part, rest) = head(n);
        if part == "quant_conv" || part == "post_quant_conv" {
            return Some(n.to_string());
        }
        if part != "encoder" && part != "decoder" {
            return None;
        }
        let (blk, rest) = head(rest);
        match blk {
            "conv_in" | "conv_out" => Some(n.to_string()),
            "conv_norm_out" => Some(format!("{part}.norm_out.{rest}")),
            "down_blocks" => {
                let (i, rest) = index(rest)?;
                let (kind, rest) = head(rest);
                match kind {
                    "resnets" => {
                        let (j, rest) = index(rest)?;
                        Some(format!("{part}.down.{i}.block.{j}.{}", vae_res(rest)))
                    }
                    "downsamplers" => {
                        Some(format!("{part}.down.{i}.downsample.conv.{}", rest.strip_prefix("0.conv.")?))
                    }
                    _ => None,
                }
            }
            "up_blocks" => {
                let (i, rest) = index(rest)?;
                // Diffusers counts decoder blocks from the lowest resolution; ldm by level.
                let lv = levels.checked_sub(1 + i)?;
                let (kind, rest) = head(rest);
                match kind {
                    "resnets" => {
                        let (j, rest) = index(rest)?;
                        Some(format!("{part}.up.{lv}.block.{j}.{}", vae_res(rest)))
                    }
                    "upsamplers" => Some(format!("{part}.up.{lv}.upsample.conv.{}", rest.strip_prefix("0.conv.")?)),
                    _ => None,
                }
            }
            "mid_block" => {
                let (kind, rest) = head(rest);
                let (j, rest) = index(rest)?;
                match kind {
                    "resnets" => Some(format!("{part}.mid.block_{}.{}", j + 1, vae_res(rest))),
                    "attentions" if j == 0 => {
                        let (sub, tail) = head(rest);
                        let m = match sub {
                            "group_norm" => "norm",
                            "to_q" | "query" => "q",
                            "to_k" | "key" => "k",
                            "to_v" | "value" => "v",
                            "proj_attn" => "proj_out",
                            "to_out" => {
                                return Some(format!("{part}.mid.attn_1.proj_out.{}", tail.strip_prefix("0.")?))
                            }
                            _ => return None,
                        };
                        Some(format!("{part}.mid.attn_1.{m}.{tail}"))
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    })();
    mapped.unwrap_or_else(|| n.to_string())
}

/// transformers ≥ 5 saves `CLIPTextModel` without the `text_model.` prefix that every earlier
/// version (and so every published SDXL folder) has; accept both.
pub fn with_text_model(n: &str) -> String {
    if ["embeddings.", "encoder.", "final_layer_norm."].iter().any(|p| n.starts_with(p)) {
        format!("text_model.{n}")
    } else {
        n.to_string()
    }
}

fn open_clip_route(t: &TensorEntry) -> Option<Route> {
    let c = Component::TextEncoder2;
    let full = with_text_model(&t.name);
    let n = full.as_str();
    let simple = |name: &str| Some(route(c, t, name.to_string()));
    match n {
        "text_model.embeddings.position_ids" => return None,
        "text_model.embeddings.token_embedding.weight" => return simple("token_embedding.weight"),
        "text_model.embeddings.position_embedding.weight" => return simple("positional_embedding"),
        "text_model.final_layer_norm.weight" => return simple("ln_final.weight"),
        "text_model.final_layer_norm.bias" => return simple("ln_final.bias"),
        "text_projection.weight" => {
            // Linear weight [proj, hidden]; OpenCLIP's parameter is its transpose [hidden, proj].
            let mut shape = t.shape.clone();
            shape.reverse();
            return Some(Route {
                comp: c,
                name: "text_projection".into(),
                elem_offset: 0,
                shape,
                transpose: t.shape.len() == 2,
            });
        }
        _ => {}
    }
    let mapped = (|| {
        let rest = n.strip_prefix("text_model.encoder.layers.")?;
        let (i, rest) = index(rest)?;
        let p = format!("transformer.resblocks.{i}");
        for (k, qkv) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
            if let Some(kind) = rest.strip_prefix(&format!("self_attn.{qkv}.")) {
                let name = format!("{p}.attn.in_proj_{kind}");
                // Rows q, then k, then v (torch.cat order in the conversion script).
                let numel: u64 = t.shape.iter().map(|&d| d as u64).product();
                return Some(Route {
                    comp: c,
                    name,
                    elem_offset: k as u64 * numel,
                    shape: t.shape.clone(),
                    transpose: false,
                });
            }
        }
        const MAP: [(&str, &str); 5] = [
            ("self_attn.out_proj.", "attn.out_proj."),
            ("layer_norm1.", "ln_1."),
            ("layer_norm2.", "ln_2."),
            ("mlp.fc1.", "mlp.c_fc."),
            ("mlp.fc2.", "mlp.c_proj."),
        ];
        MAP.iter().find_map(|(d, o)| rest.strip_prefix(d).map(|tail| route(c, t, format!("{p}.{o}{tail}"))))
    })();
    Some(mapped.unwrap_or_else(|| route(c, t, n.to_string())))
}
