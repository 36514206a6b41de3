#!/usr/bin/env bash
# Builds flashctl and runs every test: unit tests, the TCP path against AOSP fastboot, the
# real libusb path against emulated USB devices under umockdev, and the dashboard in headless
# Chromium (Tests/Browser, pytest + Playwright) against the debug build's `flashctl serve`, and
# the .deb installed into a clean Debian 12 (scripts/test-deb.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x /opt/swift/usr/bin/swift ] && export PATH="/opt/swift/usr/bin:$PATH"
# Every document the repository points to is in it: nothing refers to a folder beside it.
python3 scripts/check_paths.py
# Plans the build again, so that the BuildInfo plugin records this checkout's commit (see BUILDING.md).
touch Package.swift
swift build --build-tests
swift test --skip-build
/usr/bin/python3 testbed/test_hotplug.py --flashctl "$(swift build --show-bin-path)/flashctl"
FLASHCTL="$(swift build --show-bin-path)/flashctl" python3 -m pytest -q -p no:cacheprovider Tests/Browser
# The .deb in a clean Debian 12 with no Swift (debootstrap, cached in .cache/).
scripts/test-deb.sh
