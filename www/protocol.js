// The page <-> worker message protocol. Every message is a plain object with a `type`.
//
// Page -> worker:
//   {type: "init", forceF32: boolean}            acquire WebGPU, reply "ready" or "error"
//   {type: "selfTest", values: number[]}         run the smoke kernel, reply "selfTest"
// Worker -> page:
//   {type: "ready", info: GpuInfo}               GpuInfo = the JSON of `sdxl info --json`
//   {type: "selfTest", values: number[]}
//   {type: "error", message: string}
//
// Both sides validate with `check` so a malformed message is an error, never silence.

export const TO_WORKER = { init: ["forceF32"], selfTest: ["values"] };
export const TO_PAGE = { ready: ["info"], selfTest: ["values"], error: ["message"] };

/** Throws unless `msg` is one of `table`'s types and carries its fields. */
export function check(table, msg) {
  if (!msg || typeof msg !== "object" || !(msg.type in table)) {
    throw new Error(`unknown message ${JSON.stringify(msg && msg.type)}`);
  }
  for (const f of table[msg.type]) {
    if (!(f in msg)) throw new Error(`message "${msg.type}" lacks field "${f}"`);
  }
  return msg;
}
