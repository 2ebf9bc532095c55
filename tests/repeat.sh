#!/usr/bin/env bash
# make test-repeat N=5 [REPEAT_TARGET=test]: run `make REPEAT_TARGET` N times
# in a row, each time in a fresh clone of the committed HEAD (what CI gets),
# and stop at the first failure. Logs and a summary in build/repeat/.
# A test that passes only by luck (timing, a conservative scan) shows here.
set -u
cd "$(dirname "$0")/.." || exit 2
n=${1:-5}
target=${2:-test}
out=$PWD/build/repeat
mkdir -p "$out"
rev=$(git rev-parse --short HEAD)
[ -z "$(git status --porcelain --untracked-files=no)" ] ||
    echo "note: uncommitted changes are not tested (fresh clones of $rev)"
summary=$out/summary.txt
echo "make $target x $n, fresh clones of $rev, $(date -u +%FT%TZ)" >"$summary"
for i in $(seq 1 "$n"); do
    dir=$(mktemp -d /tmp/miniheap-repeat.XXXXXX)
    git clone -q "$PWD" "$dir/src"
    start=$(date +%s)
    (cd "$dir/src" && make "$target") >"$out/run$i.log" 2>&1
    rc=$? secs=$(($(date +%s) - start))
    line="run $i/$n: $([ $rc -eq 0 ] && echo pass || echo "FAIL (rc $rc)") in $((secs / 60)) min $((secs % 60)) s"
    echo "$line" | tee -a "$summary"
    rm -rf "$dir"
    if [ $rc -ne 0 ]; then
        grep -E 'FAIL|Error' "$out/run$i.log" | head -20
        echo "log: $out/run$i.log"
        exit 1
    fi
done
echo "all $n runs passed (summary: $summary)"
