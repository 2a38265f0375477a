//! torch.randn with a seeded CPU generator, compared bit for bit with tests/fixtures/sampling/randn.json
//! (made by tests/fixtures/gen_sampling.py with torch's AVX2 kernels).

use sdxl_web::rng::TorchRng;
use serde_json::Value;

// Tolerance against torch's AVX2 build: none (0 ulp). Every value goes through the same f32
// operations (vectorised path, fused where torch's build fused them) or the same f64 Box-Muller then a
// cast to f32 (scalar path; libm's sub-ulp f64 log1p/sin/cos differences vanish in that cast).
/// torch's DEFAULT (no-AVX2) build, e.g. on ARM, evaluates log/sin/cos with libm in f32 instead of
/// the Cephes polynomials, so the two torch builds themselves differ: by up to 1.9e-6 absolute on
/// seed 42's 65536 values (in ulp this is large only where cos/sin is near zero). We match the AVX2
/// build x86 users run; this bound documents how far the other build is.
const MAX_ABS_VS_TORCH_DEFAULT_BUILD: f32 = 4e-6;

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sampling/randn.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("read randn.json")).expect("parse randn.json")
}

fn bits(v: &Value) -> Vec<u32> {
    v.as_array().expect("bits array").iter().map(|b| b.as_u64().expect("u32") as u32).collect()
}

fn ulp_diff(a: u32, b: u32) -> u32 {
    // Ordered integer mapping of f32 bit patterns.
    let key = |x: u32| if x & 0x8000_0000 != 0 { !x } else { x | 0x8000_0000 };
    key(a).abs_diff(key(b))
}

fn max_ulp(ours: &[u32], theirs: &[u32]) -> u32 {
    assert_eq!(ours.len(), theirs.len());
    ours.iter().zip(theirs).map(|(&a, &b)| ulp_diff(a, b)).max().unwrap_or(0)
}

fn fnv1a64(bits: &[u32]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bits {
        for byte in b.to_le_bytes() {
            h ^= byte as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

#[test]
fn randn_matches_torch_cpu_generator() {
    let fx = fixture();
    assert!(matches!(fx["cpu_capability"].as_str(), Some("AVX2" | "AVX512")));
    let mut checked = 0usize;
    for case in fx["cases"].as_array().unwrap() {
        let seed: u64 = case["seed"].as_str().unwrap().parse().unwrap();
        let mut rng = TorchRng::new(seed);
        for (k, call) in case["calls"].as_array().unwrap().iter().enumerate() {
            let n = call["n"].as_u64().unwrap() as usize;
            let ours: Vec<u32> = rng.randn(n).iter().map(|v| v.to_bits()).collect();
            let what = format!("seed {seed} call {k} (n = {n})");
            if let Some(full) = call.get("bits") {
                let d = max_ulp(&ours, &bits(full));
                assert_eq!(d, 0, "{what}: {d} ulp from torch");
            } else {
                let prefix = bits(&call["prefix_bits"]);
                let suffix = bits(&call["suffix_bits"]);
                let stride = call["stride"].as_u64().unwrap() as usize;
                let strided: Vec<u32> = ours.iter().step_by(stride).copied().collect();
                let d = max_ulp(&ours[..prefix.len()], &prefix)
                    .max(max_ulp(&ours[n - suffix.len()..], &suffix))
                    .max(max_ulp(&strided, &bits(&call["stride_bits"])));
                assert_eq!(d, 0, "{what}: {d} ulp from torch (sampled values)");
                let hash = format!("{:016x}", fnv1a64(&ours));
                assert_eq!(hash, call["fnv1a64"].as_str().unwrap(), "{what}: hash of all values");
            }
            let mean = ours.iter().map(|&b| f32::from_bits(b) as f64).sum::<f64>() / n.max(1) as f64;
            assert!((mean - call["mean"].as_f64().unwrap()).abs() < 1e-12, "{what}: mean");
            checked += n;
        }
    }
    assert!(checked > 2 * 65536);
}

#[test]
fn randn_close_to_torch_default_build() {
    let fx = fixture();
    let theirs = bits(&fx["default_capability_seed42_prefix_bits"]);
    let ours: Vec<u32> = TorchRng::new(42).randn(4 * 128 * 128)[..theirs.len()].iter().map(|v| v.to_bits()).collect();
    let d = ours.iter().zip(&theirs).map(|(&a, &b)| (f32::from_bits(a) - f32::from_bits(b)).abs()).fold(0f32, f32::max);
    let same = ours.iter().zip(&theirs).filter(|(a, b)| a == b).count();
    println!("vs torch DEFAULT build: max abs {d:e}, {same}/{} identical", theirs.len());
    assert!(d <= MAX_ABS_VS_TORCH_DEFAULT_BUILD, "{d} from torch's DEFAULT build");
}

#[test]
fn seed_uses_low_32_bits_like_torch() {
    let a = TorchRng::new((1u64 << 32) + 7).randn(20);
    let b = TorchRng::new(7).randn(20);
    assert_eq!(a, b);
}

#[test]
fn randn_of_nothing_consumes_nothing() {
    let mut a = TorchRng::new(3);
    assert!(a.randn(0).is_empty());
    assert_eq!(a.randn(5), TorchRng::new(3).randn(5));
}
