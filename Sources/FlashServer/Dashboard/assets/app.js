// The dashboard: wires the WebSocket, the API and the panels together.

import { Api } from "./api.js";
import { ProgressConnection } from "./connection.js";
import { DeviceTile } from "./device-tile.js";
import { DevicesPanel } from "./devices-panel.js";
import { DisksPanel } from "./disks-panel.js";
import { Farm, tileKey } from "./farm.js";
import { formatDuration, formatSpeed } from "./format.js";
import { HistoryTable } from "./history-table.js";
import { ACTIVE_STATES, JobStore } from "./jobs.js";
import { StationGroups } from "./station-groups.js";
import { JobTally } from "./tally.js";

const DEVICES_REFRESH_MS = 5_000;
// A station is declared lost after 10 s of silence: asking every 2 s shows it within 12 s.
const STATIONS_REFRESH_MS = 2_000;
const NOTICE_MS = 8_000;
const TERMINAL = new Set(["flash_completed", "flash_failed"]);

const store = new JobStore();
const tally = new JobTally();
const tiles = new Map(); // tileKey(station, deviceId) -> DeviceTile, in the order they appeared: they never move
// tileKey(station, deviceId) -> the device as GET /api/devices (in a farm, GET /api/stations) last listed it
const listedDevices = new Map();
const jobsElement = document.getElementById("jobs");
const groups = new StationGroups(jobsElement);
const farmStatusElement = document.getElementById("farm-status");
const connectionElement = document.getElementById("connection");
let clockOffset = 0; // server clock minus ours, from the pong to our first ping
let deviceCount = null;
let historyTimer = null;

const api = new Api(askToken);
const farm = new Farm(api);
const history = new HistoryTable();
const devices = new DevicesPanel(async (request, isUpdate) => {
  const answer = await (isUpdate ? startUpdate(request) : api.post("/api/flash/start", request));
  const station = farm.stationOfNewJob(answer, request);
  // A job whose station the page cannot tell yet shows with its first message instead.
  if (answer.status === "queued" && station !== undefined) {
    const job = store.addQueued(answer.jobId, { ...request, station }, serverNow());
    if (job) render(job);
  }
  refreshDevices();
  return answer;
});
const disks = new DisksPanel(async (request) => {
  const answer = await api.post("/api/flash/start", request);
  // One disk is answered like a fastboot job: {jobId, status}.
  const jobs = answer.jobs ?? [{ jobId: answer.jobId, deviceId: request.deviceIds[0], status: answer.status }];
  const station = farm.stationOfNewJob(answer, request);
  for (const entry of jobs) {
    if (entry.status !== "queued" || station === undefined) continue;
    const queued = { deviceId: entry.deviceId, image: request.image, target: "disk", batchId: answer.batchId, station };
    const job = store.addQueued(entry.jobId, queued, serverNow());
    if (job) render(job);
  }
  refreshDevices();
  return { batchId: answer.batchId ?? null, jobs };
});

const connection = new ProgressConnection({
  // flash_queued is not a protocol message: the server sends it to pages that ask.
  url: () => api.webSocketURL("/flash-progress", ["flash_queued"]),
  prepare: catchUp,
  onMessage: receive,
  onStatus: showConnection,
});

document.getElementById("clear-finished").addEventListener("click", () => {
  for (const job of store.all()) {
    if (!ACTIVE_STATES.has(job.state)) store.remove(job.jobId);
  }
  for (const [key, tile] of tiles) {
    if (!tile.isIdle()) continue;
    // A farm's tiles stand for its stations' devices: a listed device's tile stays, idle.
    if (farm.isFarm && listedDevices.has(key)) {
      tile.clearJob();
      continue;
    }
    tile.element.remove();
    tiles.delete(key);
  }
  updateSummary();
});

setInterval(() => {
  const now = serverNow();
  for (const tile of tiles.values()) tile.tick(now);
}, 1_000);
setInterval(() => {
  if (connectionElement.dataset.state === "connected") refreshDevices();
}, DEVICES_REFRESH_MS);
setInterval(() => {
  if (connectionElement.dataset.state === "connected" && farm.state !== "none") refreshStations();
}, STATIONS_REFRESH_MS);

connection.start();

function serverNow() {
  return Date.now() + clockOffset;
}

function receive(message) {
  switch (message.type) {
    case "pong":
      if (Number.isFinite(message.timestamp)) clockOffset = message.timestamp - Date.now();
      return;
    case "error":
      notice(message.jobId ? `${message.error} (${message.jobId})` : message.error);
      return;
  }
  const job = store.apply(message);
  if (!job) return;
  render(job);
  if (message.type === "flash_started" || TERMINAL.has(message.type)) {
    refreshDevices();
    if (TERMINAL.has(message.type)) refreshHistorySoon();
  }
}

function render(job) {
  tileFor(job.station, job.deviceId).showJob(job, serverNow());
  tally.count(job);
  updateSummary();
}

function tileFor(station, deviceId) {
  const key = tileKey(station, deviceId);
  let tile = tiles.get(key);
  if (!tile) {
    tile = new DeviceTile(deviceId, sendCommand, station);
    tile.showDevice(listedDevices.get(key));
    tiles.set(key, tile);
    // New tiles go last (in their station's group), so the ones already on the page stay where they are.
    groups.place(station).append(tile.element);
  }
  return tile;
}

/** POST /api/flash/update runs the update at this station: it takes no station. */
async function startUpdate({ station, ...body }) {
  if (!farm.runsHere({ station })) {
    throw new Error(`Start a factory update of a device at station ${station} from that station's dashboard.`);
  }
  return api.post("/api/flash/update", body);
}

function sendCommand(job, action) {
  if (connection.send({ type: action, jobId: job.jobId })) return true;
  notice(`Not connected: could not ${action} ${job.jobId}. Try again once the page says Connected.`);
  return false;
}

/** Before each (re)connect: reach the API, and catch up on what happened while away. */
async function catchUp() {
  const [jobs] = await Promise.all([api.get("/api/jobs"), refreshDevices(), refreshStations(), refreshImages(), refreshHistory()]);
  const known = new Map(jobs.jobs.map((record) => [record.jobId, record]));
  for (const job of store.active()) {
    const record = known.get(job.jobId);
    const ended = record ? store.applyRecord(record) : store.applyRecord(historyRecord(job.jobId) ?? {});
    // Another station's job is not in this station's GET /api/jobs: missing from it is not lost.
    const changed = ended ?? (!record && farm.runsHere(job) ? store.markLost(job.jobId) : null);
    if (changed) render(changed);
  }
  for (const record of jobs.jobs) {
    if (record.state === "queued" && !store.get(record.jobId)) {
      const job = store.addQueued(record.jobId, record, record.createdAt);
      if (job) render(job);
    }
  }
}

let lastHistory = [];

function historyRecord(jobId) {
  const entry = lastHistory.find((candidate) => candidate.jobId === jobId);
  return entry ? { ...entry, jobId } : null;
}

async function refreshHistory() {
  try {
    const answer = await api.get("/api/history?limit=50");
    lastHistory = answer.jobs;
    history.show(answer.jobs);
  } catch (error) {
    if (error.status) notice(`History: ${error.message}`);
    else throw error;
  }
}

function refreshHistorySoon() {
  clearTimeout(historyTimer);
  historyTimer = setTimeout(() => refreshHistory().catch(() => {}), 300);
}

async function refreshDevices() {
  try {
    const answer = await api.get("/api/devices");
    disks.showDisks(answer.devices.filter((device) => device.kind === "disk"));
    // In a farm the stations' listing says what every station has, this one included.
    if (farm.isListed) return;
    const fastboot = answer.devices.filter((device) => device.kind !== "disk");
    deviceCount = fastboot.length;
    devices.showDevices(fastboot);
    showListedDevices(answer.devices.map((device) => [tileKey(null, device.deviceId), device]));
  } catch (error) {
    if (error.status) notice(`Devices: ${error.message}`);
  }
}

async function refreshStations() {
  try {
    await farm.refresh();
  } catch (error) {
    if (error.status) notice(`Stations: ${error.message}`);
    return;
  }
  farmStatusElement.hidden = farm.state !== "unreachable";
  if (farm.state !== "reachable") return;
  for (const station of farm.stations) groups.showStation(station);
  const fastboot = farm.fastbootDevices();
  // Every fastboot device has its tile in its station's group, before any job.
  for (const device of fastboot) tileFor(device.station, device.deviceId);
  deviceCount = fastboot.filter((device) => device.state !== "offline").length;
  devices.showDevices(fastboot);
  showListedDevices(farm.stations.flatMap((station) => station.devices.map((device) => [tileKey(station.station, device.deviceId), device])));
}

function showListedDevices(entries) {
  listedDevices.clear();
  for (const [key, device] of entries) listedDevices.set(key, device);
  for (const [key, tile] of tiles) tile.showDevice(listedDevices.get(key));
  updateSummary();
}

async function refreshImages() {
  try {
    const listing = await api.get("/api/images");
    devices.showImages(listing);
    disks.showImages(listing);
  } catch (error) {
    if (error.status) notice(`Images: ${error.message}`);
  }
}

function updateSummary() {
  const active = store.active();
  const running = active.filter((job) => job.state === "running");
  const paused = active.filter((job) => job.state === "paused").length;
  const queued = active.filter((job) => job.state === "queued").length;
  document.getElementById("summary-devices").textContent = deviceCount === null ? "–" : String(deviceCount);
  const runningElement = document.getElementById("summary-running");
  runningElement.textContent = String(running.length);
  const extra = [paused ? `${paused} paused` : null, queued ? `${queued} queued` : null].filter(Boolean).join(", ");
  runningElement.nextElementSibling.textContent = extra ? `jobs running (${extra})` : "jobs running";
  const throughput = running.reduce((sum, job) => sum + (job.transferSpeed || 0), 0);
  document.getElementById("summary-throughput").textContent = formatSpeed(throughput);
  document.getElementById("summary-done").textContent = String(tally.done);
  document.getElementById("summary-failed").textContent = String(tally.failed);
  document.getElementById("jobs-empty").hidden = tiles.size > 0;
}

function showConnection(status) {
  connectionElement.dataset.state = status.state;
  if (status.state === "connected") {
    connectionElement.textContent = "Connected";
    connection.send({ type: "ping", timestamp: Date.now() });
  } else if (status.state === "connecting") {
    connectionElement.textContent = status.attempt > 1 ? `Reconnecting (attempt ${status.attempt})…` : "Connecting…";
  } else {
    connectionElement.textContent = `Disconnected: ${status.error}. Retrying in ${formatDuration(Math.ceil(status.retryInMs / 1000))}`;
  }
}

function askToken(reason) {
  const dialog = document.getElementById("token-dialog");
  const input = document.getElementById("token-input");
  if (reason) document.getElementById("token-reason").textContent = reason;
  connectionElement.dataset.state = "token";
  connectionElement.textContent = "Access token needed";
  input.value = "";
  return new Promise((resolve) => {
    const form = document.getElementById("token-form");
    form.addEventListener(
      "submit",
      () => {
        resolve(input.value.trim());
      },
      { once: true },
    );
    dialog.addEventListener("cancel", (event) => event.preventDefault(), { once: true });
    dialog.showModal();
    input.focus();
  });
}

function notice(text) {
  const container = document.getElementById("notices");
  const item = document.createElement("p");
  item.className = "notice";
  item.textContent = text;
  const close = document.createElement("button");
  close.type = "button";
  close.className = "quiet";
  close.textContent = "Dismiss";
  close.addEventListener("click", () => item.remove());
  item.append(" ", close);
  container.append(item);
  setTimeout(() => item.remove(), NOTICE_MS);
}
