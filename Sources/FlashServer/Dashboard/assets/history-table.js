// The history table: the server's record of finished jobs, newest first until a person sorts it
// by a column (a header's button: ascending, again: descending).

import { formatBytes, formatDuration, formatSpeed, formatTime } from "./format.js";

const SORT_KEYS = {
  ended: (entry) => entry.endedAt ?? entry.createdAt,
  device: (entry) => deviceText(entry),
  image: (entry) => imageText(entry),
  result: (entry) => resultText(entry),
  duration: (entry) => entry.durationMs,
  speed: (entry) => entry.averageSpeed,
};

export class HistoryTable {
  constructor() {
    this.table = document.getElementById("history");
    this.body = this.table.querySelector("tbody");
    this.empty = document.getElementById("history-empty");
    this.headers = [...this.table.querySelectorAll("th[data-sort]")];
    this.sort = { key: "ended", direction: "descending" };
    this.entries = [];
    for (const header of this.headers) {
      header.querySelector("button").addEventListener("click", () => this.sortBy(header.dataset.sort));
    }
  }

  show(entries) {
    this.entries = entries.filter((entry) => !["queued", "running", "paused"].includes(entry.result));
    this.render();
  }

  sortBy(key) {
    const again = this.sort.key === key && this.sort.direction === "ascending";
    this.sort = { key, direction: again ? "descending" : "ascending" };
    this.render();
  }

  render() {
    const { key, direction } = this.sort;
    for (const header of this.headers) {
      if (header.dataset.sort === key) header.setAttribute("aria-sort", direction);
      else header.removeAttribute("aria-sort");
    }
    const value = SORT_KEYS[key];
    const sign = direction === "ascending" ? 1 : -1;
    // Array.prototype.sort is stable: equal values keep the server's newest-first order.
    const sorted = [...this.entries].sort((a, b) => compare(value(a), value(b), sign));
    this.body.replaceChildren(...sorted.map(row));
    this.empty.hidden = this.entries.length > 0;
  }
}

/** Unknown values go last whichever the direction. */
function compare(a, b, sign) {
  const aMissing = a === null || a === undefined || Number.isNaN(a);
  const bMissing = b === null || b === undefined || Number.isNaN(b);
  if (aMissing || bMissing) return aMissing - bMissing;
  if (typeof a === "number" && typeof b === "number") return sign * (a - b);
  return sign * String(a).localeCompare(String(b), undefined, { numeric: true, sensitivity: "base" });
}

function imageText(entry) {
  const name = entry.image ? entry.image.split("/").pop() : "";
  return [name, entry.partition ? `→ ${entry.partition}` : null].filter(Boolean).join(" ");
}

/** In a farm the same deviceId may be at several stations: say which. */
function deviceText(entry) {
  return entry.station ? `${entry.deviceId} at ${entry.station}` : entry.deviceId;
}

function resultText(entry) {
  if (entry.result === "completed" && entry.verified === true) return "completed, verified";
  if (entry.result === "completed" && entry.verified === false) return "completed, not verified";
  return entry.result;
}

function row(entry) {
  const tr = document.createElement("tr");
  tr.dataset.jobId = entry.jobId;
  tr.dataset.result = entry.result;
  const result = document.createElement("span");
  result.className = "badge";
  result.dataset.state = entry.result;
  result.textContent = entry.result;
  if (entry.error) result.title = entry.error;
  const check = document.createElement("span");
  check.className = "verified";
  check.textContent = entry.result === "completed" && typeof entry.verified === "boolean" ? (entry.verified ? "verified" : "not verified") : "";
  const image = `${imageText(entry)} · ${formatBytes(entry.totalBytes)}`;
  const cells = [
    [formatTime(entry.endedAt ?? entry.createdAt)],
    // Long values are cut to the column's width; the title holds them whole.
    [deviceText(entry), [deviceText(entry), entry.deviceName].filter(Boolean).join("\n"), "cut"],
    [image, entry.image ? `${entry.image}${entry.partition ? ` → ${entry.partition}` : ""}` : image, "cut"],
    [wrap(result, check)],
    [Number.isFinite(entry.durationMs) ? formatDuration(entry.durationMs / 1000) : "–"],
    [entry.averageSpeed > 0 ? formatSpeed(entry.averageSpeed) : "–"],
  ];
  for (const [content, title, className] of cells) {
    const td = document.createElement("td");
    if (typeof content === "string") td.textContent = content;
    else td.append(content);
    if (title) td.title = title;
    if (className) td.className = className;
    tr.append(td);
  }
  tr.title = [
    entry.sha256 ? `SHA-256 of what was written: ${entry.sha256}` : null,
    entry.xxh128 ? `XXH128 of what was sent (xxh128sum): ${entry.xxh128}` : null,
    entry.error,
  ].filter(Boolean).join("\n");
  return tr;
}

function wrap(...nodes) {
  const span = document.createElement("span");
  span.className = "result";
  span.append(...nodes.filter((node) => node.textContent));
  return span;
}
