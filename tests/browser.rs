//! The wasm build in a real browser: Debian's headless Chromium (SwiftShader WebGPU, no
//! shader-f16, so the f32 path), driven through chromedriver's WebDriver HTTP API. Serves www/
//! with `sdxl serve`, waits for the page's `data-state`, checks the self-test numbers computed on
//! the browser's GPU, and saves a screenshot to target/screenshots/.
//!
//! Needs www/pkg (built by `./x wasm`, which `./x test` runs first) and chromium +
//! chromium-driver (installed by `./x setup`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The page must settle within this long; SwiftShader compiles shaders slowly on 2 cores.
const PAGE_TIMEOUT: Duration = Duration::from_secs(180);

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

#[test]
fn page_runs_the_engine_on_webgpu() {
    let www = root().join("www");
    assert!(www.join("pkg/sdxl_web_bg.wasm").exists(), "www/pkg is missing: run `./x wasm` (or `./x test`) first");
    for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(Path::new(bin).exists(), "{bin} is missing: run `./x setup`");
    }
    let (web, drv) = (free_port(), free_port());
    let _server = Killer(
        Command::new(env!("CARGO_BIN_EXE_sdxl"))
            .args(["serve", "--dir", www.to_str().unwrap(), "--port", &web.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let _driver = Killer(
        Command::new("/usr/bin/chromedriver").arg(format!("--port={drv}")).stdout(Stdio::null()).spawn().unwrap(),
    );
    wait_port(web, "sdxl serve");
    wait_port(drv, "chromedriver");

    let profile = std::env::temp_dir().join(format!("sdxl-chromium-{}", std::process::id()));
    let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
        "binary": "/usr/bin/chromium",
        "args": ["--headless", "--no-sandbox", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic", "--enable-unsafe-webgpu",
                 "--window-size=1100,800", format!("--user-data-dir={}", profile.display())]}}}});
    let sess = http(drv, "POST", "/session", Some(&caps));
    let id = sess["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no WebDriver session: {sess}")).to_string();

    let nav =
        http(drv, "POST", &format!("/session/{id}/url"), Some(&json!({"url": format!("http://127.0.0.1:{web}/")})));
    assert!(nav["value"].is_null(), "navigation failed: {nav}");
    let script = json!({"script": "return [document.body.dataset.state || '', document.body.dataset.error || '', window.sdxlSelfTest || null, window.sdxlDevice || null]", "args": []});
    let t = Instant::now();
    let v = loop {
        let r = http(drv, "POST", &format!("/session/{id}/execute/sync"), Some(&script));
        let state = r["value"][0].as_str().unwrap_or("").to_string();
        if state == "done" || state == "error" || t.elapsed() > PAGE_TIMEOUT {
            break r["value"].clone();
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let shot = http(drv, "GET", &format!("/session/{id}/screenshot"), None);
    let dir = root().join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("selftest.png"), b64decode(shot["value"].as_str().unwrap_or(""))).unwrap();
    http(drv, "DELETE", &format!("/session/{id}"), None);
    let _ = std::fs::remove_dir_all(&profile);

    assert_eq!(v[0], "done", "page ended in state {:?}: {}", v[0], v[1]);
    let got: Vec<f64> = v[2].as_array().expect("self-test values").iter().map(|x| x.as_f64().unwrap()).collect();
    // f16 storage: 1.5·x − 0.25 for x in [0, 1, 2, −3.5] is exact in f16.
    assert_eq!(got, vec![-0.25, 1.25, 2.75, -5.5]);
    let dev = &v[3];
    eprintln!("browser adapter: {} (shader-f16 {}, path {})", dev["name"], dev["shader_f16"], dev["compute_path"]);
    assert!(dev["limits"]["max_storage_buffer_binding_size"].as_u64().unwrap_or(0) >= 128 << 20);
}
