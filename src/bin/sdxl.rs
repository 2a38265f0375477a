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
        /// Print the token ids (chunks of 77) each text encoder gets for a prompt.
        Tokenize {
            /// Prompt text; A1111 emphasis `(x)`, `[x]`, `(x:1.3)`, `\(` and `BREAK` apply.
            #[arg(long)]
            prompt: String,
            /// Rating keyword appended to the prompt: none, sensitive, questionable, explicit.
            #[arg(long, default_value = "none")]
            rating: sdxl_web::prompt::Rating,
            /// `{"clip_l": [[77 ids], ...], "clip_g": [[...], ...]}`.
            #[arg(long)]
            json: bool,
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
            Command::Tokenize { prompt, rating, json } => tokenize(&prompt, rating, json),
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

    fn tokenize(prompt: &str, rating: sdxl_web::prompt::Rating, json: bool) -> sdxl_web::Result<()> {
        use sdxl_web::prompt::{Chunk, PromptTokens};
        use sdxl_web::tokenizer::{CONTEXT_LEN, EOS};
        use std::fmt::Write as _;

        // A struct, not json!(), so "clip_l" comes first.
        #[derive(serde::Serialize)]
        struct Out {
            clip_l: Vec<Vec<u32>>,
            clip_g: Vec<Vec<u32>>,
        }
        let toks = sdxl_web::tokenizer::SdxlTokenizers::new()?;
        let t = PromptTokens::new(prompt, rating, &toks)?;
        let ids = |c: &[Chunk]| c.iter().map(|c| c.ids.to_vec()).collect::<Vec<_>>();
        let mut s = String::new();
        if json {
            let out = Out { clip_l: ids(&t.clip_l), clip_g: ids(&t.clip_g) };
            s = serde_json::to_string(&out).map_err(|e| sdxl_web::Error::Input(e.to_string()))?;
            s.push('\n');
        } else {
            for (name, chunks) in [("clip_l", &t.clip_l), ("clip_g", &t.clip_g)] {
                let _ = writeln!(s, "{name}: {} chunk(s)", chunks.len());
                for (i, c) in chunks.iter().enumerate() {
                    // Up to and including the first eos (the one the encoders pool at); the rest is padding.
                    let end = c.ids[1..].iter().position(|&x| x == EOS).map_or(CONTEXT_LEN, |p| p + 2);
                    let shown: Vec<String> = c.ids[..end].iter().map(|x| x.to_string()).collect();
                    let _ = writeln!(s, "  [{i}] {} tokens: {} + {} pad", end - 2, shown.join(" "), CONTEXT_LEN - end);
                    if c.weights.iter().any(|&w| w != 1.0) {
                        let w: Vec<String> = c.weights[..end].iter().map(|w| format!("{w:.4}")).collect();
                        let _ = writeln!(s, "      weights: {}", w.join(" "));
                    }
                }
            }
        }
        print_out(&s)
    }

    /// Write to stdout; a closed pipe (`| head`) is not an error, and never a panic.
    fn print_out(s: &str) -> sdxl_web::Result<()> {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        match out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                Err(sdxl_web::Error::Io { path: "stdout".into(), source: e })
            }
            _ => Ok(()),
        }
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
