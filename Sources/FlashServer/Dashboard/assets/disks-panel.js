// The disks panel: every disk the server sees, whether it may be written and why not, and the
// form that writes one image to the ticked disks once the person confirmed.
//
// Rows are kept and updated in place on each refresh, so a tick or the keyboard focus survives.

import { confirmDisks } from "./disk-confirm.js";
import { diskRefusals } from "./disk-refusals.js";
import { formatBytes } from "./format.js";

let rowsMade = 0;

export class DisksPanel {
  /** start(request) posts the job(s) and resolves with {batchId, jobs: [{jobId, deviceId, status}]}, or throws ApiError. */
  constructor(start) {
    this.start = start;
    this.list = document.getElementById("disks");
    this.empty = document.getElementById("disks-empty");
    this.form = document.getElementById("disk-form");
    this.image = document.getElementById("disk-image");
    this.verify = document.getElementById("disk-verify");
    this.button = document.getElementById("disk-flash-button");
    this.result = document.getElementById("disk-result");
    this.rows = new Map(); // deviceId -> row
    this.images = [];
    this.busy = false;
    this.image.addEventListener("change", () => this.renderRows());
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    this.renderButton();
  }

  showDisks(disks) {
    const listed = new Set(disks.map((disk) => disk.deviceId));
    for (const [deviceId, row] of this.rows) {
      if (listed.has(deviceId)) continue;
      row.item.remove();
      this.rows.delete(deviceId);
    }
    disks.forEach((disk, index) => {
      let row = this.rows.get(disk.deviceId);
      if (!row) {
        row = makeRow();
        row.checkbox.value = disk.deviceId;
        row.checkbox.addEventListener("change", () => this.renderButton());
        this.rows.set(disk.deviceId, row);
      }
      row.disk = disk;
      // Moving a node drops its focus: only move rows that are out of place.
      if (this.list.children[index] !== row.item) this.list.insertBefore(row.item, this.list.children[index] ?? null);
    });
    this.empty.hidden = disks.length > 0;
    this.renderRows();
  }

  showImages(listing) {
    this.images = listing.images;
    const previous = this.image.value;
    if (listing.images.length === 0) {
      const option = new Option(`no images in ${listing.directory}`, "");
      option.disabled = true;
      this.image.replaceChildren(option);
    } else {
      this.image.replaceChildren(...listing.images.map((image) => new Option(`${image.name} (${formatBytes(image.size)})`, image.name)));
      if (listing.images.some((image) => image.name === previous)) this.image.value = previous;
    }
    this.renderRows();
  }

  selectedImage() {
    return this.images.find((image) => image.name === this.image.value) ?? null;
  }

  renderRows() {
    const image = this.selectedImage();
    for (const row of this.rows.values()) renderRow(row, diskRefusals(row.disk, image));
    this.renderButton();
  }

  ticked() {
    return [...this.rows.values()].filter((row) => row.checkbox.checked && !row.checkbox.disabled).map((row) => row.disk);
  }

  renderButton() {
    const count = this.ticked().length;
    this.button.textContent = count === 0 ? "Flash" : `Flash ${count} ${count === 1 ? "disk" : "disks"}`;
    this.button.setAttribute("aria-disabled", String(this.busy || count === 0));
  }

  async submit() {
    if (this.busy) return;
    const image = this.selectedImage();
    // What the dialog shows is what is confirmed: the disks as listed now, with their tokens.
    const disks = this.ticked();
    if (!image) return this.say("Choose an image first.", true);
    if (disks.length === 0) return this.say("Tick the disks to write.", true);
    if (!(await confirmDisks(disks, image))) return this.say("Nothing was written.", false);

    const request = {
      deviceIds: disks.map((disk) => disk.deviceId),
      image: image.name,
      confirm: Object.fromEntries(disks.map((disk) => [disk.deviceId, disk.confirm])),
    };
    if (!this.verify.checked) request.verify = false;
    this.busy = true;
    this.renderButton();
    try {
      const answer = await this.start(request);
      const started = answer.jobs.map((job) => `${job.status === "queued" ? "Queued" : "Started"} ${job.jobId} on ${job.deviceId}`);
      this.say(`${started.join("; ")}.`, false);
      for (const disk of disks) this.rows.get(disk.deviceId).checkbox.checked = false;
    } catch (error) {
      this.say(error.message, true);
    } finally {
      this.busy = false;
      this.renderButton();
    }
  }

  say(text, isError) {
    this.result.textContent = text;
    this.result.classList.toggle("error", isError);
  }
}

function makeRow() {
  rowsMade += 1;
  const id = `disk-${rowsMade}`;
  const item = element("li", "disk");
  const checkbox = element("input", "disk-pick");
  checkbox.type = "checkbox";
  checkbox.id = `${id}-pick`;
  checkbox.setAttribute("aria-describedby", `${id}-facts ${id}-reason`);
  const label = element("label", "disk-label");
  label.htmlFor = checkbox.id;
  const name = element("strong", "disk-name");
  const path = element("span", "disk-path");
  label.append(name, " ", path);
  const size = element("span", "disk-size");
  const facts = element("p", "disk-facts");
  facts.id = `${id}-facts`;
  const reason = element("p", "disk-reason");
  reason.id = `${id}-reason`;
  reason.dataset.role = "reason";
  item.append(checkbox, label, size, facts, reason);
  return { item, checkbox, name, path, size, facts, reason, disk: null };
}

function renderRow(row, refusals) {
  const disk = row.disk;
  row.item.dataset.deviceId = disk.deviceId;
  row.item.dataset.writable = String(refusals.length === 0);
  row.name.textContent = disk.model || disk.product || `${disk.transport ?? "unknown"} disk`;
  row.path.textContent = disk.deviceId;
  row.size.textContent = formatBytes(disk.sizeBytes);
  const mountPoints = disk.mountPoints ?? [];
  row.facts.textContent = [
    disk.serial ? `serial ${disk.serial}` : "no serial",
    disk.portPath ? `port ${disk.portPath}` : "no port path",
    disk.transport,
    disk.removable ? "removable" : "not removable",
    disk.mounted ? `mounted at ${mountPoints.join(", ")}` : "not mounted",
    disk.system ? "system disk" : "not a system disk",
    disk.readOnly ? "read-only" : null,
  ]
    .filter(Boolean)
    .join(" · ");
  row.reason.hidden = refusals.length === 0;
  row.reason.textContent = refusals.length ? `Cannot be written: ${refusals.join("; ")}.` : "";
  row.checkbox.disabled = refusals.length > 0;
  if (row.checkbox.disabled) row.checkbox.checked = false;
}

function element(tag, className) {
  const node = document.createElement(tag);
  node.className = className;
  return node;
}
