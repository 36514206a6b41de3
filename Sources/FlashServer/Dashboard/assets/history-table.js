// The history table: the server's record of finished jobs, newest first.

import { formatBytes, formatDuration, formatSpeed, formatTime } from "./format.js";

export class HistoryTable {
  constructor() {
    this.body = document.querySelector("#history tbody");
    this.empty = document.getElementById("history-empty");
  }

  show(entries) {
    const finished = entries.filter((entry) => !["queued", "running", "paused"].includes(entry.result));
    this.body.replaceChildren(...finished.map(row));
    this.empty.hidden = finished.length > 0;
  }
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
  const imageName = entry.image ? entry.image.split("/").pop() : "";
  const image = [imageName, entry.partition ? `→ ${entry.partition}` : null].filter(Boolean).join(" ");
  const cells = [
    formatTime(entry.endedAt ?? entry.createdAt),
    entry.deviceId,
    `${image} · ${formatBytes(entry.totalBytes)}`,
    result,
    Number.isFinite(entry.durationMs) ? formatDuration(entry.durationMs / 1000) : "–",
    entry.averageSpeed > 0 ? formatSpeed(entry.averageSpeed) : "–",
  ];
  for (const content of cells) {
    const td = document.createElement("td");
    if (typeof content === "string") td.textContent = content;
    else td.append(content);
    tr.append(td);
  }
  tr.title = [entry.deviceName, entry.image, entry.sha256 ? `SHA-256 of what was sent: ${entry.sha256}` : null, entry.error]
    .filter(Boolean)
    .join("\n");
  return tr;
}
