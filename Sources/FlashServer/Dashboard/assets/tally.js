// How many jobs this page saw end well and how many it saw fail, each job counted once.
// A cancelled job is neither: a person chose to stop it.

const FAILED_STATES = new Set(["failed", "interrupted"]);

export class JobTally {
  constructor() {
    this.counted = new Set();
    this.done = 0;
    this.failed = 0;
  }

  /** Counts the job if it has just ended; true when the figures changed. */
  count(job) {
    if (this.counted.has(job.jobId)) return false;
    if (job.state === "completed") this.done += 1;
    else if (FAILED_STATES.has(job.state)) this.failed += 1;
    else return false;
    this.counted.add(job.jobId);
    return true;
  }
}
