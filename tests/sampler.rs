//! Samplers against diffusers (tests/fixtures/sampling/schedulers.json, made by
//! tests/fixtures/gen_sampling.py): schedules, initial noise scale, UNet input scale, and whole
//! sampling loops on [1, 4, 8, 8] latents from a seeded torch generator driven by a fake model.

use sdxl_web::rng::TorchRng;
use sdxl_web::sampler::{Prediction, Sampler, SamplerKind, MAX_STEPS};
use serde_json::Value;

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sampling/schedulers.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("read schedulers.json")).expect("parse")
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number") as f32).collect()
}

fn max_rel(ours: &[f32], theirs: &[f32]) -> f64 {
    assert_eq!(ours.len(), theirs.len());
    ours.iter()
        .zip(theirs)
        .map(|(&a, &b)| if a == b { 0.0 } else { ((a - b).abs() as f64) / (b.abs() as f64).max(1e-30) })
        .fold(0.0, f64::max)
}

/// Max |a - b| over max |b|: the trajectory error relative to the latents' scale.
fn max_abs_scaled(ours: &[f32], theirs: &[f32]) -> f64 {
    let scale = theirs.iter().fold(0f32, |m, &b| m.max(b.abs())) as f64;
    ours.iter().zip(theirs).map(|(&a, &b)| (a - b).abs() as f64).fold(0.0, f64::max) / scale
}

fn fake_model(input: &[f32], t: f32) -> Vec<f32> {
    // model_input * 0.1 + (t / 1000.0) * 0.01 in f32 torch ops
    let c = (t / 1000.0) * 0.01;
    input.iter().map(|&x| x * 0.1 + c).collect()
}

struct Case {
    sampler: Sampler,
    json: Value,
    name: String,
}

fn cases() -> Vec<Case> {
    let fx = fixture();
    fx["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let kind: SamplerKind = c["sampler"].as_str().unwrap().parse().unwrap();
            let karras = c["karras"].as_bool().unwrap();
            let steps = c["steps"].as_u64().unwrap() as usize;
            let prediction = match c["prediction"].as_str().unwrap() {
                "epsilon" => Prediction::Epsilon,
                "v_prediction" => Prediction::VPrediction,
                p => panic!("prediction {p}"),
            };
            let name = format!("{} karras={karras} steps={steps} {prediction:?}", kind.name());
            Case { sampler: Sampler::new(kind, steps, karras, prediction).unwrap(), json: c.clone(), name }
        })
        .collect()
}

/// Schedules: diffusers computes them with torch f32 ops whose sqrt/log come from MKL / SLEEF (not
/// always correctly rounded: torch.sqrt differs from the exact f32 root in 190 of the 1000 training
/// sigmas) and numpy f64 pow/log; ours use correctly rounded Rust math. Measured: at most 1 ulp.
const SCHEDULE_MAX_REL: f64 = 2.0 * f32::EPSILON as f64;
/// Fractional (Karras) euler timesteps go through log-sigma interpolation: the same few ulp of the
/// sigmas, on values up to 1000 (measured 6.1e-5, 1 ulp at ~700).
const TIMESTEP_MAX_ABS: f64 = 2.5e-4;
/// Whole loops: the schedule's ulp differences and MKL's sqrt/log/exp on the per-step scalars
/// perturb each step at ~1e-7 relative; over up to 25 steps they stay below this (measured 5.8e-7).
const TRAJECTORY_MAX_REL_TO_SCALE: f64 = 5e-6;
/// The linear-coefficient form of a step (for the GPU) rounds differently from diffusers' op order
/// (e.g. it never forms `x - sigma * eps` explicitly); f32 rounding over up to 25 steps (measured 6.7e-7).
const COEFFICIENT_FORM_MAX_REL_TO_SCALE: f64 = 5e-6;

#[test]
fn schedules_match_diffusers() {
    let mut worst = (0f64, 0f64, 0f64);
    for case in cases() {
        let c = &case.json;
        let ts = floats(&c["timesteps"]);
        assert_eq!(case.sampler.timesteps().len(), ts.len(), "{}", case.name);
        let dt = case.sampler.timesteps().iter().zip(&ts).map(|(&a, &b)| (a - b).abs() as f64).fold(0.0, f64::max);
        assert!(dt <= TIMESTEP_MAX_ABS, "{}: timesteps {:?} vs diffusers {ts:?}", case.name, case.sampler.timesteps());
        if !c["sigmas"].is_null() {
            let d = max_rel(case.sampler.sigmas(), &floats(&c["sigmas"]));
            assert!(d <= SCHEDULE_MAX_REL, "{}: sigmas off by {d:e} relative", case.name);
            worst.1 = worst.1.max(d);
        }
        let want = c["init_noise_sigma"].as_f64().unwrap() as f32;
        let d = max_rel(&[case.sampler.init_noise_sigma()], &[want]);
        assert!(d <= SCHEDULE_MAX_REL, "{}: init_noise_sigma {} vs {want}", case.name, case.sampler.init_noise_sigma());
        worst.0 = worst.0.max(dt);
        worst.2 = worst.2.max(d);
    }
    println!("worst: timestep abs {:e}, sigma rel {:e}, init_noise_sigma rel {:e}", worst.0, worst.1, worst.2);
}

#[test]
fn sampling_loops_match_diffusers() {
    let fx = fixture();
    let shape: Vec<usize> =
        fx["latent_shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    let n: usize = shape.iter().product();
    let seed = fx["seed"].as_u64().unwrap();
    let (mut worst, mut worst_coef, mut identical, mut total) = (0f64, 0f64, 0, 0);
    for mut case in cases() {
        let c = case.json.clone();
        // Reference op order (Sampler::step).
        let mut rng = TorchRng::new(seed);
        let mut latents: Vec<f32> = rng.randn(n).iter().map(|&x| x * case.sampler.init_noise_sigma()).collect();
        let steps = case.sampler.steps();
        for i in 0..steps {
            let input = case.sampler.model_input(&latents, i);
            if i == 0 {
                let want = floats(&c["first_model_input_prefix"]);
                let d = max_rel(&input[..want.len()], &want);
                assert!(d <= SCHEDULE_MAX_REL * 2.0, "{}: first UNet input off by {d:e}", case.name);
            }
            let out = fake_model(&input, case.sampler.timesteps()[i]);
            latents = case.sampler.step(&out, i, &latents, &mut rng).unwrap();
        }
        let want = floats(&c["final"]);
        let d = max_abs_scaled(&latents, &want);
        assert!(d <= TRAJECTORY_MAX_REL_TO_SCALE, "{}: final latents off by {d:e} of their scale", case.name);
        worst = worst.max(d);
        identical += usize::from(latents == want);
        total += 1;
        // euler_a drew exactly one randn(n) per step, like diffusers: the generator is in the same state.
        assert_eq!(rng.randn(4), floats(&c["rng_after"]), "{}: generator state after the loop", case.name);

        // The same loop through the GPU-facing coefficients.
        case.sampler.reset();
        let mut rng = TorchRng::new(seed);
        let mut x: Vec<f32> = rng.randn(n).iter().map(|&v| v * case.sampler.init_noise_sigma()).collect();
        let mut prev = vec![0f32; n];
        for i in 0..steps {
            let k = case.sampler.coefficients(i).unwrap();
            let f = case.sampler.scale_model_input(i);
            let input: Vec<f32> = x.iter().map(|&v| v * f).collect();
            let out = fake_model(&input, case.sampler.timesteps()[i]);
            let noise = if k.draws_noise { rng.randn(n) } else { vec![0.0; n] };
            let den: Vec<f32> =
                x.iter().zip(&out).map(|(&s, &m)| k.denoised_sample * s + k.denoised_model * m).collect();
            x = (0..n)
                .map(|j| k.sample_c * x[j] + k.denoised_c * den[j] + k.prev_denoised_c * prev[j] + k.noise_c * noise[j])
                .collect();
            prev = den;
            // Keep the host sampler's step counter and history in sync.
            case.sampler.step(&out, i, &input, &mut TorchRng::new(0)).unwrap();
        }
        let d = max_abs_scaled(&x, &want);
        assert!(d <= COEFFICIENT_FORM_MAX_REL_TO_SCALE, "{}: coefficient form off by {d:e}", case.name);
        worst_coef = worst_coef.max(d);
    }
    println!(
        "worst final-latent error / scale: step {worst:e}, coefficients {worst_coef:e}; {identical}/{total} loops bit-identical"
    );
}

#[test]
fn leading_spacing_traps() {
    let e = Sampler::new(SamplerKind::Euler, 25, false, Prediction::Epsilon).unwrap();
    assert_eq!(e.timesteps()[0], 961.0);
    assert_eq!(*e.timesteps().last().unwrap(), 1.0);
    assert!(e.init_noise_sigma() > e.sigmas()[0]);
    let d = Sampler::new(SamplerKind::DpmPp2m, 25, false, Prediction::Epsilon).unwrap();
    assert_eq!(d.timesteps()[0], 951.0);
    assert_eq!(d.init_noise_sigma(), 1.0);
    assert_eq!(d.scale_model_input(0), 1.0);
    assert!(e.scale_model_input(0) < 1.0);
}

#[test]
fn bad_settings_are_clear_errors() {
    for steps in [0, MAX_STEPS + 1] {
        let err = Sampler::new(SamplerKind::Euler, steps, false, Prediction::Epsilon).err().unwrap();
        assert!(err.to_string().contains("steps"), "{err}");
    }
    let err = Sampler::new(SamplerKind::Ddim, 10, true, Prediction::Epsilon).err().unwrap();
    assert!(err.to_string().contains("Karras"), "{err}");
    let err = "heun".parse::<SamplerKind>().err().unwrap();
    assert!(err.to_string().contains("heun"), "{err}");

    let mut s = Sampler::new(SamplerKind::Euler, 4, false, Prediction::Epsilon).unwrap();
    let mut rng = TorchRng::new(0);
    assert!(s.step(&[0.0; 3], 0, &[0.0; 4], &mut rng).is_err(), "length mismatch");
    assert!(s.step(&[0.0; 4], 1, &[0.0; 4], &mut rng).is_err(), "out of order");
    assert!(s.step(&[0.0; 4], 0, &[0.0; 4], &mut rng).is_ok());
    assert!(s.coefficients(4).is_err(), "past the end");
}
