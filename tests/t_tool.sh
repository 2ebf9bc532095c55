#!/usr/bin/env bash
# The miniheap command (issue #14, tools/miniheap, docs/TOOL.md): every
# subcommand on real programs (python3, sort), the help of each, and bad
# command lines (an error message and a non-zero status).
set -u
. "$(dirname "$0")/t_lib.sh"
MH=$PWD/tools/miniheap
W=$(mktemp -d /tmp/mh-tool.XXXXXX)
trap 'rm -rf "$W"' EXIT
ok() { echo "ok $*"; }
export MINIHEAP_LIB=$LIB
unset MINIHEAP_OPTIONS

[ -x "$MH" ] || { echo "FAIL: $MH is not executable"; exit 1; }
bash -n "$MH" || { echo "FAIL: $MH has syntax errors"; exit 1; }

# ---- help -------------------------------------------------------------------------
"$MH" --help >"$W/h" 2>&1 && grep -q '^Usage: miniheap SUBCOMMAND' "$W/h" && grep -q 'timeline' "$W/h" &&
    ok "--help" || fail "--help: $(head -3 "$W/h")"
"$MH" --version | grep -qE '^miniheap [0-9]+\.[0-9]+\.[0-9]+$' && ok "--version" || fail "--version"
for c in run valgrind stats compare timeline; do
    if "$MH" $c --help >"$W/h" 2>&1 && grep -q "^Usage: miniheap $c " "$W/h" &&
        "$MH" help $c | cmp -s - "$W/h"; then
        ok "$c --help"
    else
        fail "$c --help (or help $c): $(head -3 "$W/h")"
    fi
done

# ---- bad command lines: a message and a non-zero status ------------------------------
bad() { # bad STATUS WHAT-THE-MESSAGE-SAYS ARGS...
    local want=$1 msg=$2
    shift 2
    "$MH" "$@" </dev/null >"$W/out" 2>"$W/err"
    local rc=$?
    if [ $rc -ne "$want" ] || ! grep -q "^miniheap: error: .*$msg" "$W/err"; then
        fail "miniheap $*: status $rc (want $want), stderr: $(head -2 "$W/err")"
    else
        ok "miniheap $* -> $rc: $(head -1 "$W/err")"
    fi
}
bad 2 'unknown subcommand' frobnicate -- true
bad 2 'unknown option' --frob
bad 2 "missing '--'" run $PY -c pass
bad 2 "missing '--'" stats
bad 2 'missing the program' run --
bad 2 'missing the program' timeline --
bad 2 'bad mode' run --mode turbo -- true
bad 2 'bad mode' stats --mode= -- true
bad 2 'needs a value' run --mode
bad 2 'unknown option' run --frob -- true
bad 2 'unknown option' stats --jsn -- true
bad 2 'bad --options pair' run --options 'mode' -- true
bad 2 'positive integer' compare --runs 0 -- true
bad 2 'positive integer' timeline --interval fast -- true
bad 2 'is not for it' compare --mode fast -- true
bad 127 'program not found' run -- /nonexistent/program
bad 127 'program not found' stats -- no-such-program-xyz
bad 2 'library not found' run --lib /nonexistent/libminiheap.so -- true
MINIHEAP_LIB=none bad 2 'only meaningful' run -- true
"$MH" >/dev/null 2>&1 && fail "no arguments: status 0" || ok "no arguments: non-zero"

# ---- run ------------------------------------------------------------------------------
# miniheap is the program's malloc, MINIHEAP_OPTIONS and LD_PRELOAD are combined
# as documented, and the exit status is passed through.
MINIHEAP_OPTIONS=seed=5 LD_PRELOAD='' "$MH" run --mode debug --options 'decay_ms=100' -- $PY -c '
import ctypes, os, sys
c = ctypes.CDLL(None)
print(hasattr(c, "mh_stats"), os.environ["MINIHEAP_OPTIONS"], os.environ["LD_PRELOAD"])
sys.exit(7)' >"$W/run" 2>&1
rc=$?
if [ $rc -eq 7 ] && grep -qx "True seed=5:mode=debug:decay_ms=100 $LIB" "$W/run"; then
    ok "run: on miniheap, options combined, exit status 7 passed through"
else
    fail "run: rc $rc, output: $(cat "$W/run")"
fi
# The mode is the one asked for: a 1-byte overflow stops the program in hardened mode, not in fast.
OVERFLOW='
import ctypes
c = ctypes.CDLL(None)
c.malloc.restype = ctypes.c_void_p
c.free.argtypes = [ctypes.c_void_p]
p = c.malloc(24)
ctypes.memset(p + 24, 0x41, 1)
c.free(p)
print("ran on")'
{ "$MH" run --mode hardened -- $PY -c "$OVERFLOW" >"$W/ovf" 2>&1; } 2>/dev/null
rc=$?
[ $rc -eq 134 ] && grep -q '^miniheap: ERROR: heap-buffer-overflow' "$W/ovf" &&
    ok "run --mode hardened: the overflow is reported, status 134" || fail "run --mode hardened: rc $rc: $(head -3 "$W/ovf")"
"$MH" run --mode fast -- $PY -c "$OVERFLOW" >"$W/ovf" 2>&1
rc=$?
[ $rc -eq 0 ] && grep -qx 'ran on' "$W/ovf" && ok "run --mode fast: no check, status 0" || fail "run --mode fast: rc $rc: $(head -3 "$W/ovf")"
# Standard input reaches the program; --lib and the default library work too.
out=$(printf 'pear\napple\nfig\n' | "$MH" run --lib "$LIB" -- sort | tr '\n' ' ')
[ "$out" = "apple fig pear " ] && ok "run --lib: sort got its input" || fail "run --lib -- sort: '$out'"
if [ "$(readlink -f "$BUILD/libminiheap.so")" = "$(readlink -f "$LIB")" ]; then
    out=$(env -u MINIHEAP_LIB "$MH" run -- $PY -c 'import os; print(os.environ["LD_PRELOAD"])')
    [ -n "$out" ] && [ "$(readlink -f "$out")" = "$(readlink -f "$LIB")" ] && ok "run: the library next to the tool by default" || fail "default library: '$out'"
fi

# ---- stats ----------------------------------------------------------------------------
# Output to a file shared with what comes after (a script's log): the
# statistics must go through the same file offset, not over later lines.
{
    printf '3\n1\n2\n' | "$MH" stats -- sort
    rc=$?
    echo "after the tool"
} >"$W/st" 2>"$W/st.err"
if [ $rc -eq 0 ] && [ "$(head -3 "$W/st" | tr '\n' ' ')" = "1 2 3 " ] && sed -n 4p "$W/st" | grep -qx 'miniheap stats:' &&
    grep -qE '^  live blocks: [0-9]+$' "$W/st" && grep -qE '^  allocations: [1-9][0-9]*$' "$W/st" &&
    [ "$(tail -1 "$W/st")" = "after the tool" ] && [ "$(grep -c . "$W/st")" -gt 6 ]; then
    ok "stats -- sort: the program's output, then its statistics, then what follows in the same file"
else
    fail "stats -- sort: rc $rc: $(cat "$W/st" "$W/st.err" | head -8)"
fi
# JSON of every process: python3 starting two python3 children (each notes
# its pid); the exit status passed through. Other processes may report too
# (a symbolizer started at exit, in debug mode): only these three are checked.
"$MH" stats --json --mode debug -- $PY -c '
import os, subprocess, sys
open("'$W/pids'", "a").write("%d\n" % os.getpid())
for i in range(2):
    subprocess.run(["'$PY'", "-c", "import os; open(\"'$W/pids'\", \"a\").write(\"%d\\n\" % os.getpid()); x = [bytes(100) for i in range(1000)]"], check=True)
sys.exit(3)' >"$W/json" 2>"$W/json.err"
rc=$?
if [ $rc -ne 3 ]; then
    fail "stats --json: rc $rc (want 3): $(head -3 "$W/json.err")"
elif $PY - "$W/json" "$W/pids" <<'PYEOF'; then
import json, sys
fields = ["miniheap_stats", "event", "pid", "time_ms", "mode", "live_blocks", "live_bytes", "small_blocks",
          "large_blocks", "mapped_bytes", "resident_bytes", "metadata_bytes", "miniheaps", "slabs", "cached_bytes",
          "total_allocs", "total_frees", "purged_bytes", "unmapped_bytes"]
objs = [json.loads(line) for line in open(sys.argv[1])]
pids = [int(x) for x in open(sys.argv[2]).read().split()]
assert len(pids) == 3, pids
for o in objs:
    missing = [f for f in fields if f not in o]
    assert not missing, "missing %s" % missing
mine = [o for o in objs if o["pid"] in pids]
assert sorted(o["pid"] for o in mine) == sorted(pids), "want one line for each of %s, got %s" % (pids, [o["pid"] for o in objs])
for o in mine:
    assert o["event"] == "exit" and o["mode"] == "debug" and o["total_allocs"] > 0, o
print("ok stats --json: %d JSON lines, the program and its two children: %s" % (len(objs),
      ", ".join("pid %d %d allocations" % (o["pid"], o["total_allocs"]) for o in mine)))
PYEOF
    :
else
    fail "stats --json: $(head -c 600 "$W/json")"
fi
# -o FILE; a program killed by a signal prints no statistics, and says so.
"$MH" stats -o "$W/st.txt" -- $PY -c 'print("hello")' >"$W/st.out" 2>&1
grep -qx hello "$W/st.out" && grep -qx 'miniheap stats:' "$W/st.txt" && ! grep -q 'miniheap stats' "$W/st.out" &&
    ok "stats -o FILE" || fail "stats -o: $(cat "$W/st.out")"
{ "$MH" stats -- $PY -c 'import os; os.kill(os.getpid(), 9)' >"$W/k" 2>"$W/k.err"; } 2>/dev/null
rc=$?
[ $rc -eq 137 ] && grep -q 'no statistics' "$W/k.err" && [ ! -s "$W/k" ] &&
    ok "stats: killed by SIGKILL -> 137, 'no statistics'" || fail "stats, killed: rc $rc: $(cat "$W/k.err")"

# ---- valgrind ---------------------------------------------------------------------------
if ! command -v valgrind >/dev/null; then
    fail "valgrind is not installed (apt-get install valgrind)"
else
    "$MH" valgrind -q --error-exitcode=9 -- $PY -c '
import ctypes; print("on miniheap:", hasattr(ctypes.CDLL(None), "mh_stats"))' >"$W/vg" 2>"$W/vg.err"
    rc=$?
    [ $rc -eq 0 ] && grep -qx 'on miniheap: True' "$W/vg" && ok "valgrind -- python3: rc 0, miniheap served it" ||
        fail "valgrind: rc $rc: $(head -5 "$W/vg" "$W/vg.err")"
    # memcheck sees a use after free of a miniheap block, and --error-exitcode reaches valgrind
    "$MH" valgrind -q --error-exitcode=9 -- $PY -c '
import ctypes
c = ctypes.CDLL(None)
c.malloc.restype = ctypes.c_void_p
c.free.argtypes = [ctypes.c_void_p]
p = c.malloc(100)
c.free(p)
ctypes.string_at(p + 50, 1)' >"$W/vg" 2>"$W/vg.err"
    rc=$?
    [ $rc -eq 9 ] && grep -q 'Invalid read of size 1' "$W/vg.err" && grep -q "free'd" "$W/vg.err" &&
        ok "valgrind: memcheck reports a use after free, status 9" || fail "valgrind, use after free: rc $rc: $(grep -m3 '==' "$W/vg.err")"
fi

# ---- compare ------------------------------------------------------------------------------
"$MH" compare --runs 2 -- $PY -c 'd = {i: str(i) * 10 for i in range(200000)}' >"$W/cmp" 2>"$W/cmp.err"
rc=$?
if [ $rc -eq 0 ] && $PY - "$W/cmp" <<'PYEOF'; then
import re, sys
text = open(sys.argv[1]).read()
rows = {}
for line in text.splitlines():
    m = re.match(r"^(glibc|miniheap fast|miniheap hardened|miniheap debug)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)$", line)
    if m:
        rows[m.group(1)] = m.groups()[1:]
assert len(rows) == 4, "rows: %s\n%s" % (sorted(rows), text)
g = rows["glibc"]
assert g[1] == "1.00" and g[3] == "1.00", g
for name, r in rows.items():
    wall, rw, peak, rp, last, rl, ex = r
    assert float(wall) > 0 and float(peak) > 1 and float(rp) > 0, (name, r)
    assert ex == "0", (name, r)
    assert last == "n/a" or float(last) > 0, (name, r)
print("ok compare: glibc and three modes; peak RSS x glibc: " +
      ", ".join("%s %s" % (n.replace("miniheap ", ""), rows[n][3]) for n in rows))
PYEOF
    :
else
    fail "compare: rc $rc: $(cat "$W/cmp" "$W/cmp.err" | head -12)"
fi
grep -q 'x glibc' "$W/cmp" && grep -q 'peak RSS' "$W/cmp" && grep -q 'last RSS' "$W/cmp" || fail "compare: header missing"

# ---- timeline -----------------------------------------------------------------------------
PROG='
import time
a = [bytearray(1000) for i in range(30000)]
time.sleep(0.4)
del a
time.sleep(0.4)
print("done")'
HEADER=time_ms,rss_bytes,live_bytes,resident_bytes,mapped_bytes,purged_bytes,unmapped_bytes,metadata_bytes,cached_bytes,live_blocks,event
check_csv() { # check_csv FILE: header, >= 2 rows of numbers, times increasing
    $PY - "$1" "$HEADER" <<'PYEOF'
import sys
lines = open(sys.argv[1]).read().splitlines()
assert lines[0] == sys.argv[2], "header: " + lines[0]
rows = [l.split(",") for l in lines[1:]]
assert len(rows) >= 2, "%d rows" % len(rows)
for r in rows:
    assert len(r) == 11 and all(x.isdigit() for x in r[:10]) and r[10] in ("interval", "exit"), r
    assert int(r[1]) > 0 and int(r[4]) > 0, r
t = [int(r[0]) for r in rows]
assert t == sorted(t), t
assert max(int(r[2]) for r in rows) > 30000 * 1000, "live_bytes never saw the 30 MB"
print("%d rows, %s" % (len(rows), ", ".join(sorted(set(r[10] for r in rows)))))
PYEOF
}
(cd "$W" && "$MH" timeline --interval 100 --out tl -- $PY -c "$PROG") >"$W/tl.out" 2>"$W/tl.err"
rc=$?
if [ $rc -ne 0 ] || ! grep -qx 'done' "$W/tl.out"; then
    fail "timeline: rc $rc: $(cat "$W/tl.out" "$W/tl.err" | head -5)"
elif ! res=$(check_csv "$W/tl.csv" 2>&1); then
    fail "timeline CSV: $res"
else
    ok "timeline: tl.csv $res"
    if command -v gnuplot >/dev/null; then
        [ "$(head -c 8 "$W/tl.png" 2>/dev/null | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] &&
            ok "timeline: tl.png is a PNG ($(stat -c %s "$W/tl.png") bytes)" || fail "timeline: no PNG: $(cat "$W/tl.err")"
    else
        echo "note: gnuplot is not installed: PNG not checked"
    fi
fi
# Without gnuplot: says so, still writes the CSV; the exit status is the program's.
(cd "$W" && GNUPLOT=/nonexistent/gnuplot "$MH" timeline --interval 50 --out nognu -- $PY -c "$PROG
import sys; sys.exit(4)") >"$W/tl2.out" 2>"$W/tl2.err"
rc=$?
if [ $rc -eq 4 ] && grep -q 'gnuplot is not installed' "$W/tl2.err" && [ ! -e "$W/nognu.png" ] &&
    res=$(check_csv "$W/nognu.csv" 2>&1); then
    ok "timeline without gnuplot: says so, nognu.csv $res, status 4"
else
    fail "timeline without gnuplot: rc $rc: $(cat "$W/tl2.err") $res"
fi

[ $fails -eq 0 ] && echo "all miniheap tool checks passed"
[ $fails -eq 0 ]
