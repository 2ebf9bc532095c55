#!/usr/bin/env bash
# A fuzzer keeps its crash file when miniheap reports the bug (issue #10).
#
# tests/fuzzing/overflow_target.c is a libFuzzer target with a planted
# one-byte heap overflow. It runs with miniheap as its allocator, preloaded
# (build/tests/fuzzing/overflow_target) and linked in
# (overflow_target_linked), in hardened and debug mode, from a corpus whose
# one input triggers the bug. Each run must end with miniheap's report,
# libFuzzer must have saved the input as crash-<sha1> (miniheap's abort
# reaches libFuzzer's SIGABRT handler), and running the target on that file
# must give the same report again.
set -u
. "$(dirname "$0")/t_lib.sh"
D=$BUILD/tests/fuzzing

for variant in preload linked; do
    if [ $variant = preload ]; then bin=$D/overflow_target; env_lib=(LD_PRELOAD="$LIB")
    else bin=$D/overflow_target_linked; env_lib=(); fi
    [ -x "$bin" ] || { fail "$bin not built"; continue; }
    for mode in hardened debug; do
        w=$D/work-$variant-$mode
        rm -rf "$w" && mkdir -p "$w/corpus" "$w/crashes"
        printf 'BUG and the rest of the input' >"$w/corpus/seed"
        env "${env_lib[@]}" MINIHEAP_OPTIONS=mode=$mode:leak_report=0 \
            timeout 120 "$bin" -seed=1 -runs=1000 -artifact_prefix="$w/crashes/" "$w/corpus" >"$w/log" 2>&1
        rc=$?
        crash=$(ls "$w"/crashes/crash-* 2>/dev/null | head -1)
        if ! grep -q '^miniheap: ERROR: heap-buffer-overflow' "$w/log"; then
            fail "$variant/$mode: no heap-buffer-overflow report (rc $rc, log $w/log)"; continue
        fi
        if [ -z "$crash" ]; then
            fail "$variant/$mode: libFuzzer saved no crash file (rc $rc, log $w/log)"; continue
        fi
        grep -q 'deadly signal' "$w/log" || fail "$variant/$mode: libFuzzer's handler did not run (log $w/log)"
        cmp -s "$crash" "$w/corpus/seed" || fail "$variant/$mode: the crash file is not the input that crashed"
        env "${env_lib[@]}" MINIHEAP_OPTIONS=mode=$mode:leak_report=0 timeout 60 "$bin" "$crash" >"$w/replay.log" 2>&1
        rrc=$?
        if [ $rrc -eq 0 ] || ! grep -q '^miniheap: ERROR: heap-buffer-overflow' "$w/replay.log"; then
            fail "$variant/$mode: replaying $crash gave rc $rrc without the report (log $w/replay.log)"; continue
        fi
        a=$(grep -m1 '^miniheap: ERROR:' "$w/log" | sed 's/0x[0-9a-f]*/ADDR/g')
        b=$(grep -m1 '^miniheap: ERROR:' "$w/replay.log" | sed 's/0x[0-9a-f]*/ADDR/g')
        [ "$a" = "$b" ] || fail "$variant/$mode: the replay reported '$b', the run '$a'"
        echo "ok $variant/$mode: $(basename "$crash") saved (fuzzer rc $rc), replay: $b"
    done
done
[ $fails -eq 0 ]
