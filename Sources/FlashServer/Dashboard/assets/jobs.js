// The jobs the page knows, built from docs/PROTOCOL.md's messages (and the API when catching up).
//
// As the protocol asks, a job is only tracked from its flash_started on (or its flash_queued, which
// the page asks for); progress for an unknown job is ignored. Each job keeps a short series of
// speed samples for its chart.

const MAX_SAMPLES = 240;

const QUEUED_STAGE = "Waiting for the device";

/** flash_failed's reason: a person's cancel, or a server that stopped or a station lost (not a failed flash). */
const STATE_OF_REASON = { cancelled: "cancelled", server_stopped: "interrupted", station_lost: "interrupted" };

export const ACTIVE_STATES = new Set(["queued", "running", "paused"]);

export class JobStore {
  constructor() {
    this.jobs = new Map();
  }

  get(jobId) {
    return this.jobs.get(jobId);
  }

  all() {
    return [...this.jobs.values()];
  }

  active() {
    return this.all().filter((job) => ACTIVE_STATES.has(job.state));
  }

  /** Applies one WebSocket message; returns the job it changed, or null. */
  apply(message) {
    const { type, jobId, deviceId } = message;
    if (typeof jobId !== "string" || typeof deviceId !== "string") return null;
    if (type === "flash_queued") {
      if (this.jobs.has(jobId)) return null;
      const job = this.create(jobId, deviceId, message.timestamp);
      Object.assign(job, describe(message), { state: "queued", stage: QUEUED_STAGE });
      return job;
    }
    if (type === "flash_started") {
      const job = this.jobs.get(jobId) ?? this.create(jobId, deviceId, message.timestamp);
      Object.assign(job, describe(message));
      job.startedAt = message.timestamp;
      job.stage = message.stage ?? job.stage;
      job.totalBytes = message.totalBytes ?? job.totalBytes;
      // A replay after a reconnect repeats flash_started, then flash_paused if the job is paused.
      job.state = "running";
      job.error = null;
      return job;
    }
    const job = this.jobs.get(jobId);
    if (!job) return null;
    Object.assign(job, describe(message));
    switch (type) {
      case "flash_progress":
        if (!ACTIVE_STATES.has(job.state)) return null;
        if (job.state === "queued") job.state = "running";
        job.progress = Math.max(job.progress, message.progress ?? 0);
        job.stage = message.stage ?? job.stage;
        job.bytesTransferred = message.bytesTransferred ?? job.bytesTransferred;
        job.totalBytes = message.totalBytes ?? job.totalBytes;
        job.transferSpeed = message.transferSpeed ?? 0;
        job.eta = message.estimatedTimeRemaining ?? 0;
        addSample(job, message.timestamp, job.state === "paused" ? 0 : job.transferSpeed);
        return job;
      case "flash_paused":
        job.state = "paused";
        job.transferSpeed = 0;
        addSample(job, message.timestamp, 0);
        return job;
      case "flash_resumed":
        job.state = "running";
        return job;
      case "flash_completed":
        job.state = "completed";
        job.progress = 100;
        job.totalBytes = message.totalBytes ?? job.totalBytes;
        job.bytesTransferred = job.totalBytes;
        job.transferSpeed = 0;
        job.eta = 0;
        job.endedAt = message.timestamp;
        job.averageSpeed = message.averageSpeed ?? null;
        if (Number.isFinite(message.durationMs)) job.durationMs = message.durationMs;
        if (typeof message.verified === "boolean") job.verified = message.verified;
        if (typeof message.sha256 === "string") job.sha256 = message.sha256;
        if (typeof message.xxh128 === "string") job.xxh128 = message.xxh128;
        return job;
      case "flash_failed":
        job.state = STATE_OF_REASON[message.reason] ?? "failed";
        job.error = message.error ?? "failed";
        job.transferSpeed = 0;
        job.endedAt = message.timestamp;
        return job;
      default:
        return null;
    }
  }

  /** A job the page started that waits for its device: shown before any flash_started. */
  addQueued(jobId, request, now) {
    if (this.jobs.has(jobId)) return null;
    const job = this.create(jobId, request.deviceId, now);
    Object.assign(job, describe(request), { state: "queued", stage: QUEUED_STAGE });
    return job;
  }

  /** Catches up from the API's record of a job (GET /api/jobs, or a history entry). */
  applyRecord(record) {
    const job = this.jobs.get(record.jobId);
    if (!job) return null;
    const state = record.state ?? record.result;
    if (!state || state === job.state) return null;
    job.state = state;
    job.error = record.error ?? job.error;
    if (Number.isFinite(record.bytesTransferred)) job.bytesTransferred = record.bytesTransferred;
    if (Number.isFinite(record.progress)) job.progress = Math.max(job.progress, record.progress);
    if (Number.isFinite(record.endedAt)) job.endedAt = record.endedAt;
    if (Number.isFinite(record.durationMs)) job.durationMs = record.durationMs;
    if (Number.isFinite(record.averageSpeed)) job.averageSpeed = record.averageSpeed;
    if (typeof record.verified === "boolean") job.verified = record.verified;
    if (state === "completed") job.progress = 100;
    if (!ACTIVE_STATES.has(state)) job.transferSpeed = 0;
    return job;
  }

  /** A job the server no longer knows (it restarted) and whose end is not known either. */
  markLost(jobId) {
    const job = this.jobs.get(jobId);
    if (!job || !ACTIVE_STATES.has(job.state)) return null;
    job.state = "interrupted";
    job.error = "the server stopped while this job was running";
    job.transferSpeed = 0;
    return job;
  }

  remove(jobId) {
    this.jobs.delete(jobId);
  }

  create(jobId, deviceId, timestamp) {
    const job = {
      jobId,
      deviceId,
      station: null, // the farm's station that runs the job
      deviceName: null,
      image: null,
      partition: null,
      target: "fastboot",
      batchId: null,
      verified: null,
      sha256: null,
      xxh128: null,
      state: "running",
      stage: "",
      progress: 0,
      bytesTransferred: 0,
      totalBytes: 0,
      transferSpeed: 0,
      eta: 0,
      createdAt: timestamp,
      startedAt: timestamp,
      endedAt: null,
      durationMs: null,
      averageSpeed: null,
      error: null,
      samples: [],
    };
    this.jobs.set(jobId, job);
    return job;
  }
}

function describe(message) {
  const known = {};
  for (const key of ["deviceName", "image", "partition", "target", "batchId", "station"]) {
    if (typeof message[key] === "string") known[key] = message[key];
  }
  return known;
}

function addSample(job, timestamp, speed) {
  if (!Number.isFinite(timestamp)) return;
  job.samples.push([timestamp, Math.max(0, speed)]);
  if (job.samples.length > MAX_SAMPLES) {
    // Keep the whole life of the job by halving the resolution of its older half.
    const older = job.samples.slice(0, MAX_SAMPLES / 2).filter((_, index) => index % 2 === 0);
    job.samples = older.concat(job.samples.slice(MAX_SAMPLES / 2));
  }
}
