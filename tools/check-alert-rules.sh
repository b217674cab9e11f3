#!/usr/bin/env bash
# Checks the Prometheus alert rules (deploy/prometheus/kmsd-alerts.yml): promtool's
# syntax check, its unit tests (deploy/prometheus/tests/), and that every alert has a
# test case that fires and one that stays silent. Run by ctest (prometheus_rules).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
rules=$root/deploy/prometheus/kmsd-alerts.yml
tests=$root/deploy/prometheus/tests/kmsd-alerts.test.yml
command -v promtool >/dev/null || { echo "promtool missing: tools/install-deps.sh --test" >&2; exit 1; }
promtool check rules "$rules"
promtool test rules "$tests"
missing=0
alerts=$(sed -n 's/^ *- alert: *\([A-Za-z0-9_]*\).*/\1/p' "$rules")
[[ -n $alerts ]] || { echo "no alert found in $rules" >&2; exit 1; }
for a in $alerts; do
  for kind in "fires" "stays silent"; do
    if ! grep -q "^- name: $a $kind" "$tests"; then
      echo "alert $a has no test case named '$a $kind ...'" >&2
      missing=1
    fi
  done
done
((missing == 0)) || exit 1
echo "every alert ($(echo "$alerts" | wc -l)) has a firing and a silent test case"
