#!/usr/bin/env bash
# The image cannot be built offline, so its steps are checked against what is known:
#  - the build stage installs exactly the packages tools/install-deps.sh names (without
#    --test), so the image builds with what CI builds with;
#  - every runtime-stage package is a Debian 12 package installed on this machine (they
#    are the shared libraries of those -dev packages, installed with them here);
#  - the image runs as a non-root user and is based on debian:bookworm-slim.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dockerfile=$root/deploy/Dockerfile

# Packages of the apt-get install in stage $1 (FROM ... AS $1), one per line, sorted.
stage_packages() {
  awk -v stage="$1" '
    /^FROM / { in_stage = ($NF == stage) }
    in_stage && /apt-get install/ { grab = 1 }
    in_stage && grab {
      line = $0
      gsub(/\\$/, "", line)
      n = split(line, w, /[ \t]+/)
      for (i = 1; i <= n; i++) {
        if (w[i] == "" || w[i] ~ /^-/ || w[i] == "&&" || w[i] == "apt-get" || w[i] == "install" || w[i] == "RUN") continue
        if (w[i] == "rm") { grab = 0; break }
        print w[i]
      }
      if ($0 !~ /\\$/) grab = 0
    }' "$dockerfile" | sort -u
}

deps_packages() {
  awk '/^packages=\(/ { grab = 1; sub(/^packages=\(/, "") }
       grab { line = $0; done = sub(/\).*/, "", line); n = split(line, w, /[ \t]+/);
              for (i = 1; i <= n; i++) if (w[i] != "") print w[i]; if (done) grab = 0 }' \
    "$root/tools/install-deps.sh" | sort -u
}

fail=0
if ! diff <(deps_packages) <(stage_packages build) >/tmp/kmsd-dockerfile-diff.$$ 2>&1; then
  echo "Dockerfile build stage and tools/install-deps.sh differ (< install-deps, > Dockerfile):"
  cat /tmp/kmsd-dockerfile-diff.$$
  fail=1
fi
rm -f /tmp/kmsd-dockerfile-diff.$$
[[ -n "$(stage_packages build)" ]] || { echo "no packages found in the build stage"; fail=1; }
runtime=$(stage_packages runtime)
[[ -n "$runtime" ]] || { echo "no packages found in the runtime stage"; fail=1; }
for p in $runtime; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    echo "runtime package $p is not a Debian 12 package installed here"
    fail=1
  fi
done
grep -q '^FROM debian:bookworm-slim AS build' "$dockerfile" || { echo "build stage is not bookworm-slim"; fail=1; }
grep -q '^FROM debian:bookworm-slim AS runtime' "$dockerfile" || { echo "runtime stage is not bookworm-slim"; fail=1; }
user=$(awk '/^USER /{u=$2} END{print u}' "$dockerfile")
[[ -n $user && ${user%%:*} != 0 && ${user%%:*} != root ]] || { echo "the image does not run as a non-root user"; fail=1; }
# Files the image copies must exist.
for f in $(awk '/^COPY deploy\//{print $2}' "$dockerfile"); do
  [[ -e $root/$f ]] || { echo "COPY source $f is missing"; fail=1; }
done
((fail == 0)) && echo "Dockerfile matches tools/install-deps.sh"
exit $fail
