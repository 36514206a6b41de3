// How numbers read on the page: bytes in binary units, speeds per second, durations as "1m 50s".

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

export function formatBytes(bytes) {
  if (!Number.isFinite(bytes) || bytes < 0) return "–";
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const digits = unit === 0 || value >= 100 ? 0 : 1;
  return `${value.toFixed(digits)} ${UNITS[unit]}`;
}

export function formatSpeed(bytesPerSecond) {
  if (!Number.isFinite(bytesPerSecond) || bytesPerSecond <= 0) return "0 B/s";
  return `${formatBytes(bytesPerSecond)}/s`;
}

/** Seconds as "1h 2m", "1m 50s" or "42s"; "–" when unknown. */
export function formatDuration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "–";
  const total = Math.round(seconds);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  if (h > 0) return `${h}h ${m}m`;
  if (m > 0) return `${m}m ${s}s`;
  return `${s}s`;
}

export function formatPercent(progress) {
  if (!Number.isFinite(progress)) return "0%";
  const clamped = Math.max(0, Math.min(100, progress));
  return `${clamped.toFixed(clamped === 100 || clamped === 0 ? 0 : 1)}%`;
}

/** Epoch milliseconds as local "HH:MM:SS", with the date when it is not today. */
export function formatTime(epochMs) {
  if (!Number.isFinite(epochMs)) return "–";
  const date = new Date(epochMs);
  const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  if (date.toDateString() === new Date().toDateString()) return time;
  return `${date.toLocaleDateString()} ${time}`;
}

/** Every byte, for when a person must tell two disks apart: "8,388,608 bytes". */
export function formatExactBytes(bytes) {
  if (!Number.isFinite(bytes) || bytes < 0) return "size unknown";
  return `${bytes.toLocaleString("en-US")} bytes`;
}
