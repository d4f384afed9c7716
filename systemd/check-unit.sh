#!/usr/bin/env bash
# Check a systemd unit file the way CI does:
#   1. `systemd-analyze verify` must print nothing at all. It exits 0 on unknown keys and other
#      mere warnings, so the exit status alone would let typos through.
#   2. `systemd-analyze security --offline=true` exposure must be <= MAX_EXPOSURE (default 3.0).
#
# usage: systemd/check-unit.sh [UNIT_FILE]     (default: the ingestd.service next to this script)
#
# verify also checks that ExecStart's binary exists. On a machine where ingestd is not installed
# at the unit's path (a developer box, CI), the check runs on a temporary copy whose ExecStart
# binary is replaced by an existing one (INGESTD_BIN_STAND_IN, default /usr/bin/true) and says so
# on stderr; every other line is verified as written. The copy keeps the unit's file name because
# both commands derive the unit type and name from it.
#
# Exit status: 0 ok, 1 check failed, 2 systemd-analyze not installed / bad usage.
set -euo pipefail

max_exposure=${MAX_EXPOSURE:-3.0}
unit=${1:-"$(dirname -- "$0")/ingestd.service"}

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "check-unit: systemd-analyze is not installed" >&2
    exit 2
fi
if [[ ! -f $unit ]]; then
    echo "check-unit: no such unit file: $unit" >&2
    exit 2
fi

tmp=$(mktemp -d)
trap 'rm -rf -- "$tmp"' EXIT
copy="$tmp/$(basename -- "$unit")"

# First ExecStart= binary, without systemd's special prefixes (-, @, :, +, !).
bin=$(sed -n 's/^ExecStart=[-@:+!]*\([^[:space:]]*\).*/\1/p' "$unit" | head -n 1)
if [[ -z $bin || -x $bin ]]; then
    cp -- "$unit" "$copy"
else
    stand_in=${INGESTD_BIN_STAND_IN:-/usr/bin/true}
    echo "check-unit: note: $bin is not installed here; verifying a copy with that" \
         "ExecStart binary replaced by $stand_in" >&2
    # '|' as the sed delimiter: both paths contain '/'.
    sed "s|^\(ExecStart=[-@:+!]*\)$bin|\1$stand_in|" "$unit" > "$copy"
fi

status=0

verify_rc=0
verify_out=$(systemd-analyze verify "$copy" 2>&1) || verify_rc=$?
if [[ -n $verify_out || $verify_rc -ne 0 ]]; then
    echo "check-unit: FAIL: systemd-analyze verify (exit $verify_rc) printed:" >&2
    printf '%s\n' "$verify_out" >&2
    status=1
else
    echo "check-unit: ok: systemd-analyze verify printed nothing"
fi

security_rc=0
security_out=$(systemd-analyze security --offline=true "$copy" 2>&1) || security_rc=$?
score=$(printf '%s\n' "$security_out" \
    | sed -n 's/.*Overall exposure level for [^:]*: \([0-9][0-9.]*\).*/\1/p' | tail -n 1)
if [[ $security_rc -ne 0 || -z $score ]]; then
    echo "check-unit: FAIL: systemd-analyze security (exit $security_rc) gave no score:" >&2
    printf '%s\n' "$security_out" >&2
    status=1
elif awk -v s="$score" -v m="$max_exposure" 'BEGIN { exit !(s > m) }'; then
    echo "check-unit: FAIL: exposure $score > $max_exposure; findings:" >&2
    printf '%s\n' "$security_out" | grep '✗' >&2 || true
    status=1
else
    echo "check-unit: ok: exposure $score <= $max_exposure"
fi

exit "$status"
