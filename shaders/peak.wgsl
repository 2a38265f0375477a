// peak: FMA throughput microbenchmark, the denominator of the benchmark's "% of peak". Each
// thread runs 8 independent vec4 FMA chains (32 scalar FMAs per round, enough to hide FMA latency)
// in the compute path's type `ct` (f16 on the f16 path, f32 otherwise); the operands come from
// the uniform so nothing folds, and the result is stored so nothing is dead.
//
// Bindings (group 0): 0 out: array<f32> (one value per thread, write),
//                     1 params: uniform { rounds: u32, b: f32, c: f32 }
// Dispatch: [groups, 1, 1] workgroups of 256 threads; FLOPs = groups·256·rounds·32·2.

struct Params {
    rounds: u32,
    b: f32,
    c: f32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let b = ct4(ct(p.b));
    let c = ct4(ct(p.c));
    let s = ct(f32(gid.x & 15u) * 0.0625);
    var a0 = ct4(s, s + ct(0.01), s + ct(0.02), s + ct(0.03));
    var a1 = a0 + ct4(ct(0.1));
    var a2 = a0 + ct4(ct(0.2));
    var a3 = a0 + ct4(ct(0.3));
    var a4 = a0 + ct4(ct(0.4));
    var a5 = a0 + ct4(ct(0.5));
    var a6 = a0 + ct4(ct(0.6));
    var a7 = a0 + ct4(ct(0.7));
    for (var r = 0u; r < p.rounds; r++) {
        a0 = fma(a0, b, c);
        a1 = fma(a1, b, c);
        a2 = fma(a2, b, c);
        a3 = fma(a3, b, c);
        a4 = fma(a4, b, c);
        a5 = fma(a5, b, c);
        a6 = fma(a6, b, c);
        a7 = fma(a7, b, c);
    }
    let t = vec4<f32>((a0 + a1) + (a2 + a3) + (a4 + a5) + (a6 + a7));
    out[gid.x] = t.x + t.y + t.z + t.w;
}
