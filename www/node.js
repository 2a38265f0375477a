// Node as a host: the wasm library (www/pkg, `./x wasm`) headless in Node >= 20, on Dawn (the
// WebGPU implementation inside Chrome, with Tint, Chrome's WGSL compiler) from the npm `webgpu`
// package. The same `Engine` API the page's worker uses; files come from the local disk.
//
//   import { createEngine, loadFile } from "./www/node.js";
//   const engine = await createEngine();            // { f32: true } forces the f32 path
//   await loadFile(engine, "model.safetensors");    // streamed, re-readable by range
//   const img = await engine.generate(JSON.stringify({ prompt: "1girl", width: 1024, height: 1024 }), () => true);
//   fs.writeFileSync("out.png", img.png);
//
// As a command (what tests/dawn.rs runs; `./x dawn-node` sets up the Mesa 25 lavapipe it uses):
//   node www/node.js info [--f32]
//   node www/node.js selfcheck [--f32] [--json] [--timing]
//   node www/node.js generate --model FILE --settings JSON --out PNG [--f32] [--dump FILE] [--report FILE]
//
// `webgpu` resolves as a normal dependency (`npm install webgpu`), or from the package folder in
// SDXL_WEBGPU (what `./x` installs under target/dawn).
import { open, writeFile } from "node:fs/promises";
import { readFileSync } from "node:fs";
import { basename, join } from "node:path";
import { pathToFileURL, fileURLToPath } from "node:url";
import { checkSummary, checkTable, timingTable } from "./gpucheck.js";

const HERE = fileURLToPath(new URL(".", import.meta.url));
/** Bytes per chunk handed to `Engine.load` (one chunk is in wasm memory at a time). */
const CHUNK = 8 << 20;

let webgpu = null;

/** Makes `navigator.gpu` a Dawn instance (once) and returns the `webgpu` module. */
export async function installWebGPU() {
  if (webgpu) return webgpu;
  const from = process.env.SDXL_WEBGPU;
  try {
    webgpu = await import(from ? pathToFileURL(join(from, "index.js")).href : "webgpu");
  } catch (e) {
    throw new Error(
      `cannot load the npm package "webgpu" (${from ? "SDXL_WEBGPU=" + from : "not installed"}): ${e.message}; ` +
        "run `npm install webgpu`, or `./x setup` and `./x dawn-node ...`",
    );
  }
  // The GPU* classes and constants (GPUBufferUsage, …) the browser has as globals.
  Object.assign(globalThis, webgpu.globals);
  // wgpu's WebGPU backend looks for a `Window` (or worker) global before it reads navigator.gpu.
  if (typeof globalThis.Window === "undefined") globalThis.Window = function Window() {};
  Object.defineProperty(globalThis, "navigator", {
    value: { ...(globalThis.navigator || {}), gpu: webgpu.create([]) },
    configurable: true,
    writable: true,
  });
  return webgpu;
}

let lib = null;

/** The wasm library, initialised from www/pkg (or `pkgDir`). */
export async function library(pkgDir = join(HERE, "pkg")) {
  if (lib) return lib;
  await installWebGPU();
  const m = await import(pathToFileURL(join(pkgDir, "sdxl_web.js")).href);
  await m.default({ module_or_path: readFileSync(join(pkgDir, "sdxl_web_bg.wasm")) });
  lib = m;
  return m;
}

/** An `Engine` on Dawn's first adapter; `f32` forces the f32 compute path. */
export async function createEngine({ f32 = false } = {}) {
  const m = await library();
  return m.Engine.create(f32);
}

/** A local file as the engine's byte sources: `read` (in order) and `readRange` (by range). */
export async function fileSource(path) {
  const fh = await open(path, "r");
  const { size } = await fh.stat();
  let pos = 0;
  const read = async () => {
    if (pos >= size) return undefined;
    const buf = new Uint8Array(Math.min(CHUNK, size - pos));
    const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
    if (bytesRead === 0) throw new Error(`${path}: the file ended at ${pos} of ${size} bytes`);
    pos += bytesRead;
    return buf.subarray(0, bytesRead);
  };
  const readRange = async (start, end) => {
    const buf = new Uint8Array(end - start);
    let got = 0;
    while (got < buf.length) {
      const { bytesRead } = await fh.read(buf, got, buf.length - got, start + got);
      if (bytesRead === 0) throw new Error(`${path}: bytes ${start}..${end} are past the end (${size})`);
      got += bytesRead;
    }
    return buf;
  };
  return { size, read, readRange, close: () => fh.close() };
}

/** Loads a single-file checkpoint; the file stays open for range reads (text encoders streamed
 * back for a new prompt). Returns the inspection object. */
export async function loadFile(engine, path, onProgress) {
  const src = await fileSource(path);
  const name = basename(path).replace(/\.safetensors$/, "");
  try {
    return JSON.parse(await engine.load(name, src.size, src.read, onProgress, src.readRange));
  } catch (e) {
    await src.close();
    throw e;
  }
}

function parseArgs(argv) {
  const flags = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("--")) throw new Error(`unexpected argument ${JSON.stringify(a)}`);
    const key = a.slice(2);
    if (key === "f32" || key === "json" || key === "timing") flags[key] = true;
    else if (i + 1 < argv.length) flags[key] = argv[++i];
    else throw new Error(`${a} needs a value`);
  }
  return flags;
}

async function main(argv) {
  const [cmd, ...rest] = argv;
  if (!["info", "selfcheck", "generate"].includes(cmd)) throw new Error(`unknown command ${JSON.stringify(cmd)}: info, selfcheck or generate`);
  const flags = parseArgs(rest);
  if (cmd === "generate") for (const k of ["model", "settings", "out"]) if (!flags[k]) throw new Error(`generate needs --${k}`);
  const engine = await createEngine({ f32: Boolean(flags.f32) });
  const info = JSON.parse(engine.info());
  if (cmd === "info") {
    console.log(JSON.stringify(info, null, 2));
  } else if (cmd === "selfcheck") {
    const report = JSON.parse(await engine.selfCheck());
    // Kernel timing at SDXL shapes and the estimated 1024² step (`sdxl selfcheck --timing`).
    if (flags.timing) report.timing = JSON.parse(await engine.timing());
    if (flags.json) console.log(JSON.stringify(report));
    else {
      // The page's report tables (and the CLI's columns).
      console.log(checkTable(report));
      console.log(`${report.adapter} (${report.compute_path} path): ${checkSummary(report)}`);
      if (report.timing) console.log(timingTable(report.timing));
    }
    if (!report.passed) process.exitCode = 1;
  } else if (cmd === "generate") {
    const t0 = performance.now();
    await loadFile(engine, flags.model);
    const t1 = performance.now();
    const img = await engine.generate(flags.settings, () => true, Boolean(flags.dump));
    const t2 = performance.now();
    await writeFile(flags.out, img.png);
    if (flags.dump) await writeFile(flags.dump, img.dump);
    const report = { ...JSON.parse(img.report), adapter: info.name, load_seconds: (t1 - t0) / 1e3, generate_seconds: (t2 - t1) / 1e3 };
    if (flags.report) await writeFile(flags.report, JSON.stringify(report));
    console.error(`${info.name} (${info.compute_path} path): loaded in ${report.load_seconds.toFixed(1)} s, generated in ${report.generate_seconds.toFixed(1)} s`);
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main(process.argv.slice(2)).then(
    // Dawn keeps the process alive while the device exists.
    () => process.exit(process.exitCode || 0),
    (e) => {
      console.error(`error: ${e.message || e}`);
      process.exit(1);
    },
  );
}
