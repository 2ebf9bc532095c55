#!/usr/bin/env bash
# make install / make uninstall (issue #14, tools/tools.mk), into a
# temporary prefix:
# - the files, the soname links and the soname of the library;
# - pkg-config: a C program built with `pkg-config --cflags --libs
#   miniheap` runs on miniheap (its malloc is miniheap's, and mh_stats sees
#   its blocks); one built with miniheap-prefixed links the mh_* API
#   statically;
# - the installed `miniheap` finds the installed library and valgrind
#   wrapper; the installed wrapper finds its suppressions;
# - the man pages: found by man, no groff warnings, and every option of
#   src/options.c and every function of include/miniheap.h is in
#   miniheap(3);
# - make uninstall leaves no file behind; the same with DESTDIR staging.
set -u
cd "$(dirname "$0")/.." || exit 2
BUILD=${BUILD:-build}
LIB=${MH_LIB:-$BUILD/libminiheap.so}
[ "$LIB" = none ] && { echo "SKIP: needs miniheap (MH_PRELOAD=none)"; exit 0; }
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { echo "ok $*"; }
command -v pkg-config >/dev/null || { echo "FAIL: pkg-config is not installed (apt-get install pkg-config)"; exit 1; }
W=$(mktemp -d /tmp/mh-install.XXXXXX)
trap 'rm -rf "$W"' EXIT
P=$W/prefix
PY=/usr/bin/python3
[ -x $PY ] || PY=$(command -v python3)
unset MINIHEAP_LIB MINIHEAP_OPTIONS

# LDCONFIG=: leaves the system's loader cache alone.
if ! make --no-print-directory install BUILD="$BUILD" PREFIX="$P" LDCONFIG=: >"$W/install.log" 2>&1; then
    cat "$W/install.log"
    echo "FAIL: make install PREFIX=$P"
    exit 1
fi
EXPECTED="bin/miniheap
bin/miniheap-valgrind
include/miniheap.h
lib/libminiheap.a
lib/libminiheap.so
lib/libminiheap.so.1
lib/libminiheap.so.1.0.0
lib/libminiheap_prefixed.a
lib/pkgconfig/miniheap-prefixed.pc
lib/pkgconfig/miniheap.pc
share/man/man1/miniheap.1
share/man/man3/miniheap.3
share/miniheap/miniheap.supp"
got=$(cd "$P" && find . \( -type f -o -type l \) | sed 's|^\./||' | LC_ALL=C sort)
[ "$got" = "$EXPECTED" ] && ok "make install: the $(echo "$got" | wc -l) files" ||
    fail "installed files differ: $(diff <(echo "$EXPECTED") <(echo "$got") | tr '\n' ' ')"
[ "$(readlink "$P/lib/libminiheap.so.1")" = libminiheap.so.1.0.0 ] &&
    [ "$(readlink "$P/lib/libminiheap.so")" = libminiheap.so.1 ] &&
    [ -f "$P/lib/libminiheap.so.1.0.0" ] && [ ! -L "$P/lib/libminiheap.so.1.0.0" ] &&
    ok "links: libminiheap.so -> libminiheap.so.1 -> libminiheap.so.1.0.0" || fail "soname links: $(ls -l "$P/lib")"
soname=$(readelf -d "$P/lib/libminiheap.so.1.0.0" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = libminiheap.so.1 ] && ok "SONAME libminiheap.so.1" || fail "SONAME '$soname'"
cmp -s include/miniheap.h "$P/include/miniheap.h" || fail "installed miniheap.h differs"
[ -x "$P/bin/miniheap" ] && [ -x "$P/bin/miniheap-valgrind" ] || fail "bin/ scripts not executable"

# ---- pkg-config ------------------------------------------------------------------------
export PKG_CONFIG_PATH=$P/lib/pkgconfig
v=$(pkg-config --modversion miniheap)
[ "$v" = 1.0.0 ] && ok "pkg-config --modversion miniheap: $v" || fail "modversion '$v'"
flags=$(pkg-config --cflags --libs miniheap)
case " $flags " in
    *" -I$P/include "*"-L$P/lib "*"-lminiheap "*"-lpthread "*) ok "pkg-config --cflags --libs miniheap: $flags" ;;
    *) fail "pkg-config flags: '$flags'" ;;
esac
cat >"$W/prog.c" <<'EOF'
/* Linked with -lminiheap: malloc is miniheap's, and mh_stats sees it. */
#include <miniheap.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
    mh_stats_t before, after;
    mh_stats(&before);
    char *p = malloc(1000);
    if (!p) return 1;
    memset(p, 'x', 1000);
    mh_stats(&after);
    if (after.live_blocks != before.live_blocks + 1 || after.live_bytes < before.live_bytes + 1000) {
        printf("malloc is not miniheap's: live blocks %zu -> %zu\n", before.live_blocks, after.live_blocks);
        return 1;
    }
    if (mh_malloc_usable_size(p) < 1000) return 1;
    free(p);
    printf("linked with miniheap: %zu live blocks\n", after.live_blocks);
    return 0;
}
EOF
# shellcheck disable=SC2046 # the flags are a list
if cc -std=c17 -Wall -Wextra -Werror "$W/prog.c" $(pkg-config --cflags --libs miniheap) -o "$W/prog" 2>"$W/cc.log"; then
    needed=$(readelf -d "$W/prog" | grep -c 'NEEDED.*\[libminiheap\.so\.1\]')
    out=$(LD_LIBRARY_PATH=$P/lib "$W/prog" 2>&1)
    rc=$?
    [ $rc -eq 0 ] && [ "$needed" = 1 ] && ok "a program built with pkg-config: NEEDED libminiheap.so.1; $out" ||
        fail "pkg-config program: rc $rc, NEEDED $needed: $out"
else
    fail "cc with pkg-config miniheap: $(cat "$W/cc.log")"
fi
cat >"$W/prefixed.c" <<'EOF'
/* The prefixed API, beside the system malloc. */
#include <miniheap.h>
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    void *a = malloc(10);  /* the system's */
    void *b = mh_malloc(10);
    mh_stats_t st;
    mh_stats(&st);
    int ok = b && st.live_blocks == 1 && mh_check() == 0;
    mh_free(b);
    free(a);
    printf("prefixed: %s\n", ok ? "ok" : "wrong");
    return !ok;
}
EOF
# shellcheck disable=SC2046
if cc -std=c17 -Wall -Wextra -Werror "$W/prefixed.c" $(pkg-config --cflags --libs miniheap-prefixed) \
    -o "$W/prefixed" 2>"$W/cc.log"; then
    out=$("$W/prefixed" 2>&1)
    rc=$?
    ! readelf -d "$W/prefixed" | grep -q libminiheap && [ $rc -eq 0 ] &&
        ok "a program built with pkg-config miniheap-prefixed (static): $out" || fail "prefixed program: rc $rc: $out"
else
    fail "cc with pkg-config miniheap-prefixed: $(cat "$W/cc.log")"
fi

# ---- the installed command --------------------------------------------------------------
out=$("$P/bin/miniheap" --version)
[ "$out" = "miniheap 1.0.0" ] && ok "installed miniheap --version" || fail "--version: '$out'"
out=$("$P/bin/miniheap" run --mode debug -- $PY -c 'import ctypes, os; print(os.environ["LD_PRELOAD"], hasattr(ctypes.CDLL(None), "mh_stats"))' 2>&1)
[ "$out" = "$P/lib/libminiheap.so.1 True" ] && ok "installed miniheap run: preloads $P/lib/libminiheap.so.1" ||
    fail "installed miniheap run: '$out'"
out=$(printf 'b\na\n' | "$P/bin/miniheap" stats -- sort 2>&1)
echo "$out" | grep -qx 'miniheap stats:' && [ "$(echo "$out" | head -2 | tr '\n' ' ')" = "a b " ] &&
    ok "installed miniheap stats -- sort" || fail "installed stats: $out"
grep -q "$P/share/miniheap/miniheap.supp" "$P/bin/miniheap-valgrind" && grep -q "$P/lib/libminiheap.so.1" "$P/bin/miniheap-valgrind" &&
    ok "installed miniheap-valgrind: installed library and suppressions" || fail "miniheap-valgrind paths not set"
if command -v valgrind >/dev/null; then
    out=$("$P/bin/miniheap" valgrind -q --error-exitcode=9 -- $PY -c 'import ctypes; print(hasattr(ctypes.CDLL(None), "mh_stats"))' 2>"$W/vg.err")
    rc=$?
    [ $rc -eq 0 ] && [ "$out" = True ] && ok "installed miniheap valgrind: rc 0, on miniheap" ||
        fail "installed miniheap valgrind: rc $rc, '$out': $(head -5 "$W/vg.err")"
else
    echo "note: valgrind is not installed: the installed wrapper is not run"
fi

# ---- man pages ------------------------------------------------------------------------------
for page in man1/miniheap.1 man3/miniheap.3; do
    f=$P/share/man/$page
    if command -v groff >/dev/null; then
        warn=$(groff -man -Tutf8 -ww -z "$f" 2>&1)
        [ -z "$warn" ] && ok "groff -ww: $page has no warnings" || fail "groff warnings in $page: $warn"
    fi
    if command -v man >/dev/null; then
        MANWIDTH=80 man -l "$f" >"$W/man.txt" 2>"$W/man.err"
        [ -s "$W/man.txt" ] && [ ! -s "$W/man.err" ] && grep -q '^NAME' "$W/man.txt" &&
            ok "man -l $page: $(wc -l <"$W/man.txt") lines" || fail "man -l $page: $(head -3 "$W/man.err")"
    fi
done
if command -v man >/dev/null; then
    MANWIDTH=80 man -M "$P/share/man" 1 miniheap 2>/dev/null | grep -q 'miniheap timeline' &&
        MANWIDTH=80 man -M "$P/share/man" 3 miniheap 2>/dev/null | grep -q 'mh_set_error_handler' &&
        ok "man -M PREFIX/share/man finds miniheap(1) and miniheap(3)" || fail "man -M $P/share/man does not find the pages"
fi
# Every option of src/options.c's tables is in miniheap(3), and every
# function of include/miniheap.h.
missing=
for o in $(sed -n 's/^ *{"\([a-z_0-9]*\)", \(O(\|mh_opt\.\).*/\1/p' src/options.c); do
    grep -qE "^\.B[IR]? $o=" docs/man/miniheap.3 || missing="$missing $o"
done
for fn in $(sed -n 's/^MH_API [^(]*[ *]\(mh_[a-z_]*\)(.*/\1/p' include/miniheap.h); do
    grep -qE "^\.BI? .*[ *]$fn\(" docs/man/miniheap.3 || missing="$missing $fn()"
done
nopt=$(sed -n 's/^ *{"\([a-z_0-9]*\)", \(O(\|mh_opt\.\).*/\1/p' src/options.c | wc -l)
[ -z "$missing" ] && [ "$nopt" -gt 20 ] && ok "miniheap(3) documents the $nopt options of src/options.c and every mh_* function" ||
    fail "miniheap(3) lacks:$missing (options found in src/options.c: $nopt)"

# ---- uninstall ------------------------------------------------------------------------------
make --no-print-directory uninstall PREFIX="$P" >"$W/uninstall.log" 2>&1 || fail "make uninstall: $(cat "$W/uninstall.log")"
left=$(find "$P" \( -type f -o -type l \) 2>/dev/null)
[ -z "$left" ] && ok "make uninstall: no file left" || fail "left after uninstall: $left"

# ---- DESTDIR staging ------------------------------------------------------------------------
D=$W/stage
if make --no-print-directory install BUILD="$BUILD" DESTDIR="$D" PREFIX=/opt/mh >"$W/install2.log" 2>&1; then
    got=$(cd "$D/opt/mh" && find . \( -type f -o -type l \) | sed 's|^\./||' | LC_ALL=C sort)
    [ "$got" = "$EXPECTED" ] && [ "$(find "$D" -mindepth 1 -maxdepth 1)" = "$D/opt" ] || fail "DESTDIR files: $got"
    grep -qx 'prefix=/opt/mh' "$D/opt/mh/lib/pkgconfig/miniheap.pc" || fail "DESTDIR: miniheap.pc prefix is not /opt/mh"
    grep -qx 'libdir=${prefix}/lib' "$D/opt/mh/lib/pkgconfig/miniheap.pc" || fail "DESTDIR: miniheap.pc libdir"
    # Not installed in /opt/mh yet: the staged command finds the library next to itself.
    "$D/opt/mh/bin/miniheap" run -- /bin/true || fail "staged miniheap run"
    make --no-print-directory uninstall DESTDIR="$D" PREFIX=/opt/mh >/dev/null 2>&1 || fail "make uninstall DESTDIR"
    left=$(find "$D" \( -type f -o -type l \))
    [ -z "$left" ] && ok "DESTDIR=... PREFIX=/opt/mh: staged, .pc prefix /opt/mh, uninstalled" || fail "left in DESTDIR: $left"
else
    fail "make install DESTDIR: $(tail -5 "$W/install2.log")"
fi
[ $fails -eq 0 ]
