// Why a disk may not be written: the server's own refusals (it checks again on every request),
// said before a person ticks the disk rather than after.

import { formatBytes } from "./format.js";

// The size of a compressed image on the disk is only known once it is read: the server judges.
const COMPRESSED = /\.(xz|gz|zst|bz2|zip)$/i;

/** `image` is the chosen entry of GET /api/images, or null. */
export function diskRefusals(disk, image) {
  const reasons = [];
  if (disk.partitionOf) reasons.push(`a partition of /dev/${disk.partitionOf}: write the whole disk`);
  if (disk.system) reasons.push(`holds the running system (${(disk.mountPoints ?? []).join(", ")})`);
  else if (disk.mounted) reasons.push(`mounted at ${(disk.mountPoints ?? []).join(", ")}: unmount it first`);
  if (!disk.removable) reasons.push("not a removable disk");
  if (disk.readOnly) reasons.push("read-only (write-protect switch?)");
  if (disk.state === "flashing") reasons.push(`being written now${disk.jobId ? ` (${disk.jobId})` : ""}`);
  if (image && !COMPRESSED.test(image.name) && Number.isFinite(disk.sizeBytes) && image.size > disk.sizeBytes) {
    reasons.push(`smaller (${formatBytes(disk.sizeBytes)}) than ${image.name} (${formatBytes(image.size)})`);
  }
  return reasons;
}
