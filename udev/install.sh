#!/usr/bin/env bash
# Installs flashctl's udev rules (and, with --auto-flash, the auto-flash allow-list, an example
# profile file and the systemd unit), then reloads udev. Run as root from the repository:
#
#   sudo udev/install.sh                 # device access only (uaccess and the plugdev group)
#   sudo udev/install.sh --auto-flash    # and auto-flash (edit /etc/udev/rules.d/72-flashctl-autoflash.rules
#                                        #   and /etc/flashctl/profiles.yaml, then enable the unit)
set -euo pipefail
cd "$(dirname "$0")"
[ "$(id -u)" -eq 0 ] || { echo "install.sh: run as root (sudo udev/install.sh)" >&2; exit 1; }
install -m 644 70-flashctl-fastboot.rules /etc/udev/rules.d/
if [ "${1:-}" = "--auto-flash" ]; then
  install -m 644 72-flashctl-autoflash.rules /etc/udev/rules.d/
  install -d -m 755 /etc/flashctl /var/lib/flashctl/images
  [ -e /etc/flashctl/profiles.yaml ] || install -m 644 profiles.example.yaml /etc/flashctl/profiles.yaml
  install -m 644 flashctl-autoflash.service /etc/systemd/system/
  systemctl daemon-reload
  echo "installed; edit /etc/udev/rules.d/72-flashctl-autoflash.rules and /etc/flashctl/profiles.yaml, then: systemctl enable --now flashctl-autoflash"
fi
udevadm control --reload
udevadm trigger --subsystem-match=usb
echo "udev rules installed and reloaded; unplug and replug devices that were already connected"
