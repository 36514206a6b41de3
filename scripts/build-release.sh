#!/usr/bin/env bash
# Builds the release flashctl with Swift's standard library and Foundation linked in (it runs on a
# Debian with no Swift) in .build-release, and prints the binary's path.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x /opt/swift/usr/bin/swift ] && export PATH="/opt/swift/usr/bin:$PATH"
flags=(-c release --static-swift-stdlib --scratch-path .build-release)
swift build "${flags[@]}" --product flashctl >&2
echo "$(swift build "${flags[@]}" --show-bin-path)/flashctl"
