// The farm this server may be a station of (docs/farm.md), as GET /api/stations last told it.
//
// A server that is not in a farm answers {"farm":false}: the page then knows it for good and stops asking.

/** What a tile or a listed device is known by: the same deviceId (EMU1) is at several stations. */
export function tileKey(station, deviceId) {
  return station ? `${station}/${deviceId}` : deviceId;
}

export class Farm {
  constructor(api) {
    this.api = api;
    // "unknown" until the first answer, "none" outside a farm, then "reachable" or "unreachable".
    this.state = "unknown";
    this.stations = [];
    this.self = null; // this station's name, when its address is the one the page was loaded from
  }

  get isFarm() {
    return this.state === "reachable" || this.state === "unreachable";
  }

  /** Whether the stations have been listed (a farm unreachable from the start has not been). */
  get isListed() {
    return this.stations.length > 0;
  }

  /** Asks GET /api/stations; throws ApiError for any other refusal, and network errors as they come. */
  async refresh() {
    if (this.state === "none") return;
    try {
      const answer = await this.api.get("/api/stations");
      if (answer.farm === false) {
        this.state = "none";
        return;
      }
      this.stations = answer.stations;
      this.state = "reachable";
      this.self ??= answer.stations.find((station) => isThisPage(station.address))?.station ?? null;
    } catch (error) {
      if (error.status === 503) this.state = "unreachable";
      else throw error;
    }
  }

  /** Every station's fastboot devices, each with its station's name. */
  fastbootDevices() {
    return this.stations.flatMap((station) =>
      station.devices.filter((device) => device.kind !== "disk").map((device) => ({ ...device, station: station.station })),
    );
  }

  /**
   * The station of a job this page just started, from the API's answer (in a farm it names the
   * station, this one included) or the request: null outside a farm, undefined when unknown.
   */
  stationOfNewJob(answer, request) {
    if (this.state === "none") return null;
    return answer.station ?? request.station ?? this.self ?? undefined;
  }

  /** Whether the job runs at this station (GET /api/jobs lists only this station's jobs). */
  runsHere(job) {
    return !job.station || job.station === this.self;
  }
}

function isThisPage(address) {
  try {
    return new URL(address).origin === window.location.origin;
  } catch {
    return false;
  }
}
