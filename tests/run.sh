#!/usr/bin/env bash
# Run the miniheap test suite; `make test` builds everything and calls this.
#
#   tests/run.sh [FILTER...]    run the tests whose name contains a FILTER
#                               (all when none is given)
#
# Environment:
#   BUILD        build directory (default: build)
#   MH_PRELOAD   library preloaded for the plain-name tests and the program
#                tests (default: $BUILD/libminiheap.so). MH_PRELOAD=none runs
#                them on the system allocator (to check the tests themselves;
#                test_spike is expected to fail there).
#   MH_TIMEOUT   per-test timeout in seconds (default 600: a guard against
#                hangs; t_bugs takes 80-145 s on a loaded 2-CPU machine)
#   MH_QUIET=1   print a test's output only when it fails
#
# Every test prints its own diagnostics; this script prints them, then one
# PASS/FAIL line per test, and ends with the line "N passed, N failed".
# Additional executable scripts tests/t_*.sh are run too (with BUILD,
# MH_PRELOAD and MH_LIB exported); they pass by exiting 0.
set -u
cd "$(dirname "$0")/.." || exit 2

BUILD=${BUILD:-build}
T=$BUILD/tests
MH_PRELOAD=${MH_PRELOAD-$BUILD/libminiheap.so}
MH_TIMEOUT=${MH_TIMEOUT:-600}
MH_QUIET=${MH_QUIET:-0}
LOGDIR=$T/logs
mkdir -p "$LOGDIR"

if [ "$MH_PRELOAD" = none ] || [ -z "$MH_PRELOAD" ]; then
    PRELOAD_ENV=()
    MH_LIB=none
    echo "NOTE: MH_PRELOAD=none: plain-name and program tests run on the system allocator"
else
    case $MH_PRELOAD in /*) ;; *) MH_PRELOAD=$PWD/$MH_PRELOAD ;; esac
    PRELOAD_ENV=(LD_PRELOAD="$MH_PRELOAD" MH_EXPECT_MINIHEAP=1)
    MH_LIB=$MH_PRELOAD
fi
export BUILD MH_PRELOAD MH_LIB

passed=0
failed=0
failed_names=()

selected() {
    [ $# -ge 2 ] || return 0
    local name=$1 f
    shift
    for f in "$@"; do
        case $name in *"$f"*) return 0 ;; esac
    done
    return 1
}

# run_test NAME NEEDS_PRELOAD COMMAND...
run_test() {
    local name=$1 needs=$2
    shift 2
    selected "$name" "${FILTERS[@]}" || return 0
    local log=$LOGDIR/$name.log rc start end
    start=$(date +%s.%N)
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "missing: $1" >"$log"
        rc=127
    elif [ "$needs" = preload ] && [ "$MH_LIB" != none ] && [ ! -f "$MH_PRELOAD" ]; then
        echo "missing: $MH_PRELOAD (build it with 'make lib')" >"$log"
        rc=127
    else
        if [ "$needs" = preload ]; then
            timeout -k 10 "$MH_TIMEOUT" env "${PRELOAD_ENV[@]}" "$@" >"$log" 2>&1
        else
            timeout -k 10 "$MH_TIMEOUT" "$@" >"$log" 2>&1
        fi
        rc=$?
    fi
    end=$(date +%s.%N)
    local secs
    secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
    if [ $rc -eq 0 ]; then
        [ "$MH_QUIET" = 1 ] || sed 's/^/    /' "$log"
        echo "PASS $name (${secs}s)"
        passed=$((passed + 1))
    else
        sed 's/^/    /' "$log" | tail -n 200
        local why="exit $rc"
        [ $rc -eq 124 ] && why="timeout after ${MH_TIMEOUT}s"
        [ $rc -gt 128 ] && [ $rc -ne 124 ] && why="killed by signal $((rc - 128))"
        echo "FAIL $name ($why, ${secs}s; log: $log)"
        failed=$((failed + 1))
        failed_names+=("$name")
    fi
}

FILTERS=("$@")

run_test api                direct  "$T/test_api"
run_test api_plain          preload "$T/test_api_plain"
run_test threads            direct  "$T/test_threads"
run_test threads_plain      preload "$T/test_threads_plain"
run_test fork               direct  "$T/test_fork"
run_test fork_plain         preload "$T/test_fork_plain"
run_test fork_modes         direct  "$T/test_fork_modes"
run_test reports            direct  "$T/test_reports"
run_test solo               direct  "$T/test_solo"
run_test faults             direct  "$T/test_faults"
run_test options            direct  "$T/test_options"
run_test mesh               direct  "$T/test_mesh"
run_test large_cache        direct  "$T/test_large_cache"
run_test spike_plain        preload "$T/test_spike_plain"
run_test oom                direct  "$T/test_oom"
run_test oom_plain          preload "$T/test_oom_plain"
run_test idle_plain         preload "$T/test_idle_plain"
run_test sigaction_plain    preload "$T/test_sigaction_plain"
run_test seccomp_plain      preload "$T/test_seccomp_plain"
run_test last_thread        direct  "$T/test_last_thread"
run_test last_thread_plain  preload "$T/test_last_thread_plain"
run_test programs           direct  tests/test_programs.sh

for script in tests/t_*.sh; do
    [ -f "$script" ] && [ -x "$script" ] || continue
    name=$(basename "$script" .sh)
    run_test "$name" direct "$script"
done

if [ $failed -gt 0 ]; then
    echo "failed: ${failed_names[*]}"
fi
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
