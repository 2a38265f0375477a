//! The web app in a real browser: Debian's headless Chromium (SwiftShader WebGPU, no shader-f16,
//! so the f32 path), driven through chromedriver's WebDriver HTTP API. Serves www/ and
//! tests/fixtures with `sdxl serve`, generates through URL parameters (`autorun=1`), and checks
//! the browser's PNG against the native CLI's PNG for the same settings; then the second visit
//! (from the OPFS cache), cancellation, and the error states for bad model URLs. Screenshots go
//! to target/screenshots/.
//!
//! Needs www/pkg (built by `./x wasm`, which `./x test` runs first) and chromium +
//! chromium-driver (installed by `./x setup`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;

/// A page must settle within this long; SwiftShader compiles every shader on first use and
/// runs the tiny model's 64×64 generation on 2 CPU cores.
const PAGE_TIMEOUT: Duration = Duration::from_secs(420);
/// Browser vs native PNG, mean absolute difference per channel (issue: at most 1/255). Both run
/// the f32 path; only the GPUs' float rounding differs.
const MAX_MEAN_DIFF: f64 = 1.0;
/// The generation both sides run (tiny fixture model; CFG on, with a negative prompt).
const PROMPT: &str = "1girl, (silver hair:1.2), looking at viewer";
const NEGATIVE: &str = "lowres, bad hands";
/// Prompts of the memory-planner part of the stage-by-stage test (new prompts force encoding).
const PROMPT2: &str = "1boy, solo, red eyes";
const PROMPT3: &str = "2girls, smile, outdoors";
const SEED: &str = "1234";
const STEPS: &str = "4";
/// Library test, browser vs CLI stage by stage (both f32 path): text embeddings absolute, the
/// first UNet output and the final latents relative to their standard deviation.
const STAGE_EMBED_ABS: f64 = 1e-4;
const STAGE_UNET_REL_STD: f64 = 1e-4;
const STAGE_LATENT_REL_STD: f64 = 1e-3;

struct Killer(Child);
impl Drop for Killer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_port(port: u16, what: &str) {
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed() < Duration::from_secs(30), "{what} did not listen on port {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One HTTP/1.1 request with `Connection: close`; returns the JSON body.
fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> Value {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to chromedriver");
    s.set_read_timeout(Some(Duration::from_secs(240))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // Read the head, then exactly Content-Length bytes (chromedriver may keep the socket open).
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    let head_end = loop {
        let n = s.read(&mut buf).expect("read from chromedriver");
        assert!(n > 0, "chromedriver closed the connection");
        raw.extend_from_slice(&buf[..n]);
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Content-Length from chromedriver: {head}"));
    while raw.len() < head_end + len {
        let n = s.read(&mut buf).expect("read from chromedriver");
        assert!(n > 0, "chromedriver closed the connection early");
        raw.extend_from_slice(&buf[..n]);
    }
    let payload = String::from_utf8_lossy(&raw[head_end..head_end + len]).to_string();
    serde_json::from_str(&payload).unwrap_or_else(|e| panic!("chromedriver sent non-JSON ({e}): {payload}"))
}

fn b64decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= (val(c) as u32) << (18 - 6 * i);
        }
        out.extend_from_slice(&acc.to_be_bytes()[1..chunk.len()]);
    }
    out
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Browser {
    drv: u16,
    id: String,
    web: u16,
    profile: PathBuf,
    _server: Killer,
    _driver: Killer,
}

impl Browser {
    /// Serves www/, tests/fixtures at /fixtures/ and each `(prefix, dir)` of `mounts`.
    fn start(mounts: &[(&str, &Path)]) -> Browser {
        let www = root().join("www");
        assert!(www.join("pkg/sdxl_web_bg.wasm").exists(), "www/pkg is missing: run `./x wasm` (or `./x test`) first");
        for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            assert!(Path::new(bin).exists(), "{bin} is missing: run `./x setup`");
        }
        let (web, drv) = (free_port(), free_port());
        let fixtures = format!("fixtures={}", root().join("tests/fixtures").display());
        let mut serve = Command::new(env!("CARGO_BIN_EXE_sdxl"));
        serve.args(["serve", "--dir", www.to_str().unwrap(), "--mount", &fixtures, "--port", &web.to_string()]);
        for (prefix, dir) in mounts {
            serve.args(["--mount", &format!("{prefix}={}", dir.display())]);
        }
        let server = Killer(serve.stdout(Stdio::null()).spawn().unwrap());
        let driver = Killer(
            Command::new("/usr/bin/chromedriver").arg(format!("--port={drv}")).stdout(Stdio::null()).spawn().unwrap(),
        );
        wait_port(web, "sdxl serve");
        wait_port(drv, "chromedriver");
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let profile = std::env::temp_dir().join(format!("sdxl-chromium-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--disable-quic", "--enable-unsafe-webgpu",
                     "--window-size=1100,800", format!("--user-data-dir={}", profile.display())]}}}});
        let sess = http(drv, "POST", "/session", Some(&caps));
        let id =
            sess["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no WebDriver session: {sess}")).to_string();
        Browser { drv, id, web, profile, _server: server, _driver: driver }
    }

    fn exec(&self, script: &str) -> Value {
        let r = http(
            self.drv,
            "POST",
            &format!("/session/{}/execute/sync", self.id),
            Some(&json!({"script": script, "args": []})),
        );
        r["value"].clone()
    }

    fn visit(&self, query: &str) {
        let url = format!("http://127.0.0.1:{}/{query}", self.web);
        let nav = http(self.drv, "POST", &format!("/session/{}/url", self.id), Some(&json!({ "url": url })));
        assert!(nav["value"].is_null(), "navigation to {url} failed: {nav}");
    }

    fn state(&self) -> (String, String) {
        let v = self.exec("return [document.body.dataset.state || '', document.body.dataset.error || '']");
        (v[0].as_str().unwrap_or("").into(), v[1].as_str().unwrap_or("").into())
    }

    /// Polls until the page's state is one of `ends`; returns (state, error message).
    fn wait_for(&self, ends: &[&str]) -> (String, String) {
        let t = Instant::now();
        loop {
            let (state, err) = self.state();
            if ends.contains(&state.as_str()) || state == "error" {
                return (state, err);
            }
            assert!(t.elapsed() < PAGE_TIMEOUT, "page stuck in state {state:?} after {:?}", t.elapsed());
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn screenshot(&self, name: &str) {
        let shot = http(self.drv, "GET", &format!("/session/{}/screenshot", self.id), None);
        let dir = root().join("target/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), b64decode(shot["value"].as_str().unwrap_or(""))).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        http(self.drv, "DELETE", &format!("/session/{}", self.id), None);
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// RGB8 pixels and the `parameters` text of a PNG.
fn decode_png(bytes: &[u8]) -> (Vec<u8>, u32, u32, String) {
    let mut r = png::Decoder::new(std::io::Cursor::new(bytes)).read_info().expect("a PNG");
    let info = r.info();
    let text = info
        .uncompressed_latin1_text
        .iter()
        .find(|t| t.keyword == "parameters")
        .map(|t| t.text.clone())
        .or_else(|| info.utf8_text.iter().find(|t| t.keyword == "parameters").and_then(|t| t.get_text().ok()))
        .unwrap_or_default();
    let (w, h) = (info.width, info.height);
    let mut buf = vec![0; r.output_buffer_size().expect("size")];
    let f = r.next_frame(&mut buf).expect("PNG data");
    buf.truncate(f.buffer_size());
    (buf, w, h, text)
}

/// The last result's PNG bytes (from `window.sdxlResult`, a data URL).
fn result_png(b: &Browser) -> Vec<u8> {
    let url = b.exec("return window.sdxlResult || ''");
    let url = url.as_str().unwrap_or("");
    let b64 = url
        .strip_prefix("data:image/png;base64,")
        .unwrap_or_else(|| panic!("sdxlResult is not a PNG data URL: {:.60}", url));
    b64decode(b64)
}

#[test]
fn browser_generates_what_the_cli_generates() {
    let model = root().join("tests/fixtures/tiny-sdxl/tiny-sdxl.safetensors");
    let dir = std::env::temp_dir().join(format!("sdxl-browser-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cli_png = dir.join("cli.png");
    // The native reference: the f32 path, like SwiftShader's (no shader-f16).
    let out = Command::new(env!("CARGO_BIN_EXE_sdxl"))
        .args(["--f32", "generate", "--model", model.to_str().unwrap(), "--prompt", PROMPT, "--negative", NEGATIVE])
        .args(["--width", "64", "--height", "64", "--steps", STEPS, "--cfg", "5", "--seed", SEED])
        .args(["--sampler", "euler_a", "--output", cli_png.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "sdxl generate failed: {}", String::from_utf8_lossy(&out.stderr));
    let (cli_rgb, cw, ch, cli_params) = decode_png(&std::fs::read(&cli_png).unwrap());

    let b = Browser::start(&[]);
    let query = format!(
        "?model={}&prompt={}&negative={}&seed={SEED}&steps={STEPS}&cfg=5&w=64&h=64&sampler=euler_a&autorun=1",
        enc("/fixtures/tiny-sdxl/tiny-sdxl.safetensors"),
        enc(PROMPT),
        enc(NEGATIVE)
    );

    // First visit: downloads (and caches) the model, generates, compares with the CLI.
    b.visit(&query);
    let (state, err) = b.wait_for(&["done"]);
    b.screenshot("generate.png");
    assert_eq!(state, "done", "first visit ended in {state:?}: {err}");
    let loaded = b.exec("return window.sdxlLoaded || null");
    let dev = b.exec("return window.sdxlDevice || null");
    eprintln!("browser adapter: {} (shader-f16 {}, path {})", dev["name"], dev["shader_f16"], dev["compute_path"]);
    eprintln!(
        "loaded: source {}, wasm memory {} MiB",
        loaded["source"],
        loaded["wasmMemory"].as_f64().unwrap_or(0.0) / 1048576.0
    );
    assert_eq!(loaded["source"], "network");
    assert!(loaded["wasmMemory"].as_f64().unwrap() < 512.0 * 1048576.0, "wasm memory {}", loaded["wasmMemory"]);
    let png1 = result_png(&b);
    let (rgb, w, h, params) = decode_png(&png1);
    assert_eq!((w, h), (cw, ch));
    assert_eq!(params, cli_params, "the browser's PNG parameters differ from the CLI's");
    let diff: Vec<f64> = rgb.iter().zip(&cli_rgb).map(|(&a, &b)| (a as f64 - b as f64).abs()).collect();
    let mean = diff.iter().sum::<f64>() / diff.len() as f64;
    let max = diff.iter().cloned().fold(0.0, f64::max);
    eprintln!("browser vs CLI ({w}x{h}): mean |diff| {mean:.4}/255, max {max}/255");
    assert!(mean <= MAX_MEAN_DIFF, "browser and CLI images differ by {mean}/255 on average");

    // Second visit: the model comes from the Origin Private File System, same image.
    b.visit(&query);
    let (state, err) = b.wait_for(&["done"]);
    assert_eq!(state, "done", "second visit ended in {state:?}: {err}");
    assert_eq!(b.exec("return window.sdxlLoaded.source"), "cache");
    assert_eq!(result_png(&b), png1, "the same settings gave a different PNG on the second visit");

    // Cancel a long generation after its first step.
    b.visit(&query.replace(&format!("steps={STEPS}"), "steps=200"));
    let t = Instant::now();
    while b.exec("return document.body.dataset.state === 'generating' && Number(document.body.dataset.step || 0) > 0")
        != true
    {
        let (state, err) = b.state();
        assert!(
            state != "error" && state != "done",
            "the long run ended in {state:?} before it could be cancelled: {err}"
        );
        assert!(t.elapsed() < PAGE_TIMEOUT, "no generation step within {PAGE_TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    b.exec("document.querySelector('#cancel').click(); return null");
    let (state, err) = b.wait_for(&["cancelled"]);
    assert_eq!(state, "cancelled", "cancel ended in {state:?}: {err}");

    // Bad model URLs end in a clear error state.
    let closed = free_port();
    let bad = [
        (format!("http://127.0.0.1:{closed}/model.safetensors"), "could not reach"),
        ("/index.html".to_string(), "HTML page"),
        ("/fixtures/tokenizer_cases.json".to_string(), "not a safetensors file"),
        ("/fixtures/missing.safetensors".to_string(), "HTTP 404"),
    ];
    for (url, want) in bad {
        b.visit(&format!("?model={}&prompt=x&w=64&h=64&steps=1&autorun=1", enc(&url)));
        let (state, err) = b.wait_for(&["done"]);
        eprintln!("{url}: {state}: {err}");
        assert_eq!(state, "error", "{url} ended in {state:?}");
        assert!(err.contains(want), "{url}: error {err:?} does not say {want:?}");
    }
    b.screenshot("error.png");
    let _ = std::fs::remove_dir_all(&dir);
}

/// LoRAs and embeddings through the page's URL parameters (`lora=URL:WEIGHT`, `embedding=URL`,
/// loaded by the worker after the model, cached in OPFS): one LoRA case and one embedding case,
/// each against the CLI with the same files (`--lora FILE:0.8`, `--embedding FILE`); then files
/// the engine refuses (a model that is JSON, an embedding given as a LoRA) end in a clear error and
/// are not left in the page's cache lists.
#[test]
fn browser_applies_loras_and_embeddings_like_the_cli() {
    let model = root().join("tests/fixtures/tiny-sdxl/tiny-sdxl.safetensors");
    let fx = root().join("tests/fixtures/lora");
    let dir = std::env::temp_dir().join(format!("sdxl-browser-lora-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |n: &str| fx.join(n).to_str().unwrap().to_string();
    // (name, prompt, negative, CLI adapter flags, URL adapter parameters)
    let cases = [
        (
            "lora",
            "1girl, solo, smile, outdoors",
            "lowres, bad anatomy",
            vec!["--lora".to_string(), format!("{}:0.8", file("kohya_locon.safetensors"))],
            format!("&lora={}", enc("/fixtures/lora/kohya_locon.safetensors:0.8")),
        ),
        (
            "embedding",
            "tinyemb, 1girl, white dress",
            "negemb, lowres",
            vec![
                "--embedding".to_string(),
                file("tinyemb.safetensors"),
                "--embedding".to_string(),
                file("negemb.safetensors"),
            ],
            format!(
                "&embedding={}&embedding={}",
                enc("/fixtures/lora/tinyemb.safetensors"),
                enc("/fixtures/lora/negemb.safetensors")
            ),
        ),
    ];
    let b = Browser::start(&[]);
    for (name, prompt, negative, flags, params) in &cases {
        let cli_png = dir.join(format!("{name}.png"));
        let out = Command::new(env!("CARGO_BIN_EXE_sdxl"))
            .args(["--f32", "generate", "--model", model.to_str().unwrap(), "--prompt", prompt, "--negative", negative])
            .args(["--width", "64", "--height", "64", "--steps", STEPS, "--cfg", "5", "--seed", SEED])
            .args(["--sampler", "euler_a", "--output", cli_png.to_str().unwrap()])
            .args(flags)
            .output()
            .unwrap();
        assert!(out.status.success(), "sdxl generate ({name}) failed: {}", String::from_utf8_lossy(&out.stderr));
        let (cli_rgb, cw, ch, cli_params) = decode_png(&std::fs::read(&cli_png).unwrap());

        b.visit(&format!(
            "?model={}&prompt={}&negative={}&seed={SEED}&steps={STEPS}&cfg=5&w=64&h=64&sampler=euler_a{params}&autorun=1",
            enc("/fixtures/tiny-sdxl/tiny-sdxl.safetensors"),
            enc(prompt),
            enc(negative)
        ));
        let (state, err) = b.wait_for(&["done"]);
        b.exec("document.querySelector('#adapter-section').scrollIntoView(); return null");
        b.screenshot(&format!("adapters-{name}.png"));
        assert_eq!(state, "done", "{name}: the page ended in {state:?}: {err}");
        let (rgb, w, h, params) = decode_png(&result_png(&b));
        assert_eq!((w, h), (cw, ch));
        eprintln!("{name}: parameters {params:?}");
        assert_eq!(params, cli_params, "{name}: the browser's PNG parameters differ from the CLI's");
        assert!(params.contains(if *name == "lora" { "Lora hashes" } else { "TI hashes" }), "{params}");
        let mean = rgb.iter().zip(&cli_rgb).map(|(a, c)| a.abs_diff(*c) as f64).sum::<f64>() / rgb.len() as f64;
        eprintln!("{name}: browser vs CLI mean |diff| {mean:.4}/255");
        assert!(mean <= MAX_MEAN_DIFF, "{name}: browser and CLI images differ by {mean}/255 on average");
    }
    // The adapters were downloaded into their OPFS caches (listed in the page).
    let cached = b.exec("return document.querySelector('#adapter-cache').textContent");
    let cached = cached.as_str().unwrap_or("");
    for want in ["LoRA kohya_locon", "embedding tinyemb", "embedding negemb"] {
        assert!(cached.contains(want), "cached adapters {cached:?} lack {want:?}");
    }

    // Refused files: a clear error, and no cache entry left behind.
    let bad = [
        (
            "?model=/fixtures/tokenizer_cases.json&prompt=x&w=64&h=64&steps=1&autorun=1".to_string(),
            "not a safetensors file",
            "#cache-list",
            "tokenizer_cases",
        ),
        (
            format!(
                "?model={}&prompt=x&w=64&h=64&steps=1&lora={}&autorun=1",
                enc("/fixtures/tiny-sdxl/tiny-sdxl.safetensors"),
                enc("/fixtures/lora/tinyemb.safetensors:0.5")
            ),
            "LoRA tinyemb",
            "#adapter-cache",
            "LoRA tinyemb",
        ),
    ];
    for (query, want, list, absent) in bad {
        b.visit(&query);
        let (state, err) = b.wait_for(&["done"]);
        eprintln!("{query}: {state}: {err}");
        assert_eq!(state, "error", "{query} ended in {state:?}");
        assert!(err.contains(want), "{query}: error {err:?} does not say {want:?}");
        let text = b.exec(&format!("return document.querySelector('{list}').textContent"));
        let text = text.as_str().unwrap_or("");
        assert!(!text.contains(absent), "{query}: the refused file is still cached: {text:?}");
    }
    b.screenshot("adapters-error.png");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The wasm library as any page would use it (no worker, no UI): `Engine.create`, `load` from a
/// fetch body reader, `generate` with `dump`; every stage equals the native CLI's `--dump`. This
/// is what caught a WGSL compiler difference (a loop-local array not re-zeroed per iteration on
/// Chrome/SwiftShader) that broke CLIP's attention past the first 16 tokens in the browser.
#[test]
fn library_matches_the_cli_stage_by_stage() {
    let model = root().join("tests/fixtures/tiny-sdxl/tiny-sdxl.safetensors");
    let dir = std::env::temp_dir().join(format!("sdxl-browser-lib-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sdxl"))
        .args(["--f32", "generate", "--model", model.to_str().unwrap(), "--prompt", PROMPT, "--negative", NEGATIVE])
        .args([
            "--width",
            "64",
            "--height",
            "72",
            "--steps",
            "3",
            "--cfg",
            "6",
            "--seed",
            "99",
            "--sampler",
            "dpmpp_2m",
        ])
        .args(["--output", dir.join("cli.png").to_str().unwrap(), "--dump", dir.to_str().unwrap()])
        // The browser plans to the same budget and decodes with the same (explicit) VAE tiles.
        .args(["--gpu-memory", "6G", "--vae-tile", "64", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "sdxl generate failed: {}", String::from_utf8_lossy(&out.stderr));
    let cli = std::fs::read(dir.join("dump.safetensors")).unwrap();
    let cli_report: Value = serde_json::from_slice(&out.stdout).expect("--json prints one JSON object");
    // The third browser generation (text encoders streamed back over Range requests) against the
    // CLI with everything resident: streaming must not change the image.
    let out3 = Command::new(env!("CARGO_BIN_EXE_sdxl"))
        .args(["--f32", "generate", "--model", model.to_str().unwrap(), "--prompt", PROMPT3, "--negative", NEGATIVE])
        .args(["--width", "128", "--height", "128", "--steps", "2", "--seed", "5"])
        .args(["--output", dir.join("cli3.png").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out3.status.success(), "sdxl generate failed: {}", String::from_utf8_lossy(&out3.stderr));

    let b = Browser::start(&[]);
    b.visit("?");
    b.wait_for(&["ready"]);
    http(
        b.drv,
        "POST",
        &format!("/session/{}/timeouts", b.id),
        Some(&json!({"script": PAGE_TIMEOUT.as_millis() as u64})),
    );
    let settings = json!({"prompt": PROMPT, "negative": NEGATIVE, "width": 64, "height": 72, "steps": 3, "cfg": 6,
                          "seed": 99, "sampler": "dpmpp_2m", "gpu_memory": "6G", "vae_tile": 64});
    let script = format!(
        r#"const done = arguments[arguments.length - 1];
(async () => {{
  const m = await import("/pkg/sdxl_web.js");
  await m.default();
  const e = await m.Engine.create(true);
  const url = "/fixtures/tiny-sdxl/tiny-sdxl.safetensors";
  const r = await fetch(url);
  const rd = r.body.getReader();
  const size = Number(r.headers.get("content-length"));
  let seen = 0, ranges = 0;
  const readRange = async (a, b) => {{
    ranges++;
    const res = await fetch(url, {{ headers: {{ Range: `bytes=${{a}}-${{b - 1}}` }} }});
    if (res.status !== 206) throw new Error("Range answered " + res.status);
    return new Uint8Array(await res.arrayBuffer());
  }};
  await e.load("tiny-sdxl", size, async () => (await rd.read()).value, (n, total) => {{ seen = n; if (total !== size) throw new Error("total " + total); }}, readRange);
  if (seen !== size) throw new Error("progress ended at " + seen + " of " + size);
  const b64 = (d) => {{
    let s = "";
    for (let i = 0; i < d.length; i += 8192) s += String.fromCharCode.apply(null, d.subarray(i, i + 8192));
    return btoa(s);
  }};
  const img = await e.generate({settings}, () => true, true);
  // Tighten the budget for a new prompt until the planner streams the text encoders.
  const s2 = {{ prompt: {p2}, negative: {neg}, width: 128, height: 128, steps: 2, seed: 5, gpu_memory: 64 * 2 ** 30 }};
  for (;;) {{
    const p = JSON.parse(await e.plan(JSON.stringify(s2)));
    if (p.text_encoders === "streamed") break;
    s2.gpu_memory = p.predicted_peak_gpu_bytes - 1;
  }}
  const img2 = await e.generate(JSON.stringify(s2), () => true, false);
  // Released after that run: this prompt streams them back through readRange.
  const img3 = await e.generate(JSON.stringify({{ ...s2, prompt: {p3} }}), () => true, false);
  done(JSON.stringify({{ dump: b64(img.dump), report: JSON.parse(img.report), report2: JSON.parse(img2.report),
                        report3: JSON.parse(img3.report), png3: b64(img3.png), ranges, budget: s2.gpu_memory }}));
}})().catch((e) => done("ERR " + (e.message || e)));"#,
        settings = serde_json::to_string(&settings.to_string()).unwrap(),
        p2 = serde_json::to_string(PROMPT2).unwrap(),
        p3 = serde_json::to_string(PROMPT3).unwrap(),
        neg = serde_json::to_string(NEGATIVE).unwrap(),
    );
    let r =
        http(b.drv, "POST", &format!("/session/{}/execute/async", b.id), Some(&json!({"script": script, "args": []})));
    let v = r["value"].as_str().unwrap_or_else(|| panic!("no result from the page: {r}")).to_string();
    assert!(!v.starts_with("ERR"), "the page failed: {v}");
    let page: Value = serde_json::from_str(&v).expect("the page's JSON");
    let web = b64decode(page["dump"].as_str().unwrap());

    // The browser plans with the same code: the same plan, and the same peak to the byte.
    let (wr, cr) = (&page["report"], &cli_report);
    eprintln!("browser report: {wr}\ncli report: {cr}");
    for k in ["peak_gpu_bytes", "plan", "width", "height", "steps", "seed"] {
        assert_eq!(wr[k], cr[k], "report field {k}: browser vs CLI");
    }
    for st in ["text", "unet", "vae"] {
        assert_eq!(wr["stages"][st]["peak_gpu_bytes"], cr["stages"][st]["peak_gpu_bytes"], "stage {st}");
    }
    assert_eq!(wr["plan"]["vae_tile"], 64);
    assert_eq!(wr["plan"]["gpu_memory"], 6u64 << 30);
    let (r2, r3) = (&page["report2"], &page["report3"]);
    eprintln!("streamed: {r2}\nreloaded: {r3}; {} range reads", page["ranges"]);
    assert_eq!(r2["plan"]["text_encoders"], "streamed");
    assert_eq!(r3["text_encoders_reloaded"], true, "a new prompt streams the text encoders back");
    assert!(page["ranges"].as_u64().unwrap() > 0);
    assert!(r3["peak_gpu_bytes"].as_u64() <= page["budget"].as_u64(), "over the budget");
    let (web3, w3, h3, _) = decode_png(&b64decode(page["png3"].as_str().unwrap()));
    let (cli3, cw, ch, _) = decode_png(&std::fs::read(dir.join("cli3.png")).unwrap());
    assert_eq!((w3, h3), (cw, ch));
    let mean = web3.iter().zip(&cli3).map(|(a, b)| a.abs_diff(*b) as f64).sum::<f64>() / cli3.len() as f64;
    eprintln!("streamed-back text encoders in the browser vs the CLI: mean {mean:.4}/255");
    assert!(mean <= MAX_MEAN_DIFF, "browser (streamed text encoders) vs CLI: mean {mean}");

    let tol = common::StageTol {
        embed_abs: STAGE_EMBED_ABS,
        unet_rel_std: STAGE_UNET_REL_STD,
        latent_rel_std: STAGE_LATENT_REL_STD,
    };
    let failures = common::compare_dumps("browser", &web, &cli, &tol);
    assert!(failures.is_empty(), "the browser differs from the CLI:\n{}", failures.join("\n"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A measurement, not a CI test (it needs a 6.9 GB file and several minutes): streams a
/// full-size SDXL checkpoint (`sdxl dev random-checkpoint --out FILE`, path in SDXL_BIG_MODEL)
/// into the page's GPU and OPFS cache, prints the wasm memory and the times, and checks the
/// wasm memory bound (512 MiB). `SDXL_BIG_MODEL=FILE cargo test --release --test browser -- --ignored --nocapture`
#[test]
#[ignore = "measurement: needs SDXL_BIG_MODEL (a full-size checkpoint) and minutes"]
fn full_size_checkpoint_streams_with_bounded_wasm_memory() {
    let file = PathBuf::from(std::env::var("SDXL_BIG_MODEL").expect("set SDXL_BIG_MODEL to a full-size checkpoint"));
    let (dir, name) = (file.parent().unwrap(), file.file_name().unwrap().to_str().unwrap());
    let size = std::fs::metadata(&file).unwrap().len();
    let b = Browser::start(&[("big", dir)]);
    for want in ["network", "cache"] {
        b.visit(&format!("?model={}", enc(&format!("/big/{name}"))));
        b.wait_for(&["ready", "loaded"]);
        let t = Instant::now();
        b.exec("document.querySelector('#load').click(); return null");
        std::thread::sleep(Duration::from_secs(1));
        let (state, err) = b.wait_for(&["loaded"]);
        assert_eq!(state, "loaded", "{err}");
        let secs = t.elapsed().as_secs_f64();
        let loaded = b.exec("return window.sdxlLoaded");
        let mem = loaded["wasmMemory"].as_f64().unwrap();
        eprintln!(
            "{name}: {size} bytes from {} in {secs:.1} s ({:.0} MB/s), wasm memory {:.1} MiB, params unet {} text_encoder_2 {}",
            loaded["source"],
            size as f64 / secs / 1e6,
            mem / 1048576.0,
            loaded["inspection"]["components"]["unet"]["params"],
            loaded["inspection"]["components"]["text_encoder_2"]["params"]
        );
        assert_eq!(loaded["source"], want);
        assert!(mem < 512.0 * 1048576.0, "wasm memory {mem} bytes");
    }
    b.screenshot("full-size-load.png");
}

/// Inpainting through the UI: the init image dropped on the page, the mask painted with pen and
/// touch pointer events on the mask canvas, strength set on the slider; the browser's PNG equals
/// the CLI's for the same init image and the mask exported from the page.
#[test]
fn browser_inpaints_what_the_cli_inpaints() {
    const STRENGTH: &str = "0.8";
    let b = Browser::start(&[]);
    let query = format!(
        "?model={}&prompt={}&negative={}&seed={SEED}&steps=5&cfg=5&w=64&h=64&sampler=euler_a",
        enc("/fixtures/tiny-sdxl/tiny-sdxl.safetensors"),
        enc(PROMPT),
        enc(NEGATIVE)
    );
    b.visit(&query);
    let (state, err) = b.wait_for(&["ready"]);
    assert_eq!(state, "ready", "{err}");
    b.exec("document.querySelector('#load').click(); return null");
    let (state, err) = b.wait_for(&["loaded"]);
    assert_eq!(state, "loaded", "{err}");

    // Drop the init image (a real File in a DataTransfer, as a drag from the desktop carries it).
    b.exec(
        "fetch('/fixtures/img2img/init.png').then(r => r.blob()).then(blob => {
           const dt = new DataTransfer();
           dt.items.add(new File([blob], 'init.png', {type: 'image/png'}));
           document.querySelector('#image-section').dispatchEvent(
             new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
         }); return null",
    );
    let t = Instant::now();
    while b.exec("return document.body.dataset.initImage || ''") != "64x64" {
        let (state, err) = b.state();
        assert_ne!(state, "error", "dropping the init image failed: {err}");
        assert!(t.elapsed() < Duration::from_secs(30), "the dropped init image was not shown");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Inpaint mode, a 16 px brush, strength; then two strokes (pen, touch) in image pixels.
    let painted = b.exec(&format!(
        "const set = (sel, prop, v, ev) => {{ const e = document.querySelector(sel); e[prop] = v;
           e.dispatchEvent(new Event(ev, {{bubbles: true}})); }};
         set('#inpaint', 'checked', true, 'change');
         set('#brush', 'value', '16', 'input');
         set('#strength', 'value', '{STRENGTH}', 'input');
         const c = document.querySelector('#mask-canvas');
         const r = c.getBoundingClientRect();
         const at = (x, y) => ({{clientX: r.left + x * r.width / 64, clientY: r.top + y * r.height / 64}});
         const ev = (type, id, kind, x, y) => c.dispatchEvent(new PointerEvent(type, {{pointerId: id,
           pointerType: kind, isPrimary: true, button: type === 'pointermove' ? -1 : 0,
           buttons: type === 'pointerup' ? 0 : 1, bubbles: true, cancelable: true, ...at(x, y)}}));
         ev('pointerdown', 2, 'pen', 8, 44); ev('pointermove', 2, 'pen', 28, 30);
         ev('pointermove', 2, 'pen', 50, 18); ev('pointerup', 2, 'pen', 50, 18);
         ev('pointerdown', 3, 'touch', 40, 54); ev('pointermove', 3, 'touch', 56, 50); ev('pointerup', 3, 'touch', 56, 50);
         return [r.width, r.height, window.sdxlImages.coverage(), getComputedStyle(c).touchAction];"
    ));
    b.screenshot("inpaint-mask.png");
    eprintln!("mask canvas {}x{} css px, coverage {}, touch-action {}", painted[0], painted[1], painted[2], painted[3]);
    let coverage = painted[2].as_f64().unwrap_or(0.0);
    assert!(painted[0].as_f64().unwrap_or(0.0) > 0.0, "the mask canvas is not displayed: {painted}");
    assert!((0.1..0.9).contains(&coverage), "the painted strokes cover {coverage} of the mask");
    assert_eq!(painted[3], "none", "the mask canvas must not pan or zoom on touch");

    b.exec("document.querySelector('#generate').click(); return null");
    let (state, err) = b.wait_for(&["done"]);
    b.screenshot("inpaint.png");
    assert_eq!(state, "done", "inpainting ended in {state:?}: {err}");
    let run = b.exec("return document.querySelector('#gallery .result .run').textContent");
    assert_eq!(run, format!("inpaint · strength {STRENGTH} (4 of 5 steps)"));

    // The CLI with the same init image and the page's mask.
    let dir = std::env::temp_dir().join(format!("sdxl-browser-inpaint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mask_url = b.exec("return window.sdxlImages.maskPng()");
    let mask_png =
        b64decode(mask_url.as_str().and_then(|u| u.strip_prefix("data:image/png;base64,")).expect("mask PNG"));
    let (mask_path, cli_png) = (dir.join("mask.png"), dir.join("cli.png"));
    std::fs::write(&mask_path, &mask_png).unwrap();
    let model = root().join("tests/fixtures/tiny-sdxl/tiny-sdxl.safetensors");
    let init = root().join("tests/fixtures/img2img/init.png");
    let out = Command::new(env!("CARGO_BIN_EXE_sdxl"))
        .args(["--f32", "generate", "--model", model.to_str().unwrap(), "--prompt", PROMPT, "--negative", NEGATIVE])
        .args(["--width", "64", "--height", "64", "--steps", "5", "--cfg", "5", "--seed", SEED, "--sampler", "euler_a"])
        .args(["--init-image", init.to_str().unwrap(), "--mask", mask_path.to_str().unwrap(), "--strength", STRENGTH])
        .args(["--output", cli_png.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "sdxl generate failed: {}", String::from_utf8_lossy(&out.stderr));
    let (cli_rgb, cw, ch, cli_params) = decode_png(&std::fs::read(&cli_png).unwrap());
    let (rgb, w, h, params) = decode_png(&result_png(&b));
    assert_eq!((w, h), (cw, ch));
    assert_eq!(params, cli_params, "the browser's PNG parameters differ from the CLI's");
    assert!(params.contains(&format!("Denoising strength: {STRENGTH}")), "{params}");
    let diff: Vec<f64> = rgb.iter().zip(&cli_rgb).map(|(&a, &b)| (a as f64 - b as f64).abs()).collect();
    let mean = diff.iter().sum::<f64>() / diff.len() as f64;
    let max = diff.iter().cloned().fold(0.0, f64::max);
    eprintln!("inpaint, browser vs CLI ({w}x{h}): mean |diff| {mean:.4}/255, max {max}/255");
    assert!(mean <= MAX_MEAN_DIFF, "browser and CLI inpainting differ by {mean}/255 on average");

    // "Send to img2img" on the result makes it the init image, with inpainting off.
    b.exec("[...document.querySelectorAll('#gallery .result button')].find(x => x.textContent === 'Send to img2img').click(); return null");
    let t = Instant::now();
    while b.exec("return document.querySelector('#inpaint').checked === false && !document.querySelector('#image-clear').disabled && !document.querySelector('#hires').checked && document.querySelector('#hires').disabled") != true {
        assert!(t.elapsed() < Duration::from_secs(30), "Send to img2img did not take the result");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// "Check this GPU" in the device panel, with no model loaded: the self-check then the timing
/// run in the worker; every check passes on SwiftShader's f32 path, the timing summary shows a
/// positive estimate for a 1024² step, and the plain-text report (in the DOM for copying) names
/// the adapter and carries both tables.
#[test]
fn browser_gpu_check_reports_every_check_and_an_estimate() {
    let b = Browser::start(&[]);
    b.visit("");
    let (state, err) = b.wait_for(&["ready"]);
    assert_eq!(state, "ready", "{err}");
    let t = Instant::now();
    let clicked =
        b.exec("const x = document.querySelector('#gpu-check'); if (x.disabled) return false; x.click(); return true");
    assert_eq!(clicked, json!(true), "the button is enabled once the GPU is ready, without a model");
    let end = loop {
        let s = b.exec("return document.body.dataset.gpuCheck || ''");
        let s = s.as_str().unwrap_or("").to_string();
        if ["passed", "failed", "error"].contains(&s.as_str()) {
            break s;
        }
        assert!(t.elapsed() < PAGE_TIMEOUT, "GPU check still {s:?} after {:?}", t.elapsed());
        std::thread::sleep(Duration::from_millis(500));
    };
    let secs = t.elapsed().as_secs_f64();
    b.exec("document.querySelector('#gpu-check-details').open = true; document.querySelector('#gpu-check').scrollIntoView(); return null");
    b.screenshot("gpu-check.png");
    let status = b.exec("return document.querySelector('#gpu-check-status').textContent");
    assert_eq!(end, "passed", "GPU check ended {end}: {status}");
    let r = b.exec("return window.sdxlGpuCheck");
    let sc = &r["selfcheck"];
    let failed: Vec<&Value> = sc["checks"].as_array().unwrap().iter().filter(|c| c["pass"] != json!(true)).collect();
    assert!(failed.is_empty(), "failed checks: {failed:#?}");
    assert_eq!(
        (sc["passed"].clone(), sc["failures"].clone(), sc["compute_path"].clone()),
        (json!(true), json!(0), json!("f32"))
    );
    let n = sc["checks"].as_array().unwrap().len();
    let rows = b.exec("return document.querySelectorAll('#gpu-check-table tbody tr').length");
    assert_eq!(rows.as_u64(), Some(n as u64), "one table row per check");
    assert_eq!(b.exec("return document.querySelectorAll('#gpu-check-table tr.fail').length"), json!(0));

    let timing = &r["timing"];
    assert!(timing.is_object(), "timing failed: {}", r["timingError"]);
    let est = timing["step_seconds"].as_f64().unwrap();
    assert!(est > 0.0 && est.is_finite(), "estimate {est}");
    assert_eq!((timing["width"].clone(), timing["batch"].clone()), (json!(1024), json!(2)));
    let shown =
        b.exec("const e = document.querySelector('#gpu-check-estimate'); return [e.textContent, e.dataset.seconds]");
    assert!(
        shown[0].as_str().unwrap().starts_with("estimated ") && shown[0].as_str().unwrap().contains("1024x1024"),
        "{shown}"
    );
    assert!(shown[1].as_str().unwrap().parse::<f64>().unwrap() > 0.0, "{shown}");
    let kernels = b.exec("return document.querySelector('#gpu-check-kernels').textContent");
    assert!(kernels.as_str().unwrap().contains("attn_self") && kernels.as_str().unwrap().contains(" ms"), "{kernels}");

    let text = b.exec("return document.querySelector('#gpu-check-text').value");
    let text = text.as_str().unwrap();
    let adapter = sc["adapter"].as_str().unwrap();
    assert!(text.contains(&format!("adapter: {adapter}")), "{text}");
    assert!(text.contains("compute path: f32") && text.contains("user agent: Mozilla/"), "{text}");
    assert!(text.contains("self-check: PASSED"), "{text}");
    let first = &sc["checks"][0];
    assert!(text.contains(first["name"].as_str().unwrap()), "the self-check table is in the text");
    assert!(
        text.contains("largest call") && text.contains("attn_self") && text.contains("per UNet step at 1024x1024"),
        "{text}"
    );
    // Copy: the clipboard may be refused headless; either way the page says what happened.
    b.exec("document.querySelector('#gpu-check-copy').click(); return null");
    std::thread::sleep(Duration::from_millis(500));
    let copied = b.exec("return document.querySelector('#gpu-check-copied').textContent");
    assert!(!copied.as_str().unwrap_or("").is_empty(), "Copy report gives feedback");
    assert_eq!(b.state().0, "ready", "the check leaves the page's state alone");
    eprintln!(
        "GPU check in Chromium ({adapter}): {n} checks passed, self-check {:.1} s, timing {:.1} s ({} clock), estimate {est:.1} s per 1024² step; {secs:.1} s in all; copy: {copied}",
        sc["total_seconds"].as_f64().unwrap_or(0.0),
        timing["total_seconds"].as_f64().unwrap_or(0.0),
        timing["clock"]
    );
}
