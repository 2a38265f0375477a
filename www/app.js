// UI thread: renders state and forwards user intent to the worker. Never blocks.
import { check, TO_PAGE } from "./protocol.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });

function setState(state, error) {
  document.body.dataset.state = state;
  if (error) document.body.dataset.error = error;
  $("status").textContent = error ? `Error: ${error}` : state;
}

function showDevice(info) {
  const l = info.limits;
  $("device").textContent = [
    `adapter: ${info.name} (${info.backend}, ${info.device_type})`,
    `shader-f16: ${info.shader_f16 ? "yes" : "no"} — compute path ${info.compute_path}`,
    `max buffer: ${l.max_buffer_size >> 20} MiB, max storage binding: ${l.max_storage_buffer_binding_size >> 20} MiB`,
    `workgroup storage: ${l.max_compute_workgroup_storage_size} B, invocations: ${l.max_compute_invocations_per_workgroup}`,
  ].join("\n");
}

worker.onmessage = (ev) => {
  let msg;
  try {
    msg = check(TO_PAGE, ev.data);
  } catch (e) {
    return setState("error", e.message);
  }
  if (msg.type === "ready") {
    window.sdxlDevice = msg.info;
    showDevice(msg.info);
    setState("selftest");
    worker.postMessage({ type: "selfTest", values: [0, 1, 2, -3.5] });
  } else if (msg.type === "selfTest") {
    window.sdxlSelfTest = msg.values;
    $("selftest").textContent = `self-test 1.5·x − 0.25 on [0, 1, 2, −3.5] → [${msg.values.join(", ")}]`;
    setState("done");
  } else if (msg.type === "error") {
    setState("error", msg.message);
  }
};
worker.onerror = (e) => setState("error", `worker failed: ${e.message || "could not load (is www/pkg built?)"}`);

setState("starting");
worker.postMessage({ type: "init", forceF32: params.get("f32") === "1" });
