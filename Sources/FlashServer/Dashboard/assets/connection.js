// The /flash-progress WebSocket: connects, pings, and reconnects with backoff when it drops.
//
// Before each attempt `prepare()` runs (the app uses it to reach the HTTP API, which also
// obtains the token and catches up on what happened while disconnected). A failed attempt waits
// 0.5 s, 1 s, 2 s, ... up to 10 s, with jitter so a bench of browsers does not reconnect in step.

const PING_EVERY_MS = 30_000;
const SILENCE_LIMIT_MS = 45_000;
const FIRST_DELAY_MS = 500;
const MAX_DELAY_MS = 10_000;

export class ProgressConnection {
  constructor({ url, prepare, onMessage, onStatus }) {
    this.url = url;
    this.prepare = prepare;
    this.onMessage = onMessage;
    this.onStatus = onStatus;
    this.socket = null;
    this.failures = 0;
    this.retryTimer = null;
    this.pingTimer = null;
    this.lastHeard = 0;
  }

  start() {
    window.addEventListener("online", () => this.retryNow());
    this.connect();
  }

  /** Sends a command; false when not connected. */
  send(message) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return false;
    this.socket.send(JSON.stringify(message));
    return true;
  }

  retryNow() {
    if (this.retryTimer === null) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.connect();
  }

  async connect() {
    this.onStatus({ state: "connecting", attempt: this.failures + 1 });
    try {
      await this.prepare();
    } catch (error) {
      this.scheduleRetry(error);
      return;
    }
    let socket;
    try {
      socket = new WebSocket(this.url());
    } catch (error) {
      this.scheduleRetry(error);
      return;
    }
    this.socket = socket;
    let opened = false;
    socket.addEventListener("open", () => {
      opened = true;
      this.failures = 0;
      this.lastHeard = Date.now();
      this.onStatus({ state: "connected" });
      this.pingTimer = setInterval(() => this.keepAlive(), PING_EVERY_MS);
    });
    socket.addEventListener("message", (event) => {
      this.lastHeard = Date.now();
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message && typeof message === "object") this.onMessage(message);
    });
    socket.addEventListener("close", (event) => {
      clearInterval(this.pingTimer);
      this.pingTimer = null;
      if (this.socket === socket) this.socket = null;
      const why = opened ? `connection closed (${event.code}${event.reason ? ": " + event.reason : ""})` : "could not connect";
      this.scheduleRetry(new Error(why));
    });
  }

  keepAlive() {
    if (Date.now() - this.lastHeard > SILENCE_LIMIT_MS) {
      // Nothing heard, not even a pong: the link is dead even if the socket does not know yet.
      this.socket?.close(4000, "no answer to ping");
      return;
    }
    this.send({ type: "ping", timestamp: Date.now() });
  }

  scheduleRetry(error) {
    this.failures += 1;
    const base = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** (this.failures - 1));
    const delay = Math.round(base * (0.8 + Math.random() * 0.4));
    this.onStatus({ state: "disconnected", retryInMs: delay, attempt: this.failures, error: error?.message ?? String(error) });
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.connect();
    }, delay);
  }
}
