#!/usr/bin/env bash
# The OSS-Fuzz / ClusterFuzzLite build (issue #14, fuzz/oss-fuzz/build.sh),
# run as the builders run it for libFuzzer + ASan: CC, CXX, CFLAGS,
# CXXFLAGS, LIB_FUZZING_ENGINE, OUT, SRC and WORK set, the source in
# $SRC/miniheap. It must build fuzz_ops, fuzz_bugs and fuzz_threads with
# their seed corpora (zip), dictionaries and options into $OUT; each fuzzer
# then runs 200 inputs from its unzipped seed corpus with -seed=1 and must
# exit 0.
set -u
cd "$(dirname "$0")/.." || exit 2
BUILD=${BUILD:-build}
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
command -v clang >/dev/null && command -v clang++ >/dev/null || { echo "FAIL: clang is not installed"; exit 1; }
command -v python3 >/dev/null || command -v unzip >/dev/null || { echo "FAIL: need python3 or unzip"; exit 1; }

W=$PWD/$BUILD/tests/oss-fuzz
case $BUILD in /*) W=$BUILD/tests/oss-fuzz ;; esac
rm -rf "$W" && mkdir -p "$W/src" "$W/out" "$W/work"
ln -s "$PWD" "$W/src/miniheap"
trap 'rm -f "$W/src/miniheap"' EXIT # no link back to the tree left inside build/
FLAGS="-O1 -fno-omit-frame-pointer -gline-tables-only -fsanitize=address -fsanitize-address-use-after-scope -fsanitize=fuzzer-no-link"

start=$SECONDS
# From another directory: build.sh must find the tree through $SRC.
if ! (cd "$W/work" && env CC=clang CXX=clang++ CFLAGS="$FLAGS" CXXFLAGS="$FLAGS" LIB_FUZZING_ENGINE=-fsanitize=fuzzer \
    OUT="$W/out" SRC="$W/src" WORK="$W/work" bash "$W/src/miniheap/fuzz/oss-fuzz/build.sh") >"$W/build.log" 2>&1; then
    tail -40 "$W/build.log"
    echo "FAIL: fuzz/oss-fuzz/build.sh failed (log $W/build.log)"
    exit 1
fi
echo "ok build.sh: $((SECONDS - start))s"

unzip_to() { # unzip_to ZIP DIR
    mkdir -p "$2"
    if command -v python3 >/dev/null; then
        python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$1" "$2"
    else
        unzip -q "$1" -d "$2"
    fi
}

for h in ops bugs threads; do
    f=$W/out/fuzz_$h
    [ -x "$f" ] || { fail "$f was not built"; continue; }
    for x in "${f}_seed_corpus.zip" "$f.dict" "$f.options"; do
        [ -s "$x" ] || fail "$x missing"
    done
    cmp -s "$f.dict" fuzz/miniheap.dict || fail "$f.dict is not fuzz/miniheap.dict"
    [ -s "${f}_seed_corpus.zip" ] || continue
    c=$W/corpus-$h
    unzip_to "${f}_seed_corpus.zip" "$c"
    nseeds=$(ls "$c" | wc -l)
    nsrc=$(ls "fuzz/corpus/$h" | wc -l)
    [ "$nseeds" -ge "$nsrc" ] || fail "fuzz_${h}_seed_corpus.zip has $nseeds inputs, fuzz/corpus/$h $nsrc"
    mkdir -p "$W/crashes-$h"
    s=$SECONDS
    timeout -k 10 120 "$f" -runs=200 -seed=1 -dict="$f.dict" -max_len=4096 -artifact_prefix="$W/crashes-$h/" \
        "$c" >"$W/run-$h.log" 2>&1
    rc=$?
    if [ $rc -ne 0 ]; then
        fail "fuzz_$h exited with $rc (log $W/run-$h.log)"
        grep -m1 -A20 -E 'ERROR|FAILED|runtime error' "$W/run-$h.log"
    else
        echo "ok fuzz_$h: $nseeds seeds, $(grep -m1 -oE 'Done [0-9]+ runs' "$W/run-$h.log"), $((SECONDS - s))s"
    fi
done
[ $fails -eq 0 ]
