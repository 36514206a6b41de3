// The question asked before disks are erased: each disk named exactly, and what will be lost.
// Cancel is the default (focused, and what Enter and Escape do).

import { formatBytes, formatExactBytes } from "./format.js";

/** Resolves true when the person confirmed writing `image` over every one of `disks`. */
export function confirmDisks(disks, image) {
  const dialog = document.getElementById("disk-dialog");
  const many = disks.length > 1;
  document.getElementById("disk-dialog-title").textContent = `Write ${image.name} to ${many ? `${disks.length} disks` : disks[0].deviceId}?`;
  document.getElementById("disk-dialog-warning").textContent = many
    ? `Everything on these ${disks.length} disks will be lost: their files and partitions are overwritten.`
    : "Everything on this disk will be lost: its files and partitions are overwritten.";
  document.getElementById("disk-dialog-list").replaceChildren(...disks.map(describe));
  document.getElementById("disk-dialog-image").textContent = `Image: ${image.name} (${formatBytes(image.size)})`;
  document.getElementById("disk-confirm-button").textContent = `Erase and write ${many ? `${disks.length} disks` : "1 disk"}`;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true });
    dialog.showModal();
  });
}

function describe(disk) {
  const item = document.createElement("li");
  item.dataset.deviceId = disk.deviceId;
  const path = document.createElement("strong");
  path.textContent = disk.deviceId;
  const facts = [
    disk.model || disk.product || "no model",
    `${formatBytes(disk.sizeBytes)} (${formatExactBytes(disk.sizeBytes)})`,
    disk.serial ? `serial ${disk.serial}` : "no serial",
    disk.portPath ? `port ${disk.portPath}` : null,
  ].filter(Boolean);
  item.append(path, `: ${facts.join(", ")}`);
  return item;
}
