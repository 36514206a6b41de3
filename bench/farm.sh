#!/usr/bin/env bash
# The farm's figures (see bench/farm.py): claim-to-start latency, jobs per hour with the database
# load, and lost-station detection, for three stations sharing a real PostgreSQL.
#   bench/farm.sh [--flashctl PATH] [--jobs 500] [--burst 300]
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c 'import websockets' 2>/dev/null || python3 -m pip install --quiet websockets \
  || python3 -m pip install --quiet --break-system-packages websockets
exec python3 bench/farm.py "$@"
