#!/usr/bin/env bash
# The bash completion offers exactly kmsctl's top-level commands, and loads in bash.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
kmsctl=$1
completion=$root/deploy/bash_completion/kmsctl
bash -n "$completion"
# Commands kmsctl --help lists (CLI11: "Subcommands:" then "  name  description").
help_cmds=$("$kmsctl" --help | awk 'tolower($0) ~ /^subcommands:/{s=1; next} s && NF == 0 {exit} s && /^  [a-z]/{print $1}' | sort)
script_cmds=$(sed -n 's/.*"") words_now="\([a-z ]*\) \$global".*/\1/p' "$completion" | head -1 \
  | tr ' ' '\n' | sort)
if [[ "$help_cmds" != "$script_cmds" ]]; then
  echo "completion commands differ from kmsctl --help:"
  diff <(echo "$help_cmds") <(echo "$script_cmds") || true
  exit 1
fi
# It completes: `kmsctl au<TAB>` -> audit, `kmsctl audit <TAB>` -> tail verify.
out=$(bash -c "source '$completion'; COMP_WORDS=(kmsctl au); COMP_CWORD=1; _kmsctl; echo \${COMPREPLY[*]}")
[[ $out == audit ]] || { echo "kmsctl au<TAB> gave '$out'"; exit 1; }
out=$(bash -c "source '$completion'; COMP_WORDS=(kmsctl audit ''); COMP_CWORD=2; _kmsctl; echo \${COMPREPLY[*]}")
[[ $out == "tail verify" ]] || { echo "kmsctl audit <TAB> gave '$out'"; exit 1; }
echo "completion matches kmsctl"
