#!/bin/bash -eu
# OSS-Fuzz / ClusterFuzzLite build of miniheap's own harnesses
# (fuzz/README.md): fuzz_ops, fuzz_bugs and fuzz_threads, each linked with
# the allocator (the mh_* API, beside the fuzzer's malloc) and the fuzzing
# engine, into $OUT, with their seed corpora, dictionaries and options.
#
# Uses what the builders set: CC, CXX, CFLAGS, CXXFLAGS (the sanitizer and
# coverage flags come in them), LIB_FUZZING_ENGINE (-fsanitize=fuzzer, or
# AFL++'s driver), OUT, SRC (the source is $SRC/miniheap, or the tree this
# script is in) and WORK (scratch; a temporary directory when unset).
#
# Locally (tests/t_oss_fuzz.sh does this):
#   CC=clang CXX=clang++ \
#   CFLAGS="-O1 -fno-omit-frame-pointer -gline-tables-only -fsanitize=address \
#           -fsanitize-address-use-after-scope -fsanitize=fuzzer-no-link" \
#   CXXFLAGS="$CFLAGS" LIB_FUZZING_ENGINE=-fsanitize=fuzzer OUT=/tmp/out \
#   fuzz/oss-fuzz/build.sh

: "${CC:=clang}" "${CXX:=clang++}" "${CFLAGS:=}" "${CXXFLAGS:=}"
: "${LIB_FUZZING_ENGINE:=-fsanitize=fuzzer}"
: "${OUT:?OUT must name the output directory}"

here=$(cd "$(dirname "$0")" && pwd)
if [ -n "${SRC:-}" ] && [ -f "$SRC/miniheap/include/miniheap.h" ]; then
    root=$SRC/miniheap
elif [ -f "$here/../../include/miniheap.h" ]; then
    root=$(cd "$here/../.." && pwd)
else
    echo "build.sh: the miniheap source is neither in \$SRC/miniheap nor around $here" >&2
    exit 1
fi
cd "$root"

# The allocator's sources: CORE_SRCS of the Makefile (everything but the
# malloc override and the C++ operators, which would replace the fuzzer's
# own malloc).
core_srcs=$(awk '/^CORE_SRCS[ \t]*:?=/ { on = 1; sub(/^[^=]*=/, "") }
                 on { line = $0; sub(/\\$/, "", line); printf "%s ", line; if ($0 !~ /\\$/) exit }' Makefile)
[ -n "${core_srcs// /}" ] || { echo "build.sh: no CORE_SRCS in $root/Makefile" >&2; exit 1; }

mkdir -p "$OUT"
scratch=
if [ -n "${WORK:-}" ]; then
    obj=$WORK/miniheap-obj
else
    scratch=$(mktemp -d)
    obj=$scratch
    trap 'rm -rf "$scratch"' EXIT
fi
rm -rf "$obj" && mkdir -p "$obj"

# -fno-builtin-*: the compiler must not fold the allocator's own calls.
# The functions that walk big tables on every mh_reset() stay out of the
# coverage instrumentation (fuzz/coverage-ignore.txt), as in fuzz/fuzz.mk.
common=(-std=c17 -D_GNU_SOURCE -pthread -fno-omit-frame-pointer -Iinclude -Isrc -Ifuzz)
lib_flags=(-fvisibility=hidden -fno-builtin-malloc -fno-builtin-free -fno-builtin-calloc
           -fno-builtin-realloc -ftls-model=initial-exec)
cov=()
case " $CFLAGS " in
    *fsanitize=fuzzer* | *fsanitize-coverage=*) cov=(-fsanitize-coverage-ignorelist="$root/fuzz/coverage-ignore.txt") ;;
esac
export AFL_LLVM_DENYLIST="$root/fuzz/coverage-ignore.txt"

compile() { # compile SOURCE OBJECT FLAGS...
    local src=$1 o=$2
    shift 2
    # shellcheck disable=SC2086 # CFLAGS is a list of flags
    $CC $CFLAGS "${common[@]}" "$@" "${cov[@]}" -c "$src" -o "$o"
}

jobs=$(nproc 2>/dev/null || echo 2)
pids=()
wait_some() { # keep at most $jobs compilers running; fail on the first error
    while [ ${#pids[@]} -ge "$1" ]; do
        wait "${pids[0]}"
        pids=("${pids[@]:1}")
    done
}
objs=()
for s in $core_srcs; do
    o=$obj/$(basename "$s" .c).o
    compile "$s" "$o" "${lib_flags[@]}" &
    pids+=($!)
    objs+=("$o")
    wait_some "$jobs"
done
for s in fuzz/fz_common.c fuzz/fz_seq.c fuzz/fuzz_ops.c fuzz/fuzz_bugs.c fuzz/fuzz_threads.c; do
    compile "$s" "$obj/$(basename "$s" .c).o" &
    pids+=($!)
    wait_some "$jobs"
done
wait_some 1

for h in ops bugs threads; do
    # shellcheck disable=SC2086 # CXXFLAGS and LIB_FUZZING_ENGINE are lists of flags
    $CXX $CXXFLAGS "$obj/fuzz_$h.o" "$obj/fz_common.o" "$obj/fz_seq.o" "${objs[@]}" \
        $LIB_FUZZING_ENGINE -pthread -o "$OUT/fuzz_$h"
    cp fuzz/miniheap.dict "$OUT/fuzz_$h.dict"
    printf '[libfuzzer]\nmax_len = 4096\n' >"$OUT/fuzz_$h.options"
    # Seed corpus: fuzz/corpus/<h>/ and the inputs of past bugs,
    # fuzz/regressions/<h>/.
    rm -f "$OUT/fuzz_${h}_seed_corpus.zip"
    if command -v python3 >/dev/null 2>&1; then
        python3 - "$OUT/fuzz_${h}_seed_corpus.zip" "fuzz/corpus/$h" "fuzz/regressions/$h" <<'PYEOF'
import os, sys, zipfile
out, dirs = sys.argv[1], sys.argv[2:]
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
    for d in dirs:
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            path = os.path.join(d, name)
            if os.path.isfile(path) and not name.startswith(".") and name != "README.md":
                z.write(path, "regression-" + name if "regressions" in d else name)
PYEOF
    else
        files=()
        for f in "fuzz/corpus/$h"/* "fuzz/regressions/$h"/*; do
            [ -f "$f" ] && [ "$(basename "$f")" != README.md ] && files+=("$f")
        done
        zip -q -j "$OUT/fuzz_${h}_seed_corpus.zip" "${files[@]}"
    fi
done
echo "build.sh: built $(cd "$OUT" && ls fuzz_ops fuzz_bugs fuzz_threads | tr '\n' ' ')in $OUT"
