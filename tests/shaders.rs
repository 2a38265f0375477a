//! Every shader file and every variant parses and validates with naga, with the capabilities its
//! compute path uses. A broken shader fails here with its file name and naga's message.

use naga::valid::{Capabilities, ValidationFlags, Validator};
use sdxl_web::gpu::registry::SHADERS;
use sdxl_web::gpu::Variant;

/// What the f32 path may use: core WebGPU (pack/unpack2x16float is core, naga files it under
/// SHADER_FLOAT16_IN_FLOAT32), subgroups natively; no f16 types. The f16 path adds shader-f16.
fn caps(f16: bool) -> Capabilities {
    let mut c = Capabilities::SHADER_FLOAT16_IN_FLOAT32 | Capabilities::SUBGROUP;
    if f16 {
        c |= Capabilities::SHADER_FLOAT16;
    }
    c
}

fn validate(v: &Variant) -> Result<(), String> {
    let src = v.source()?;
    let path = format!("shaders/{}.wgsl (variant {})", v.shader, v.key());
    let module = naga::front::wgsl::parse_str(&src)
        .map_err(|e| format!("{path}:\n{}", e.emit_to_string_with_path(&src, &path)))?;
    Validator::new(ValidationFlags::all(), caps(v.f16))
        .validate(&module)
        .map_err(|e| format!("{path}:\n{}", e.emit_to_string_with_path(&src, &path)))?;
    Ok(())
}

#[test]
fn every_variant_validates() {
    let variants = sdxl_web::ops::all_variants();
    assert!(!variants.is_empty());
    let errors: Vec<String> = variants.iter().filter_map(|v| validate(v).err()).collect();
    assert!(
        errors.is_empty(),
        "{} of {} shader variants failed naga validation:\n\n{}",
        errors.len(),
        variants.len(),
        errors.join("\n\n")
    );
}

#[test]
fn every_shader_file_is_registered_and_has_variants() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/shaders");
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .expect("shaders/ exists")
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".wgsl").map(str::to_owned))
        .collect();
    on_disk.sort();
    let mut registered: Vec<String> = SHADERS.iter().map(|s| s.name.to_owned()).collect();
    registered.sort();
    assert_eq!(on_disk, registered, "shaders/*.wgsl and gpu::registry::SHADERS differ");
    let variants = sdxl_web::ops::all_variants();
    for name in &registered {
        for f16 in [false, true] {
            assert!(
                variants.iter().any(|v| v.shader == name && v.f16 == f16),
                "shaders/{name}.wgsl has no {} variant in ops::all_variants()",
                if f16 { "f16" } else { "f32" }
            );
        }
    }
}

/// Each shader file starts with a header comment naming its bindings and dispatch shape.
#[test]
fn every_shader_has_a_header() {
    for s in SHADERS {
        let head: String = s.source.lines().take_while(|l| l.starts_with("//")).collect::<Vec<_>>().join("\n");
        assert!(
            head.contains("Bindings") && head.contains("Dispatch"),
            "shaders/{}.wgsl lacks a header comment with Bindings and Dispatch",
            s.name
        );
    }
}

/// The broken-shader path really reports the file and naga's words.
#[test]
fn a_broken_shader_is_reported_with_its_name() {
    let src = "fn main( { }";
    let err = naga::front::wgsl::parse_str(src).unwrap_err().emit_to_string_with_path(src, "shaders/broken.wgsl");
    assert!(err.contains("shaders/broken.wgsl") && err.contains("expected"), "{err}");
}
