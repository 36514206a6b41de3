#!/usr/bin/env bash
# Generates flashctl.1 with swift-argument-parser's generate-manual plugin and prints its path.
# The plugin builds the package's products first, here in the debug build folder that
# scripts/test.sh has already built, so it adds little to a run.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x /opt/swift/usr/bin/swift ] && export PATH="/opt/swift/usr/bin:$PATH"
swift package plugin generate-manual --configuration debug >&2
manual=".build/plugins/GenerateManual/outputs/flashctl/flashctl.1"
[ -s "$manual" ] || { echo "build-manual.sh: the plugin wrote no $manual" >&2; exit 1; }
echo "$PWD/$manual"
