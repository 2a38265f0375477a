//! `sdxl`: the native command-line front end (Vulkan). The only CLI file.

#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    cli::main()
}

#[cfg(not(target_arch = "wasm32"))]
mod cli {
    use std::process::ExitCode;

    use clap::{Parser, Subcommand};
    use sdxl_web::gpu::{Gpu, GpuOptions};

    #[derive(Parser)]
    #[command(name = "sdxl", version, about = "SDXL text-to-image on your GPU (native Vulkan)")]
    struct Cli {
        /// Use f32 arithmetic in kernels even when the GPU has shader-f16.
        #[arg(long, global = true)]
        f32: bool,
        #[command(subcommand)]
        command: Command,
    }

    #[derive(Subcommand)]
    enum Command {
        /// Print the GPU adapter, its features and the limits granted.
        Info {
            #[arg(long)]
            json: bool,
        },
        /// Benchmarks.
        Bench {
            #[command(subcommand)]
            what: BenchWhat,
        },
    }

    #[derive(Subcommand)]
    enum BenchWhat {
        /// Time each kernel at SDXL shapes: ms, GFLOP/s, % of the measured FMA peak.
        Kernels {
            /// Print the rows as a JSON list instead of a table.
            #[arg(long)]
            json: bool,
            /// Fewer, shorter runs.
            #[arg(long)]
            quick: bool,
            /// Only kernels whose name contains this (repeatable); the peak always runs.
            #[arg(long)]
            only: Vec<String>,
        },
    }

    pub fn main() -> ExitCode {
        let cli = match Cli::try_parse() {
            Ok(c) => c,
            Err(e) => {
                let _ = e.print();
                // clap: help/version exit 0, usage errors exit 2.
                return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
            }
        };
        let mut opts = GpuOptions::from_env();
        opts.force_f32 |= cli.f32;
        let result = match cli.command {
            Command::Info { json } => info(opts, json),
            Command::Bench { what: BenchWhat::Kernels { json, quick, only } } => bench_kernels(opts, json, quick, only),
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    }

    fn info(opts: GpuOptions, json: bool) -> sdxl_web::Result<()> {
        let gpu = Gpu::new_blocking(opts)?;
        let i = &gpu.info;
        if json {
            println!("{}", serde_json::to_string_pretty(i).expect("GpuInfo serialises"));
            return Ok(());
        }
        println!("adapter      {}", i.name);
        println!("backend      {} ({})", i.backend, i.device_type);
        println!("driver       {} {}", i.driver, i.driver_info);
        println!("shader-f16   {}", yes(i.shader_f16));
        println!("subgroup     {}", yes(i.subgroup));
        println!("timestamps   {}", yes(i.timestamp_query));
        println!("compute path {}", i.compute_path);
        let l = &i.limits;
        println!("limits:");
        println!("  max_buffer_size                       {}", mib(l.max_buffer_size));
        println!("  max_storage_buffer_binding_size       {}", mib(l.max_storage_buffer_binding_size));
        println!("  max_uniform_buffer_binding_size       {}", mib(l.max_uniform_buffer_binding_size));
        println!("  max_storage_buffers_per_shader_stage  {}", l.max_storage_buffers_per_shader_stage);
        println!("  max_compute_workgroup_storage_size    {}", l.max_compute_workgroup_storage_size);
        println!("  max_compute_invocations_per_workgroup {}", l.max_compute_invocations_per_workgroup);
        println!(
            "  max_compute_workgroup_size_x/y        {}/{}",
            l.max_compute_workgroup_size_x, l.max_compute_workgroup_size_y
        );
        println!("  max_compute_workgroups_per_dimension  {}", l.max_compute_workgroups_per_dimension);
        println!("  min_storage_buffer_offset_alignment   {}", l.min_storage_buffer_offset_alignment);
        Ok(())
    }

    fn bench_kernels(opts: GpuOptions, json: bool, quick: bool, only: Vec<String>) -> sdxl_web::Result<()> {
        let gpu = Gpu::new_blocking(opts)?;
        eprintln!("benchmarking on {} ({} path)", gpu.info.name, gpu.info.compute_path);
        let mut b = sdxl_web::ops::bench::Bench::new(&gpu, quick, only);
        b.run()?;
        if json {
            println!("{}", serde_json::to_string_pretty(&b.rows).expect("rows serialise"));
        } else {
            print!("{}", b.table());
        }
        Ok(())
    }

    fn yes(b: bool) -> &'static str {
        if b {
            "yes"
        } else {
            "no"
        }
    }

    fn mib(b: u64) -> String {
        format!("{b} ({} MiB)", b >> 20)
    }
}
