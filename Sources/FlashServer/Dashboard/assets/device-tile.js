// One device's tile. It keeps its place on the page and shows the device's current job (or its
// last one), titled with the device's serial and port, and below it the jobs queued for it next.
// In a farm a tile stands for a device of one station, and shows it idle before any job.

import { formatBytes } from "./format.js";
import { BADGES, JobView } from "./job-view.js";
import { ACTIVE_STATES } from "./jobs.js";

let tilesMade = 0;

/** A tile without a job says what its device is doing (a job this page has not seen, say). */
const DEVICE_BADGES = { offline: "Offline", flashing: "Flashing" };

export class DeviceTile {
  /** onAction(job, action) sends pause/resume/cancel; it returns false when it could not. */
  constructor(deviceId, onAction, station = null) {
    tilesMade += 1;
    this.deviceId = deviceId;
    this.onAction = onAction;
    this.device = null;
    this.current = null;
    this.queued = new Map(); // jobId -> { job, item }, in the order they were queued

    this.element = element("article", "tile");
    this.element.dataset.deviceId = deviceId;
    if (station) this.element.dataset.station = station;
    const titleId = `tile-${tilesMade}-title`;
    this.element.setAttribute("aria-labelledby", titleId);

    const head = element("header", "tile-head");
    // In a farm the tiles sit under their station's heading.
    const title = element(station ? "h4" : "h3", "tile-title");
    title.id = titleId;
    this.serial = element("span", "tile-serial");
    this.serial.dataset.role = "serial";
    this.port = element("span", "tile-port");
    this.port.dataset.role = "port";
    title.append(this.serial, " ", this.port);
    this.badge = element("span", "badge");
    this.badge.dataset.role = "status";
    head.append(title, this.badge);

    this.details = element("p", "tile-device");
    this.details.dataset.role = "device";
    this.view = new JobView(onAction);
    this.jobParts = element("div", "tile-job");
    this.jobParts.append(...this.view.parts);
    this.queueList = element("ul", "tile-queue");
    this.queueList.dataset.role = "queue";
    this.queueList.setAttribute("aria-label", "Queued next");
    this.queueList.hidden = true;
    this.element.append(head, this.details, this.jobParts, this.queueList);
    this.render();
  }

  /** The device as GET /api/devices (or GET /api/stations) lists it now (undefined when it is not listed). */
  showDevice(device) {
    if (device) this.device = device;
    if (this.current) this.renderDevice();
    else this.render();
  }

  /** A job of this device changed: it becomes the tile's job, joins the queue, or leaves it. */
  showJob(job, serverNow) {
    const current = this.current;
    const currentActive = current !== null && ACTIVE_STATES.has(current.state);
    if (current?.jobId === job.jobId) {
      // Still the tile's job.
    } else if (job.state === "queued") {
      if (currentActive) this.queued.set(job.jobId, this.queued.get(job.jobId) ?? { job, item: null });
      else this.current = job;
    } else if (ACTIVE_STATES.has(job.state)) {
      this.forget(job.jobId);
      if (current?.state === "queued") this.queued.set(current.jobId, { job: current, item: null });
      this.current = job;
    } else {
      // Ended. A queued job that never ran (cancelled) leaves the queue; the tile keeps its job.
      const wasQueued = this.forget(job.jobId);
      if (!current || (!currentActive && !wasQueued)) this.current = job;
    }
    this.render(serverNow);
  }

  /** Nothing running or waiting: the tile only shows how the last job ended. */
  isIdle() {
    return !this.current || (!ACTIVE_STATES.has(this.current.state) && this.queued.size === 0);
  }

  /** Forgets how the last job ended (the tile must be idle): it shows the device alone. */
  clearJob() {
    this.current = null;
    this.render();
  }

  tick(serverNow) {
    this.view.tick(serverNow);
  }

  render(serverNow) {
    const job = this.current;
    this.jobParts.hidden = !job;
    if (!job) {
      this.renderIdle();
      return;
    }
    this.element.dataset.jobId = job.jobId;
    this.element.dataset.state = job.state;
    this.badge.dataset.state = job.state;
    this.badge.textContent = BADGES[job.state] ?? job.state;
    this.renderDevice();
    this.view.show(job, serverNow, this.serial.textContent);
    this.renderQueue();
  }

  renderIdle() {
    delete this.element.dataset.jobId;
    const state = this.device?.state in DEVICE_BADGES ? this.device.state : "idle";
    this.element.dataset.state = state;
    this.badge.dataset.state = state;
    this.badge.textContent = DEVICE_BADGES[state] ?? "Idle";
    this.renderDevice();
  }

  renderDevice() {
    const device = this.device;
    this.serial.textContent = device?.serial || this.deviceId;
    this.port.textContent = portText(device);
    this.port.hidden = !this.port.textContent;
    // The title is the serial: say which path or selector that is, and what the device is.
    const path = device?.serial && device.serial !== this.deviceId ? this.deviceId : null;
    const name = device ? device.model || device.product : this.current?.deviceName;
    const size = device?.sizeBytes ? formatBytes(device.sizeBytes) : null;
    this.details.textContent = [path, name, size].filter(Boolean).join(" · ");
    this.details.hidden = !this.details.textContent;
  }

  renderQueue() {
    for (const entry of this.queued.values()) {
      if (entry.item) continue;
      entry.item = queuedItem(entry.job, this.onAction);
      this.queueList.append(entry.item);
    }
    this.queueList.hidden = this.queued.size === 0;
  }

  forget(jobId) {
    const entry = this.queued.get(jobId);
    if (!entry) return false;
    entry.item?.remove();
    this.queued.delete(jobId);
    return true;
  }
}

function queuedItem(job, onAction) {
  const item = element("li", "queued-job");
  item.dataset.jobId = job.jobId;
  const badge = element("span", "badge");
  badge.dataset.state = "queued";
  badge.textContent = BADGES.queued;
  const what = element("span", "queued-what");
  const image = job.image ? job.image.split("/").pop() : null;
  what.textContent = [image && job.partition ? `${image} → ${job.partition}` : image, job.jobId].filter(Boolean).join(" · ");
  const cancel = element("button", "quiet action-cancel");
  cancel.type = "button";
  cancel.dataset.action = "cancel";
  cancel.textContent = "Cancel";
  cancel.setAttribute("aria-label", `Cancel queued ${job.jobId}`);
  cancel.addEventListener("click", () => {
    if (cancel.getAttribute("aria-disabled") === "true") return;
    if (onAction(job, "cancel")) {
      cancel.setAttribute("aria-disabled", "true");
      cancel.textContent = "Cancel…";
    }
  });
  item.append(badge, " ", what, " ", cancel);
  return item;
}

/** Where the device is plugged in: udev's port path, or the address of a network device. */
function portText(device) {
  if (device?.portPath) return `port ${device.portPath}`;
  if (device?.kind === "fastboot-tcp") return device.address;
  return "";
}

function element(tag, className) {
  const node = document.createElement(tag);
  node.className = className;
  return node;
}
