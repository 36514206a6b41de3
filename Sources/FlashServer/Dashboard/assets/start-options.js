// The start form's choices beyond image and device: the slot, and for a .zip a factory update
// (fastboot update: every image in the zip, after checking its android-info.txt against the
// device) with its wipe and reboot, in place of the partition.

export class StartOptions {
  constructor() {
    this.updateChoice = document.getElementById("start-update-choice");
    this.update = document.getElementById("start-update");
    this.wipeChoice = document.getElementById("start-wipe-choice");
    this.wipe = document.getElementById("start-wipe");
    this.rebootChoice = document.getElementById("start-reboot-choice");
    this.reboot = document.getElementById("start-reboot");
    this.partition = document.getElementById("start-partition");
    this.partitionLabel = document.querySelector('label[for="start-partition"]');
    this.slot = document.getElementById("start-slot");
    this.button = document.getElementById("start-button");
    this.update.addEventListener("change", () => this.render());
  }

  /** The image chosen now: only a zip can be a factory image. */
  showImage(name) {
    this.updateChoice.hidden = !/\.zip$/i.test(name || "");
    this.render();
  }

  get isUpdate() {
    return !this.updateChoice.hidden && this.update.checked;
  }

  render() {
    const update = this.isUpdate;
    this.partition.hidden = update;
    this.partitionLabel.hidden = update;
    this.wipeChoice.hidden = !update;
    this.rebootChoice.hidden = !update;
    this.button.textContent = update ? "Start factory update" : "Start flash";
  }

  /** The body's fields for these choices: the current slot is the server's default, so it is left out. */
  fields() {
    const fields = {};
    if (this.slot.value) fields.slot = this.slot.value;
    if (this.isUpdate) {
      if (this.wipe.checked) fields.wipe = true;
      if (!this.reboot.checked) fields.skipReboot = true;
    } else {
      const partition = this.partition.value.trim();
      if (partition) fields.partition = partition;
    }
    return fields;
  }
}
