//! The one place WGSL enters the crate: every `shaders/*.wgsl` file through `include_str!`, plus
//! the one small templating step that makes variants.
//!
//! A variant is a shader file with a generated prelude:
//! - the compute path: `enable f16;` and `alias ct = f16;` with shader-f16, `alias ct = f32;`
//!   without. f16 *storage* is always `array<u32>` (two halves per word) on both paths, read with
//!   `unpack_h2` / written with `pack_h2`, so buffers are identical whichever path runs.
//!   (naga 30 mistypes `bitcast<vec2<f16>>(u32)`, hence the f16 path converts through
//!   `unpack2x16float` too.)
//! - `Def`s: `const NAME = VALUE;` or `alias NAME = TYPE;` lines (tile sizes, activation types).
//!
//! Numeric knobs that need no type change should prefer WGSL `override` constants.

/// A shader file known to the registry.
pub struct ShaderFile {
    pub name: &'static str,
    pub source: &'static str,
}

macro_rules! shader {
    ($name:literal) => {
        ShaderFile {
            name: $name,
            source: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/", $name, ".wgsl")),
        }
    };
}

/// Every shader file; `tests/shaders.rs` checks this list matches the `shaders/` folder.
pub static SHADERS: &[ShaderFile] = &[
    shader!("smoke"),
    shader!("peak"),
    shader!("matmul"),
    shader!("conv"),
    shader!("elementwise"),
    shader!("norm"),
    shader!("attention"),
];

/// Shaders whose kernels keep every buffer index in range by their own logic (tested in
/// tests/ops_*.rs), compiled natively without wgpu's runtime bounds checks (`Gpu::pipeline`).
pub static TRUSTED: &[&str] = &["peak", "matmul", "conv"];

pub fn shader_source(name: &str) -> Option<&'static str> {
    SHADERS.iter().find(|s| s.name == name).map(|s| s.source)
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Def {
    Const(&'static str, String),
    Alias(&'static str, &'static str),
}

/// One compilable configuration of a shader file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Variant {
    pub shader: &'static str,
    /// f16 arithmetic (needs SHADER_F16) or f32 arithmetic.
    pub f16: bool,
    pub defs: Vec<Def>,
}

impl Variant {
    pub fn new(shader: &'static str, f16: bool) -> Self {
        Variant { shader, f16, defs: Vec::new() }
    }

    pub fn with_const(mut self, name: &'static str, value: impl ToString) -> Self {
        self.defs.push(Def::Const(name, value.to_string()));
        self
    }

    pub fn with_alias(mut self, name: &'static str, ty: &'static str) -> Self {
        self.defs.push(Def::Alias(name, ty));
        self
    }

    /// Readable cache key, e.g. `matmul[f16,TM=4]`.
    pub fn key(&self) -> String {
        let mut k = format!("{}[{}", self.shader, if self.f16 { "f16" } else { "f32" });
        for d in &self.defs {
            match d {
                Def::Const(n, v) => k += &format!(",{n}={v}"),
                Def::Alias(n, t) => k += &format!(",{n}={t}"),
            }
        }
        k + "]"
    }

    /// The full WGSL text: prelude, then the file.
    pub fn source(&self) -> Result<String, String> {
        let body = shader_source(self.shader)
            .ok_or_else(|| format!("no shader file shaders/{}.wgsl in the registry", self.shader))?;
        let mut s = String::new();
        if self.f16 {
            s += "enable f16;\n\
                  alias ct = f16;\nalias ct2 = vec2<f16>;\nalias ct4 = vec4<f16>;\n\
                  const F16_PATH = true;\n\
                  fn unpack_h2(w: u32) -> vec2<f16> { return vec2<f16>(unpack2x16float(w)); }\n\
                  fn pack_h2(v: vec2<f16>) -> u32 { return pack2x16float(vec2<f32>(v)); }\n";
        } else {
            s += "alias ct = f32;\nalias ct2 = vec2<f32>;\nalias ct4 = vec4<f32>;\n\
                  const F16_PATH = false;\n\
                  fn unpack_h2(w: u32) -> vec2<f32> { return unpack2x16float(w); }\n\
                  fn pack_h2(v: vec2<f32>) -> u32 { return pack2x16float(v); }\n";
        }
        for d in &self.defs {
            match d {
                Def::Const(n, v) => s += &format!("const {n} = {v};\n"),
                Def::Alias(n, t) => s += &format!("alias {n} = {t};\n"),
            }
        }
        // Keep naga's line numbers meaningful: say where the file starts.
        s += &format!("// ---- shaders/{}.wgsl ----\n", self.shader);
        s += body;
        Ok(s)
    }

    /// Lines of prelude before the file's first line (to map naga line numbers back).
    pub fn prelude_lines(&self) -> usize {
        self.source().map(|s| s.lines().count()).unwrap_or(0)
            - shader_source(self.shader).map(|b| b.lines().count()).unwrap_or(0)
    }
}
