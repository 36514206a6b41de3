#!/usr/bin/env bash
# Builds flashctl and runs every test: unit tests, the TCP path against AOSP fastboot, the
# real libusb path against emulated USB devices under umockdev, and the dashboard in headless
# Chromium (Tests/Browser, pytest + Playwright) against the debug build's `flashctl serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x /opt/swift/usr/bin/swift ] && export PATH="/opt/swift/usr/bin:$PATH"
swift build --build-tests
swift test --skip-build
/usr/bin/python3 testbed/test_hotplug.py --flashctl "$(swift build --show-bin-path)/flashctl"
FLASHCTL="$(swift build --show-bin-path)/flashctl" python3 -m pytest -q -p no:cacheprovider Tests/Browser
