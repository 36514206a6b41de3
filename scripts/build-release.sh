#!/usr/bin/env bash
# Builds the release flashctl with Swift's standard library and Foundation linked in (it runs on a
# Debian with no Swift) in .build-release, and prints the binary's path.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x /opt/swift/usr/bin/swift ] && export PATH="/opt/swift/usr/bin:$PATH"
flags=(-c release --static-swift-stdlib --scratch-path .build-release)
# SwiftPM runs build plugins only when it plans the build again, which a new commit of files
# outside Sources does not cause; a newer Package.swift does, so --version names this commit.
touch Package.swift
swift build "${flags[@]}" --product flashctl >&2
echo "$(swift build "${flags[@]}" --show-bin-path)/flashctl"
