#!/usr/bin/env bash
# Statistics without touching the program (issue #14, docs/STATS.md): at
# exit, on a signal and every N ms; text and JSON lines (each line must
# parse and carry every field of the schema); to stderr, a descriptor or a
# file with %p; a forked child reports at exit but does not wake its
# parent's statistics thread.
set -u
. "$(dirname "$0")/t_lib.sh"
W=$(mktemp -d /tmp/mh-stats.XXXXXX)
trap 'rm -rf "$W"' EXIT
# json_check FILE EVENT COUNT: COUNT lines with that event, every field there
json_check() {
    $PY - "$@" <<'PYEOF'
import json, sys
path, event, want = sys.argv[1], sys.argv[2], int(sys.argv[3])
fields = ["miniheap_stats", "event", "pid", "time_ms", "mode", "live_blocks", "live_bytes", "small_blocks",
          "large_blocks", "mapped_bytes", "resident_bytes", "metadata_bytes", "miniheaps", "slabs", "cached_bytes",
          "total_allocs", "total_frees", "purged_bytes", "unmapped_bytes", "meshes", "meshed_bytes", "idle_drains"]
n = 0
for line in open(path):
    if not line.startswith('{"miniheap_stats"'):
        continue
    o = json.loads(line)
    missing = [f for f in fields if f not in o]
    if missing:
        sys.exit("missing fields %s in %s" % (missing, line))
    if o["event"] == event:
        n += 1
        if o["live_bytes"] < 0 or o["miniheaps"] * 4194304 > o["mapped_bytes"]:
            sys.exit("odd numbers: " + line)
if (n >= want) if want > 1 else (n == want):
    print("%d %s line(s) ok" % (n, event))
else:
    sys.exit("%d %s lines, want %d" % (n, event, want))
PYEOF
}
run() { env LD_PRELOAD="$LIB" MINIHEAP_OPTIONS="$1" "${@:2}"; }

# at exit, text to stderr (not ls, which closes stderr at exit, nor dash, which ends with _exit)
run stats_at_exit=1 $PY -c 'pass' 2>"$W/text"
grep -q '^miniheap stats:' "$W/text" && grep -q 'live blocks: [0-9]' "$W/text" && echo "ok exit text" ||
    fail "exit text: $(head -c 300 "$W/text")"
# at exit, JSON to a file named with the pid
run stats_at_exit=1:stats_json=1:stats_file=$W/s.%p ls / >/dev/null
f=$(ls "$W"/s.* 2>/dev/null | head -1)
[ -n "$f" ] && [[ $f =~ s\.[0-9]+$ ]] && json_check "$f" exit 1 || fail "exit json to stats_file with %p: ${f:-no file}"
# a program that never calls the allocator reports too (miniheap starts when
# it is loaded; it started at the first allocation, and /bin/true said nothing)
run stats_at_exit=1:stats_json=1:stats_file=$W/true.json /bin/true
json_check "$W/true.json" exit 1 && echo "ok exit json from /bin/true" || fail "/bin/true: no exit report"
# to a descriptor
run stats_at_exit=1:stats_json=1:stats_fd=7 $PY -c 'pass' 7>"$W/fd7" 2>/dev/null
json_check "$W/fd7" exit 1 || fail "stats_fd=7"
# on a signal, while the program sleeps
env LD_PRELOAD="$LIB" MINIHEAP_OPTIONS=stats_signal=12:stats_json=1:stats_file=$W/sig sleep 3 &
pid=$!
sleep 1
kill -USR2 $pid
sleep 0.5
kill -USR2 $pid
wait $pid
rc=$?
[ $rc -eq 0 ] || fail "the program ended with $rc after two stats signals"
json_check "$W/sig" signal 2 || fail "stats_signal"
# every 200 ms
run stats_interval_ms=200:stats_json=1:stats_file=$W/int sleep 1.1
json_check "$W/int" interval 2 || fail "stats_interval_ms"
# a forked child: reports at exit; a signal to it does not reach the parent's thread
run stats_at_exit=1:stats_signal=12:stats_json=1:stats_file=$W/fork.%p $PY -c '
import os, signal, time
time.sleep(0.3)
pid = os.fork()
if pid == 0:
    os.kill(os.getpid(), signal.SIGUSR2); time.sleep(0.3); os._exit(0) if False else None
    import sys; sys.exit(0)
os.waitpid(pid, 0)
time.sleep(0.2)
'
n=$(ls "$W"/fork.* 2>/dev/null | wc -l)
[ "$n" -eq 2 ] || fail "fork: $n stats files, want 2 (parent and child at exit)"
if grep -q '"event":"signal"' "$W"/fork.* 2>/dev/null; then fail "fork: the child's signal made a report"; else echo "ok fork: exit reports from parent and child, no signal report"; fi
[ $fails -eq 0 ]
