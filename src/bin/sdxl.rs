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
        /// Serve a folder over HTTP on 127.0.0.1 (static files, Range requests; for www/).
        Serve {
            #[arg(long, default_value = "www")]
            dir: std::path::PathBuf,
            /// Also serve DIR under /PREFIX/ (repeatable), e.g. `--mount fixtures=tests/fixtures`.
            #[arg(long, value_name = "PREFIX=DIR")]
            mount: Vec<String>,
            #[arg(long, default_value_t = 8080)]
            port: u16,
            #[arg(long, default_value = "127.0.0.1")]
            host: String,
        },
        /// GPU self-check, no model needed: every kernel and variant on the compute path in use
        /// (`--f32` for the f32 path) against CPU references, with GPU times. Exit 1 on a failure.
        Selfcheck {
            /// Print the report as JSON instead of a table.
            #[arg(long)]
            json: bool,
            /// Then time each kernel family at SDXL's 1024x1024 shapes and estimate the seconds
            /// per UNet step (batch 2, CFG); with --json, under "timing". Calls too slow for the
            /// device (CPU drivers) are timed smaller and extrapolated.
            #[arg(long)]
            timing: bool,
        },
        /// Benchmarks.
        Bench {
            #[command(subcommand)]
            what: BenchWhat,
        },
        /// Text to image: writes a PNG carrying A1111 `parameters` metadata.
        Generate(Box<GenerateArgs>),
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

    #[derive(clap::Args)]
    struct GenerateArgs {
        /// SDXL single-file .safetensors, or a diffusers model folder.
        #[arg(long)]
        model: std::path::PathBuf,
        /// A separate VAE overriding the model's (e.g. the fp16-fix SDXL VAE).
        #[arg(long)]
        vae: Option<std::path::PathBuf>,
        /// Prompt; A1111 emphasis `(x)`, `[x]`, `(x:1.3)`, `\(` and `BREAK` apply.
        #[arg(long)]
        prompt: String,
        /// Negative prompt. Absent: no negative prompt (zero conditioning); `--negative ""`
        /// encodes the empty string.
        #[arg(long)]
        negative: Option<String>,
        /// Image width (default 1024; with --init-image, the image's width rounded down to a
        /// multiple of 8).
        #[arg(long)]
        width: Option<usize>,
        /// Image height (default 1024; with --init-image, the image's).
        #[arg(long)]
        height: Option<usize>,
        /// img2img: start from this PNG or JPEG (resized with PIL's LANCZOS filter, as diffusers
        /// does, when --width/--height differ from its size).
        #[arg(long, value_name = "FILE")]
        init_image: Option<std::path::PathBuf>,
        /// img2img / inpainting strength in (0, 1]: int(steps × strength) steps run (diffusers'
        /// convention).
        #[arg(long, default_value_t = 0.75)]
        strength: f32,
        /// Inpainting mask (PNG or JPEG; white = repaint, binarised at 0.5; resized to the image
        /// size when it differs). Needs --init-image.
        #[arg(long, value_name = "FILE")]
        mask: Option<std::path::PathBuf>,
        /// Hires fix (A1111's, "Latent" upscaler): upscale the latents by this factor (1 to 4)
        /// and refine them with an img2img pass.
        #[arg(long)]
        hires_scale: Option<f32>,
        /// Strength of the hires pass.
        #[arg(long, default_value_t = 0.5)]
        hires_strength: f32,
        /// Steps of the hires pass before the strength cut (default: --steps).
        #[arg(long)]
        hires_steps: Option<usize>,
        #[arg(long, default_value_t = 25)]
        steps: usize,
        /// Classifier-free guidance scale (≤ 1 turns CFG off).
        #[arg(long, default_value_t = 7.0)]
        cfg: f32,
        /// Seed of torch's CPU generator (random when absent; printed).
        #[arg(long)]
        seed: Option<u64>,
        /// euler, euler_a, dpmpp_2m or ddim.
        #[arg(long, default_value = "euler_a")]
        sampler: sdxl_web::sampler::SamplerKind,
        /// Karras sigmas (not with ddim).
        #[arg(long)]
        karras: bool,
        /// The model card's rating keyword appended to the prompt: none, sensitive, questionable, explicit.
        #[arg(long, default_value = "none")]
        rating: sdxl_web::prompt::Rating,
        /// Text-encoder layers skipped beyond the penultimate (diffusers' clip_skip; 0 = SDXL's default).
        #[arg(long, default_value_t = 0)]
        clip_skip: usize,
        /// The model predicts v (v-prediction finetunes).
        #[arg(long)]
        v_prediction: bool,
        #[arg(long, default_value = "sdxl.png")]
        output: std::path::PathBuf,
        /// Write DIR/dump.safetensors: token ids, context, pooled, add_time_ids, initial and final latents.
        #[arg(long)]
        dump: Option<std::path::PathBuf>,
        /// GPU memory the run must fit in (e.g. 7.5G, 24G, 6144M): the planner picks text-encoder
        /// residency and VAE tiling to fit, or refuses before any work.
        #[arg(long, default_value = "7.5G")]
        gpu_memory: sdxl_web::pipeline::MemSize,
        /// VAE tile size in pixels, as diffusers' enable_tiling (0: decide from the budget).
        #[arg(long, default_value_t = 0)]
        vae_tile: usize,
        /// Overlap of VAE tiles (diffusers' tile_overlap_factor).
        #[arg(long, default_value_t = 0.25)]
        vae_tile_overlap: f32,
        /// A LoRA file (kohya or diffusers .safetensors) with its weight (default 1; negative
        /// allowed): `--lora style.safetensors:0.8`. Repeatable.
        #[arg(long = "lora", value_name = "FILE[:WEIGHT]")]
        loras: Vec<String>,
        /// Where `<lora:NAME:WEIGHT>` tags in the prompt find NAME.safetensors (A1111 syntax; the
        /// tag is removed from the text the encoders see).
        #[arg(long)]
        lora_dir: Option<std::path::PathBuf>,
        /// An SDXL textual-inversion embedding (clip_l / clip_g); the prompt uses it by the file's
        /// stem or `embedding:STEM`. Repeatable.
        #[arg(long = "embedding", value_name = "FILE")]
        embeddings: Vec<std::path::PathBuf>,
        /// Print one JSON report on stdout at the end: peak GPU memory, per-stage peaks and times,
        /// the memory plan (progress stays on stderr).
        #[arg(long)]
        json: bool,
        /// Run the same code path with nothing computed (headers only, no weight data read, every
        /// dispatch and readback skipped): the peak GPU memory at any size in seconds. Writes no image.
        #[arg(long)]
        dry_run: bool,
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
            /// All-zero weights as a hole in the file: full size, no disk space, written at once
            /// (enough for `generate --dry-run`, which reads only the header).
            #[arg(long)]
            sparse: bool,
        },
        /// Assemble `./x gpu-report`'s report: merge the outputs its steps left in DIR
        /// (steps.tsv, meta.tsv, NAME.out and NAME.err: each step's stdout and stderr) into one
        /// JSON file and print a summary. Exit 1 when a step failed.
        GpuReport {
            #[arg(long)]
            dir: std::path::PathBuf,
            #[arg(long)]
            out: std::path::PathBuf,
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
            Command::Dev { command: DevCommand::RandomCheckpoint { out, dtype: _, seed, sparse } } => {
                random_checkpoint(&out, seed, sparse)
            }
            Command::Dev { command: DevCommand::GpuReport { dir, out } } => match gpu_report::run(&dir, &out) {
                Ok(true) => return ExitCode::SUCCESS,
                // The report is written and its failures printed; no second message.
                Ok(false) => return ExitCode::FAILURE,
                Err(e) => Err(e),
            },
            Command::Dev { command: DevCommand::Load { model, vae, sink, chunk_mib } } => {
                dev_load(opts, &model, vae.as_deref(), &sink, chunk_mib)
            }
            Command::Serve { dir, port, host, mount } => serve::run(&dir, &mount, &host, port),
            Command::Bench { what: BenchWhat::Kernels { json, quick, only } } => bench_kernels(opts, json, quick, only),
            Command::Selfcheck { json, timing } => selfcheck(opts, json, timing),
            Command::Tokenize { prompt, rating, json } => tokenize(&prompt, rating, json),
            Command::Generate(args) => generate(opts, *args),
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                // Bad arguments (sizes, steps, prompt, a missing model file) exit 2 like clap's usage errors.
                let usage = matches!(e, sdxl_web::Error::Input(_))
                    || matches!(&e, sdxl_web::Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound);
                ExitCode::from(if usage { 2 } else { 1 })
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

    fn selfcheck(opts: GpuOptions, json: bool, timing: bool) -> sdxl_web::Result<()> {
        use sdxl_web::timing::{StepModel, TimingOptions};
        let gpu = Gpu::new_blocking(opts)?;
        eprintln!("self-check on {} ({} path)", gpu.info.name, gpu.info.compute_path);
        let report = sdxl_web::selfcheck::run_blocking(&gpu)?;
        if !json {
            print!("{}", report.table());
        }
        let t = if timing {
            eprintln!("timing kernels at SDXL 1024x1024 shapes");
            let t =
                pollster::block_on(sdxl_web::timing::run(&gpu, &TimingOptions::sdxl_1024(), &StepModel::sdxl_base()))?;
            if !json {
                print!("\n{}", t.table());
            }
            Some(t)
        } else {
            None
        };
        if json {
            let mut v = serde_json::to_value(&report).expect("report serialises");
            if let (Some(t), Some(o)) = (&t, v.as_object_mut()) {
                o.insert("timing".into(), serde_json::to_value(t).expect("timing serialises"));
            }
            println!("{}", serde_json::to_string_pretty(&v).expect("report serialises"));
        }
        if report.passed {
            Ok(())
        } else {
            Err(sdxl_web::Error::Gpu(format!(
                "self-check: {} of {} checks failed",
                report.failures,
                report.checks.len()
            )))
        }
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

    /// A seed in A1111's range (< 2^32) from the OS's hash randomness.
    fn random_seed() -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
        h.finish() >> 32
    }

    fn generate(opts: GpuOptions, a: GenerateArgs) -> sdxl_web::Result<()> {
        use sdxl_web::pipeline::{generate_with, Model, Settings};
        let read = |p: &std::path::Path| -> sdxl_web::Result<sdxl_web::image::InputImage> {
            let bytes =
                std::fs::read(p).map_err(|source| sdxl_web::Error::Io { path: p.display().to_string(), source })?;
            Ok(sdxl_web::image::InputImage::Encoded { bytes })
        };
        let init_image = a.init_image.as_deref().map(read).transpose()?;
        // With an init image, an unset side comes from the image (0 → Settings::resolved).
        let side = |v: Option<usize>| v.unwrap_or(if init_image.is_some() { 0 } else { 1024 });
        let settings = Settings {
            prompt: a.prompt,
            negative: a.negative,
            width: side(a.width),
            height: side(a.height),
            mask: a.mask.as_deref().map(read).transpose()?,
            init_image,
            strength: a.strength,
            hires_scale: a.hires_scale.unwrap_or(0.0),
            hires_strength: a.hires_strength,
            hires_steps: a.hires_steps.unwrap_or(0),
            steps: a.steps,
            cfg: a.cfg,
            seed: a.seed.unwrap_or_else(random_seed),
            sampler: a.sampler,
            karras: a.karras,
            rating: a.rating,
            clip_skip: a.clip_skip,
            v_prediction: a.v_prediction,
            gpu_memory: a.gpu_memory,
            vae_tile: a.vae_tile,
            vae_tile_overlap: a.vae_tile_overlap,
            loras: Vec::new(),
        };
        let mut settings = settings;
        // --lora FILE[:WEIGHT]: the weight is the part after the last ':' when it is a number.
        let mut lora_files = Vec::new();
        for spec in &a.loras {
            let (file, weight) = match spec.rsplit_once(':') {
                Some((f, w)) if w.parse::<f32>().is_ok() => (f, w.parse::<f32>().unwrap_or(1.0)),
                _ => (spec.as_str(), 1.0),
            };
            let path = std::path::PathBuf::from(file);
            let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            settings.loras.push(sdxl_web::lora::LoraWeight { name, weight });
            lora_files.push(path);
        }
        // <lora:NAME:…> tags not given by --lora come from --lora-dir.
        for tag in settings.all_loras()? {
            if lora_files.iter().any(|p| p.file_stem().is_some_and(|s| s.to_string_lossy() == tag.name)) {
                continue;
            }
            let Some(dir) = &a.lora_dir else {
                return Err(sdxl_web::Error::Input(format!(
                    "the prompt uses <lora:{}>, but no --lora-dir says where LoRA files are",
                    tag.name
                )));
            };
            lora_files.push(dir.join(format!("{}.safetensors", tag.name)));
        }
        // Everything checkable before the (slow) load (the images are decoded here too).
        let settings = settings.resolved()?;
        for p in std::iter::once(&a.model).chain(a.vae.as_ref()).chain(&lora_files).chain(&a.embeddings) {
            if !p.exists() {
                let source = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory");
                return Err(sdxl_web::Error::Io { path: p.display().to_string(), source });
            }
        }
        if !settings.is_bucket() {
            eprintln!(
                "warning: {}x{} is not one of the model card's resolution buckets (e.g. 1024x1024, 832x1216, 1216x832); expect weaker images",
                settings.width, settings.height
            );
        }
        eprintln!("seed {}", settings.seed);
        let real = Gpu::new_blocking(opts)?;
        eprintln!(
            "GPU {} ({} path){}",
            real.info.name,
            real.info.compute_path,
            if a.dry_run { ", dry run" } else { "" }
        );
        let gpu = if a.dry_run { real.dry_twin() } else { real };

        let total = sdxl_web::weights::model_files(&a.model, a.vae.as_deref(), sdxl_web::gpu::DType::F16)
            .map(|(_, files)| files.iter().filter_map(|(p, _)| std::fs::metadata(p).ok()).map(|m| m.len()).sum::<u64>())
            .unwrap_or(0);
        let bar = indicatif::ProgressBar::new(total).with_style(
            indicatif::ProgressStyle::with_template("loading {bar:30} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}")
                .expect("static template"),
        );
        let t0 = std::time::Instant::now();
        let model = Model::load(&gpu, &a.model, a.vae.as_deref(), |n| bar.set_position(n))?;
        bar.finish_and_clear();
        eprintln!("loaded {} in {:.1} s", model.name, t0.elapsed().as_secs_f64());
        for p in &lora_files {
            let name = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let bytes =
                std::fs::read(p).map_err(|source| sdxl_web::Error::Io { path: p.display().to_string(), source })?;
            model.load_lora(&gpu, &name, &p.display().to_string(), &bytes)?;
        }
        for p in &a.embeddings {
            let name = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let bytes =
                std::fs::read(p).map_err(|source| sdxl_web::Error::Io { path: p.display().to_string(), source })?;
            model.load_embedding(&gpu, &name, &p.display().to_string(), &bytes)?;
        }

        let bar = indicatif::ProgressBar::new(settings.steps as u64).with_style(
            indicatif::ProgressStyle::with_template("step {pos}/{len} {bar:30} {per_sec} ETA {eta}")
                .expect("static template"),
        );
        let t1 = std::time::Instant::now();
        // When each step ended: every step reads the UNet output back, so these are GPU-complete.
        let mut step_ends = Vec::new();
        let out = pollster::block_on(generate_with(&gpu, &model, &settings, a.dump.is_some(), &mut |p| {
            step_ends.push(std::time::Instant::now());
            // img2img and the hires fix run another number of steps than --steps.
            bar.set_length(p.total as u64);
            bar.set_position(p.step as u64);
            true
        }))?;
        bar.finish_and_clear();
        let secs = t1.elapsed().as_secs_f64();
        let steps = out.report.steps;
        eprintln!("{steps} steps in {secs:.1} s ({:.2} it/s)", steps as f64 / secs);
        let r = &out.report;
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        eprintln!(
            "peak GPU memory {:.2} GiB (text {:.2}, unet {:.2}, vae {:.2}) of a {:.2} GiB budget; text encoders {:?}, VAE {}",
            gib(r.peak_gpu_bytes),
            gib(r.stages.text.peak_gpu_bytes),
            gib(r.stages.unet.peak_gpu_bytes),
            gib(r.stages.vae.peak_gpu_bytes),
            gib(r.plan.gpu_memory),
            r.plan.text_encoders,
            if r.plan.vae_tile == 0 { "whole".to_string() } else { format!("in {} px tiles", r.plan.vae_tile) }
        );
        let io = |path: &std::path::Path| {
            let path = path.display().to_string();
            move |source| sdxl_web::Error::Io { path, source }
        };
        let emit_json = |output: Option<String>| {
            if a.json {
                let mut v = serde_json::to_value(&out.report).expect("Report serialises");
                v["output"] = output.map_or(serde_json::Value::Null, serde_json::Value::String);
                v["step_seconds"] = step_seconds(out.report.stages.unet.seconds, &step_ends).into();
                println!("{}", serde_json::to_string_pretty(&v).expect("JSON value serialises"));
            }
        };
        if a.dry_run {
            emit_json(None);
            if !a.json {
                println!("dry run: no image written");
            }
            return Ok(());
        }
        std::fs::write(&a.output, &out.png).map_err(io(&a.output))?;
        if let (Some(dir), Some(d)) = (&a.dump, &out.dump) {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
            let file = dir.join("dump.safetensors");
            std::fs::write(&file, d.to_safetensors()?).map_err(io(&file))?;
            eprintln!("wrote {}", file.display());
        }
        if a.json {
            emit_json(Some(a.output.display().to_string()));
            eprintln!("wrote {} ({}x{}, seed {})", a.output.display(), out.width, out.height, out.seed);
        } else {
            println!("wrote {} ({}x{}, seed {})", a.output.display(), out.width, out.height, out.seed);
        }
        Ok(())
    }

    /// Seconds of each denoising step from the instants steps ended: step k > 1 is the time since
    /// step k − 1 ended; step 1 is the rest of the UNet stage (its set-up and first-use pipeline
    /// compilation included), so the list sums to `stages.unet.seconds`.
    fn step_seconds(unet_seconds: f64, ends: &[std::time::Instant]) -> Vec<f64> {
        let later: Vec<f64> = ends.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
        if ends.is_empty() {
            return later;
        }
        let first = (unet_seconds - later.iter().sum::<f64>()).max(0.0);
        std::iter::once(first).chain(later).collect()
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

    fn inspect(model: &std::path::Path, vae: Option<&std::path::Path>, json: bool) -> sdxl_web::Result<()> {
        let ins = sdxl_web::weights::inspect_path(model, vae)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&ins).expect("Inspection serialises"));
            return Ok(());
        }
        println!("layout  {}", ins.layout);
        for (name, c) in &ins.components {
            let cfg = c.config_file.as_deref().map(|f| format!(" + {f}")).unwrap_or_default();
            println!("{name:<15} {:>15} params  {:<8} {}{cfg}", group(c.params), c.dtype, c.file);
        }
        let u = &ins.config.unet;
        println!(
            "unet            channels {} × {:?}, {} res blocks/level, transformer depth {:?} (middle {}), heads {:?} (middle {}), {} norm groups, context {}, adm {} (pooled {} + 6 × {})",
            u.model_channels,
            u.channel_mult,
            u.num_res_blocks,
            u.transformer_depth,
            u.transformer_depth_middle,
            u.num_heads,
            u.num_heads_middle,
            u.norm_num_groups,
            u.context_dim,
            u.adm_in_channels,
            u.pooled_dim,
            u.addition_time_embed_dim
        );
        for (name, t) in [("text_encoder", &ins.config.text_encoder), ("text_encoder_2", &ins.config.text_encoder_2)] {
            println!(
                "{name:<15} hidden {}, {} layers, {} heads, mlp {} ({:?}), vocab {}, positions {}{}",
                t.hidden,
                t.layers,
                t.heads,
                t.intermediate,
                t.activation,
                t.vocab,
                t.max_positions,
                t.projection.map(|p| format!(", projection {p}")).unwrap_or_default()
            );
        }
        let v = &ins.config.vae;
        println!(
            "vae             channels {} × {:?}, {} res blocks/level, z {} (embed {}), {} norm groups, scaling factor {}",
            v.ch, v.ch_mult, v.num_res_blocks, v.z_channels, v.embed_dim, v.norm_num_groups, v.scaling_factor
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

    fn random_checkpoint(out: &std::path::Path, seed: u64, sparse: bool) -> sdxl_web::Result<()> {
        let cfg = sdxl_web::weights::ModelConfig::sdxl_base();
        let t = std::time::Instant::now();
        let bytes = if sparse {
            sdxl_web::weights::random::write_sparse_checkpoint(out, &cfg)?
        } else {
            sdxl_web::weights::random::write_random_checkpoint(out, &cfg, seed)?
        };
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

    /// `sdxl dev gpu-report`: the assembly half of `./x gpu-report`. The script runs each step as
    /// its own process (a crash or a hang in one loses nothing else) and leaves its outputs in a
    /// folder; this merges them into one JSON report, needing neither jq nor python on the
    /// machine measured.
    mod gpu_report {
        use std::path::Path;

        use sdxl_web::{Error, Result};
        use serde_json::{json, Map, Value};

        /// One line of steps.tsv: `name<TAB>exit code<TAB>wall seconds<TAB>command`.
        struct Step {
            name: String,
            code: i32,
            seconds: f64,
            command: String,
        }

        fn read(dir: &Path, file: &str) -> Option<String> {
            std::fs::read_to_string(dir.join(file)).ok()
        }

        /// `key<TAB>value` lines (meta.tsv).
        fn meta(dir: &Path) -> Map<String, Value> {
            let text = read(dir, "meta.tsv").unwrap_or_default();
            text.lines()
                .filter_map(|l| l.split_once('\t'))
                .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
                .collect()
        }

        fn steps(dir: &Path) -> Result<Vec<Step>> {
            let path = dir.join("steps.tsv");
            let text = std::fs::read_to_string(&path)
                .map_err(|source| Error::Io { path: path.display().to_string(), source })?;
            let bad = |l: &str| Error::Input(format!("{}: bad line {l:?}", path.display()));
            let mut out = Vec::new();
            for l in text.lines().filter(|l| !l.trim().is_empty()) {
                let mut f = l.splitn(4, '\t');
                let (Some(name), Some(code), Some(secs)) = (f.next(), f.next(), f.next()) else {
                    return Err(bad(l));
                };
                out.push(Step {
                    name: name.to_string(),
                    code: code.trim().parse().map_err(|_| bad(l))?,
                    seconds: secs.trim().parse().map_err(|_| bad(l))?,
                    command: f.next().unwrap_or("").to_string(),
                });
            }
            Ok(out)
        }

        /// A step's stdout as JSON (None when absent or not JSON: the step failed before printing).
        fn json_out(dir: &Path, name: &str) -> Option<Value> {
            serde_json::from_str(&read(dir, &format!("{name}.out"))?).ok()
        }

        /// The end of a step's stderr: where its error message is.
        fn stderr_tail(dir: &Path, name: &str) -> String {
            let text = read(dir, &format!("{name}.err")).unwrap_or_default();
            // Progress bars redraw with '\r'; keep what each line finally showed.
            let lines: Vec<&str> = text
                .lines()
                .map(|l| l.rsplit('\r').next().unwrap_or("").trim_end())
                .filter(|l| !l.is_empty() && !l.contains("XDG_RUNTIME_DIR"))
                .collect();
            // From the CLI's last `error:` line when there is one, else the last lines.
            let from = lines.iter().rposition(|l| l.starts_with("error")).unwrap_or(lines.len().saturating_sub(8));
            lines[from..].join("\n")
        }

        fn median(v: &mut [f64]) -> Option<f64> {
            v.sort_by(f64::total_cmp);
            (!v.is_empty()).then(|| v[v.len() / 2])
        }

        /// The seconds per step and how it was obtained, from `generate --json`'s `step_seconds`.
        fn per_step(generate: &Value) -> Option<(f64, String)> {
            let steps: Vec<f64> = generate["step_seconds"].as_array()?.iter().filter_map(Value::as_f64).collect();
            match steps.len() {
                0 => None,
                1 => Some((
                    steps[0],
                    "the only step (it includes set-up and first-use pipeline compilation: an upper bound)".into(),
                )),
                n => {
                    let mut later = steps[1..].to_vec();
                    let m = median(&mut later)?;
                    Some((
                        m,
                        format!(
                            "median wall time of steps 2..{n} (each: UNet on the CFG batch of 2, sampler, readback); \
                             step 1 ({:.3} s) is left out: it includes first-use pipeline compilation",
                            steps[0]
                        ),
                    ))
                }
            }
        }

        /// OS and CPU as the merging process sees them (the same machine as the steps).
        fn system(meta: &Map<String, Value>) -> Value {
            let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
            let cpu = cpuinfo
                .lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string());
            let mem = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
                let kb =
                    m.lines().find(|l| l.starts_with("MemTotal:"))?.split_whitespace().nth(1)?.parse::<u64>().ok()?;
                Some(kb * 1024)
            });
            json!({
                "os": std::env::consts::OS,
                "arch": std::env::consts::ARCH,
                "uname": meta.get("uname"),
                "cpu": cpu,
                "cpus": std::thread::available_parallelism().map(|n| n.get()).ok(),
                "memory_bytes": mem,
            })
        }

        /// sha256 of this executable: names the exact build measured.
        fn exe_sha256() -> Option<String> {
            let exe = std::env::current_exe().ok()?;
            let mut h = sdxl_web::sha256::Sha256::new();
            let mut f = std::fs::File::open(exe).ok()?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = std::io::Read::read(&mut f, &mut buf).ok()?;
                if n == 0 {
                    return Some(h.hex());
                }
                h.update(&buf[..n]);
            }
        }

        #[derive(serde::Serialize)]
        struct Report {
            report: &'static str,
            created_utc: Value,
            passed: bool,
            errors: Vec<String>,
            summary: Value,
            seconds_per_step_1024: Option<f64>,
            seconds_per_step: Option<Value>,
            adapter: Option<Value>,
            system: Value,
            binary: Value,
            settings: Value,
            wall_seconds: Map<String, Value>,
            /// Keyed by compute path.
            selfcheck: Map<String, Value>,
            bench: Option<Value>,
            /// `dev random-checkpoint`'s line (path, bytes, seconds).
            checkpoint: Option<String>,
            generate: Option<Value>,
            steps: Map<String, Value>,
        }

        /// Writes the report to `out` and prints the summary; Ok(false) when a step failed.
        pub fn run(dir: &Path, out: &Path) -> Result<bool> {
            let meta = meta(dir);
            let steps = steps(dir)?;
            let mut errors = Vec::new();
            let mut wall = Map::new();
            let mut step_info = Map::new();
            for s in &steps {
                wall.insert(s.name.clone(), s.seconds.into());
                let error = (s.code != 0).then(|| {
                    let why = match s.code {
                        124 => format!("timed out after {:.0} s", s.seconds),
                        c => format!("exit code {c}"),
                    };
                    let tail = stderr_tail(dir, &s.name);
                    if tail.is_empty() {
                        why
                    } else {
                        format!("{why}: {tail}")
                    }
                });
                if let Some(e) = &error {
                    errors.push(format!("{}: {e}", s.name));
                }
                step_info.insert(
                    s.name.clone(),
                    json!({"command": s.command, "exit_code": s.code, "seconds": s.seconds, "error": error}),
                );
            }
            if let Some(t) = meta.get("total_seconds").and_then(|v| v.as_str()?.parse::<f64>().ok()) {
                wall.insert("total".into(), t.into());
            }
            let ran = |name: &str| steps.iter().any(|s| s.name == name);
            let adapter = json_out(dir, "info");

            // Keyed by the compute path each run reports (f16 / f32).
            let mut selfcheck = Map::new();
            let mut selfcheck_summary = Map::new();
            for (name, fallback) in [("selfcheck", "default"), ("selfcheck_f32", "f32")] {
                if !ran(name) {
                    continue;
                }
                let r = json_out(dir, name);
                let key = r.as_ref().and_then(|r| r["compute_path"].as_str()).unwrap_or(fallback).to_string();
                if let Some(r) = &r {
                    let total = r["checks"].as_array().map_or(0, Vec::len);
                    let failed = r["failures"].as_u64().unwrap_or(0) as usize;
                    selfcheck_summary.insert(
                        key.clone(),
                        json!({"passed": total.saturating_sub(failed), "failed": failed, "total": total,
                               "seconds": r["total_seconds"]}),
                    );
                }
                selfcheck.insert(key, r.unwrap_or(Value::Null));
            }

            let bench = json_out(dir, "bench");
            let peak_gflops = bench.as_ref().and_then(|b| {
                b.as_array()?.iter().find(|r| r["kernel"] == "peak_fma").and_then(|r| r["gflops"].as_f64())
            });
            let checkpoint = read(dir, "checkpoint.out").map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
            let mut generate = json_out(dir, "generate");
            let per_step = generate.as_ref().and_then(per_step);
            let (w, h) = generate.as_ref().map_or((None, None), |g| (g["width"].as_u64(), g["height"].as_u64()));
            let spp = per_step.as_ref().map(|(s, _)| *s);
            let spp_1024 = if (w, h) == (Some(1024), Some(1024)) { spp } else { None };

            // The image (of random weights) was in the work folder, which is gone.
            if let Some(g) = generate.as_mut().and_then(Value::as_object_mut) {
                g.remove("output");
            }
            // meta.tsv's numbers as JSON numbers.
            let num = |k: &str| {
                let v = meta.get(k).cloned().unwrap_or(Value::Null);
                let n = v.as_str().and_then(|s| {
                    s.parse::<u64>().ok().map(Value::from).or_else(|| s.parse::<f64>().ok().map(Value::from))
                });
                n.unwrap_or(v)
            };
            let passed = errors.is_empty();
            // A struct keeps the top level in this order (serde_json's maps sort their keys).
            let report = Report {
                report: "sdxl gpu-report",
                created_utc: meta.get("created_utc").cloned().unwrap_or(Value::Null),
                passed,
                errors,
                summary: json!({
                    "selfcheck": selfcheck_summary,
                    "bench_rows": bench.as_ref().and_then(|b| b.as_array().map(Vec::len)),
                    "peak_gflops": peak_gflops,
                    "seconds_per_step": spp,
                    "peak_gpu_bytes": generate.as_ref().map(|g| g["peak_gpu_bytes"].clone()),
                }),
                seconds_per_step_1024: spp_1024,
                seconds_per_step: spp.map(|s| {
                    json!({
                        "seconds": s, "width": w, "height": h,
                        "how": per_step.as_ref().map(|(_, how)| how.clone()),
                    })
                }),
                adapter,
                system: system(&meta),
                binary: json!({
                    "version": env!("CARGO_PKG_VERSION"),
                    "path": meta.get("binary"),
                    "sha256": exe_sha256(),
                    "source_commit": meta.get("source_commit"),
                }),
                settings: json!({
                    "size": num("size"), "steps": num("steps"), "cfg": num("cfg"),
                    "model": meta.get("model"), "bench_args": meta.get("bench_args"),
                }),
                wall_seconds: wall,
                selfcheck,
                bench,
                checkpoint,
                generate,
                steps: step_info,
            };
            let text = serde_json::to_string_pretty(&report).expect("report serialises") + "\n";
            let report = serde_json::to_value(&report).expect("report serialises");
            std::fs::write(out, text).map_err(|source| Error::Io { path: out.display().to_string(), source })?;
            print!("{}", summary(&report));
            Ok(passed)
        }

        /// The human summary printed after the run.
        fn summary(r: &Value) -> String {
            use std::fmt::Write as _;
            let mut s = String::new();
            let a = &r["adapter"];
            if a.is_null() {
                let _ = writeln!(s, "adapter: unknown (sdxl info failed)");
            } else {
                let _ = writeln!(
                    s,
                    "adapter: {} ({}, {}; {} {}); shader-f16 {}",
                    a["name"].as_str().unwrap_or("?"),
                    a["backend"].as_str().unwrap_or("?"),
                    a["device_type"].as_str().unwrap_or("?"),
                    a["driver"].as_str().unwrap_or("?"),
                    a["driver_info"].as_str().unwrap_or(""),
                    if a["shader_f16"] == true { "yes" } else { "no" }
                );
            }
            if let Some(m) = r["summary"]["selfcheck"].as_object() {
                for (path, c) in m {
                    let _ = writeln!(
                        s,
                        "self-check {path}: {}/{} passed in {:.1} s",
                        c["passed"],
                        c["total"],
                        c["seconds"].as_f64().unwrap_or(0.0)
                    );
                }
            }
            if let Some(n) = r["summary"]["bench_rows"].as_u64() {
                let peak = r["summary"]["peak_gflops"]
                    .as_f64()
                    .map_or(String::new(), |p| format!(", FMA peak {p:.0} GFLOP/s"));
                let _ = writeln!(s, "bench kernels: {n} rows{peak}");
            }
            let g = &r["generate"];
            if let Some(sp) = r["seconds_per_step"].as_object() {
                let st = &g["stages"];
                let _ = writeln!(
                    s,
                    "generate {}x{}, CFG on, {} step(s): {:.3} s per step; text {:.1} s, UNet {:.1} s, VAE {:.1} s; peak GPU {:.2} GiB",
                    g["width"],
                    g["height"],
                    g["steps"],
                    sp["seconds"].as_f64().unwrap_or(0.0),
                    st["text"]["seconds"].as_f64().unwrap_or(0.0),
                    st["unet"]["seconds"].as_f64().unwrap_or(0.0),
                    st["vae"]["seconds"].as_f64().unwrap_or(0.0),
                    g["peak_gpu_bytes"].as_f64().unwrap_or(0.0) / (1u64 << 30) as f64
                );
            }
            if let Some(w) = r["wall_seconds"].as_object() {
                // Longest first, the total last.
                let mut names: Vec<&String> = r["steps"].as_object().map(|m| m.keys().collect()).unwrap_or_default();
                names.sort_by(|a, b| w[*a].as_f64().unwrap_or(0.0).total_cmp(&w[*b].as_f64().unwrap_or(0.0)).reverse());
                let parts: Vec<String> = names
                    .iter()
                    .map(|k| k.as_str())
                    .chain(w.contains_key("total").then_some("total"))
                    .map(|k| format!("{k} {:.1} s", w[k].as_f64().unwrap_or(0.0)))
                    .collect();
                let _ = writeln!(s, "wall: {}", parts.join(", "));
            }
            for e in r["errors"].as_array().into_iter().flatten() {
                let _ = writeln!(s, "FAILED {}", e.as_str().unwrap_or(""));
            }
            s
        }
    }

    /// A small static file server: enough for the page, the wasm and multi-GB checkpoints
    /// (Range requests, so the browser can resume a download).
    mod serve {
        use std::fs::File;
        use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
        use std::net::{TcpListener, TcpStream};
        use std::path::{Component, Path, PathBuf};

        use sdxl_web::{Error, Result};

        /// The served roots: "" for `dir`, then each mount's URL prefix (longest match wins).
        type Roots = Vec<(String, PathBuf)>;

        pub fn run(dir: &Path, mounts: &[String], host: &str, port: u16) -> Result<()> {
            let canon = |d: &Path| d.canonicalize().map_err(|e| Error::Io { path: d.display().to_string(), source: e });
            let mut roots: Roots = vec![(String::new(), canon(dir)?)];
            for m in mounts {
                let (prefix, d) =
                    m.split_once('=').ok_or_else(|| Error::Input(format!("--mount {m:?}: expected PREFIX=DIR")))?;
                let prefix = prefix.trim_matches('/');
                if prefix.is_empty() || prefix.contains("..") {
                    return Err(Error::Input(format!("--mount {m:?}: the prefix must be a plain path")));
                }
                roots.push((format!("/{prefix}/"), canon(Path::new(d))?));
            }
            roots.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
            let listener =
                TcpListener::bind((host, port)).map_err(|e| Error::Io { path: format!("{host}:{port}"), source: e })?;
            let addr = listener.local_addr().map_err(|e| Error::Io { path: format!("{host}:{port}"), source: e })?;
            for (p, d) in roots.iter().rev() {
                println!("serving {} at http://{addr}{}", d.display(), if p.is_empty() { "/" } else { p });
            }
            let roots = std::sync::Arc::new(roots);
            for stream in listener.incoming().flatten() {
                let roots = roots.clone();
                std::thread::spawn(move || {
                    let _ = handle(stream, &roots);
                });
            }
            Ok(())
        }

        /// The file for a URL under the longest matching root.
        fn lookup(roots: &Roots, url: &str) -> Option<PathBuf> {
            let (prefix, root) = roots.iter().find(|(p, _)| url.starts_with(p.as_str()))?;
            resolve(root, &url[prefix.len().saturating_sub(1)..])
        }

        fn mime(p: &Path) -> &'static str {
            match p.extension().and_then(|e| e.to_str()).unwrap_or("") {
                "html" => "text/html; charset=utf-8",
                "js" | "mjs" => "text/javascript; charset=utf-8",
                "wasm" => "application/wasm",
                "json" => "application/json",
                "css" => "text/css",
                "png" => "image/png",
                "ts" => "text/plain; charset=utf-8",
                _ => "application/octet-stream",
            }
        }

        /// Map a URL path to a file under `root`, refusing `..` and absolute components.
        fn resolve(root: &Path, url: &str) -> Option<PathBuf> {
            let path = url.split(['?', '#']).next().unwrap_or("/");
            let decoded = percent_decode(path)?;
            let mut out = root.to_path_buf();
            for c in Path::new(decoded.trim_start_matches('/')).components() {
                match c {
                    Component::Normal(s) => out.push(s),
                    Component::CurDir => {}
                    _ => return None,
                }
            }
            if out.is_dir() {
                out.push("index.html");
            }
            Some(out)
        }

        fn percent_decode(s: &str) -> Option<String> {
            let b = s.as_bytes();
            let mut out = Vec::with_capacity(b.len());
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'%' {
                    let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                    out.push(u8::from_str_radix(h, 16).ok()?);
                    i += 3;
                } else {
                    out.push(b[i]);
                    i += 1;
                }
            }
            String::from_utf8(out).ok()
        }

        /// `bytes=a-b`, `bytes=a-`, `bytes=-n` against a file of `len` bytes.
        fn parse_range(v: &str, len: u64) -> Option<(u64, u64)> {
            let r = v.trim().strip_prefix("bytes=")?;
            let (a, b) = r.split_once('-')?;
            let (start, end) = if a.is_empty() {
                let n: u64 = b.parse().ok()?;
                (len.saturating_sub(n), len.checked_sub(1)?)
            } else {
                let s: u64 = a.parse().ok()?;
                let e =
                    if b.is_empty() { len.checked_sub(1)? } else { b.parse::<u64>().ok()?.min(len.checked_sub(1)?) };
                (s, e)
            };
            (start <= end && end < len).then_some((start, end))
        }

        fn handle(stream: TcpStream, roots: &Roots) -> std::io::Result<()> {
            let mut reader = BufReader::new(stream.try_clone()?);
            let mut out = stream;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line)? == 0 {
                    return Ok(());
                }
                let mut parts = line.split_whitespace();
                let (method, url) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/").to_string());
                let mut range = None;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        if k.eq_ignore_ascii_case("range") {
                            range = Some(v.trim().to_string());
                        }
                    }
                }
                let cors = "Access-Control-Allow-Origin: *\r\nAccess-Control-Expose-Headers: Content-Length, Content-Range, Accept-Ranges\r\n";
                let file = lookup(roots, &url).and_then(|p| File::open(&p).ok().map(|f| (p, f)));
                let Some((path, mut f)) = file.filter(|(p, _)| p.is_file()) else {
                    let body = b"not found\n";
                    write!(
                        out,
                        "HTTP/1.1 404 Not Found\r\n{cors}Content-Length: {}\r\nContent-Type: text/plain\r\n\r\n",
                        body.len()
                    )?;
                    out.write_all(body)?;
                    continue;
                };
                if method != "GET" && method != "HEAD" {
                    write!(out, "HTTP/1.1 405 Method Not Allowed\r\n{cors}Content-Length: 0\r\n\r\n")?;
                    continue;
                }
                let len = f.metadata()?.len();
                let (status, start, end) = match range.as_deref().map(|r| parse_range(r, len)) {
                    None => ("200 OK", 0, len.saturating_sub(1)),
                    Some(Some((s, e))) => ("206 Partial Content", s, e),
                    Some(None) => {
                        write!(out, "HTTP/1.1 416 Range Not Satisfiable\r\n{cors}Content-Range: bytes */{len}\r\nContent-Length: 0\r\n\r\n")?;
                        continue;
                    }
                };
                let n = if len == 0 { 0 } else { end - start + 1 };
                let mut head = format!(
                    "HTTP/1.1 {status}\r\n{cors}Content-Type: {}\r\nContent-Length: {n}\r\nAccept-Ranges: bytes\r\nCache-Control: no-cache\r\n",
                    mime(&path)
                );
                if status.starts_with("206") {
                    head += &format!("Content-Range: bytes {start}-{end}/{len}\r\n");
                }
                out.write_all(head.as_bytes())?;
                out.write_all(b"\r\n")?;
                if method == "GET" && n > 0 {
                    f.seek(SeekFrom::Start(start))?;
                    std::io::copy(&mut (&mut f).take(n), &mut out)?;
                }
                out.flush()?;
            }
        }

        #[cfg(test)]
        mod tests {
            use super::*;

            #[test]
            fn ranges() {
                assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
                assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
                assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
                assert_eq!(parse_range("bytes=50-500", 100), Some((50, 99)));
                assert_eq!(parse_range("bytes=100-", 100), None);
                assert_eq!(parse_range("bytes=5-4", 100), None);
                assert_eq!(parse_range("items=0-1", 100), None);
            }

            #[test]
            fn no_escape_from_root() {
                let root = Path::new("/srv/www");
                assert_eq!(resolve(root, "/../etc/passwd"), None);
                assert_eq!(resolve(root, "/%2e%2e/etc/passwd"), None);
                assert_eq!(resolve(root, "/pkg/a.js?x=1"), Some(PathBuf::from("/srv/www/pkg/a.js")));
            }

            #[test]
            fn mounts() {
                let roots: Roots = vec![
                    ("/fixtures/".into(), PathBuf::from("/repo/tests/fixtures")),
                    (String::new(), PathBuf::from("/srv/www")),
                ];
                let got = lookup(&roots, "/fixtures/tiny/m.safetensors");
                assert_eq!(got, Some(PathBuf::from("/repo/tests/fixtures/tiny/m.safetensors")));
                assert_eq!(lookup(&roots, "/fixtures/../x"), None);
                assert_eq!(lookup(&roots, "/fixturesx/a.js"), Some(PathBuf::from("/srv/www/fixturesx/a.js")));
            }
        }
    }
}
