//! Samplers on diffusers' SDXL scheduler config (scaled_linear betas 0.00085–0.012, 1000 training
//! steps, timestep_spacing "leading", steps_offset 1), matching the installed diffusers' `scheduling_*.py`
//! line by line: EulerDiscreteScheduler (`euler`), EulerAncestralDiscreteScheduler (`euler_a`),
//! DPMSolverMultistepScheduler (`dpmpp_2m`: dpmsolver++, solver_order 2, midpoint, lower_order_final,
//! final_sigmas_type "zero", euler_at_final off) and DDIMScheduler (`ddim`: set_alpha_to_one False,
//! clip_sample False, eta 0).
//!
//! Model-agnostic and host-side: the schedule, the UNet input scale, and one `step` on f32 slices that
//! performs diffusers' f32 tensor operations in diffusers' order. [`Sampler::coefficients`] gives the
//! same update as a linear combination so a GPU kernel can apply it.
//!
//! Traps the code follows (each one checked against diffusers by tests/sampler.rs):
//! - leading spacing: the first timestep is not 999 (e.g. 961 for 25 steps; DPM++ uses
//!   1000 // (steps + 1), 951 for 25), so the first sigma is not the schedule's maximum.
//! - euler / euler_a divide the UNet input by sqrt(sigma² + 1) and start from noise times
//!   sqrt(max sigma² + 1) (leading spacing); DDIM and DPM++ work in VP space (input unscaled, initial
//!   noise scale 1).
//! - euler_a draws fresh noise from the generator at every step, the last one included.
//! - DPM++ 2M: the first step is first order (no history), and so is the last (final sigma 0).
//! - Karras: euler interpolates its Karras range between the sigmas of the *leading* timesteps
//!   (`_convert_to_karras(in_sigmas=sigmas)` after `np.interp`), DPM++ between the full schedule's
//!   ends; euler keeps fractional timesteps, DPM++ rounds them (half to even).
//!
//! Not in diffusers, defined here: `euler_a` with Karras uses EulerDiscreteScheduler's Karras sigmas and
//! timesteps with the ancestral step (what A1111/ComfyUI call "Euler a Karras"); `ddim` with Karras is
//! refused, since DDIM's step derives the previous timestep from the fixed stride.

use crate::rng::TorchRng;
use crate::{Error, Result};

const NUM_TRAIN_TIMESTEPS: usize = 1000;
const BETA_START: f64 = 0.00085;
const BETA_END: f64 = 0.012;
const STEPS_OFFSET: usize = 1;
/// Karras et al.'s rho, as in diffusers.
const KARRAS_RHO: f64 = 7.0;
/// At most this many steps: every spacing (DPM++ uses 1000 // (steps + 1)) then stays on distinct
/// timesteps inside the 1000 training steps.
pub const MAX_STEPS: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SamplerKind {
    #[serde(rename = "euler")]
    Euler,
    #[serde(rename = "euler_a")]
    EulerAncestral,
    #[serde(rename = "dpmpp_2m")]
    DpmPp2m,
    #[serde(rename = "ddim")]
    Ddim,
}

impl SamplerKind {
    pub const ALL: [SamplerKind; 4] = [Self::Euler, Self::EulerAncestral, Self::DpmPp2m, Self::Ddim];

    /// The CLI / A1111-metadata-independent short name (`euler`, `euler_a`, `dpmpp_2m`, `ddim`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Euler => "euler",
            Self::EulerAncestral => "euler_a",
            Self::DpmPp2m => "dpmpp_2m",
            Self::Ddim => "ddim",
        }
    }
}

impl std::str::FromStr for SamplerKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            Error::Input(format!("unknown sampler {s:?} (expected one of euler, euler_a, dpmpp_2m, ddim)"))
        })
    }
}

/// What the UNet predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    Epsilon,
    VPrediction,
}

/// One step as a linear update, for a GPU kernel (computed in f64 from the same f32 schedule):
/// `denoised = denoised_sample * sample + denoised_model * model_output` (the x0 prediction), then
/// `next = sample_c * sample + denoised_c * denoised + prev_denoised_c * prev_denoised + noise_c * noise`,
/// where `prev_denoised` is the previous step's `denoised` (DPM++ 2M only; 0 otherwise) and `noise`
/// is `TorchRng::randn(sample.len())` drawn for this step when `draws_noise` (euler_a).
/// The host [`Sampler::step`] is the reference; the two agree to f32 rounding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepCoefficients {
    pub denoised_sample: f32,
    pub denoised_model: f32,
    pub sample_c: f32,
    pub denoised_c: f32,
    pub prev_denoised_c: f32,
    pub noise_c: f32,
    pub draws_noise: bool,
}

/// The training noise schedule exactly as diffusers builds it in f32 torch ops.
struct TrainSchedule {
    alphas_cumprod: Vec<f32>,
    /// `((1 - alphas_cumprod) / alphas_cumprod) ** 0.5`, ascending with t.
    sigmas: Vec<f32>,
    /// `np.log(sigmas)` (f32), for `_sigma_to_t`.
    log_sigmas: Vec<f32>,
}

impl TrainSchedule {
    fn new() -> Self {
        let n = NUM_TRAIN_TIMESTEPS;
        // torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=float32): torch's serial CPU kernel,
        // `start + step * i` below halfway and `end - step * (n - 1 - i)` above, which GCC compiles to
        // fused multiply-adds.
        let start = BETA_START.sqrt() as f32;
        let end = BETA_END.sqrt() as f32;
        let step = (end - start) / (n - 1) as f32;
        let mut alphas_cumprod = Vec::with_capacity(n);
        // torch.cumprod accumulates float in double on CPU.
        let mut acc = 1f64;
        for i in 0..n {
            let sqrt_beta =
                if i < n / 2 { step.mul_add(i as f32, start) } else { (-step).mul_add((n - 1 - i) as f32, end) };
            let alpha = 1.0 - sqrt_beta * sqrt_beta;
            acc *= alpha as f64;
            alphas_cumprod.push(acc as f32);
        }
        let sigmas: Vec<f32> = alphas_cumprod.iter().map(|&a| ((1.0 - a) / a).sqrt()).collect();
        let log_sigmas = sigmas.iter().map(|s| s.ln()).collect();
        Self { alphas_cumprod, sigmas, log_sigmas }
    }

    /// `np.interp(t, arange(1000), sigmas)` at an integer timestep is the table value.
    fn sigma_at(&self, t: usize) -> f64 {
        self.sigmas[t.min(self.sigmas.len() - 1)] as f64
    }

    /// diffusers' `_sigma_to_t`: piecewise-linear interpolation of log sigma over the timesteps.
    fn sigma_to_t(&self, sigma: f64) -> f64 {
        let log_sigma = sigma.max(1e-10).ln();
        let ls = &self.log_sigmas;
        // cumsum(dists >= 0).argmax(): the last index with log_sigmas[i] <= log_sigma (0 if none).
        let low_idx = ls.iter().rposition(|&l| log_sigma - l as f64 >= 0.0).unwrap_or(0).min(ls.len() - 2);
        let high_idx = low_idx + 1;
        let low = ls[low_idx];
        let high = ls[high_idx];
        // `low - high` is a float32 numpy scalar operation; the rest is float64.
        let w = ((low as f64 - log_sigma) / (low - high) as f64).clamp(0.0, 1.0);
        (1.0 - w) * low_idx as f64 + w * high_idx as f64
    }
}

/// `np.linspace(0, 1, n)`.
fn linspace01(n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![0.0];
    }
    let step = 1.0 / (n - 1) as f64;
    let mut v: Vec<f64> = (0..n).map(|i| i as f64 * step).collect();
    v[n - 1] = 1.0;
    v
}

/// `_convert_to_karras` (k-diffusion's schedule), sigma_max first.
fn karras_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    let min_inv_rho = sigma_min.powf(1.0 / KARRAS_RHO);
    let max_inv_rho = sigma_max.powf(1.0 / KARRAS_RHO);
    linspace01(n).into_iter().map(|r| (max_inv_rho + r * (min_inv_rho - max_inv_rho)).powf(KARRAS_RHO)).collect()
}

/// `sqrt(x² + 1)` in f32 torch ops (`(sigma**2 + 1) ** 0.5`).
fn sqrt_sigma2_plus1(s: f32) -> f32 {
    (s * s + 1.0).sqrt()
}

/// A configured sampler with its per-run state (DPM++ history, step counter).
pub struct Sampler {
    kind: SamplerKind,
    karras: bool,
    prediction: Prediction,
    timesteps: Vec<f32>,
    /// k-diffusion sigmas, `steps + 1` values ending in 0 (euler, euler_a, dpmpp_2m); for ddim the
    /// sigma of each timestep's alphas_cumprod plus the final one, for information.
    sigmas: Vec<f32>,
    /// DDIM: alphas_cumprod at each timestep and at the previous one.
    ddim_alphas: Vec<(f32, f32)>,
    init_noise_sigma: f32,
    next_step: usize,
    /// DPM++: the previous step's x0 prediction.
    prev_denoised: Option<Vec<f32>>,
}

impl Sampler {
    /// The scheduler diffusers would build from SDXL's scheduler config for `kind`, after
    /// `set_timesteps(steps)`.
    pub fn new(kind: SamplerKind, steps: usize, karras: bool, prediction: Prediction) -> Result<Self> {
        if steps == 0 || steps > MAX_STEPS {
            return Err(Error::Input(format!("steps must be between 1 and {MAX_STEPS}, got {steps}")));
        }
        if karras && kind == SamplerKind::Ddim {
            return Err(Error::Input(
                "ddim has no Karras schedule (diffusers' DDIM steps by a fixed timestep stride); use euler, euler_a or dpmpp_2m with --karras"
                    .into(),
            ));
        }
        let ts = TrainSchedule::new();
        let n = steps;
        let mut ddim_alphas = Vec::new();
        let (timesteps, sigmas, init_noise_sigma) = match kind {
            SamplerKind::Euler | SamplerKind::EulerAncestral => {
                // EulerDiscreteScheduler.set_timesteps, leading spacing.
                let ratio = NUM_TRAIN_TIMESTEPS / n;
                let leading: Vec<usize> = (0..n).rev().map(|i| i * ratio + STEPS_OFFSET).collect();
                let interp: Vec<f64> = leading.iter().map(|&t| ts.sigma_at(t)).collect();
                let (timesteps, mut sigmas): (Vec<f32>, Vec<f32>) = if karras {
                    let k = karras_sigmas(interp[n - 1], interp[0], n);
                    (k.iter().map(|&s| ts.sigma_to_t(s) as f32).collect(), k.iter().map(|&s| s as f32).collect())
                } else {
                    (leading.iter().map(|&t| t as f32).collect(), interp.iter().map(|&s| s as f32).collect())
                };
                sigmas.push(0.0);
                // init_noise_sigma for leading spacing: (max sigma ** 2 + 1) ** 0.5.
                let max = sigmas.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                (timesteps, sigmas, sqrt_sigma2_plus1(max))
            }
            SamplerKind::DpmPp2m => {
                // DPMSolverMultistepScheduler.set_timesteps, leading spacing (lambda_min_clipped = -inf).
                let ratio = NUM_TRAIN_TIMESTEPS / (n + 1);
                let leading: Vec<usize> = (1..=n).rev().map(|i| i * ratio + STEPS_OFFSET).collect();
                let (timesteps, mut sigmas): (Vec<f32>, Vec<f32>) = if karras {
                    let k = karras_sigmas(ts.sigmas[0] as f64, ts.sigmas[NUM_TRAIN_TIMESTEPS - 1] as f64, n);
                    let t = k.iter().map(|&s| ts.sigma_to_t(s).round_ties_even() as f32).collect();
                    (t, k.iter().map(|&s| s as f32).collect())
                } else {
                    (
                        leading.iter().map(|&t| t as f32).collect(),
                        leading.iter().map(|&t| ts.sigma_at(t) as f32).collect(),
                    )
                };
                sigmas.push(0.0); // final_sigmas_type "zero"
                (timesteps, sigmas, 1.0)
            }
            SamplerKind::Ddim => {
                let ratio = NUM_TRAIN_TIMESTEPS / n;
                let leading: Vec<usize> = (0..n).rev().map(|i| i * ratio + STEPS_OFFSET).collect();
                let mut sigmas = Vec::with_capacity(n + 1);
                for &t in &leading {
                    let prev = t as isize - ratio as isize;
                    // set_alpha_to_one=False: the final "previous" alphas_cumprod is alphas_cumprod[0].
                    let a_prev = if prev >= 0 { ts.alphas_cumprod[prev as usize] } else { ts.alphas_cumprod[0] };
                    ddim_alphas.push((ts.alphas_cumprod[t], a_prev));
                    sigmas.push(ts.sigmas[t]);
                }
                sigmas.push(ts.sigmas[0]);
                (leading.iter().map(|&t| t as f32).collect(), sigmas, 1.0)
            }
        };
        Ok(Self {
            kind,
            karras,
            prediction,
            timesteps,
            sigmas,
            ddim_alphas,
            init_noise_sigma,
            next_step: 0,
            prev_denoised: None,
        })
    }

    pub fn kind(&self) -> SamplerKind {
        self.kind
    }
    pub fn karras(&self) -> bool {
        self.karras
    }
    pub fn prediction(&self) -> Prediction {
        self.prediction
    }
    pub fn steps(&self) -> usize {
        self.timesteps.len()
    }

    /// The timestep passed to the UNet at each step (diffusers' `scheduler.timesteps`, as f32).
    pub fn timesteps(&self) -> &[f32] {
        &self.timesteps
    }

    /// diffusers' `scheduler.sigmas` (steps + 1 values; see the field's note for ddim).
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// Multiply the `torch.randn` initial latents by this (`scheduler.init_noise_sigma`).
    pub fn init_noise_sigma(&self) -> f32 {
        self.init_noise_sigma
    }

    /// Whether `step` draws noise from the generator (euler_a, every step).
    pub fn draws_noise(&self) -> bool {
        self.kind == SamplerKind::EulerAncestral
    }

    fn uses_input_scale(&self) -> bool {
        matches!(self.kind, SamplerKind::Euler | SamplerKind::EulerAncestral)
    }

    /// The UNet input is `sample * scale_model_input(step)` (`1 / sqrt(sigma² + 1)` for euler and
    /// euler_a, 1 for the VP-space samplers). diffusers divides by the square root; see
    /// [`Sampler::model_input`] for that exact form.
    pub fn scale_model_input(&self, step: usize) -> f32 {
        if self.uses_input_scale() {
            1.0 / sqrt_sigma2_plus1(self.sigmas[step.min(self.steps() - 1)])
        } else {
            1.0
        }
    }

    /// `scheduler.scale_model_input(sample, t)` exactly as diffusers computes it (f32 division).
    pub fn model_input(&self, sample: &[f32], step: usize) -> Vec<f32> {
        if self.uses_input_scale() {
            let d = sqrt_sigma2_plus1(self.sigmas[step.min(self.steps() - 1)]);
            sample.iter().map(|&x| x / d).collect()
        } else {
            sample.to_vec()
        }
    }

    /// diffusers' img2img `get_timesteps` (no `denoising_start`): `strength` keeps the last
    /// `min(int(steps · strength), steps)` steps of the schedule; the index of the first one
    /// (`t_start`) is returned and becomes the next step (`scheduler.set_begin_index(t_start)`).
    /// `int(steps · strength)` is Python's float product truncated (f64, as Python floats are).
    pub fn start_at_strength(&mut self, strength: f32) -> Result<usize> {
        let n = self.steps();
        let init = ((n as f64 * strength as f64) as usize).min(n);
        if init == 0 {
            return Err(Error::Input(format!(
                "strength {strength} with {n} steps runs int({n} × {strength}) = 0 steps; raise the strength or the steps"
            )));
        }
        let t_start = n - init;
        self.next_step = t_start;
        self.prev_denoised = None;
        Ok(t_start)
    }

    /// The index of the next step `step` expects.
    pub fn next_step(&self) -> usize {
        self.next_step
    }

    /// `scheduler.add_noise(original, noise, t)` at schedule index `step` (the begin index before
    /// the first step, `step_index` after a step), in diffusers' f32 arithmetic: euler / euler_a
    /// `x + n·σ`; DPM++ `α·x + σ_t·n` with α = 1 / (σ² + 1)^0.5, σ_t = σ·α; DDIM
    /// `ᾱ_t^0.5·x + (1 − ᾱ_t)^0.5·n` (ᾱ of the timestep itself).
    pub fn add_noise(&self, original: &[f32], noise: &[f32], step: usize) -> Result<Vec<f32>> {
        if original.len() != noise.len() || step >= self.steps() {
            return Err(Error::Input(format!(
                "add_noise: {} values with {} noise values at step {step} of {}",
                original.len(),
                noise.len(),
                self.steps()
            )));
        }
        let sigma = self.sigmas[step];
        let (a, b) = match self.kind {
            SamplerKind::Euler | SamplerKind::EulerAncestral => {
                return Ok(original.iter().zip(noise).map(|(&x, &n)| x + n * sigma).collect());
            }
            SamplerKind::DpmPp2m => {
                let alpha = 1.0 / sqrt_sigma2_plus1(sigma);
                (alpha, sigma * alpha)
            }
            SamplerKind::Ddim => {
                let a_t = self.ddim_alphas[step].0;
                (a_t.sqrt(), (1.0 - a_t).sqrt())
            }
        };
        Ok(original.iter().zip(noise).map(|(&x, &n)| a * x + b * n).collect())
    }

    /// Back to step 0 (a new image with the same settings).
    pub fn reset(&mut self) {
        self.next_step = 0;
        self.prev_denoised = None;
    }

    fn check_step(&self, step: usize) -> Result<()> {
        if step >= self.steps() {
            return Err(Error::Input(format!("sampler step {step} out of range (0..{})", self.steps())));
        }
        if step != self.next_step {
            return Err(Error::Input(format!(
                "sampler steps must run in order: expected {}, got {step}",
                self.next_step
            )));
        }
        Ok(())
    }

    /// DPM++ uses the second-order update when it has a previous x0 and this is not the last step.
    fn dpm_second_order(&self, step: usize) -> bool {
        self.prev_denoised.is_some() && step + 1 < self.steps()
    }

    /// The update of `step` as a linear combination (for a GPU kernel). Call before `step` for that
    /// index (DPM++'s order depends on whether a previous step ran).
    pub fn coefficients(&self, step: usize) -> Result<StepCoefficients> {
        self.check_step(step)?;
        let v = self.prediction == Prediction::VPrediction;
        let mut c = StepCoefficients {
            denoised_sample: 1.0,
            denoised_model: 0.0,
            sample_c: 0.0,
            denoised_c: 0.0,
            prev_denoised_c: 0.0,
            noise_c: 0.0,
            draws_noise: self.draws_noise(),
        };
        match self.kind {
            SamplerKind::Euler | SamplerKind::EulerAncestral => {
                let s = self.sigmas[step] as f64;
                let s_next = self.sigmas[step + 1] as f64;
                let (ds, dm) = if v { (1.0 / (s * s + 1.0), -s / (s * s + 1.0).sqrt()) } else { (1.0, -s) };
                let target = if self.kind == SamplerKind::Euler {
                    s_next
                } else {
                    let up = (s_next * s_next * (s * s - s_next * s_next) / (s * s)).sqrt();
                    c.noise_c = up as f32;
                    (s_next * s_next - up * up).sqrt()
                };
                // next = x + (x - x0) / s * (target - s)
                let ratio = target / s;
                (c.denoised_sample, c.denoised_model) = (ds as f32, dm as f32);
                (c.sample_c, c.denoised_c) = (ratio as f32, (1.0 - ratio) as f32);
            }
            SamplerKind::DpmPp2m => {
                let vp = |s: f64| {
                    let a = 1.0 / (s * s + 1.0).sqrt();
                    (a, s * a)
                };
                let s0 = self.sigmas[step] as f64;
                let s_t = self.sigmas[step + 1] as f64;
                let (a0, sg0) = vp(s0);
                let (a_t, _) = vp(s_t);
                let (ds, dm) = if v { (a0, -sg0) } else { (1.0 / a0, -sg0 / a0) };
                (c.denoised_sample, c.denoised_model) = (ds as f32, dm as f32);
                // lambda = log(alpha / sigma_vp) = -log(sigma), so exp(-h) = s_t / s0.
                let em1 = s_t / s0 - 1.0;
                let b = a_t * em1;
                c.sample_c = ((s_t * a_t) / (s0 * a0)) as f32;
                if self.dpm_second_order(step) {
                    let s1 = self.sigmas[step - 1] as f64;
                    let r0 = (s1 / s0).ln() / (s0 / s_t).ln();
                    c.denoised_c = (-b * (1.0 + 0.5 / r0)) as f32;
                    c.prev_denoised_c = (0.5 * b / r0) as f32;
                } else {
                    c.denoised_c = (-b) as f32;
                }
            }
            SamplerKind::Ddim => {
                let (a_t, a_prev) = self.ddim_alphas[step];
                let (a_t, a_prev) = (a_t as f64, a_prev as f64);
                let b_t = 1.0 - a_t;
                let (ds, dm) = if v { (a_t.sqrt(), -b_t.sqrt()) } else { (1.0 / a_t.sqrt(), -b_t.sqrt() / a_t.sqrt()) };
                (c.denoised_sample, c.denoised_model) = (ds as f32, dm as f32);
                // next = sqrt(a_prev) x0 + sqrt(1 - a_prev) eps, eps = (x - sqrt(a_t) x0) / sqrt(b_t)
                let k = (1.0 - a_prev).sqrt() / b_t.sqrt();
                c.sample_c = k as f32;
                c.denoised_c = (a_prev.sqrt() - k * a_t.sqrt()) as f32;
            }
        }
        Ok(c)
    }

    /// `scheduler.step(model_output, timesteps[step], sample, generator=rng)`: diffusers' f32 tensor
    /// operations in diffusers' order. Steps must run in order from 0.
    pub fn step(&mut self, model_output: &[f32], step: usize, sample: &[f32], rng: &mut TorchRng) -> Result<Vec<f32>> {
        self.check_step(step)?;
        if model_output.len() != sample.len() {
            return Err(Error::Input(format!(
                "model output has {} values but the sample has {}",
                model_output.len(),
                sample.len()
            )));
        }
        let v = self.prediction == Prediction::VPrediction;
        let out = match self.kind {
            SamplerKind::Euler => {
                let sigma = self.sigmas[step];
                let x0 = euler_x0(model_output, sample, sigma, v);
                let dt = self.sigmas[step + 1] - sigma;
                sample.iter().zip(&x0).map(|(&x, &p)| x + (x - p) / sigma * dt).collect()
            }
            SamplerKind::EulerAncestral => {
                let sigma = self.sigmas[step];
                let x0 = euler_x0(model_output, sample, sigma, v);
                let (from, to) = (sigma, self.sigmas[step + 1]);
                let sigma_up = (to * to * (from * from - to * to) / (from * from)).sqrt();
                let sigma_down = (to * to - sigma_up * sigma_up).sqrt();
                let dt = sigma_down - sigma;
                let noise = rng.randn(sample.len());
                sample
                    .iter()
                    .zip(&x0)
                    .zip(&noise)
                    .map(|((&x, &p), &n)| (x + (x - p) / sigma * dt) + n * sigma_up)
                    .collect()
            }
            SamplerKind::DpmPp2m => self.dpm_step(model_output, step, sample, v),
            SamplerKind::Ddim => {
                let (a_t, a_prev) = self.ddim_alphas[step];
                let b_t = 1.0 - a_t;
                let (sa, sb) = (a_t.sqrt(), b_t.sqrt());
                let dir_c = (1.0 - a_prev - 0.0).sqrt(); // std_dev_t = eta * ... = 0
                let sa_prev = a_prev.sqrt();
                sample
                    .iter()
                    .zip(model_output)
                    .map(|(&x, &m)| {
                        let (x0, eps) = if v { (sa * x - sb * m, sa * m + sb * x) } else { ((x - sb * m) / sa, m) };
                        sa_prev * x0 + dir_c * eps
                    })
                    .collect()
            }
        };
        self.next_step += 1;
        Ok(out)
    }

    fn dpm_step(&mut self, model_output: &[f32], step: usize, sample: &[f32], v: bool) -> Vec<f32> {
        // _sigma_to_alpha_sigma_t
        let vp = |s: f32| {
            let a = 1.0 / sqrt_sigma2_plus1(s);
            (a, s * a)
        };
        let lambda = |(a, s): (f32, f32)| a.ln() - s.ln();
        // convert_model_output
        let (a0, s0) = vp(self.sigmas[step]);
        let x0: Vec<f32> = if v {
            sample.iter().zip(model_output).map(|(&x, &m)| a0 * x - s0 * m).collect()
        } else {
            sample.iter().zip(model_output).map(|(&x, &m)| (x - s0 * m) / a0).collect()
        };
        let (a_t, s_t) = vp(self.sigmas[step + 1]);
        let h = lambda((a_t, s_t)) - lambda((a0, s0));
        let ratio = s_t / s0;
        let b = a_t * ((-h).exp() - 1.0);
        let out = if self.dpm_second_order(step) {
            let prev = self.prev_denoised.as_deref().unwrap_or(&[]);
            let s1 = vp(self.sigmas[step - 1]);
            let h0 = lambda((a0, s0)) - lambda(s1);
            let inv_r0 = 1.0 / (h0 / h);
            let half_b = 0.5 * b;
            sample
                .iter()
                .zip(&x0)
                .zip(prev)
                .map(|((&x, &m0), &m1)| ratio * x - b * m0 - half_b * (inv_r0 * (m0 - m1)))
                .collect()
        } else {
            sample.iter().zip(&x0).map(|(&x, &m0)| ratio * x - b * m0).collect()
        };
        self.prev_denoised = Some(x0);
        out
    }
}

/// Euler's x0 prediction: `sample - sigma * model_output`, or for v-prediction
/// `model_output * (-sigma / (sigma**2 + 1) ** 0.5) + sample / (sigma**2 + 1)`.
fn euler_x0(model_output: &[f32], sample: &[f32], sigma: f32, v: bool) -> Vec<f32> {
    if v {
        let c_out = -sigma / sqrt_sigma2_plus1(sigma);
        let c_in = sigma * sigma + 1.0;
        model_output.iter().zip(sample).map(|(&m, &x)| m * c_out + x / c_in).collect()
    } else {
        model_output.iter().zip(sample).map(|(&m, &x)| x - sigma * m).collect()
    }
}
