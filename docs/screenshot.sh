#!/usr/bin/env bash
# The README's picture: the first participant report under DEMO_OUT, drawn by headless Chromium.
#   bash docs/screenshot.sh DEMO_OUT docs/participant-report.png      (make screenshot runs make demo first)
# Chromium: Debian's package (apt-get install chromium); the flags keep it off the network.
set -euo pipefail
demo_out=${1:?demo output folder}
picture=${2:?png to write}
report=$(find "$demo_out" -name 'sub-*.html' -not -path '*/figures/*' | sort | head -n 1)
[ -n "$report" ] || { echo "screenshot: no participant report under $demo_out (run make demo)" >&2; exit 1; }
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -n "$browser" ] || { echo "screenshot: no Chromium found (apt-get install chromium)" >&2; exit 1; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir="$profile" --window-size=1200,1500 \
    --screenshot="$(realpath -m "$picture")" "file://$(realpath "$report")" 2>/dev/null
echo "screenshot: $picture from $report"
