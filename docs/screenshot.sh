#!/usr/bin/env bash
# The README's picture: the first participant report under DEMO_OUT, drawn by headless Chromium, with its
# preprocessing figures (brain mask, registration) left out so that the synthetic PET and its uncertainty show.
#   bash docs/screenshot.sh DEMO_OUT docs/participant-report.png      (make screenshot runs make demo first)
# Chromium: Debian's package (apt-get install chromium); the flags keep it off the network.
set -euo pipefail
demo_out=${1:?demo output folder}
picture=${2:?png to write}
python=${PYTHON:-python3}
report=$(find "$demo_out" -name 'sub-*.html' -not -path '*/figures/*' | sort | head -n 1)
[ -n "$report" ] || { echo "screenshot: no participant report under $demo_out (run make demo)" >&2; exit 1; }
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -n "$browser" ] || { echo "screenshot: no Chromium found (apt-get install chromium)" >&2; exit 1; }
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$python" - "$report" "$scratch/report.html" <<'PY'
import sys
html = open(sys.argv[1], encoding="utf-8").read()
start, end = html.index("<h3>Brain extraction</h3>"), html.index("<h3>Synthetic PET")
open(sys.argv[2], "w", encoding="utf-8").write(html[:start] + html[end:])
PY
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir="$scratch/profile" --window-size=1200,2000 \
    --screenshot="$(realpath -m "$picture")" "file://$scratch/report.html" 2>/dev/null
echo "screenshot: $picture from $report"
