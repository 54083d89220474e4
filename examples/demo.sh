#!/bin/sh
# The example cluster: 4 example HTTP workers behind 127.0.0.1:8080 under
# `drover run` (namespace "demo"). In a terminal this opens the console;
# otherwise it streams NDJSON until Ctrl-C, which stops everything.
# Usage: examples/demo.sh [BUILD_DIR]   (default: build)
set -u
B=${1:-build}
[ -x "$B/drover" ] && [ -x "$B/examples/httpd" ] || { echo "demo: build first (make)" >&2; exit 1; }
exec "$B/drover" run -L demo -i 4 -n web --listen 127.0.0.1:8080 -- "$B/examples/httpd"
