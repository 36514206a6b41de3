// The jobs panel of a farm: one group of device tiles per station, headed with the station's name
// and state. Outside a farm there are no groups: tiles go straight into the panel, as they always did.

import { formatDuration } from "./format.js";

const STATE_TEXT = { online: "Online", lost: "Lost", stopped: "Stopped" };

export class StationGroups {
  constructor(container) {
    this.container = container;
    this.groups = new Map(); // station name -> { element, badge, tiles }, in the order they appeared
  }

  /** The element a tile of this station goes into. */
  place(station) {
    return station ? this.group(station).tiles : this.container;
  }

  /** A station as GET /api/stations lists it. */
  showStation(station) {
    const group = this.group(station.station);
    group.element.dataset.state = station.state;
    group.badge.dataset.state = station.state;
    const text = STATE_TEXT[station.state] ?? station.state;
    group.badge.textContent =
      station.state === "lost" && Number.isFinite(station.silentMs) ? `${text} (silent ${formatDuration(station.silentMs / 1000)})` : text;
    group.address.textContent = station.address ?? "";
    group.address.hidden = !group.address.textContent;
  }

  group(name) {
    let group = this.groups.get(name);
    if (group) return group;
    const element = make("section", "station-group");
    element.dataset.station = name;
    const head = make("header", "station-head");
    const title = make("h3", "station-name");
    title.id = `station-${this.groups.size + 1}-title`;
    title.textContent = `Station ${name}`;
    element.setAttribute("aria-labelledby", title.id);
    const address = make("span", "station-address");
    address.dataset.role = "station-address";
    address.hidden = true;
    const badge = make("span", "badge station-state");
    badge.dataset.role = "station-state";
    head.append(title, address, badge);
    const tiles = make("div", "tiles");
    element.append(head, tiles);
    group = { element, badge, address, tiles };
    this.groups.set(name, group);
    // New groups go last, so the ones already on the page stay where they are.
    this.container.append(element);
    return group;
  }
}

function make(tag, className) {
  const node = document.createElement(tag);
  node.className = className;
  return node;
}
