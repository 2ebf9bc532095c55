#!/usr/bin/env bash
# Run the valgrind and sanitizer tests of valgrind/tests/ and check what the
# tools report. `make valgrind-test` / `make sanitizer-test` build the
# programs and call this.
#
#   valgrind/run-tests.sh [--mode=MODE] [FILTER...]
#
# Modes:
#   miniheap  (default) the plain programs under memcheck with
#             $BUILD/libminiheap.so preloaded (valgrind/miniheap-valgrind)
#   glibc     the same programs and expectations under memcheck on the system
#             allocator: checks the tests themselves (memcheck's messages for
#             glibc are what miniheap must reproduce)
#   asan      the prefixed programs built with -fsanitize=address and linked
#             with $BUILD/asan/libminiheap_prefixed.a
#   msan      the same with -fsanitize=memory (clang), $BUILD/msan/
#   ubsan     the same with -fsanitize=undefined, $BUILD/ubsan/ (clean
#             programs only: UBSan does not look at heap bugs)
# FILTERs select tests whose name contains one of them.
#
# Environment: BUILD (default build), VG_TIMEOUT (seconds per run, default
# 120), VG_QUIET=1 (print a log only when its test fails).
# Prints one PASS/FAIL line per test and "N passed, N failed"; exits 1 on any
# failure. Logs: $BUILD/valgrind/logs/MODE/NAME.log
set -u
cd "$(dirname "$0")/.." || exit 2

BUILD=${BUILD:-build}
MODE=miniheap
FILTERS=()
for a in "$@"; do
    case $a in
        --mode=*) MODE=${a#--mode=} ;;
        -h|--help) sed -n '2,/^set -u/p' "$0" | sed -e '/^set -u/d' -e 's/^# \{0,1\}//'; exit 0 ;;
        *) FILTERS+=("$a") ;;
    esac
done
VG_TIMEOUT=${VG_TIMEOUT:-120}
VG_QUIET=${VG_QUIET:-0}

case $MODE in
    miniheap|glibc) BIN=$BUILD/valgrind/plain ;;
    asan|msan|ubsan) BIN=$BUILD/valgrind/$MODE ;;
    *) echo "run-tests.sh: unknown mode '$MODE'" >&2; exit 2 ;;
esac
LOGDIR=$BUILD/valgrind/logs/$MODE
mkdir -p "$LOGDIR"

VG=(valgrind/miniheap-valgrind)
if [ "$MODE" = glibc ]; then
    export MINIHEAP_LIB=none
elif [ "$MODE" = miniheap ]; then
    case $BUILD in /*) export MINIHEAP_LIB=$BUILD/libminiheap.so ;; *) export MINIHEAP_LIB=$PWD/$BUILD/libminiheap.so ;; esac
fi
case $MODE in miniheap|glibc) command -v valgrind >/dev/null || { echo "run-tests.sh: valgrind not found" >&2; exit 2; } ;; esac

# Sanitizer runtime options: fail loudly, keep the report readable.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=23:halt_on_error=1}
export MSAN_OPTIONS=${MSAN_OPTIONS:-exitcode=23:halt_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:exitcode=23}
export LSAN_OPTIONS=${LSAN_OPTIONS:-exitcode=23}

# Regular expressions for the stacks memcheck prints. A frame reads
#   ==PID==    at 0x4848899: mh_malloc (alloc.c:123)
#   ==PID==    by 0x1091A2: main (vg_bugs.c:40)
# On glibc the allocator frame is valgrind's replacement:
#   ==PID==    at 0x48417B4: malloc (in /usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so)
ALLOC_RE=': (mh_)?(malloc|calloc|realloc|reallocarray|memalign|aligned_alloc|posix_memalign|valloc|pvalloc) \('
FREE_RE=': (mh_)?(free|free_sized|free_aligned_sized|realloc) \('
# A frame in miniheap's own code: any source file of src/, or the library.
src_names=$(cd src && ls *.c *.h 2>/dev/null | sed 's/\./\\./g' | paste -sd'|' -)
MH_FRAME_RE="\\((${src_names:-alloc\\.c}):[0-9]+\\)|libminiheap\\.so"

passed=0
failed=0
skipped=0
failed_names=()

selected() {
    [ ${#FILTERS[@]} -eq 0 ] && return 0
    local f
    for f in "${FILTERS[@]}"; do
        case $1 in *"$f"*) return 0 ;; esac
    done
    return 1
}

# ---- checks on the current log ($log); each failure is added to $why ----
why=()
has() { grep -Eq -- "$1" "$log" || why+=("missing: /$1/"); }
lacks() {
    local m
    m=$(grep -Em3 -- "$1" "$log") && why+=("unexpected: /$1/: $(echo "$m" | head -3 | tr '\n' ' ')")
    return 0
}
has_any() { # has_any DESCRIPTION RE...: at least one of the REs
    local d=$1 r
    shift
    for r in "$@"; do grep -Eq -- "$r" "$log" && return 0; done
    why+=("missing: $d")
}
# The frames printed after the first line matching $1.
stack_after() {
    HDR=$1 awk '
        found && /^==[0-9]+== +(at|by) 0x/ { print; next }
        found { exit }
        $0 ~ ENVIRON["HDR"] { found = 1 }' "$log"
}
# stack_has HEADER-RE FRAME-RE DESCRIPTION
stack_has() {
    local s
    s=$(stack_after "$1")
    if [ -z "$s" ]; then
        why+=("no stack after /$1/")
    elif ! grep -Eq -- "$2" <<<"$s"; then
        why+=("stack after /$1/ lacks $3 (/$2/)")
    fi
}
errors() { has "ERROR SUMMARY: $1 errors from $1 contexts"; }
exit_is() { [ "$rc" -eq "$1" ] || why+=("exit status $rc, expected $1"); }
exit_not0() { [ "$rc" -ne 0 ] || why+=("exit status 0, expected a failure"); }

# Checks that a memcheck stack goes through the entry point ($2), through
# miniheap's code when on miniheap, and into the test program ($3).
mc_stack() { # mc_stack HEADER-RE ENTRY-RE PROGRAM-FILE
    if ! grep -Eq -- "$1" "$log"; then
        why+=("no stack (no line /$1/)")
        return 0
    fi
    stack_has "$1" "$2" "the allocator entry point"
    stack_has "$1" "\\($3:[0-9]+\\)" "a frame of $3"
    [ "$MODE" = miniheap ] && stack_has "$1" "$MH_FRAME_RE" "a frame in miniheap (src/)"
    return 0
}
# As memcheck shows stacks on glibc: the first frame is the entry point the
# program called, the second is the program's own (no frame of miniheap's
# internals in between).
mc_top() { # mc_top HEADER-RE ENTRY-RE PROGRAM-FILE
    local s
    s=$(stack_after "$1" | head -2)
    if ! grep -Eq -- "$2" <<<"$(head -1 <<<"$s")"; then
        why+=("stack after /$1/ does not start at the entry point: $(head -1 <<<"$s")")
    elif ! grep -Eq -- "\\($3:[0-9]+\\)" <<<"$(tail -1 <<<"$s")"; then
        why+=("stack after /$1/: the frame after the entry point is not the program's: $(tail -1 <<<"$s")")
    fi
}
on_miniheap() {
    if [ "$MODE" = glibc ]; then
        has "VG: allocator=system"
    else
        has "VG: allocator=miniheap"
    fi
}

# run NAME CHECK-FUNCTION PROGRAM [ARGS...]: run the program (under the
# tool of the mode, with the environment RUNENV), then call CHECK-FUNCTION,
# which fills $why.
RUNENV=()
run() {
    local name=$1 check=$2
    shift 2
    selected "$name" || return 0
    log=$LOGDIR/$name.log
    why=()
    local prog=$BIN/$1
    shift
    local start end secs
    start=$(date +%s.%N)
    if [ ! -x "$prog" ]; then
        echo "missing: $prog (build it with 'make valgrind-test-bins' or 'make sanitizer-test-bins')" >"$log"
        rc=127
        why+=("program missing")
    else
        # (The outer 2>/dev/null only hides bash's "Aborted" notices: the bug
        # programs are expected to die of miniheap's or the sanitizer's abort.)
        case $MODE in
            miniheap|glibc) { env "${RUNENV[@]}" timeout -k 10 "$VG_TIMEOUT" "${VG[@]}" "${VGARGS[@]}" "$prog" "$@" >"$log" 2>&1; } 2>/dev/null ;;
            *) { env "${RUNENV[@]}" timeout -k 10 "$VG_TIMEOUT" "$prog" "$@" >"$log" 2>&1; } 2>/dev/null ;;
        esac
        rc=$?
        [ $rc -eq 124 ] && why+=("timeout after ${VG_TIMEOUT}s")
        $check
        # The end of every run reads as on glibc: no range left excluded.
        [ "$MODE" = miniheap ] && lacks "address error disablement range"
    fi
    end=$(date +%s.%N)
    secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
    if [ ${#why[@]} -eq 0 ]; then
        [ "$VG_QUIET" = 1 ] || sed 's/^/    /' "$log" | tail -n 60
        echo "PASS $MODE/$name (${secs}s)"
        passed=$((passed + 1))
    else
        sed 's/^/    /' "$log" | tail -n 80
        local w
        for w in "${why[@]}"; do echo "  - $w"; done
        echo "FAIL $MODE/$name (${secs}s; log: $log)"
        failed=$((failed + 1))
        failed_names+=("$name")
    fi
}
skip() {
    selected "$1" || return 0
    echo "SKIP $MODE/$1: $2"
    skipped=$((skipped + 1))
}

# ======================= memcheck (miniheap, glibc) ==========================
VGARGS=()

check_clean() {
    exit_is 0
    errors 0
    has "All heap blocks were freed -- no leaks are possible"
    has "VG: vg_clean_[a-z]+: done"
    lacks "VG: FAIL"
    on_miniheap
    if [ "$MODE" = miniheap ]; then
        # miniheap ran and memcheck saw its blocks (client requests).
        has "VG: allocator=miniheap allocs=[1-9]"
        has "total heap usage: [1-9][0-9,]* allocs, [1-9][0-9,]* frees"
    fi
}
check_clean_realloc() {
    check_clean
    if [ "$MODE" = miniheap ]; then
        has "VG: realloc small-grow 100->110 in-place"
        has "VG: realloc small-shrink 110->70 in-place"
        has "VG: realloc large-grow 200000->200100 in-place"
        has "VG: realloc large-shrink 200100->199000 in-place"
    fi
}

check_leak() {
    exit_is 0
    on_miniheap
    has "definitely lost: 600 bytes in 3 blocks"
    has "indirectly lost: 0 bytes in 0 blocks"
    has "possibly lost: 0 bytes in 0 blocks"
    has "still reachable: 0 bytes in 0 blocks"
    errors 3
    mc_stack "100 bytes in 1 blocks are definitely lost" "$ALLOC_RE" vg_leak.c
    mc_stack "200 bytes in 1 blocks are definitely lost" "$ALLOC_RE" vg_leak.c
    mc_stack "300 bytes in 1 blocks are definitely lost" "$ALLOC_RE" vg_leak.c
    for n in 100 200 300; do mc_top "$n bytes in 1 blocks are definitely lost" "$ALLOC_RE" vg_leak.c; done
    [ "$MODE" = miniheap ] && has "VG: leak slab-first=yes miniheap-first=yes"
    return 0
}
# Ten blocks leaked from one call site, whether the allocator took its fast
# path or refilled a cache: one loss record, as on glibc.
check_leak_site() {
    exit_is 0
    on_miniheap
    has "1,000 bytes in 10 blocks are definitely lost in loss record 1 of 1"
    has "definitely lost: 1,000 bytes in 10 blocks"
    has "still reachable: 0 bytes in 0 blocks"
    mc_top "1,000 bytes in 10 blocks are definitely lost" "$ALLOC_RE" vg_leak.c
}
check_leak_large() {
    exit_is 0
    on_miniheap
    has "definitely lost: 300,000 bytes in 1 blocks"
    has "indirectly lost: 0 bytes in 0 blocks"
    has "possibly lost: 0 bytes in 0 blocks"
    has "still reachable: 0 bytes in 0 blocks"
    errors 1
    mc_stack "300,000 bytes in 1 blocks are definitely lost" "$ALLOC_RE" vg_leak.c
}

# Memory-access bugs: exactly one memcheck error, described against the right
# block, with the allocation (and free) stacks through the entry points.
# mc_access KIND ADDRESS-DESCRIPTION [freed]
mc_access() {
    on_miniheap
    # The program goes on after memcheck's report, unless miniheap's own
    # checks (canaries, inaccessible quarantined pages) report it too and abort.
    has_any "the program returning, or a miniheap report" "VG: scenario [a-z_]+: returned" "^miniheap: ERROR: "
    errors 1
    has "$1"
    has "Address 0x[0-9a-f]+ $2"
    if [ "${3:-}" = freed ]; then
        mc_stack "Address 0x[0-9a-f]+ $2" "$FREE_RE" vg_bugs.c
        mc_stack "Block was alloc'd at" "$ALLOC_RE" vg_bugs.c
    else
        mc_stack "Address 0x[0-9a-f]+ $2" "$ALLOC_RE" vg_bugs.c
    fi
}
mc_uninit() {
    on_miniheap
    has "VG: scenario [a-z_]+: returned"
    errors 1
    has "Conditional jump or move depends on uninitialised value\\(s\\)"
    stack_has "Conditional jump or move depends on uninitialised value" "branch_on \\(vg_bugs\\.c" "branch_on"
    has "Uninitialised value was created by a heap allocation"
    mc_stack "Uninitialised value was created by a heap allocation" "$ALLOC_RE" vg_bugs.c
}
# Bad frees: reported by memcheck or by miniheap, never silently.
mc_badfree() { # mc_badfree MINIHEAP-KIND...
    on_miniheap
    local kinds
    kinds=$(IFS='|'; echo "$*")
    has_any "a report of the bad free (memcheck 'Invalid free()' or 'miniheap: ERROR: $kinds')" \
        "Invalid free\\(\\) / delete / delete\\[\\] / realloc\\(\\)" "miniheap: ERROR: ($kinds)"
    if grep -q "Invalid free()" "$log"; then
        stack_has "Invalid free\\(\\) / delete" "$FREE_RE" "the entry point"
    fi
}

c_uaf_small() { mc_access "Invalid read of size 1" "is 50 bytes inside a block of size 100 free'd" freed; }
c_uaf_churn() { mc_access "Invalid read of size 1" "is 50 bytes inside a block of size 100 free'd" freed; }
c_uaf_large() { mc_access "Invalid read of size 1" "is 1,000 bytes inside a block of size 300,000 free'd" freed; }
c_overflow_fill() { mc_access "Invalid write of size 1" "is 0 bytes after a block of size 64 alloc'd"; }
c_overflow_partial() { mc_access "Invalid write of size 1" "is 0 bytes after a block of size 50 alloc'd"; }
c_overflow_large() { mc_access "Invalid write of size 1" "is 0 bytes after a block of size 300,000 alloc'd"; }
c_underflow() { mc_access "Invalid read of size 1" "is 1 bytes before a block of size 64 alloc'd"; }
c_shrink_inplace() {
    mc_access "Invalid read of size 1" "is 0 bytes after a block of size 70 alloc'd"
    [ "$MODE" = miniheap ] && has "VG: realloc 100->70 in-place"
    return 0
}
c_shrink_move() { mc_access "Invalid read of size 1" "is 0 bytes after a block of size 40 alloc'd"; }
c_shrink_large() { mc_access "Invalid read of size 1" "is 0 bytes after a block of size 200,000 alloc'd"; }
c_uninit_realloc() {
    mc_uninit
    [ "$MODE" = miniheap ] && has "VG: realloc 100->110 in-place"
    return 0
}
c_double_free() { mc_badfree double-free invalid-free; }
c_invalid_free() { mc_badfree invalid-free; }
c_realloc_freed() { mc_badfree invalid-realloc double-free; }

# ============================ sanitizers =====================================
san_clean() {
    exit_is 0
    has "VG: vg_[a-z_]+: done"
    has "VG: allocator=miniheap"
    lacks "VG: FAIL"
    lacks "ERROR: AddressSanitizer|ERROR: LeakSanitizer|WARNING: MemorySanitizer|runtime error:"
}
# ASan: the access is reported, in the right function, with its direction.
# A freed large block in quarantine is inaccessible (PROT_NONE): the fault is
# then reported by miniheap's handler instead.
asan_access() { # asan_access READ|WRITE FUNCTION
    exit_not0
    has "VG: allocator=miniheap"
    lacks "VG: scenario [a-z_]+: returned"
    if grep -q "^miniheap: ERROR: use-after-free" "$log"; then
        has "detected on a memory access"
        return 0
    fi
    has "ERROR: AddressSanitizer: [a-z-]+ on address"
    has "$1 of size 1 at 0x"
    has "#[0-9]+ 0x[0-9a-f]+ in $2 .*vg_bugs\\.c"
}
asan_badfree() { # asan_badfree MINIHEAP-KIND...
    exit_not0
    has "VG: allocator=miniheap"
    local kinds
    kinds=$(IFS='|'; echo "$*")
    has "miniheap: ERROR: ($kinds)"
    lacks "ERROR: AddressSanitizer"
}
a_read() { asan_access READ read_at; }
a_write() { asan_access WRITE write_at; }
a_double_free() { asan_badfree double-free invalid-free; }
a_invalid_free() { asan_badfree invalid-free; }
a_realloc_freed() { asan_badfree invalid-realloc double-free; }
a_lsan_root() {
    exit_is 0
    has "VG: vg_lsan [a-z_]+: done"
    lacks "ERROR: LeakSanitizer|ERROR: AddressSanitizer"
}
a_lsan_freed() {
    exit_not0
    has "ERROR: LeakSanitizer: detected memory leaks"
    has "Direct leak of 24 byte\\(s\\) in 1 object\\(s\\)"
    lacks "ERROR: AddressSanitizer"
}
# miniheap's own leak report (MINIHEAP_OPTIONS=leak_report=1) in a sanitizer
# build: its scan of stacks, globals and blocks must not trip the sanitizer.
s_leak_report() {
    has "VG: allocator=miniheap"
    has "VG: vg_leak: done"
    # The scan is conservative: under MSan (bigger frames) a stale copy of a
    # pointer may keep a block reachable, so only ASan checks the exact count.
    if [ "$MODE" = asan ]; then
        has "miniheap: ERROR: memory-leak: 600 bytes in 3 blocks"
    else
        has "miniheap: ERROR: memory-leak: [0-9]+ bytes in [1-3] blocks?"
    fi
    lacks "ERROR: AddressSanitizer|ERROR: LeakSanitizer|WARNING: MemorySanitizer|runtime error:"
}
m_uninit() {
    exit_not0
    has "VG: allocator=miniheap"
    has "WARNING: MemorySanitizer: use-of-uninitialized-value"
    has "#[0-9]+ 0x[0-9a-f]+ in branch_on .*vg_bugs\\.c"
    # The origin: the block's allocation (miniheap marks it with
    # __msan_allocated_memory; MSan's own malloc says "created by a heap
    # allocation").
    has_any "the origin of the value (a heap allocation)" "Memory was marked as uninitialized" \
        "Uninitialized value was created by a heap allocation"
    has "in mh_(malloc|realloc|calloc) "
    lacks "VG: scenario [a-z_]+: returned"
}

# ============================== the runs =====================================
case $MODE in
miniheap|glibc)
    run clean_api check_clean vg_clean_api
    if [ "$MODE" = miniheap ]; then
        RUNENV=(MINIHEAP_OPTIONS=mode=fast)
        run clean_api_fast check_clean vg_clean_api
        RUNENV=()
    fi
    run clean_realloc check_clean_realloc vg_clean_realloc
    run clean_threads check_clean vg_clean_threads
    run leak check_leak vg_leak
    run leak_large check_leak_large vg_leak large
    run leak_site check_leak_site vg_leak site
    run uaf_small c_uaf_small vg_bugs uaf_small
    run uaf_large c_uaf_large vg_bugs uaf_large
    run uaf_after_churn c_uaf_churn vg_bugs uaf_after_churn
    run overflow_fill c_overflow_fill vg_bugs overflow_fill
    run overflow_partial c_overflow_partial vg_bugs overflow_partial
    run overflow_large c_overflow_large vg_bugs overflow_large
    run underflow c_underflow vg_bugs underflow
    run realloc_shrink_inplace c_shrink_inplace vg_bugs realloc_shrink_inplace
    run realloc_shrink_move c_shrink_move vg_bugs realloc_shrink_move
    run realloc_shrink_large c_shrink_large vg_bugs realloc_shrink_large
    VGARGS=(--track-origins=yes)
    run uninit_small mc_uninit vg_bugs uninit_small
    run uninit_large mc_uninit vg_bugs uninit_large
    run uninit_realloc c_uninit_realloc vg_bugs uninit_realloc
    VGARGS=()
    run double_free c_double_free vg_bugs double_free
    run double_free_large c_double_free vg_bugs double_free_large
    run invalid_free_interior c_invalid_free vg_bugs invalid_free_interior
    run invalid_free_stack c_invalid_free vg_bugs invalid_free_stack
    run realloc_freed c_realloc_freed vg_bugs realloc_freed
    ;;
asan)
    run clean_api san_clean vg_clean_api
    # mode=fast: no tail canary, so every byte up to malloc_usable_size is open
    RUNENV=(MINIHEAP_OPTIONS=mode=fast)
    run clean_api_fast san_clean vg_clean_api
    RUNENV=()
    run clean_realloc san_clean vg_clean_realloc
    run clean_threads san_clean vg_clean_threads
    run uaf_small a_read vg_bugs uaf_small
    run uaf_large a_read vg_bugs uaf_large
    run uaf_after_churn a_read vg_bugs uaf_after_churn
    run overflow_fill a_write vg_bugs overflow_fill
    run overflow_partial a_write vg_bugs overflow_partial
    run overflow_large a_write vg_bugs overflow_large
    run underflow a_read vg_bugs underflow
    run realloc_shrink_inplace a_read vg_bugs realloc_shrink_inplace
    run realloc_shrink_move a_read vg_bugs realloc_shrink_move
    run realloc_shrink_large a_read vg_bugs realloc_shrink_large
    run double_free a_double_free vg_bugs double_free
    run double_free_large a_double_free vg_bugs double_free_large
    run invalid_free_interior a_invalid_free vg_bugs invalid_free_interior
    run invalid_free_stack a_invalid_free vg_bugs invalid_free_stack
    run realloc_freed a_realloc_freed vg_bugs realloc_freed
    run lsan_root a_lsan_root vg_lsan root
    run lsan_root_large a_lsan_root vg_lsan root_large
    run lsan_freed a_lsan_freed vg_lsan freed
    run shadow_given_back san_clean vg_shadow
    RUNENV=(MINIHEAP_OPTIONS=leak_report=1)
    run leak_report s_leak_report vg_leak
    RUNENV=()
    skip uninit "ASan does not detect uninitialised reads (see msan)"
    skip leak "LeakSanitizer does not know miniheap's blocks (use valgrind, or leak_report=1 as above)"
    ;;
msan)
    run clean_api san_clean vg_clean_api
    # mode=fast: no tail canary, so every byte up to malloc_usable_size is open
    RUNENV=(MINIHEAP_OPTIONS=mode=fast)
    run clean_api_fast san_clean vg_clean_api
    RUNENV=()
    run clean_realloc san_clean vg_clean_realloc
    run clean_threads san_clean vg_clean_threads
    run uninit_small m_uninit vg_bugs uninit_small
    run uninit_large m_uninit vg_bugs uninit_large
    run uninit_realloc m_uninit vg_bugs uninit_realloc
    RUNENV=(MINIHEAP_OPTIONS=leak_report=1)
    run leak_report s_leak_report vg_leak
    RUNENV=()
    ;;
ubsan)
    run clean_api san_clean vg_clean_api
    run clean_realloc san_clean vg_clean_realloc
    run clean_threads san_clean vg_clean_threads
    ;;
esac

[ $failed -gt 0 ] && echo "failed ($MODE): ${failed_names[*]}"
echo "$passed passed, $failed failed, $skipped skipped ($MODE)"
[ $failed -eq 0 ]
