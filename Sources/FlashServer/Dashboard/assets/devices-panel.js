// The devices panel: what is connected and in what state, and the form that starts a flash.
// In a farm it lists every station's devices, each with its station, and a flash started for one
// names that station (the same deviceId may be at several).

import { tileKey } from "./farm.js";
import { formatBytes } from "./format.js";
import { StartOptions } from "./start-options.js";

export class DevicesPanel {
  /**
   * start(request, isUpdate) posts the job (a factory update when isUpdate); it resolves with the
   * API's answer or throws ApiError.
   */
  constructor(start) {
    this.start = start;
    this.list = document.getElementById("devices");
    this.empty = document.getElementById("devices-empty");
    this.form = document.getElementById("start-form");
    this.image = document.getElementById("start-image");
    this.device = document.getElementById("start-device");
    this.partition = document.getElementById("start-partition");
    this.result = document.getElementById("start-result");
    this.button = document.getElementById("start-button");
    this.options = new StartOptions();
    this.devices = [];
    this.image.addEventListener("change", () => this.showImage());
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
  }

  showDevices(devices) {
    this.devices = devices;
    this.list.replaceChildren(
      ...devices.map((device) => {
        const item = document.createElement("li");
        item.className = "device";
        item.dataset.deviceId = device.id;
        if (device.station) item.dataset.station = device.station;
        item.dataset.state = device.state;
        const name = document.createElement("strong");
        name.textContent = device.id;
        const details = document.createElement("span");
        details.className = "device-details";
        const station = device.station ? `station ${device.station}` : null;
        details.textContent = [station, device.product, device.kind, device.portPath ? `port ${device.portPath}` : null, device.vidPid]
          .filter(Boolean)
          .join(" · ");
        const state = document.createElement("span");
        state.className = "device-state";
        state.dataset.state = device.state;
        state.textContent = device.jobId ? `${device.state} (${device.jobId})` : device.state;
        item.append(name, details, state);
        return item;
      }),
    );
    this.empty.hidden = devices.length > 0;
    replaceOptions(
      this.device,
      devices.map((device) => ({ value: tileKey(device.station, device.id), label: deviceLabel(device) })),
      "no device connected",
    );
  }

  showImages(listing) {
    replaceOptions(
      this.image,
      listing.images.map((image) => ({ value: image.name, label: `${image.name} (${formatBytes(image.size)})` })),
      `no images in ${listing.directory}`,
    );
    this.showImage();
  }

  showImage() {
    const name = this.image.value || "";
    this.options.showImage(name);
    const base = name.split("/").pop().replace(/\.(img|bin|raw|simg)$/i, "");
    this.partition.placeholder = base ? `${base} (from the image name)` : "from the image name";
  }

  async submit() {
    const chosen = this.devices.find((device) => tileKey(device.station, device.id) === this.device.value);
    const request = { deviceId: chosen?.id ?? "", image: this.image.value };
    if (chosen?.station) request.station = chosen.station;
    const isUpdate = this.options.isUpdate;
    Object.assign(request, this.options.fields());
    if (!request.deviceId || !request.image) {
      this.say("Choose an image and a device first.", true);
      return;
    }
    this.button.setAttribute("aria-disabled", "true");
    try {
      const answer = await this.start(request, isUpdate);
      const where = request.station ? `${request.deviceId} at station ${request.station}` : request.deviceId;
      this.say(`${answer.status === "queued" ? "Queued" : "Started"} ${answer.jobId} on ${where}.`, false);
    } catch (error) {
      this.say(error.message, true);
    } finally {
      this.button.setAttribute("aria-disabled", "false");
    }
  }

  say(text, isError) {
    this.result.textContent = text;
    this.result.classList.toggle("error", isError);
  }
}

function deviceLabel(device) {
  const name = device.station ? `${device.id} at station ${device.station}` : device.id;
  return device.product ? `${name} (${device.product})` : name;
}

function replaceOptions(select, options, emptyLabel) {
  const previous = select.value;
  if (options.length === 0) {
    const option = new Option(emptyLabel, "");
    option.disabled = true;
    select.replaceChildren(option);
    select.value = "";
    return;
  }
  select.replaceChildren(...options.map(({ value, label }) => new Option(label, value)));
  if (options.some((option) => option.value === previous)) select.value = previous;
}
