// Module worker: owns the wasm engine and the GPU; the page only sends messages.
import init, { Engine } from "./pkg/sdxl_web.js";
import { check, TO_WORKER } from "./protocol.js";

let engine = null;
const ready = init();

function post(msg) {
  self.postMessage(msg);
}

self.onmessage = async (ev) => {
  try {
    const msg = check(TO_WORKER, ev.data);
    await ready;
    if (msg.type === "init") {
      if (!("gpu" in navigator)) throw new Error("this browser has no WebGPU (navigator.gpu is missing)");
      engine = await Engine.create(Boolean(msg.forceF32));
      post({ type: "ready", info: JSON.parse(engine.info()) });
    } else if (msg.type === "selfTest") {
      if (!engine) throw new Error("selfTest before init");
      post({ type: "selfTest", values: Array.from(await engine.selfTest(new Float32Array(msg.values))) });
    }
  } catch (e) {
    post({ type: "error", message: String((e && e.message) || e) });
  }
};
