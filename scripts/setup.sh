#!/usr/bin/env bash
# Installs the system packages flashctl needs to build, test and benchmark on Debian/Ubuntu.
set -euo pipefail

packages=(
  pkg-config
  libusb-1.0-0-dev libudev-dev libarchive-dev zlib1g-dev liblzma-dev libxxhash-dev
  bmap-tools xxhash xz-utils zstd bzip2 gzip zip fdisk openssl
  umockdev libumockdev-dev gir1.2-umockdev-1.0 python3-gi
  fastboot android-sdk-libsparse-utils bc time
  curl libcurl4
  debootstrap
  postgresql
  chromium fonts-dejavu-core
)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The dashboard's browser tests: Playwright drives Debian's Chromium (no browser download).
python_packages=(playwright==1.65.2 pytest)
if ! python3 -c 'import playwright, pytest' 2>/dev/null; then
  if ! python3 -m pip --version >/dev/null 2>&1; then
    $([ "$(id -u)" -eq 0 ] || echo sudo) apt-get install -y -qq --no-install-recommends python3-pip
  fi
  python3 -m pip install --quiet "${python_packages[@]}" 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages "${python_packages[@]}"
fi

if ! command -v swift >/dev/null 2>&1; then
  if [ -x /opt/swift/usr/bin/swift ]; then
    echo "swift is at /opt/swift/usr/bin: add it to PATH" >&2
  else
    echo "Swift 6 is required (https://swift.org/install)" >&2
  fi
  exit 1
fi
