#!/usr/bin/env bash
# Prepares a host for tickpipe's pinned, spinning threads: runtime settings only (the kernel
# command line and process limits are printed as advice, since they need a reboot or a unit
# file). Dry run by default: it prints what it would write, and writes nothing.
#
#   tuning/scripts/apply.sh --cores 2-7 [--hugepages 512] [--apply] [--state FILE]
#                           [--skip STEP,...] [--root DIR]
#
# Steps: governor (performance on the pinned cores), turbo (off), cstates (deep idle states of
# the pinned cores disabled), thp (madvise / defer+madvise, tmpfs advise), hugepages
# (vm.nr_hugepages), perf (perf_event_paranoid 1), irq (every IRQ onto the other cores),
# irqbalance (stopped).
#
# Before changing anything it checks that every file it would write exists, and refuses (exit 3)
# if one does not, naming the step to --skip (virtual machines often lack cpufreq and turbo
# controls). With --apply it records every previous value in the state file first (default
# /var/lib/tickpipe/tune.state; it refuses to overwrite an existing one, which holds the
# original values), then writes. tuning/scripts/revert.sh puts the recorded values back.
# --root reads and writes /proc and /sys under DIR instead of / (for testing on a copy).
set -euo pipefail

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

cores="" hugepages="" apply=0 skip="" root="" state="/var/lib/tickpipe/tune.state"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cores) cores="${2:-}"; shift 2 ;;
    --hugepages) hugepages="${2:-}"; shift 2 ;;
    --apply) apply=1; shift ;;
    --state) state="${2:-}"; shift 2 ;;
    --skip) skip="${2:-}"; shift 2 ;;
    --root) root="${2:-}"; shift 2 ;;
    -h|--help) usage ;;
    *) echo "apply.sh: unknown argument $1" >&2; usage ;;
  esac
done
[[ -n "$cores" ]] || { echo "apply.sh: --cores LIST is required (the pinned cores, e.g. 2-7)" >&2; exit 2; }
[[ -z "$hugepages" || "$hugepages" =~ ^[0-9]+$ ]] || { echo "apply.sh: --hugepages takes a number" >&2; exit 2; }
if [[ $apply == 1 && -e "$state" ]]; then
  echo "apply.sh: refusing: $state exists (it holds the values from before an earlier apply);" \
       "run revert.sh first, or pass another --state" >&2
  exit 3
fi

# "1-3,5" -> "1 2 3 5"
expand() {
  local out=() part a b
  IFS=',' read -ra parts <<< "$1"
  for part in "${parts[@]}"; do
    if [[ "$part" =~ ^([0-9]+)-([0-9]+)$ ]]; then
      a=${BASH_REMATCH[1]} b=${BASH_REMATCH[2]}
      (( a <= b )) || { echo "apply.sh: bad CPU range $part" >&2; exit 2; }
      for ((i = a; i <= b; i++)); do out+=("$i"); done
    elif [[ "$part" =~ ^[0-9]+$ ]]; then
      out+=("$part")
    else
      echo "apply.sh: bad CPU list $1" >&2; exit 2
    fi
  done
  echo "${out[@]}"
}
# "1 2 3 5" -> "1-3,5"
compress() {
  local out="" start="" prev=""
  for c in $1; do
    if [[ -n "$prev" && $c -eq $((prev + 1)) ]]; then prev=$c; continue; fi
    [[ -n "$start" ]] && out+="${out:+,}$([[ $start == "$prev" ]] && echo "$start" || echo "$start-$prev")"
    start=$c prev=$c
  done
  [[ -n "$start" ]] && out+="${out:+,}$([[ $start == "$prev" ]] && echo "$start" || echo "$start-$prev")"
  echo "$out"
}
skipped() { [[ ",$skip," == *",$1,"* ]]; }
# The current value of a sysfs file; for choice lists ("always [madvise] never") the chosen word.
current() {
  local v
  v=$(cat "$1")
  if [[ "$v" =~ \[([^]]+)\] ]]; then echo "${BASH_REMATCH[1]}"; else echo "$v"; fi
}

pinned=$(expand "$cores")
online=$(expand "$(cat "$root/sys/devices/system/cpu/online" 2>/dev/null || echo "")" 2>/dev/null || true)
[[ -n "$online" ]] || { echo "apply.sh: cannot read $root/sys/devices/system/cpu/online" >&2; exit 3; }
housekeeping=""
for c in $online; do [[ " $pinned " == *" $c "* ]] || housekeeping+="$c "; done
for c in $pinned; do
  [[ " $online " == *" $c "* ]] || { echo "apply.sh: core $c is not online here (online: $(compress "$online"))" >&2; exit 3; }
done
[[ -n "$housekeeping" ]] || { echo "apply.sh: every online core is pinned; leave one for the kernel" >&2; exit 3; }
hk=$(compress "$housekeeping")

# The plan: "step<TAB>file<TAB>value" lines.
plan=()
missing=()
want() { # step file value
  if [[ -e "$2" ]]; then plan+=("$1	$2	$3"); else missing+=("$1: $2"); fi
}
if ! skipped governor; then
  for c in $pinned; do want governor "$root/sys/devices/system/cpu/cpu$c/cpufreq/scaling_governor" performance; done
fi
if ! skipped turbo; then
  if [[ -e "$root/sys/devices/system/cpu/intel_pstate/no_turbo" ]]; then
    want turbo "$root/sys/devices/system/cpu/intel_pstate/no_turbo" 1
  else
    want turbo "$root/sys/devices/system/cpu/cpufreq/boost" 0
  fi
fi
if ! skipped cstates; then
  for c in $pinned; do
    dir="$root/sys/devices/system/cpu/cpu$c/cpuidle"
    if [[ ! -d "$dir" ]]; then missing+=("cstates: $dir"); continue; fi
    for s in "$dir"/state*; do
      [[ -e "$s/latency" ]] || continue
      (( $(cat "$s/latency") > 2 )) && want cstates "$s/disable" 1
    done
  done
fi
if ! skipped thp; then
  want thp "$root/sys/kernel/mm/transparent_hugepage/enabled" madvise
  want thp "$root/sys/kernel/mm/transparent_hugepage/defrag" defer+madvise
  want thp "$root/sys/kernel/mm/transparent_hugepage/shmem_enabled" advise
fi
if [[ -n "$hugepages" ]] && ! skipped hugepages; then
  want hugepages "$root/proc/sys/vm/nr_hugepages" "$hugepages"
fi
skipped perf || want perf "$root/proc/sys/kernel/perf_event_paranoid" 1
if ! skipped irq; then
  for f in "$root"/proc/irq/[0-9]*/smp_affinity_list; do
    [[ -e "$f" ]] && want irq "$f" "$hk"
  done
fi

if [[ ${#missing[@]} -gt 0 ]]; then
  echo "apply.sh: refusing: these files are missing (skip their step with --skip STEP):" >&2
  printf '  %s\n' "${missing[@]}" >&2
  exit 3
fi

irqbalance_active=0
if ! skipped irqbalance && [[ -z "$root" ]] && command -v systemctl >/dev/null \
   && systemctl is-active --quiet irqbalance; then
  irqbalance_active=1
fi

mode=$([[ $apply == 1 ]] && echo "applying" || echo "dry run (pass --apply to write)")
echo "apply.sh: $mode; pinned cores $(compress "$pinned"), housekeeping cores $hk"
changes=0
for line in "${plan[@]}"; do
  IFS=$'\t' read -r step file value <<< "$line"
  old=$(current "$file")
  [[ "$old" == "$value" ]] && continue
  changes=$((changes + 1))
  echo "  $step: $file: $old -> $value"
done
[[ $irqbalance_active == 1 ]] && echo "  irqbalance: running -> stopped (it would move IRQs back)"
[[ $changes == 0 && $irqbalance_active == 0 ]] && echo "  nothing to change"

failed=0
if [[ $apply == 1 ]]; then
  mkdir -p "$(dirname "$state")"
  {
    echo "# tickpipe tune state, $(date -u +%Y-%m-%dT%H:%M:%SZ): file<TAB>previous value"
    [[ $irqbalance_active == 1 ]] && printf 'service\tirqbalance\n'
    for line in "${plan[@]}"; do
      IFS=$'\t' read -r step file value <<< "$line"
      old=$(current "$file")
      [[ "$old" == "$value" ]] || printf '%s\t%s\n' "$file" "$old"
    done
  } > "$state"
  [[ $irqbalance_active == 1 ]] && systemctl stop irqbalance
  for line in "${plan[@]}"; do
    IFS=$'\t' read -r step file value <<< "$line"
    [[ "$(current "$file")" == "$value" ]] && continue
    if ! echo "$value" 2>/dev/null > "$file"; then
      # Some IRQs are managed by the kernel and refuse a new affinity.
      echo "  could not write $value to $file" >&2
      failed=$((failed + 1))
    fi
  done
  echo "apply.sh: previous values saved in $state (tuning/scripts/revert.sh --apply --state $state)"
fi

cat <<ADVICE
Not changed here (they need a reboot or the service's own configuration):
  kernel command line: isolcpus=domain,managed_irq,$(compress "$pinned") nohz_full=$(compress "$pinned") rcu_nocbs=$(compress "$pinned") intel_idle.max_cstate=1 processor.max_cstate=1
  engine's systemd unit: LimitMEMLOCK=infinity LimitRTPRIO=50 (for [host] mlockall and realtime)
  then check with: tickpipe tune check --profile <your profile>
ADVICE
[[ $failed == 0 ]] || { echo "apply.sh: $failed writes failed (see above)" >&2; exit 1; }
