//! torch's CPU generator, bit for bit: `torch.Generator("cpu").manual_seed(seed)` followed by
//! `torch.randn(shape, generator=g, dtype=torch.float32)` calls, so a seed gives the same initial
//! latents and euler_a noise as diffusers (`randn_tensor` with a CPU generator) and ComfyUI's CPU noise.
//!
//! Reference (torch 2.x, unchanged since 1.x in the parts used here):
//! - `aten/src/ATen/core/MT19937RNGEngine.h`: mt19937 seeded from the low 32 bits of the seed.
//! - `aten/src/ATen/CPUGeneratorImpl.cpp`: `random()` is one engine draw, `random64()` is
//!   `(draw1 << 32) | draw2`; `manual_seed` clears the cached normal samples.
//! - `aten/src/ATen/core/TransformationHelper.h`: float uniforms are `(r & (2^24-1)) * 2^-24`,
//!   double uniforms `(r64 & (2^53-1)) * 2^-53`.
//! - `aten/src/ATen/native/cpu/DistributionTemplates.h` `normal_kernel`: a contiguous float tensor of
//!   at least 16 values is filled with uniforms, then Box-Muller runs on blocks of 16 (pairs 8 apart);
//!   when the size is not a multiple of 16 the last 16 values are drawn again and transformed in
//!   place. On x86 with AVX2 (also AVX512 machines: `normal_stub` is not dispatched to AVX512) the
//!   block uses `log256_ps`/`sincos256_ps` from `avx_mathfun.h` (Cephes polynomials in f32), emulated
//!   here lane by lane with the same f32 operations, in the same order, fused where GCC fused them. Fewer than 16 values go through
//!   `normal_distribution<double>` one value at a time, which caches the second Box-Muller value in
//!   the generator (that cache survives across calls, as in torch).
//!
//! The scalar (DEFAULT capability) torch build used on machines without AVX2 (e.g. ARM Macs) uses libm
//! `logf`/`cosf`/`sinf` instead and differs from the AVX2 build by a few ulp; we match the AVX2 build,
//! which is what x86 diffusers/ComfyUI users get.

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UMASK: u32 = 0x8000_0000;
const LMASK: u32 = 0x7fff_ffff;

/// torch's `at::mt19937` (the classic MT19937 with torch's seeding of the low 32 bits).
#[derive(Clone)]
struct Mt19937 {
    state: [u32; N],
    left: usize,
    next: usize,
}

impl Mt19937 {
    fn new(seed: u64) -> Self {
        let mut state = [0u32; N];
        state[0] = seed as u32; // torch: `seed & 0xffffffff`
        for j in 1..N {
            let prev = state[j - 1];
            state[j] = 1_812_433_253u32.wrapping_mul(prev ^ (prev >> 30)).wrapping_add(j as u32);
        }
        Self { state, left: 1, next: 0 }
    }

    fn next_state(&mut self) {
        // In-place twist; for the last word `state[0]` is already the new value, as in torch.
        let s = &mut self.state;
        for i in 0..N {
            let u = s[i];
            let v = s[(i + 1) % N];
            let mixed = (u & UMASK) | (v & LMASK);
            let twisted = (mixed >> 1) ^ if v & 1 != 0 { MATRIX_A } else { 0 };
            s[i] = s[(i + M) % N] ^ twisted;
        }
        self.left = N;
        self.next = 0;
    }

    fn next_u32(&mut self) -> u32 {
        self.left -= 1;
        if self.left == 0 {
            self.next_state();
        }
        let mut y = self.state[self.next];
        self.next += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }
}

/// `torch.Generator("cpu").manual_seed(seed)`: engine plus the cached second normal sample of the
/// scalar (double) Box-Muller path.
#[derive(Clone)]
pub struct TorchRng {
    engine: Mt19937,
    next_double_normal: Option<f64>,
}

impl TorchRng {
    /// Same state as `torch.Generator("cpu").manual_seed(seed)`. Only the low 32 bits of the seed
    /// reach the engine (torch's mt19937 seeding), so seeds that differ above bit 31 give the same
    /// numbers, exactly as in torch.
    pub fn new(seed: u64) -> Self {
        Self { engine: Mt19937::new(seed), next_double_normal: None }
    }

    /// `CPUGeneratorImpl::random()`: one 32-bit engine draw.
    pub fn random(&mut self) -> u32 {
        self.engine.next_u32()
    }

    /// `CPUGeneratorImpl::random64()`: first draw in the high half.
    pub fn random64(&mut self) -> u64 {
        let hi = self.engine.next_u32() as u64;
        let lo = self.engine.next_u32() as u64;
        (hi << 32) | lo
    }

    /// `uniform_real_distribution<float>(0, 1)`: 24 random bits.
    fn uniform_f32(&mut self) -> f32 {
        const DIVISOR: f32 = 1.0 / (1u32 << 24) as f32;
        (self.random() & ((1 << 24) - 1)) as f32 * DIVISOR
    }

    /// `uniform_real_distribution<double>(0, 1)`: 53 random bits of `random64()`.
    fn uniform_f64(&mut self) -> f64 {
        const DIVISOR: f64 = 1.0 / (1u64 << 53) as f64;
        (self.random64() & ((1 << 53) - 1)) as f64 * DIVISOR
    }

    /// `at::normal_distribution<double>(0, 1)` with the generator's cached second value.
    fn normal_f64(&mut self) -> f64 {
        if let Some(cached) = self.next_double_normal.take() {
            return cached;
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        let r = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u1;
        self.next_double_normal = Some(r * theta.sin());
        r * theta.cos()
    }

    /// `torch.randn(n, generator=g, dtype=torch.float32)` (any shape with `n` values: the fill is in
    /// memory order). Advances the generator exactly as torch does.
    pub fn randn(&mut self, n: usize) -> Vec<f32> {
        let mut out = vec![0f32; n];
        self.randn_into(&mut out);
        out
    }

    /// [`TorchRng::randn`] into a caller's buffer.
    pub fn randn_into(&mut self, data: &mut [f32]) {
        let size = data.len();
        if size < 16 {
            // cpu_serial_kernel over normal_distribution<double>, cast to float per value.
            for v in data.iter_mut() {
                *v = self.normal_f64() as f32;
            }
            return;
        }
        for v in data.iter_mut() {
            *v = self.uniform_f32();
        }
        for block in data.chunks_exact_mut(16) {
            normal_fill_16(block);
        }
        if !size.is_multiple_of(16) {
            // torch redraws the last 16 values and transforms them again (overlapping the last full block).
            let tail = &mut data[size - 16..];
            for v in tail.iter_mut() {
                *v = self.uniform_f32();
            }
            normal_fill_16(tail);
        }
    }
}

/// `NormalFill16<float>` (AVX2): lanes j and j+8 form one Box-Muller pair; mean 0, std 1.
fn normal_fill_16(data: &mut [f32]) {
    const TWO_PI: f32 = (2.0 * std::f64::consts::PI) as f32;
    for j in 0..8 {
        let u1 = 1.0 - data[j];
        let u2 = data[j + 8];
        let radius = (-2.0 * log_ps(u1)).sqrt();
        let theta = TWO_PI * u2;
        let (s, c) = sincos_ps(theta);
        // `_mm256_fmadd_ps(n, std=1, mean=0)`: exact n, except -0 becomes +0.
        data[j] = radius * c + 0.0;
        data[j + 8] = radius * s + 0.0;
    }
}

// avx_mathfun.h constants: double literals rounded to float, as `_PS256_CONST` does (kept verbatim,
// hence the extra digits).
const SQRTHF: f32 = std::f64::consts::FRAC_1_SQRT_2 as f32; // cephes_SQRTHF
const LOG_P: [f32; 9] = [
    7.0376836292E-2f64 as f32,
    -1.1514610310E-1f64 as f32,
    1.1676998740E-1f64 as f32,
    -1.2420140846E-1f64 as f32,
    1.4249322787E-1f64 as f32,
    -1.6668057665E-1f64 as f32,
    2.0000714765E-1f64 as f32,
    -2.4999993993E-1f64 as f32,
    3.3333331174E-1f64 as f32,
];
const LOG_Q1: f32 = -2.12194440e-4f64 as f32;
#[allow(clippy::excessive_precision)]
const LOG_Q2: f32 = 0.693359375;
const MINUS_DP1: f32 = -0.78515625;
#[allow(clippy::excessive_precision)]
const MINUS_DP2: f32 = -2.4187564849853515625e-4f64 as f32;
#[allow(clippy::excessive_precision)]
const MINUS_DP3: f32 = -3.77489497744594108e-8f64 as f32;
const SINCOF: [f32; 3] = [-1.9515295891E-4f64 as f32, 8.3321608736E-3f64 as f32, -1.6666654611E-1f64 as f32];
#[allow(clippy::excessive_precision)]
const COSCOF: [f32; 3] =
    [2.443315711809948E-005f64 as f32, -1.388731625493765E-003f64 as f32, 4.166664568298827E-002f64 as f32];
const FOPI: f32 = 1.27323954473516f64 as f32;

/// One lane of `log256_ps`. Inputs here are in [2^-24, 1], so the NaN / denormal handling of the
/// vector code never triggers and is left out. torch's AVX2 build is compiled with FMA and GCC's
/// default `-ffp-contract=fast`, so every `mul` feeding an `add` became one fused multiply-add; the
/// `mul_add` calls below are exactly those (found by matching torch's output bit for bit over 4M values).
fn log_ps(x: f32) -> f32 {
    let bits = x.to_bits();
    let exponent = ((bits >> 23) as i32 - 0x7f) as f32 + 1.0;
    let mut x = f32::from_bits((bits & !0x7f80_0000) | 0.5f32.to_bits());
    let below = x < SQRTHF;
    let tmp = if below { x } else { 0.0 };
    x -= 1.0;
    let e = exponent - if below { 1.0 } else { 0.0 };
    x += tmp;
    let z = x * x;
    let mut y = LOG_P[0];
    for &p in &LOG_P[1..] {
        y = y.mul_add(x, p);
    }
    y *= x;
    y = y.mul_add(z, e * LOG_Q1);
    // z * 0.5 and e * LOG_Q2 are exact products, so fusing them changes nothing.
    y -= z * 0.5;
    x += y;
    e.mul_add(LOG_Q2, x)
}

/// One lane of `sincos256_ps`: (sin, cos), the Cephes sinf/cosf reduction and polynomials, with the
/// same fused multiply-adds as torch's AVX2 build (see [`log_ps`]).
fn sincos_ps(x: f32) -> (f32, f32) {
    let mut sign_sin = x.to_bits() & 0x8000_0000;
    let mut x = x.abs();
    let j = (((x * FOPI) as i32).wrapping_add(1)) & !1;
    let y = j as f32;
    let swap_sign_sin = ((j & 4) as u32) << 29;
    let poly_mask = (j & 2) == 0;
    // Extended precision modular arithmetic: x = ((x - y*DP1) - y*DP2) - y*DP3.
    x = y.mul_add(MINUS_DP1, x);
    x = y.mul_add(MINUS_DP2, x);
    x = y.mul_add(MINUS_DP3, x);
    let sign_cos = ((!(j.wrapping_sub(2)) & 4) as u32) << 29;
    sign_sin ^= swap_sign_sin;

    let z = x * x;
    let mut yc = COSCOF[0];
    yc = yc.mul_add(z, COSCOF[1]);
    yc = yc.mul_add(z, COSCOF[2]);
    yc *= z;
    yc = yc.mul_add(z, -(z * 0.5));
    yc += 1.0;

    let mut ys = SINCOF[0];
    ys = ys.mul_add(z, SINCOF[1]);
    ys = ys.mul_add(z, SINCOF[2]);
    ys *= z;
    ys = ys.mul_add(x, x);

    // Selection exactly as the vector code: masked parts are +0.0 and are added, not chosen.
    let ysin2 = if poly_mask { ys } else { 0.0 };
    let ysin1 = if poly_mask { 0.0 } else { yc };
    let rest_s = ys - ysin2;
    let rest_c = yc - ysin1;
    let s = ysin1 + ysin2;
    let c = rest_c + rest_s;
    (f32::from_bits(s.to_bits() ^ sign_sin), f32::from_bits(c.to_bits() ^ sign_cos))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The classic MT19937 check value: the 10000th output of seed 5489 is 4123659995
    /// (C++ std::mt19937 requirement, [rand.predef]); torch uses the same engine.
    #[test]
    fn mt19937_10000th_output() {
        let mut rng = TorchRng::new(5489);
        let mut last = 0;
        for _ in 0..10000 {
            last = rng.random();
        }
        assert_eq!(last, 4_123_659_995);
    }
}
