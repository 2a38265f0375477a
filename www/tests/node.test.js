import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileSource, installWebGPU } from "../node.js";

test("fileSource reads in order, by range, and names short files", async () => {
  const dir = mkdtempSync(join(tmpdir(), "sdxl-node-"));
  const path = join(dir, "f.bin");
  // Over one 8 MiB chunk, so `read` must return two pieces.
  const bytes = new Uint8Array((8 << 20) + 12345).map((_, i) => (i * 7) & 255);
  writeFileSync(path, bytes);
  const src = await fileSource(path);
  try {
    assert.equal(src.size, bytes.length);
    const parts = [];
    for (let c; (c = await src.read()) !== undefined; ) parts.push(c);
    assert.equal(parts.length, 2);
    assert.deepEqual(Buffer.concat(parts), Buffer.from(bytes));
    assert.deepEqual(await src.readRange(100, 200), bytes.subarray(100, 200));
    assert.deepEqual(await src.readRange(bytes.length - 5, bytes.length), bytes.subarray(bytes.length - 5));
    await assert.rejects(src.readRange(bytes.length - 5, bytes.length + 1), /past the end/);
  } finally {
    await src.close();
    rmSync(dir, { recursive: true });
  }
});

test("a missing webgpu package is a clear error", async () => {
  const before = process.env.SDXL_WEBGPU;
  process.env.SDXL_WEBGPU = "/nonexistent/webgpu";
  try {
    await assert.rejects(installWebGPU(), /cannot load the npm package "webgpu".*\.\/x setup/);
  } finally {
    if (before === undefined) delete process.env.SDXL_WEBGPU;
    else process.env.SDXL_WEBGPU = before;
  }
});
