#!/usr/bin/env bash
# Real programs under miniheap: each workload runs twice, once on the system
# allocator (reference) and once with LD_PRELOAD=$MH_LIB, from fresh
# directories; both must exit 0 and print the same stdout.
#
# Programs: python3 (pymalloc and PYTHONMALLOC=malloc), sqlite3, perl, git,
# sort, awk. A program that is not installed gets a SKIP line.
#
# Was miniheap really used? Two independent checks:
#  1. "preload-check": python3 with LD_PRELOAD=$MH_LIB, through ctypes:
#     ctypes.CDLL(None) is the global scope; its `malloc` must be the very
#     function exported by $MH_LIB (and not libc.so.6's), and calling its
#     mh_stats() must report live_blocks > 0 (Python's own allocations).
#  2. Every miniheap run executes with LD_DEBUG=bindings (written to files,
#     not to stdout); the program's own objects (e.g. sqlite3 and
#     libsqlite3.so) must have bound malloc/calloc/realloc/free to $MH_LIB.
#     A program that ignored the preload would fail this.
#
# Environment: MH_LIB (default $BUILD/libminiheap.so, BUILD default build);
# MH_LIB=none runs both sides on the system allocator and skips the checks
# (to test this script). MH_PROG_TIMEOUT per run (default 120 s).
set -u
cd "$(dirname "$0")/.." || exit 2

BUILD=${BUILD:-build}
MH_LIB=${MH_LIB:-$BUILD/libminiheap.so}
TMO=${MH_PROG_TIMEOUT:-120}
if [ "$MH_LIB" != none ]; then
    case $MH_LIB in /*) ;; *) MH_LIB=$PWD/$MH_LIB ;; esac
    if [ ! -f "$MH_LIB" ]; then
        echo "FAIL programs: $MH_LIB does not exist (make lib)"
        exit 1
    fi
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mh_programs.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

export LC_ALL=C TZ=UTC PYTHONHASHSEED=0 PERL_HASH_SEED=0 PERL_PERTURB_KEYS=0
unset PYTHONMALLOC MALLOC_CHECK_ MALLOC_PERTURB_

pass=0 fail=0 skip=0

have() { command -v "$1" >/dev/null 2>&1; }

# run_case NAME BINDING_REGEX COMMAND...
#   BINDING_REGEX (ERE) matches the base names of the program's own objects
#   in LD_DEBUG output ("binding file [dir/]<object> [0] to ...").
run_case() {
    local name=$1 objs=$2
    shift 2
    local ref=$WORK/$name.ref mh=$WORK/$name.mh rc_ref rc_mh
    mkdir -p "$ref" "$mh" "$WORK/$name.ld"
    (cd "$ref" && env -u LD_PRELOAD timeout -k 5 "$TMO" "$@" >"$ref.out" 2>"$ref.err")
    rc_ref=$?
    if [ "$MH_LIB" = none ]; then
        (cd "$mh" && env -u LD_PRELOAD timeout -k 5 "$TMO" "$@" >"$mh.out" 2>"$mh.err")
    else
        (cd "$mh" && env LD_PRELOAD="$MH_LIB" LD_DEBUG=bindings LD_DEBUG_OUTPUT="$WORK/$name.ld/b" \
            timeout -k 5 "$TMO" "$@" >"$mh.out" 2>"$mh.err")
    fi
    rc_mh=$?
    local lines
    lines=$(wc -l <"$ref.out")
    if [ $rc_ref -ne 0 ] || [ "$lines" -lt 5 ]; then
        echo "FAIL $name: the reference run (system allocator) failed: exit $rc_ref, $lines lines of output"
        sed 's/^/      /' "$ref.err" | tail -n 20
        fail=$((fail + 1))
        return
    fi
    if [ $rc_mh -ne 0 ]; then
        local why="exit $rc_mh"
        [ $rc_mh -eq 124 ] && why="timeout after ${TMO}s"
        [ $rc_mh -gt 128 ] && [ $rc_mh -ne 124 ] && why="killed by signal $((rc_mh - 128))"
        echo "FAIL $name: under miniheap: $why"
        sed 's/^/      /' "$mh.err" | tail -n 20
        fail=$((fail + 1))
        return
    fi
    if ! cmp -s "$ref.out" "$mh.out"; then
        echo "FAIL $name: stdout differs from the system allocator's"
        diff "$ref.out" "$mh.out" | head -n 20 | sed 's/^/      /'
        fail=$((fail + 1))
        return
    fi
    if [ "$MH_LIB" != none ]; then
        local esc
        esc=$(printf '%s' "$MH_LIB" | sed 's/[][\.*^$/]/\\&/g')
        if ! grep -qE "binding file ([^ ]*/)?($objs) \[0\] to $esc \[0\]: normal symbol .(malloc|calloc|realloc|free)'" \
            "$WORK/$name.ld"/b.* 2>/dev/null; then
            echo "FAIL $name: no malloc/free of the program ($objs) was bound to $MH_LIB (LD_DEBUG=bindings)"
            fail=$((fail + 1))
            return
        fi
    fi
    echo "PASS $name ($lines lines identical)"
    pass=$((pass + 1))
}

skip_case() {
    echo "SKIP $1: $2"
    skip=$((skip + 1))
}

# ---------------------------------------------------------------- workloads

cat >"$WORK/work.py" <<'EOF'
import collections, hashlib, json, random, re

random.seed(12345)
letters = "abcdefghijklmnopqrstuvwxyz"
words = ["".join(random.choice(letters[:16]) for _ in range(random.randint(1, 9))) for _ in range(80000)]
counts = collections.Counter(words)
print("distinct words", len(counts))
for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:15]:
    print(w, c)

nums = [random.random() for _ in range(100000)]
nums.sort()
print("sorted floats", nums[0], nums[len(nums) // 2], nums[-1], round(sum(nums), 6))

table = {}
for i in range(20000):
    table["k%05d" % i] = {"id": i, "sq": [j * i for j in range(i % 40)], "s": "x" * (i % 300), "f": i / 7}
blob = json.dumps(table, sort_keys=True)
print("json bytes", len(blob), hashlib.sha256(blob.encode()).hexdigest())
back = json.loads(blob)
print("json round trip", back == table)

# churn: build and drop many containers of varied sizes
keep = []
for r in range(40):
    tmp = [bytearray(random.randint(1, 5000)) for _ in range(2000)]
    keep.append(tmp[r])
    del tmp
    s = "".join(str(i) for i in range(r * 500))
    keep.append(s[: r * 10])
print("kept", len(keep), sum(len(k) for k in keep))

text = " ".join(words[:50000])
print("regex", len(re.findall(r"\b(a\w*b)\b", text)), len(re.sub(r"[aeiou]+", "-", text)))
d = {}
for i, w in enumerate(words):
    d.setdefault(w[:3], []).append(i)
print("groups", len(d), max(len(v) for v in d.values()))
big = sorted(d.items(), key=lambda kv: (len(kv[1]), kv[0]))
print("first", big[0][0], "last", big[-1][0])
EOF

cat >"$WORK/work.sql" <<'EOF'
PRAGMA cache_size = -20000;
CREATE TABLE t(id INTEGER PRIMARY KEY, grp INTEGER, name TEXT, val REAL, payload BLOB);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20000)
INSERT INTO t SELECT x, x % 37, printf('name-%05d-%s', x, hex(x * 7919)), (x * 13) % 1000 / 7.0,
                     zeroblob(x % 500) FROM c;
CREATE INDEX t_grp ON t(grp, val);
SELECT count(*), sum(val), total(length(payload)) FROM t;
SELECT grp, count(*), round(sum(val), 3), min(name), max(name) FROM t GROUP BY grp ORDER BY grp;
SELECT name, val FROM t ORDER BY val DESC, id LIMIT 15;
SELECT substr(name, 1, 8) AS p, count(*) FROM t GROUP BY p ORDER BY count(*) DESC, p LIMIT 10;
SELECT a.grp, count(*) FROM t a JOIN t b ON b.id = a.id + 37 AND a.grp = b.grp GROUP BY a.grp ORDER BY a.grp LIMIT 10;
SELECT length(group_concat(name, ',')) FROM (SELECT name FROM t ORDER BY name DESC);
UPDATE t SET name = name || '-updated' WHERE id % 3 = 0;
DELETE FROM t WHERE id % 5 = 0;
VACUUM;
SELECT count(*), count(DISTINCT grp), max(length(name)) FROM t;
PRAGMA integrity_check;
EOF

cat >"$WORK/work.pl" <<'EOF'
use strict; use warnings;
my %h;
for my $i (1 .. 200000) {
    my $k = join '', map { chr(97 + ($i * $_ * 7 + $_) % 26) } 1 .. (1 + $i % 9);
    $h{$k} += $i;
}
print scalar(keys %h), " keys\n";
my @top = (sort { $h{$b} <=> $h{$a} || $a cmp $b } keys %h)[0 .. 19];
print "$_ $h{$_}\n" for @top;
my $text = join ' ', map { "word$_ num" . ($_ * 3) } 1 .. 60000;
my @m = $text =~ /word(\d*7) num(\d+)/g;
print scalar(@m), " matches\n";
(my $t2 = $text) =~ s/(\d+)/<$1>/g;
print length($t2), " chars after substitution\n";
my @sorted = sort { $a <=> $b } map { ($_ * 7919) % 100003 } 1 .. 100000;
print "@sorted[0 .. 9]\n@sorted[-10 .. -1]\n";
my @words = split /\s+/, $text;
my %len; $len{length $_}++ for @words;
print join(',', map { "$_=$len{$_}" } sort { $a <=> $b } keys %len), "\n";
my @aoa = map { [ map { "$_" x 3 } 1 .. ($_ % 50) ] } 1 .. 20000;
my $total = 0; $total += scalar(@$_) for @aoa;
print "aoa $total\n";
EOF

cat >"$WORK/git.sh" <<'EOF'
set -e
export HOME=$PWD/home GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export GIT_AUTHOR_NAME="Mini Heap" GIT_AUTHOR_EMAIL=mh@example.com
export GIT_COMMITTER_NAME="Mini Heap" GIT_COMMITTER_EMAIL=mh@example.com
export GIT_AUTHOR_DATE="2021-03-04T05:06:07 +0000" GIT_COMMITTER_DATE="2021-03-04T05:06:07 +0000"
mkdir -p home
git init -q -b main repo
cd repo
mkdir d0 d1 d2 d3 d4 d5 d6 d7 d8 d9
awk 'BEGIN { for (i = 1; i <= 300; i++) { f = sprintf("d%d/f%03d.txt", i % 10, i);
       for (j = 0; j < i % 60 + 5; j++) printf "file %d line %d %s\n", i, j, substr("abcdefghijklmnopqrstuvwxyz", j % 26 + 1) > f;
       close(f) } }'
git add -A
git commit -q -m "initial import"
for i in $(seq 1 7 300); do f=$(printf 'd%d/f%03d.txt' $((i % 10)) "$i"); echo "changed $i" >>"$f"; done
git rm -q d3/f013.txt d5/f025.txt d7/f297.txt
for i in 1 2 3 4 5; do printf 'new file %d\n' "$i" >"d$i/new$i.txt"; done
git add -A
GIT_AUTHOR_DATE="2021-03-05T05:06:07 +0000" GIT_COMMITTER_DATE="2021-03-05T05:06:07 +0000" git commit -q -m "second"
git log --stat
git diff --stat HEAD~1 HEAD
git diff HEAD~1 HEAD | cksum
git rev-parse HEAD HEAD^{tree}
git blame -s d1/f001.txt | head -n 5
git grep -c "line 7 " | head -n 10
git fsck --full --strict --no-progress
echo "fsck ok"
git gc -q
git fsck --full --strict --no-progress
git count-objects -v | grep -E '^(count|in-pack|packs):'
git log --oneline | wc -l
EOF

cat >"$WORK/sort.sh" <<'EOF'
set -e
awk 'BEGIN { srand(42); for (i = 0; i < 150000; i++)
       printf "%d %s %07d\n", int(rand() * 1000000), substr("abcdefghijklmnopqrstuvwxyz", i % 26 + 1, 1 + i % 5), i }' >data.txt
sort data.txt | cksum
sort -n -k1,1 -k3,3 data.txt | head -n 5
sort -rn -k1,1 -k3,3 data.txt | head -n 5
sort -S 1M --parallel=2 -T . -k2,2 -k1,1n data.txt | cksum
sort -u -k2,2 data.txt | wc -l
sort -R --random-source=data.txt data.txt | cksum
EOF

cat >"$WORK/awk.sh" <<'EOF'
set -e
awk 'BEGIN { srand(7); for (i = 0; i < 200000; i++)
       printf "%d %s %d\n", int(rand() * 100000), substr("abcdefghijklmnopqrstuvwxyz", i % 26 + 1, 1 + i % 7), i }' >data.txt
awk '{ c[$2] += $1; n[$2]++ } END { for (k in c) print k, c[k], n[k] }' data.txt | sort
awk '{ gsub(/[aeiou]/, "<&>", $2); x[NR % 5000] = $0 } END { for (i = 0; i < 5000; i += 250) print x[i] }' data.txt
awk '{ s = s $2 } NR % 1000 == 0 { t += length(s); s = "" } END { print t }' data.txt
awk '{ split($0, f, " "); w[f[2] f[1] % 100]++ } END { m = 0; for (k in w) m++; print m }' data.txt
awk 'BEGIN { for (i = 0; i < 50000; i++) a[i] = sprintf("%0" (i % 200 + 1) "d", i); for (i = 0; i < 50000; i += 2) delete a[i];
             n = 0; for (k in a) n += length(a[k]); print n }'
EOF

# ------------------------------------------------------------------- checks

if [ "$MH_LIB" = none ]; then
    echo "NOTE: MH_LIB=none: both runs use the system allocator; preload checks skipped"
elif have python3; then
    out=$(env LD_PRELOAD="$MH_LIB" timeout 60 python3 - "$MH_LIB" 2>&1 <<'EOF'
import ctypes, sys
lib_path = sys.argv[1]
glob = ctypes.CDLL(None)            # global scope: the preloaded library comes first
mh = ctypes.CDLL(lib_path)          # already loaded: same object
libc = ctypes.CDLL("libc.so.6")
addr = lambda f: ctypes.cast(f, ctypes.c_void_p).value
assert addr(glob.malloc) == addr(mh.malloc), "malloc in the global scope is not libminiheap's"
assert addr(glob.free) == addr(mh.free), "free in the global scope is not libminiheap's"
assert addr(mh.malloc) != addr(libc.malloc), "libminiheap's malloc is libc's?"
class Stats(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "live_blocks", "live_bytes", "small_blocks", "large_blocks", "mapped_bytes", "resident_bytes",
        "metadata_bytes", "miniheaps", "slabs", "cached_bytes")] + \
        [(n, ctypes.c_uint64) for n in ("total_allocs", "total_frees", "purged_bytes", "unmapped_bytes")]
s = Stats()
glob.mh_stats(ctypes.byref(s))
assert s.live_blocks > 0, "mh_stats: live_blocks == 0 inside a running Python"
print("miniheap in use: live_blocks=%d live_bytes=%d total_allocs=%d" % (s.live_blocks, s.live_bytes, s.total_allocs))
EOF
)
    rc=$?
    if [ $rc -eq 0 ]; then
        echo "PASS preload-check ($out)"
        pass=$((pass + 1))
    else
        echo "FAIL preload-check: python3 ctypes check under LD_PRELOAD=$MH_LIB (exit $rc)"
        printf '%s\n' "$out" | tail -n 10 | sed 's/^/      /'
        fail=$((fail + 1))
    fi
else
    skip_case preload-check "python3 not installed (the LD_DEBUG binding checks still run)"
fi

if have python3; then
    run_case python 'python[0-9.]*|libpython[^ /]*' python3 "$WORK/work.py"
    run_case python-malloc 'python[0-9.]*|libpython[^ /]*' env PYTHONMALLOC=malloc python3 "$WORK/work.py"
else
    skip_case python "python3 not installed"
fi
if have sqlite3; then
    run_case sqlite3 'sqlite3|libsqlite3[^ /]*' sqlite3 -batch test.db ".read $WORK/work.sql"
else
    skip_case sqlite3 "sqlite3 not installed"
fi
if have perl; then
    run_case perl 'perl|libperl[^ /]*' perl "$WORK/work.pl"
else
    skip_case perl "perl not installed"
fi
if have git && have awk; then
    run_case git 'git' bash "$WORK/git.sh"
else
    skip_case git "git (or awk) not installed"
fi
if have sort && have awk; then
    run_case sort 'sort' bash "$WORK/sort.sh"
else
    skip_case sort "sort (or awk) not installed"
fi
if have awk; then
    run_case awk '[mg]?awk' bash "$WORK/awk.sh"
else
    skip_case awk "awk not installed"
fi

echo "programs: $pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
