#!/usr/bin/env bash
# Builds flashctl and runs every test: unit tests, the TCP path against AOSP fastboot, and the
# real libusb path against emulated USB devices under umockdev.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x /opt/swift/usr/bin/swift ] && export PATH="/opt/swift/usr/bin:$PATH"
swift build --build-tests
swift test --skip-build
