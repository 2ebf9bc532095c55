#!/usr/bin/env bash
# Run the fuzz harnesses; the make targets in fuzz/fuzz.mk call this.
#
#   fuzz/run.sh replay                    corpus + regressions through every binary
#   fuzz/run.sh smoke                     replay, then FUZZ_SECONDS per harness per engine
#   fuzz/run.sh libfuzzer HARNESS [SECS]  one bounded libFuzzer run (work dir kept)
#   fuzz/run.sh afl HARNESS [SECS]        one bounded AFL++ run (work dir kept)
#   fuzz/run.sh campaign HARNESS ENGINE   a long run (FUZZ_SECONDS) into $FUZZ_OUT/campaign
#   fuzz/run.sh planted                   libFuzzer must find each planted bug
#   fuzz/run.sh repro HARNESS FILE        run one input (libFuzzer build, symbolised)
#   fuzz/run.sh minimize HARNESS FILE     minimise a crashing input (libFuzzer)
#   fuzz/run.sh open                      which reproducers in fuzz/regressions/open/ still fail
#   fuzz/run.sh coverage                  source coverage of src/ reached by the corpora
#
# Environment: FUZZ_OUT (build/fuzz), FUZZ_SECONDS (60), FUZZ_HARNESSES,
# FUZZ_JOBS (libFuzzer -jobs for campaigns, 1), FUZZ_KEEP=1 keeps smoke work dirs,
# FUZZ_KEEP_GOING=1 (libFuzzer campaigns go on after a crash).
# Exit status: 0 when nothing crashed (planted: when every planted bug was found).
set -u
cd "$(dirname "$0")/.." || exit 2

FUZZ_OUT=${FUZZ_OUT:-build/fuzz}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
PLANTED_SECONDS=${PLANTED_SECONDS:-900}
FUZZ_HARNESSES=${FUZZ_HARNESSES:-ops bugs threads}
LF=$FUZZ_OUT/libfuzzer
AFL=$FUZZ_OUT/afl
WORK=$FUZZ_OUT/work
DICT=fuzz/miniheap.dict
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=0:symbolize=1}
# FUZZ_STRICT=1: no workarounds for open allocator bugs (fuzz/fz.h).
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# AFL++ as root, without a TTY, on a shared machine.
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 AFL_NO_AFFINITY=1 \
    AFL_FAST_CAL=1 AFL_SKIP_CRASHES=1
# afl-fuzz insists on these (no symbolising; a sanitizer error must abort).
AFL_SAN_ENV=(ASAN_OPTIONS=abort_on_error=1:detect_leaks=0:symbolize=0
    UBSAN_OPTIONS=halt_on_error=1:abort_on_error=1:symbolize=0:print_stacktrace=0)
LF_FLAGS=(-rss_limit_mb=4096 -timeout=20 -max_len=4096 -print_final_stats=1)

failures=0
AFL_EXTRA=()
note() { printf 'fuzz: %s\n' "$*" >&2; }
fail() { note "FAIL: $*"; failures=$((failures + 1)); }

corpus_of() { # seeds of a harness: its own corpus (bugs also read ops)
    echo "fuzz/corpus/$1"
}

# 1. Replay the seed corpus and fuzz/regressions through each binary.
replay() {
    for h in $FUZZ_HARNESSES; do
        local inputs=()
        for f in "$(corpus_of "$h")"/* fuzz/regressions/"$h"/*; do [ -f "$f" ] && inputs+=("$f"); done
        [ ${#inputs[@]} -eq 0 ] && continue
        if "$LF/fuzz_$h" -runs=0 "${LF_FLAGS[@]}" "${inputs[@]}" >"$WORK/replay-lf-$h.log" 2>&1; then
            note "replay libfuzzer/$h: ${#inputs[@]} inputs ok"
        else
            fail "replay libfuzzer/$h (log: $WORK/replay-lf-$h.log)"; tail -30 "$WORK/replay-lf-$h.log" >&2
        fi
        if [ -x "$AFL/fuzz_$h" ]; then
            if "$AFL/fuzz_$h" "${inputs[@]}" >"$WORK/replay-afl-$h.log" 2>&1; then
                note "replay afl/$h: ${#inputs[@]} inputs ok"
            else
                fail "replay afl/$h (log: $WORK/replay-afl-$h.log)"; tail -30 "$WORK/replay-afl-$h.log" >&2
            fi
        fi
    done
    # Programs reproducing allocator bugs that were fixed: each must exit 0.
    for c in fuzz/regressions/fixed/*.c; do
        b=$FUZZ_OUT/fixed/$(basename "$c" .c)
        [ -x "$b" ] || continue
        if out=$(timeout 60 "$b" 2>&1); then
            note "regression $(basename "$b"): ok"
        else
            fail "regression $(basename "$b") is back: $(echo "$out" | tr '\n' ' ' | cut -c1-300)"
        fi
    done
}

# 2. libFuzzer for SECS seconds; new inputs go to a work corpus, never into fuzz/.
run_libfuzzer() { # harness secs workdir [extra flags]
    local h=$1 secs=$2 dir=$3; shift 3
    rm -rf "$dir" && mkdir -p "$dir/corpus" "$dir/crashes"
    local start=$SECONDS
    nice "$LF/fuzz_$h" "${LF_FLAGS[@]}" -max_total_time="$secs" -dict="$DICT" \
        -artifact_prefix="$dir/crashes/" "$@" "$dir/corpus" "$(corpus_of "$h")" >"$dir/log" 2>&1
    local rc=$?
    local stats
    stats=$(grep -E '^stat::(number_of_executed_units|average_exec_per_sec)' "$dir/log" | awk '{print $2}' | xargs)
    local cov
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$dir/log" | tail -1)
    if [ $rc -ne 0 ] || ls "$dir/crashes"/* >/dev/null 2>&1; then
        fail "libfuzzer/$h crashed (rc $rc); log: $dir/log, inputs: $dir/crashes/"
        grep -m1 -B2 -A25 -E 'fuzz: FAILED|ERROR: |runtime error' "$dir/log" >&2
        return 1
    fi
    note "libfuzzer/$h: $((SECONDS - start))s (cap ${secs}s), execs and exec/s: ${stats:-?}, ${cov:-}"
}

# 3. AFL++ for SECS seconds (-V); afl-fuzz exits 0 even with crashes: read fuzzer_stats.
run_afl() { # harness secs workdir
    local h=$1 secs=$2 dir=$3
    rm -rf "$dir" && mkdir -p "$dir"
    local in=$(corpus_of "$h") start=$SECONDS
    env "${AFL_SAN_ENV[@]}" FUZZ_FAIL_LOG="$PWD/$dir/failures.log" nice afl-fuzz -i "$in" -o "$dir/out" -V "$secs" \
        "${AFL_EXTRA[@]}" -x "$DICT" -m none -t 5000 -- "$AFL/fuzz_$h" \
        >"$dir/log" 2>&1
    local rc=$? st="$dir/out/default/fuzzer_stats"
    if [ ! -f "$st" ]; then
        fail "afl/$h did not run (rc $rc); log: $dir/log"; tail -20 "$dir/log" >&2
        return 1
    fi
    local crashes execs eps hangs edges
    crashes=$(awk -F: '/^saved_crashes/ {gsub(/ /,"",$2); print $2}' "$st")
    hangs=$(awk -F: '/^saved_hangs/ {gsub(/ /,"",$2); print $2}' "$st")
    execs=$(awk -F: '/^execs_done/ {gsub(/ /,"",$2); print $2}' "$st")
    eps=$(awk -F: '/^execs_per_sec/ {gsub(/ /,"",$2); print $2}' "$st")
    edges=$(awk -F: '/^bitmap_cvg/ {gsub(/ /,"",$2); print $2}' "$st")
    if [ "${crashes:-1}" != 0 ] || [ $rc -ne 0 ]; then
        fail "afl/$h: $crashes saved crashes (rc $rc) in $dir/out/default/crashes/"
        [ -s "$dir/failures.log" ] && head -5 "$dir/failures.log" >&2
        for c in "$dir"/out/default/crashes/id*; do
            [ -f "$c" ] || continue
            note "reproduce: $LF/fuzz_$h $c"
            "$LF/fuzz_$h" "$c" 2>&1 | grep -m1 -A20 -E 'fuzz: FAILED|ERROR: |runtime error' >&2
            break
        done
        return 1
    fi
    [ "${hangs:-0}" != 0 ] && note "afl/$h: warning: $hangs saved hangs (timeouts over 5 s) in $dir/out/default/hangs/"
    note "afl/$h: $((SECONDS - start))s (cap ${secs}s), $execs execs, $eps exec/s, bitmap $edges"
}

cmd=${1:-smoke}
mkdir -p "$WORK"
case $cmd in
replay)
    replay ;;
smoke)
    # A fixed seed and a fixed number of inputs, so that a smoke run does
    # the same work on a fast or a loaded machine and a CI result repeats
    # (FUZZ_SECONDS only caps the time, for a machine far slower than ours).
    # Random exploration is what fuzz-campaign is for.
    replay
    [ $failures -eq 0 ] || { note "replay failed: not fuzzing"; exit 1; }
    for h in $FUZZ_HARNESSES; do
        run_libfuzzer "$h" "$FUZZ_SECONDS" "$WORK/lf-$h" -seed=1 -runs="${FUZZ_SMOKE_RUNS:-3000}"
    done
    AFL_EXTRA=(-s 1 -E "${FUZZ_SMOKE_EXECS:-12000}")
    for h in $FUZZ_HARNESSES; do run_afl "$h" "$FUZZ_SECONDS" "$WORK/afl-$h"; done
    AFL_EXTRA=()
    ;;
libfuzzer)
    run_libfuzzer "$2" "${3:-$FUZZ_SECONDS}" "$WORK/lf-$2" ;;
afl)
    run_afl "$2" "${3:-$FUZZ_SECONDS}" "$WORK/afl-$2" ;;
campaign)
    h=$2 engine=${3:-libfuzzer} dir=$FUZZ_OUT/campaign/$engine-$2
    mkdir -p "$dir/corpus" "$dir/crashes"
    if [ "$engine" = afl ]; then
        # resumes (-i -) when the output directory exists
        in=$(corpus_of "$h"); [ -d "$dir/out/default/queue" ] && in=-
        env "${AFL_SAN_ENV[@]}" nice afl-fuzz -i "$in" -o "$dir/out" -V "$FUZZ_SECONDS" -x "$DICT" -m none -t 5000 -- "$AFL/fuzz_$h"
        grep -E 'execs_done|execs_per_sec|saved_crashes|saved_hangs|bitmap_cvg|corpus_count' "$dir/out/default/fuzzer_stats"
    else
        # FUZZ_KEEP_GOING=1: fork mode, which saves each crash and goes on
        # (as AFL++ does) instead of stopping at the first one.
        if [ "${FUZZ_KEEP_GOING:-0}" != 0 ]; then par=(-fork="${FUZZ_JOBS:-1}" -ignore_crashes=1)
        else par=(-jobs="${FUZZ_JOBS:-1}" -workers="${FUZZ_JOBS:-1}"); fi
        # -jobs writes each job's log (fuzz-N.log) into the working
        # directory: the campaign's own, not the checkout.
        lf=$(realpath -m "$LF/fuzz_$h") dict=$(realpath -m "$DICT") seeds=$(realpath -m "$(corpus_of "$h")") d=$(realpath -m "$dir")
        (cd "$d" && nice "$lf" "${LF_FLAGS[@]}" -max_total_time="$FUZZ_SECONDS" -dict="$dict" \
            "${par[@]}" -artifact_prefix="$d/crashes/" "$d/corpus" "$seeds")
    fi
    exit $? ;;
planted)
    for n in ${PLANT_IDS:-1 2}; do
        dir=$WORK/planted$n
        rm -rf "$dir" && mkdir -p "$dir/corpus" "$dir/crashes"
        start=$(date +%s)
        # From an empty corpus, a fixed seed and a fixed number of inputs:
        # the fuzzer has to find it, and finds it after the same inputs on
        # a fast or a loaded machine (the time is only a cap).
        nice "$FUZZ_OUT/planted$n/fuzz_ops" "${LF_FLAGS[@]}" -seed=1 -runs="${FUZZ_PLANTED_RUNS:-300000}" \
            -max_total_time="$PLANTED_SECONDS" \
            -dict="$DICT" -artifact_prefix="$dir/crashes/" "$dir/corpus" >"$dir/log" 2>&1
        rc=$? took=$(($(date +%s) - start))
        execs=$(grep -oE '^#[0-9]+' "$dir/log" | tail -1)
        if [ $rc -ne 0 ] && ls "$dir/crashes"/crash-* >/dev/null 2>&1 &&
            grep -qE 'fuzz: FAILED|ERROR: AddressSanitizer|runtime error|deadly signal' "$dir/log"; then
            note "planted bug $n found in ${took}s (after ${execs#\#} inputs): $(grep -m1 -E 'fuzz: FAILED|ERROR: AddressSanitizer|runtime error' "$dir/log")"
        else
            fail "planted bug $n NOT found in ${FUZZ_PLANTED_RUNS:-300000} inputs (rc $rc, ${took}s; log: $dir/log)"
        fi
    done ;;
coverage)
    # Replay every input of each harness in one process of its coverage
    # build, merge the profiles, report on src/ (informational: exits 0
    # unless a replay crashes).
    COV_DIR=${COV_DIR:-$FUZZ_OUT/coverage}
    profiles=()
    for h in $FUZZ_HARNESSES; do
        mapfile -t inputs < <(find "$(corpus_of "$h")" fuzz/regressions/"$h" \
            "$FUZZ_OUT"/campaign/libfuzzer-"$h"/corpus "$FUZZ_OUT"/campaign/afl-"$h"/out/default/queue \
            -maxdepth 1 -type f ! -name '.*' 2>/dev/null | sort)
        rm -f "$COV_DIR/$h.profraw"
        if ! LLVM_PROFILE_FILE="$COV_DIR/$h.profraw" "$COV_DIR/fuzz_$h" "${inputs[@]}" >"$COV_DIR/$h.log" 2>&1; then
            fail "coverage replay of $h crashed (log: $COV_DIR/$h.log)"
        fi
        note "coverage: $h: ${#inputs[@]} inputs replayed"
        profiles+=("$COV_DIR/$h.profraw")
    done
    "${LLVM_PROFDATA:-llvm-profdata}" merge -sparse "${profiles[@]}" -o "$COV_DIR/all.profdata" || exit 2
    objs=()
    for h in $FUZZ_HARNESSES; do objs+=(-object "$COV_DIR/fuzz_$h"); done
    "${LLVM_COV:-llvm-cov}" report "${objs[@]:1}" -instr-profile="$COV_DIR/all.profdata" \
        -ignore-filename-regex='(fuzz|include)/' | tee "$COV_DIR/report.txt"
    note "coverage of src/ written to $COV_DIR/report.txt; per line: ${LLVM_COV:-llvm-cov} show $COV_DIR/fuzz_ops ${objs[*]:2} -instr-profile=$COV_DIR/all.profdata" ;;
open)
    # Informational: exits 0; says for each open-bug reproducer whether it still fails.
    for h in $FUZZ_HARNESSES; do
        for f in fuzz/regressions/open/"$h"/*; do
            [ -f "$f" ] || continue
            if FUZZ_STRICT=1 FUZZ_BUGS=all \
                "$LF/fuzz_$h" "${LF_FLAGS[@]}" "$f" >"$WORK/open.log" 2>&1; then
                note "FIXED (move it to fuzz/regressions/$h/): $f"
            else
                note "still open: $f: $(grep -m1 -E 'fuzz: FAILED|ERROR: AddressSanitizer|runtime error' "$WORK/open.log")"
            fi
        done
    done
    for c in fuzz/regressions/open/*.c; do
        b=$FUZZ_OUT/open/$(basename "$c" .c)
        [ -x "$b" ] || continue
        if out=$("$b" 2>&1); then note "FIXED: $b: $out"; else note "still open: $b: $(echo "$out" | tr '\n' ' ')"; fi
    done
    exit 0 ;;
repro)
    "$LF/fuzz_$2" "${LF_FLAGS[@]}" "$3"; exit $? ;;
minimize)
    out=${4:-$3.min}
    "$LF/fuzz_$2" -minimize_crash=1 -runs=20000 -exact_artifact_path="$out" "$3"
    note "minimised input: $out"; exit 0 ;;
*)
    sed -n '2,17p' "$0"; exit 2 ;;
esac

if [ $failures -ne 0 ]; then
    note "$failures failure(s)"
    exit 1
fi
note "all ok"
