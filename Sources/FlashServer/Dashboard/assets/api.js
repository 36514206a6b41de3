// The HTTP API of flashctl serve, with the access token when the server requires one.
//
// The token is asked for once (the first 401), kept in localStorage, and sent as a Bearer header;
// WebSocket URLs carry it as ?token= because browsers cannot set headers on a WebSocket.

const TOKEN_KEY = "flashctl.token";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export class Api {
  /** askToken(reason) resolves with the token the person typed. */
  constructor(askToken) {
    this.askToken = askToken;
    this.token = readStoredToken();
    this.asking = null;
  }

  get(path) {
    return this.request("GET", path);
  }

  post(path, body) {
    return this.request("POST", path, body);
  }

  async request(method, path, body) {
    for (;;) {
      const headers = { Accept: "application/json" };
      if (this.token) headers.Authorization = `Bearer ${this.token}`;
      if (body !== undefined) headers["Content-Type"] = "application/json";
      const response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
      });
      if (response.status === 401) {
        await this.obtainToken(this.token ? "The server refused the token. Enter the current one." : null);
        continue;
      }
      const text = await response.text();
      let data = null;
      try {
        data = text ? JSON.parse(text) : null;
      } catch {
        data = null;
      }
      if (!response.ok) {
        throw new ApiError(response.status, data && data.error ? data.error : `HTTP ${response.status} from ${path}`);
      }
      return data;
    }
  }

  /** One question at a time, however many requests were refused. */
  obtainToken(reason) {
    if (!this.asking) {
      this.asking = this.askToken(reason).then((token) => {
        this.token = token;
        try {
          localStorage.setItem(TOKEN_KEY, token);
        } catch {
          // Storage may be disabled; the token then lasts as long as the page.
        }
        this.asking = null;
      });
    }
    return this.asking;
  }

  /** `include` names extra message types to ask for, added to any the path already asks for. */
  webSocketURL(path, include = []) {
    const url = new URL(path, window.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    if (this.token) url.searchParams.set("token", this.token);
    const asked = url.searchParams.getAll("include").flatMap((value) => value.split(",")).filter(Boolean);
    const types = [...new Set([...asked, ...include])];
    // The server reads one include parameter, as a comma-separated list.
    url.searchParams.delete("include");
    if (types.length > 0) url.searchParams.set("include", types.join(","));
    return url.href;
  }
}

function readStoredToken() {
  try {
    return localStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}
