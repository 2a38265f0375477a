// smoke: y = a·x + b over f16 storage — the runtime's end-to-end check (both compute paths).
//
// Bindings (group 0): 0 x: array<u32> (f16 pairs, read), 1 y: array<u32> (f16 pairs, write),
//                     2 params: uniform { n: u32 elements, a: f32, b: f32 }
// Dispatch: ceil(ceil(n/2) / 64) workgroups of 64 threads, split over x/y by `gpu::grid`;
//           one thread per u32 word (two elements).

struct Params {
    n: u32,
    a: f32,
    b: f32,
}

@group(0) @binding(0) var<storage, read> x: array<u32>;
@group(0) @binding(1) var<storage, read_write> y: array<u32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let w = gid.x + gid.y * nwg.x * 64u;
    if (w * 2u >= p.n) {
        return;
    }
    let v = unpack_h2(x[w]);
    let r = v * ct(p.a) + ct(p.b);
    y[w] = pack_h2(r);
}
