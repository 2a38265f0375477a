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
        /// Show a checkpoint's layout, per-component parameters and dtype, and inferred config
        /// (reads headers only; no GPU).
        Inspect {
            /// SDXL single-file .safetensors, or a diffusers model folder.
            #[arg(long)]
            model: std::path::PathBuf,
            /// A separate VAE overriding the model's.
            #[arg(long)]
            vae: Option<std::path::PathBuf>,
            #[arg(long)]
            json: bool,
        },
        /// Developer tools.
        Dev {
            #[command(subcommand)]
            command: DevCommand,
        },
    }

    #[derive(Subcommand)]
    enum DevCommand {
        /// Write a full-size SDXL 1.0 base single-file checkpoint with random f16 weights.
        RandomCheckpoint {
            #[arg(long)]
            out: std::path::PathBuf,
            /// Stored dtype (only f16 is written).
            #[arg(long, default_value = "f16", value_parser = ["f16"])]
            dtype: String,
            #[arg(long, default_value_t = 0)]
            seed: u64,
        },
        /// Stream a model through the loader and report time and throughput.
        Load {
            #[arg(long)]
            model: std::path::PathBuf,
            #[arg(long)]
            vae: Option<std::path::PathBuf>,
            /// gpu: upload to GPU buffers; null: convert and discard (host memory only).
            #[arg(long, default_value = "gpu", value_parser = ["gpu", "null"])]
            sink: String,
            /// Read size in MiB.
            #[arg(long, default_value_t = 16)]
            chunk_mib: usize,
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
            Command::Inspect { model, vae, json } => inspect(&model, vae.as_deref(), json),
            Command::Dev { command: DevCommand::RandomCheckpoint { out, dtype: _, seed } } => {
                random_checkpoint(&out, seed)
            }
            Command::Dev { command: DevCommand::Load { model, vae, sink, chunk_mib } } => {
                dev_load(opts, &model, vae.as_deref(), &sink, chunk_mib)
            }
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

    fn inspect(model: &std::path::Path, vae: Option<&std::path::Path>, json: bool) -> sdxl_web::Result<()> {
        let ins = sdxl_web::weights::inspect_path(model, vae)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&ins).expect("Inspection serialises"));
            return Ok(());
        }
        println!("layout  {}", ins.layout);
        for (name, c) in &ins.components {
            println!("{name:<15} {:>15} params  {:<8} {}", group(c.params), c.dtype, c.file);
        }
        let u = &ins.config.unet;
        println!(
            "unet            channels {} × {:?}, {} res blocks/level, transformer depth {:?} (middle {}), heads {:?} (middle {}) of {}, context {}, adm {} (pooled {} + 6 × {})",
            u.model_channels,
            u.channel_mult,
            u.num_res_blocks,
            u.transformer_depth,
            u.transformer_depth_middle,
            u.num_heads,
            u.num_heads_middle,
            u.head_dim,
            u.context_dim,
            u.adm_in_channels,
            u.pooled_dim,
            u.addition_time_embed_dim
        );
        for (name, t) in [("text_encoder", &ins.config.text_encoder), ("text_encoder_2", &ins.config.text_encoder_2)] {
            println!(
                "{name:<15} hidden {}, {} layers, {} heads, mlp {}, vocab {}, positions {}{}",
                t.hidden,
                t.layers,
                t.heads,
                t.intermediate,
                t.vocab,
                t.max_positions,
                t.projection.map(|p| format!(", projection {p}")).unwrap_or_default()
            );
        }
        let v = &ins.config.vae;
        println!(
            "vae             channels {} × {:?}, {} res blocks/level, z {} (embed {})",
            v.ch, v.ch_mult, v.num_res_blocks, v.z_channels, v.embed_dim
        );
        Ok(())
    }

    fn group(n: u64) -> String {
        let s = n.to_string();
        let mut out = String::new();
        for (i, ch) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(ch);
        }
        out
    }

    fn random_checkpoint(out: &std::path::Path, seed: u64) -> sdxl_web::Result<()> {
        let cfg = sdxl_web::weights::ModelConfig::sdxl_base();
        let t = std::time::Instant::now();
        let bytes = sdxl_web::weights::random::write_random_checkpoint(out, &cfg, seed)?;
        println!("wrote {} ({} bytes) in {:.1} s", out.display(), group(bytes), t.elapsed().as_secs_f64());
        Ok(())
    }

    fn dev_load(
        opts: GpuOptions,
        model: &std::path::Path,
        vae: Option<&std::path::Path>,
        sink: &str,
        chunk_mib: usize,
    ) -> sdxl_web::Result<()> {
        use sdxl_web::weights::{load_path, GpuSink, NullSink};
        let chunk = chunk_mib.max(1) << 20;
        let t = std::time::Instant::now();
        let mut read = 0u64;
        let (tensors, detail) = if sink == "null" {
            let l = load_path(model, vae, NullSink::default(), sdxl_web::gpu::DType::F16, chunk, |n| read = n)?;
            (l.tensors.len(), format!("{} bytes converted and discarded", group(l.sink.bytes)))
        } else {
            let gpu = Gpu::new_blocking(opts)?;
            let dtype = if gpu.info.shader_f16 { sdxl_web::gpu::DType::F16 } else { sdxl_web::gpu::DType::F32 };
            let l = load_path(model, vae, GpuSink::new(&gpu), dtype, chunk, |n| read = n)?;
            let n = l.tensors.len();
            let w = l.sink.into_weights()?;
            gpu.sync()?;
            let (live, cached) = gpu.memory_stats();
            (
                n,
                format!(
                    "{} GPU tensors ({dtype:?}), pool: {} MiB live, {} MiB cached",
                    w.len(),
                    live >> 20,
                    cached >> 20
                ),
            )
        };
        let s = t.elapsed().as_secs_f64();
        println!(
            "loaded {tensors} tensors, read {} bytes in {s:.1} s ({:.0} MiB/s); {detail}",
            group(read),
            read as f64 / s / (1 << 20) as f64
        );
        Ok(())
    }
}
