#!/usr/bin/env bash
# miniheap in a user's own fuzzing (issue #14, docs/FUZZING-YOUR-CODE.md).
#
# fuzz/examples/record.c is a parser with a planted one-byte heap overflow
# (input: 'N' and at least 16 more bytes). Built with fuzz/examples/Makefile:
#   AFL++:     afl-clang-fast -fsanitize=fuzzer (AFL++'s persistent driver),
#              run by afl-fuzz with AFL_PRELOAD=libminiheap.so;
#   libFuzzer: clang -fsanitize=fuzzer, libminiheap.a linked in whole.
# Each fuzzes from fuzz/examples/seeds/ (which does not trigger the bug:
# checked first) with a fixed seed and a bound on executions, and must save
# a crash file that replays to "miniheap: ERROR: heap-buffer-overflow", the
# same report as during fuzzing. Both find the bug after a few thousand
# executions (AFL++ -s 1: after 2708), far below the bounds.
set -u
. "$(dirname "$0")/t_lib.sh"
ARCHIVE=$PWD/$BUILD/libminiheap.a
case $BUILD in /*) ARCHIVE=$BUILD/libminiheap.a ;; esac
for t in clang clang++ afl-clang-fast afl-fuzz; do
    command -v $t >/dev/null || { echo "FAIL: $t is not installed (apt-get install clang afl++)"; exit 1; }
done
[ -f "$LIB" ] && [ -f "$ARCHIVE" ] || { echo "FAIL: $LIB or $ARCHIVE missing (make lib)"; exit 1; }

W=$PWD/$BUILD/tests/fuzz-users
case $BUILD in /*) W=$BUILD/tests/fuzz-users ;; esac
rm -rf "$W" && mkdir -p "$W"
REPORT='^miniheap: ERROR: heap-buffer-overflow'
norm() { grep -m1 '^miniheap: ERROR:' "$1" | sed 's/0x[0-9a-f]*/ADDR/g'; }

if ! make --no-print-directory -C fuzz/examples MINIHEAP="$(dirname "$ARCHIVE")" OUT="$W" >"$W/build.log" 2>&1; then
    cat "$W/build.log"
    echo "FAIL: building fuzz/examples"
    exit 1
fi
grep -i 'warning:' "$W/build.log" && fail "warnings building fuzz/examples"

# The seeds alone do not trigger the bug (so the fuzzers must find it).
for s in fuzz/examples/seeds/*; do
    if ! LD_PRELOAD=$LIB "$W/fuzz_record_afl" "$s" >"$W/seed.log" 2>&1 || grep -q '^miniheap: ERROR' "$W/seed.log"; then
        fail "the seed $s already triggers the bug: $(head -3 "$W/seed.log")"
    fi
done

# ---- AFL++, miniheap preloaded ------------------------------------------------
A=$W/afl
mkdir -p "$A"
start=$SECONDS
AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1 \
    AFL_BENCH_UNTIL_CRASH=1 AFL_PRELOAD=$LIB \
    timeout -k 10 150 afl-fuzz -s 1 -E 500000 -V 120 -t 1000 -i fuzz/examples/seeds -o "$A/out" -- "$W/fuzz_record_afl" \
    >"$A/log" 2>&1
rc=$?
st=$A/out/default/fuzzer_stats
if [ ! -f "$st" ]; then
    fail "afl-fuzz did not run (rc $rc; log $A/log)"; tail -20 "$A/log"
else
    crashes=$(awk -F: '/^saved_crashes/ {gsub(/ /, "", $2); print $2}' "$st")
    execs=$(awk -F: '/^execs_done/ {gsub(/ /, "", $2); print $2}' "$st")
    crash=$(ls "$A"/out/default/crashes/id:* 2>/dev/null | head -1)
    if [ "${crashes:-0}" -lt 1 ] || [ -z "$crash" ]; then
        fail "AFL++ found no crash ($execs execs, rc $rc; log $A/log)"
    else
        { LD_PRELOAD=$LIB timeout 60 "$W/fuzz_record_afl" "$crash" >"$A/replay.log" 2>&1; } 2>/dev/null
        rrc=$?
        if [ $rrc -eq 0 ] || ! grep -q "$REPORT" "$A/replay.log"; then
            fail "AFL++: replaying $crash gave rc $rrc without the report (log $A/replay.log)"
        else
            echo "ok AFL++: $crashes crash(es) after $execs execs, $((SECONDS - start))s;" \
                "$(basename "$crash") replays to: $(norm "$A/replay.log")"
        fi
    fi
fi

# ---- libFuzzer, miniheap linked in -------------------------------------------
L=$W/libfuzzer
mkdir -p "$L/corpus" "$L/crashes"
cp fuzz/examples/seeds/* "$L/corpus/"
start=$SECONDS
timeout -k 10 150 "$W/fuzz_record_libfuzzer" -seed=1 -runs=500000 -artifact_prefix="$L/crashes/" "$L/corpus" \
    >"$L/log" 2>&1
rc=$?
crash=$(ls "$L"/crashes/crash-* 2>/dev/null | head -1)
if ! grep -q "$REPORT" "$L/log"; then
    fail "libFuzzer: no heap-buffer-overflow report (rc $rc; log $L/log)"; tail -20 "$L/log"
elif [ -z "$crash" ]; then
    fail "libFuzzer saved no crash file (rc $rc; log $L/log)"
else
    { timeout 60 "$W/fuzz_record_libfuzzer" "$crash" >"$L/replay.log" 2>&1; } 2>/dev/null
    rrc=$?
    a=$(norm "$L/log")
    b=$(norm "$L/replay.log")
    if [ $rrc -eq 0 ] || ! grep -q "$REPORT" "$L/replay.log"; then
        fail "libFuzzer: replaying $crash gave rc $rrc without the report (log $L/replay.log)"
    elif [ "$a" != "$b" ]; then
        fail "libFuzzer: the replay reported '$b', the run '$a'"
    else
        echo "ok libFuzzer: crash after $(grep -oE '^#[0-9]+' "$L/log" | tail -1 | tr -d '#') inputs or fewer," \
            "$((SECONDS - start))s; $(basename "$crash") replays to: $b"
    fi
fi

# The crash inputs are the planted trigger: 'N' and at least 16 more bytes.
for c in "$A"/out/default/crashes/id:* "$L"/crashes/crash-*; do
    [ -f "$c" ] || continue
    first=$(head -c1 "$c")
    size=$(stat -c %s "$c")
    [ "$first" = N ] && [ "$size" -ge 17 ] || fail "$c is not the planted trigger (first byte '$first', $size bytes)"
done
[ $fails -eq 0 ]
