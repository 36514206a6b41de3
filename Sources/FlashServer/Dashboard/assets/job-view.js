// The job a device tile shows: what, how far, how fast, how it ended, and the controls that fit
// its state. One view per tile; it is handed the tile's next job when that one starts.

import { formatBytes, formatDuration, formatPercent, formatSpeed } from "./format.js";
import { SpeedChart } from "./speed-chart.js";

export const BADGES = {
  queued: "Queued",
  running: "Running",
  paused: "Paused",
  completed: "Completed",
  failed: "Failed",
  cancelled: "Cancelled",
  interrupted: "Interrupted",
};

export class JobView {
  /** onAction(job, action) sends pause/resume/cancel; it returns false when it could not. */
  constructor(onAction) {
    this.onAction = onAction;
    this.job = null;
    this.pending = null;

    this.ids = element("p", "job-ids");
    this.ids.dataset.role = "job";
    this.stage = element("p", "job-stage");
    this.stage.dataset.role = "stage";

    this.bar = element("div", "bar");
    this.bar.setAttribute("role", "progressbar");
    this.bar.setAttribute("aria-valuemin", "0");
    this.bar.setAttribute("aria-valuemax", "100");
    this.fill = element("div", "bar-fill");
    this.bar.append(this.fill);

    const stats = element("dl", "stats");
    this.percent = stat(stats, "Progress", "progress");
    this.bytes = stat(stats, "Written", "bytes");
    this.speed = stat(stats, "Speed", "speed");
    this.eta = stat(stats, "ETA", "eta");
    this.elapsed = stat(stats, "Elapsed", "elapsed");

    this.chart = new SpeedChart();
    this.outcome = element("p", "job-outcome");
    this.outcome.dataset.role = "outcome";
    this.outcome.hidden = true;
    this.error = element("p", "job-error");
    this.error.dataset.role = "error";
    this.error.hidden = true;

    const actions = element("div", "actions");
    this.buttons = {};
    for (const action of ["pause", "resume", "cancel"]) {
      const button = element("button", `action-${action}`);
      button.type = "button";
      button.textContent = capitalise(action);
      button.dataset.action = action;
      button.addEventListener("click", () => this.act(action));
      this.buttons[action] = button;
      actions.append(button);
    }

    this.parts = [this.ids, this.stage, this.bar, stats, this.chart.element, this.outcome, this.error, actions];
  }

  act(action) {
    const job = this.job;
    if (this.pending) return;
    if (this.onAction(job, action)) {
      this.pending = { action, state: job.state };
      this.renderControls(job);
    }
  }

  /** `label` names the device for the progress bar. */
  show(job, serverNow, label) {
    if (this.job?.jobId !== job.jobId) {
      this.pending = null;
      this.chart.restart();
    }
    this.job = job;
    if (this.pending && this.pending.state !== job.state) this.pending = null;
    const image = job.image ? job.image.split("/").pop() : null;
    this.ids.textContent = [image && job.partition ? `${image} → ${job.partition}` : image, job.jobId].filter(Boolean).join(" · ");
    this.ids.title = job.image || "";
    // A completed job's last stage ("Verifying") would read as if it were still at it.
    this.stage.textContent = job.state === "completed" ? "" : job.stage || "";
    this.stage.hidden = !this.stage.textContent;

    const percent = Math.max(0, Math.min(100, job.progress || 0));
    this.fill.style.width = `${percent}%`;
    this.bar.setAttribute("aria-valuenow", String(Math.round(percent * 10) / 10));
    this.bar.setAttribute("aria-label", `Progress of ${label}`);
    this.percent.textContent = formatPercent(percent);
    this.bytes.textContent = `${formatBytes(job.bytesTransferred)} / ${formatBytes(job.totalBytes)}`;
    const running = job.state === "running";
    this.speed.textContent = running ? formatSpeed(job.transferSpeed) : job.averageSpeed ? `${formatSpeed(job.averageSpeed)} avg` : "–";
    this.eta.textContent = running && job.eta > 0 ? formatDuration(job.eta) : job.state === "completed" ? "done" : "–";
    this.tick(serverNow);

    const outcome = describeOutcome(job);
    this.outcome.hidden = !outcome;
    this.outcome.textContent = outcome ?? "";
    this.outcome.dataset.verified = String(job.verified === true);
    this.error.hidden = !job.error;
    this.error.textContent = job.error || "";
    this.chart.update(job.samples);
    this.renderControls(job);
  }

  /** Elapsed time moves on every second while the job runs. */
  tick(serverNow) {
    const job = this.job;
    if (!job) return;
    let ms;
    if (Number.isFinite(job.durationMs) && job.durationMs !== null && job.endedAt) ms = job.durationMs;
    else if (job.endedAt) ms = job.endedAt - job.startedAt;
    else if (job.state === "queued") ms = NaN;
    else ms = serverNow - job.startedAt;
    this.elapsed.textContent = formatDuration(ms / 1000);
  }

  renderControls(job) {
    const show = {
      pause: job.state === "running",
      resume: job.state === "paused",
      cancel: job.state === "running" || job.state === "paused" || job.state === "queued",
    };
    const focused = Object.values(this.buttons).find((button) => button === document.activeElement);
    for (const [action, button] of Object.entries(this.buttons)) {
      button.hidden = !show[action];
      // aria-disabled rather than disabled: a disabled button would drop the keyboard focus.
      const waiting = this.pending !== null;
      button.setAttribute("aria-disabled", String(waiting));
      button.textContent = waiting && this.pending.action === action ? `${capitalise(action)}…` : capitalise(action);
    }
    // Pause becomes Resume and back: keep the keyboard focus on the control that took its place.
    if (focused && focused.hidden) {
      const next = Object.values(this.buttons).find((button) => !button.hidden);
      next?.focus();
    }
  }
}

/** What a person may do with a disk once its job completed (written, flushed, maybe read back). */
function describeOutcome(job) {
  if (job.state !== "completed" || job.target !== "disk") return null;
  if (job.verified === true) return "Verified - safe to remove";
  if (job.verified === false) return "Written, not verified - safe to remove";
  return "Written - safe to remove";
}

function element(tag, className) {
  const node = document.createElement(tag);
  node.className = className;
  return node;
}

function stat(list, label, role) {
  const wrapper = element("div", "stat");
  const term = element("dt", "");
  term.textContent = label;
  const value = element("dd", "");
  value.dataset.role = role;
  wrapper.append(term, value);
  list.append(wrapper);
  return value;
}

function capitalise(word) {
  return word[0].toUpperCase() + word.slice(1);
}
