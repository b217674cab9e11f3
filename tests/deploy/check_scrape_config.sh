#!/usr/bin/env bash
# promtool check config on deploy/prometheus/scrape-kmsd.yml. promtool opens the TLS
# files the config names, so the check runs on a copy whose paths point at stand-in
# files in a temp dir (the config is otherwise checked as it is).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$root/deploy/prometheus/scrape-kmsd.yml" "$work/prometheus.yml"
for f in ca.pem scrape.pem scrape.key; do : >"$work/$f"; done
sed -i "s#/etc/prometheus/kmsd/#$work/#g" "$work/prometheus.yml"
promtool check config "$work/prometheus.yml"
