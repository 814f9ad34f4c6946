#!/usr/bin/env bash
# Puts back the values tuning/scripts/apply.sh recorded. Dry run by default.
#
#   tuning/scripts/revert.sh [--apply] [--state FILE]
#
# Refuses (exit 3) when the state file is missing, or when a file it names no longer exists
# (nothing is written then). After a successful --apply the state file is removed, so that a
# later apply.sh records fresh values.
set -euo pipefail

apply=0 state="/var/lib/tickpipe/tune.state"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --apply) apply=1; shift ;;
    --state) state="${2:-}"; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
    *) echo "revert.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -f "$state" ]] || { echo "revert.sh: refusing: no state file $state (nothing was applied, or it was reverted)" >&2; exit 3; }

current() {
  local v
  v=$(cat "$1")
  if [[ "$v" =~ \[([^]]+)\] ]]; then echo "${BASH_REMATCH[1]}"; else echo "$v"; fi
}

entries=() services=() missing=()
while IFS=$'\t' read -r file old; do
  [[ -z "$file" || "$file" == \#* ]] && continue
  if [[ "$file" == service ]]; then services+=("$old"); continue; fi
  [[ -e "$file" ]] || missing+=("$file")
  entries+=("$file	$old")
done < "$state"
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "revert.sh: refusing: these files from $state are missing:" >&2
  printf '  %s\n' "${missing[@]}" >&2
  exit 3
fi

echo "revert.sh: $([[ $apply == 1 ]] && echo reverting || echo "dry run (pass --apply to write)") from $state"
failed=0
for line in "${entries[@]}"; do
  IFS=$'\t' read -r file old <<< "$line"
  echo "  $file: $(current "$file") -> $old"
  if [[ $apply == 1 ]] && ! echo "$old" 2>/dev/null > "$file"; then
    echo "  could not write $old to $file" >&2
    failed=$((failed + 1))
  fi
done
for s in "${services[@]}"; do
  echo "  $s: start"
  [[ $apply == 1 ]] && systemctl start "$s"
done
if [[ $apply == 1 ]]; then
  [[ $failed == 0 ]] || { echo "revert.sh: $failed writes failed; $state kept" >&2; exit 1; }
  rm -f "$state"
  echo "revert.sh: done; $state removed"
fi
