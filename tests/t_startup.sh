#!/usr/bin/env bash
# Where a program starts (issue #10):
#   1. under a tight address-space limit (ulimit -v 200000), /bin/true and
#      python3 start and run on miniheap in every mode (nothing is reserved
#      up front that such a limit refuses);
#   2. on a system whose page size is not 4 KiB, miniheap refuses to run,
#      saying why (the page size is faked by a preloaded getauxval);
#   3. a privileged (set-user-ID, AT_SECURE) program ignores
#      MINIHEAP_OPTIONS: mode=fast cannot switch its canaries off. Needs
#      root to make the program set-user-ID (CI runs as root);
#   4. the library does not load a C++ runtime into a C program, and a C
#      program that dlopen()s C++ code later still gets operator new's
#      new-handler calls and std::bad_alloc.
set -u
. "$(dirname "$0")/t_lib.sh"
D=$BUILD/tests/startup

# 1. ulimit -v
run_limited() { # mode, command...
    local mode=$1; shift
    (ulimit -v 200000; MINIHEAP_OPTIONS=mode=$mode:leak_report=0 LD_PRELOAD=$LIB "$@") 2>&1
}
for mode in fast hardened debug; do
    for prog in true python; do
        if [ $prog = true ]; then out=$(run_limited $mode /bin/true)
        else out=$(run_limited $mode $PY -c 'import json; print(len(json.dumps([list(range(50))] * 2000)))'); fi
        rc=$?
        if [ $rc -ne 0 ] || grep -q 'miniheap' <<<"$out"; then
            fail "ulimit -v 200000, mode=$mode: $prog gave rc $rc: $(head -c 300 <<<"$out")"
        else
            echo "ok ulimit -v 200000, mode=$mode: $prog ran"
        fi
    done
done

# 2. page size
# (ls: a program that allocates; the check is made at the first allocation)
out=$(LD_PRELOAD="$D/pagesize_shim.so:$LIB" ls / 2>&1)
rc=$?
if [ $rc -eq 0 ] || ! grep -q "page size is 16384 bytes" <<<"$out"; then
    fail "16 KiB pages: rc $rc, said: $(head -c 300 <<<"$out")"
else
    echo "ok 16 KiB pages refused: $(grep -m1 miniheap <<<"$out")"
fi

# 3. AT_SECURE
if [ "$(id -u)" != 0 ]; then
    echo "SKIP set-user-ID: needs root to make the program set-user-ID"
else
    dir=$(mktemp -d /tmp/mh-suid.XXXXXX)
    chmod 755 "$dir"
    cp "$D/overflow_static" "$dir/prog"
    chown nobody "$dir/prog" && chmod 4755 "$dir/prog"
    out=$(MINIHEAP_OPTIONS=mode=fast "$dir/prog" 2>&1)
    rc=$?
    if ! grep -q 'secure=1' <<<"$out"; then
        echo "SKIP set-user-ID: the program did not run privileged here (nosuid?): $(head -c 200 <<<"$out")"
    elif [ $rc -eq 0 ] || ! grep -q '^miniheap: ERROR: heap-buffer-overflow' <<<"$out" ||
         ! grep -q 'MINIHEAP_OPTIONS ignored' <<<"$out"; then
        fail "set-user-ID with MINIHEAP_OPTIONS=mode=fast: rc $rc, output: $(head -c 400 <<<"$out")"
    else
        echo "ok set-user-ID: MINIHEAP_OPTIONS ignored, the overflow reported"
    fi
    # The same program unprivileged: mode=fast does switch the canary off
    # (so the check above is a real one).
    cp "$D/overflow_static" "$dir/plain"
    out=$(MINIHEAP_OPTIONS=mode=fast "$dir/plain" 2>&1)
    rc=$?
    if [ $rc -ne 0 ] || grep -q miniheap <<<"$out"; then
        fail "unprivileged with mode=fast: rc $rc, output: $(head -c 300 <<<"$out")"
    fi
    rm -rf "$dir"
fi
# 4. no C++ runtime of our own
needed=$(readelf -d "$LIB" | grep NEEDED)
if grep -q 'libstdc++\|libgcc_s' <<<"$needed"; then
    fail "the library needs a C++ runtime: $needed"
else
    echo "ok no C++ runtime needed: $(tr -s ' ' <<<"$needed" | tr '\n' ' ')"
fi
for mode in fast hardened debug; do
    out=$(MINIHEAP_OPTIONS=mode=$mode:leak_report=0 LD_PRELOAD=$LIB "$D/dlopen_cxx" "$PWD/$D/cxx_plugin.so" 2>&1)
    rc=$?
    if [ $rc -ne 0 ]; then
        fail "mode=$mode: C program, C++ plugin loaded later: rc $rc: $(head -c 300 <<<"$out")"
    else
        echo "ok mode=$mode: C program, C++ plugin loaded later: $out"
    fi
done
[ $fails -eq 0 ]
