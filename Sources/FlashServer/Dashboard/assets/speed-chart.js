// A small chart of a job's speed over its life: an SVG line over a filled area.

import { formatSpeed } from "./format.js";

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 300;
const HEIGHT = 60;

export class SpeedChart {
  constructor() {
    this.element = document.createElementNS(SVG, "svg");
    this.element.setAttribute("class", "chart");
    this.element.setAttribute("viewBox", `0 0 ${WIDTH} ${HEIGHT}`);
    this.element.setAttribute("preserveAspectRatio", "none");
    this.element.setAttribute("role", "img");
    this.area = document.createElementNS(SVG, "path");
    this.area.setAttribute("class", "chart-area");
    this.line = document.createElementNS(SVG, "polyline");
    this.line.setAttribute("class", "chart-line");
    this.title = document.createElementNS(SVG, "title");
    this.element.append(this.title, this.area, this.line);
    this.drawn = -1;
  }

  /** Another job's samples follow: draw them even when there are as many as before. */
  restart() {
    this.drawn = -1;
  }

  /** Redraws when there are new samples. */
  update(samples) {
    if (samples.length === this.drawn) return;
    this.drawn = samples.length;
    if (samples.length < 2) {
      this.line.setAttribute("points", "");
      this.area.setAttribute("d", "");
      this.element.setAttribute("aria-label", "Speed chart: not enough data yet");
      this.title.textContent = "Speed over time";
      return;
    }
    const start = samples[0][0];
    const span = Math.max(1, samples[samples.length - 1][0] - start);
    const peak = Math.max(1, ...samples.map(([, speed]) => speed));
    const points = samples.map(([time, speed]) => {
      const x = ((time - start) / span) * WIDTH;
      const y = HEIGHT - 2 - (speed / peak) * (HEIGHT - 6);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    this.line.setAttribute("points", points.join(" "));
    this.area.setAttribute("d", `M0,${HEIGHT} L${points.join(" L")} L${WIDTH},${HEIGHT} Z`);
    const label = `Speed over time, peak ${formatSpeed(peak)}`;
    this.element.setAttribute("aria-label", label);
    this.title.textContent = label;
  }
}
