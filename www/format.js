// Human-readable sizes, rates and durations for the progress texts. Pure; no DOM.

const UNITS = ["B", "KB", "MB", "GB", "TB"];

/** Decimal units with three significant digits: 6940000000 -> "6.94 GB", 512000 -> "512 KB". */
export function formatBytes(n) {
  if (typeof n !== "number" || !Number.isFinite(n)) return "?";
  const neg = n < 0;
  let v = Math.abs(n);
  let u = 0;
  while (v >= 1000 && u < UNITS.length - 1) {
    v /= 1000;
    u++;
  }
  if (u === 0) return `${neg ? "-" : ""}${Math.round(v)} B`;
  let digits = v < 10 ? 2 : v < 100 ? 1 : 0;
  let s = v.toFixed(digits);
  // 999.7 KB rounds to "1000": carry into the next unit.
  if (Number(s) >= 1000 && u < UNITS.length - 1) {
    u++;
    s = (v / 1000).toFixed(2);
  }
  return `${neg ? "-" : ""}${s} ${UNITS[u]}`;
}

/** Bytes per second: "85.3 MB/s". */
export function formatRate(bytesPerSec) {
  return `${formatBytes(bytesPerSec)}/s`;
}

const pad2 = (n) => String(n).padStart(2, "0");

/** 42 -> "42 s", 67 -> "1 min 07 s", 7380 -> "2 h 03 min". Unknown -> "?". */
export function formatDuration(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds) || seconds < 0) return "?";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${pad2(s % 60)} s`;
  const m = Math.round(s / 60);
  return `${Math.floor(m / 60)} h ${pad2(m % 60)} min`;
}

/** "1.20 GB of 6.94 GB · 85.3 MB/s · 1 min 07 s left"; parts that are unknown are left out. */
export function progressText({ loaded, total, rate, eta }) {
  const parts = [total != null ? `${formatBytes(loaded)} of ${formatBytes(total)}` : formatBytes(loaded)];
  if (typeof rate === "number" && Number.isFinite(rate) && rate > 0) parts.push(formatRate(rate));
  if (typeof eta === "number" && Number.isFinite(eta) && eta >= 0 && total != null && loaded < total) {
    parts.push(`${formatDuration(eta)} left`);
  }
  return parts.join(" · ");
}
