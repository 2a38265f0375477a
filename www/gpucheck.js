// "Check this GPU" (device panel): the engine's self-check (every kernel against CPU references)
// then its kernel timing at SDXL shapes, run in the worker ("gpuCheck" message). This module
// formats the reports; the pure functions (no DOM) are tested in www/tests/gpucheck.test.js.
import { $, el } from "./dom.js";

const pad = (s, n) => String(s).padEnd(n);
const lpad = (s, n) => String(s).padStart(n);
const fixed = (v, d) => (typeof v === "number" && Number.isFinite(v) ? v.toFixed(d) : String(v));
const expo = (v) => (typeof v === "number" && Number.isFinite(v) ? v.toExponential(2) : String(v));

/** "101 checks, 0 failed, 2.2 s". */
export function checkSummary(sc) {
  return `${sc.checks.length} checks, ${sc.failures} failed, ${fixed(sc.total_seconds, 1)} s`;
}

/** The self-check as a fixed-width table (the CLI's `sdxl selfcheck` columns). */
export function checkTable(sc) {
  const lines = [
    `${pad("family", 12)} ${pad("check", 44)} ${pad("shape", 22)} ${lpad("max err", 10)} ${lpad("x tol", 8)} ${lpad("ms", 9)}  clock result`,
  ];
  for (const c of sc.checks) {
    lines.push(
      `${pad(c.family, 12)} ${pad(c.name, 44)} ${pad(c.shape, 22)} ${lpad(expo(c.max_abs_err), 10)} ` +
        `${lpad(fixed(c.worst_ratio, 3), 8)} ${lpad(fixed(c.seconds * 1e3, 3), 9)}  ${pad(c.clock, 5)} ` +
        `${c.pass ? "ok" : "FAIL"}${c.error ? ` (${c.error})` : ""}`,
    );
  }
  return lines.join("\n");
}

/** "estimated 12.3 s per UNet step at 1024x1024 (batch 2, CFG) of SDXL 1.0 base". */
export function estimateLine(t) {
  const s = t.step_seconds;
  const shown = s >= 100 ? s.toFixed(0) : s >= 10 ? s.toFixed(1) : s.toFixed(2);
  return `estimated ${shown} s per UNet step at ${t.width}x${t.height} (batch ${t.batch}, CFG)${t.model ? ` of ${t.model}` : ""}`;
}

/** The timing as a fixed-width table plus the estimate. */
export function timingTable(t) {
  const lines = [
    `${pad("family", 12)} ${pad("largest call", 34)} ${pad("timed at", 30)} ${lpad("ms/call", 10)} ${lpad("rate", 10)} ${pad("", 7)} ${lpad("calls", 6)} ${lpad("ms/step", 10)}`,
  ];
  for (const f of t.families) {
    lines.push(
      `${pad(f.family, 12)} ${pad(f.shape, 34)} ${pad(f.timed_shape === f.shape ? "(same)" : f.timed_shape, 30)} ` +
        `${lpad(fixed(f.ms, 3), 10)} ${lpad(fixed(f.rate, 2), 10)} ${pad(f.unit, 7)} ${lpad(f.calls, 6)} ${lpad(fixed(f.step_ms, 1), 10)}`,
    );
  }
  lines.push(
    `${fixed(t.unet_gflop, 0)} GFLOP and ${t.dispatches} dispatches per step (${fixed(t.dispatch_overhead_ms, 4)} ms overhead each), ${t.clock} clock` +
      (t.capped ? "; slow device: some calls timed smaller and extrapolated" : ""),
  );
  lines.push(estimateLine(t));
  return lines.join("\n");
}

/** Short timing lines for the panel: ms per call of the main families, then the estimate. */
export function timingSummary(t) {
  const main = ["linear", "conv3x3", "attn_self", "attn_cross", "group_norm", "layer_norm", "elementwise"];
  const parts = t.families.filter((f) => main.includes(f.family)).map((f) => `${f.family} ${fixed(f.ms, f.ms < 10 ? 2 : 1)} ms`);
  const note = t.capped ? "slow device: the largest calls were timed smaller and extrapolated" : "";
  return { kernels: parts.join(" · "), estimate: estimateLine(t), note };
}

/** The plain-text report for bug reports. `env` = {info (ready's device info), userAgent}. */
export function reportText({ selfcheck, timing, timingError }, env = {}) {
  const info = env.info || {};
  const lines = [
    "sdxl-web GPU check",
    `adapter: ${selfcheck.adapter}`,
    `compute path: ${selfcheck.compute_path}`,
  ];
  if (info.backend || info.driver) lines.push(`backend: ${[info.backend, info.device_type].filter(Boolean).join(", ")}; driver: ${[info.driver, info.driver_info].filter(Boolean).join(" ") || "?"}`);
  if (info.shader_f16 !== undefined) lines.push(`shader-f16: ${info.shader_f16 ? "yes" : "no"}, timestamps: ${info.timestamp_query ? "yes" : "no"}`);
  lines.push(`user agent: ${env.userAgent || "?"}`, "");
  lines.push(`self-check: ${selfcheck.passed ? "PASSED" : "FAILED"}, ${checkSummary(selfcheck)}`);
  lines.push(checkTable(selfcheck), "");
  if (timing) lines.push("timing (kernel families at SDXL shapes):", timingTable(timing));
  else lines.push(`timing: not available (${timingError || "not run"})`);
  return lines.join("\n") + "\n";
}

// ---------------------------------------------------------------------------------------------
// The panel (DOM)

/** Status line while running; `phase` "selfcheck" | "timing". */
export function showProgress(phase) {
  $("gpu-check-report").hidden = true;
  $("gpu-check-progress").hidden = false;
  $("gpu-check-status").className = "muted small";
  $("gpu-check-status").textContent =
    phase === "timing" ? "timing kernels at SDXL shapes… (2/2)" : "checking every kernel against CPU references… (1/2)";
  document.body.dataset.gpuCheck = "running";
}

export function showError(message) {
  $("gpu-check-progress").hidden = true;
  $("gpu-check-status").className = "error-text small";
  $("gpu-check-status").textContent = `GPU check failed: ${message}`;
  document.body.dataset.gpuCheck = "error";
}

/** Render the result message; returns the plain-text report (also placed in the DOM). */
export function showReport(msg, env) {
  const sc = msg.selfcheck;
  $("gpu-check-progress").hidden = true;
  $("gpu-check-status").className = sc.passed ? "ok-text small" : "error-text small";
  $("gpu-check-status").textContent = sc.passed ? "every check passed" : `${sc.failures} check(s) FAILED`;
  $("gpu-check-summary").textContent = `${sc.passed ? "✓" : "✗"} ${checkSummary(sc)} (${sc.compute_path} path)`;

  const failures = $("gpu-check-failures");
  failures.textContent = "";
  for (const c of sc.checks.filter((c) => !c.pass)) {
    failures.append(el("li", { textContent: `${c.family} · ${c.name} · ${c.shape}: ${c.error || `error ${expo(c.max_abs_err)} = ${fixed(c.worst_ratio, 2)}× tolerance`}` }));
  }
  failures.hidden = !failures.children.length;

  const body = $("gpu-check-table").querySelector("tbody");
  body.textContent = "";
  for (const c of sc.checks) {
    body.append(
      el(
        "tr",
        { class: c.pass ? "" : "fail" },
        el("td", { textContent: c.family }),
        el("td", { textContent: c.name }),
        el("td", { textContent: c.shape }),
        el("td", { textContent: fixed(c.worst_ratio, 3) }),
        el("td", { textContent: fixed(c.seconds * 1e3, 2) }),
        el("td", { textContent: c.pass ? "ok" : "FAIL" }),
      ),
    );
  }

  if (msg.timing) {
    const s = timingSummary(msg.timing);
    $("gpu-check-kernels").textContent = `ms per call at SDXL shapes: ${s.kernels}` + (s.note ? ` (${s.note})` : "");
    $("gpu-check-estimate").textContent = s.estimate;
    $("gpu-check-estimate").dataset.seconds = String(msg.timing.step_seconds);
  } else {
    $("gpu-check-kernels").textContent = "";
    $("gpu-check-estimate").textContent = `timing failed: ${msg.timingError || "unknown error"}`;
    delete $("gpu-check-estimate").dataset.seconds;
  }
  const text = reportText(msg, env);
  $("gpu-check-text").value = text;
  $("gpu-check-report").hidden = false;
  document.body.dataset.gpuCheck = sc.passed ? "passed" : "failed";
  return text;
}

/** Copy the plain-text report; the textarea stays selectable when the clipboard is refused. */
export async function copyReport() {
  const text = $("gpu-check-text").value;
  const note = $("gpu-check-copied");
  try {
    await navigator.clipboard.writeText(text);
    note.textContent = "copied";
  } catch (e) {
    $("gpu-check-text-box").open = true;
    $("gpu-check-text").select();
    note.textContent = `could not copy (${e && e.message ? e.message : e}): the text is selected below`;
  }
}
