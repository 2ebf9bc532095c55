#!/usr/bin/env bash
# The leak report follows LeakSanitizer's conventions (issue #11):
#   - leaks are found and the exit status is 23 (exitcode=N changes it);
#   - a suppressions file (suppressions=FILE, "leak:<pattern>" lines)
#     removes the matching leaks, and lists what it removed;
#   - leaks allocated wholly by system code or a language runtime
#     (interpreters, shells) are not reported unless leak_system=1: python3
#     (Debian's, and the one on PATH) and a shell pipeline run in debug mode
#     and exit 0, and leak_system=1 shows python3 does leak; frames of
#     code unloaded by dlclose count for neither side (a plugin's thread
#     leaks; gcc links, whose ld unloads its leaking LTO plugin);
#   - a clean program says nothing.
#   - with a symbolizer (llvm-symbolizer or addr2line), each frame names its
#     function and file:line, static functions included; symbolize=0
#     leaves dladdr's names and module+offset.
# tests/leaks/leaky.c leaks 600 bytes in 3 blocks from leak_a,
# 2000 bytes in 2 blocks from leak_b and 50 bytes from the static leak_c.
set -u
. "$(dirname "$0")/t_lib.sh"
P=$BUILD/tests/leaks/leaky
W=$BUILD/tests/leaks/work
mkdir -p "$W"
# check NAME WANT_RC GREP_YES GREP_NO -- command (stderr checked)
check() {
    local name=$1 want=$2 yes=$3 no=$4
    shift 5
    "$@" >"$W/$name.out" 2>"$W/$name.err"
    local rc=$?
    if [ $rc -ne "$want" ]; then fail "$name: exit $rc, want $want ($(head -c 300 "$W/$name.err"))"; return; fi
    if [ -n "$yes" ] && ! grep -qE "$yes" "$W/$name.err"; then fail "$name: stderr lacks /$yes/ ($(grep -E 'ERROR|SUMMARY|bytes in' "$W/$name.err" | head -c 600))"; return; fi
    if [ -n "$no" ] && grep -qE "$no" "$W/$name.err"; then fail "$name: stderr has /$no/ ($(grep -E "$no" "$W/$name.err" | head -c 300))"; return; fi
    echo "ok $name (exit $rc)"
}
run() { env LD_PRELOAD="$LIB" MINIHEAP_OPTIONS="$1" "${@:2}"; }

check found 23 '^SUMMARY: miniheap: memory-leak: 2650 bytes leaked in 6 allocations' '' -- run mode=debug $P
grep -qE ' in leak_a [^ ]*leaky\.c:[0-9]+' "$W/found.err" && grep -qE ' in leak_b [^ ]*leaky\.c:[0-9]+' "$W/found.err" &&
    grep -qE ' in leak_c [^ ]*leaky\.c:[0-9]+' "$W/found.err" ||
    fail "found: the report does not name leak_a, leak_b and the static leak_c with file:line"
check unsymbolized 23 ' in leak_a\+0x' 'leaky\.c:' -- run mode=debug:symbolize=0 $P
check exitcode 7 'memory-leak' '' -- run mode=debug:exitcode=7 $P
check clean 0 '' '.' -- run mode=debug $P clean
check no_report 0 '' 'memory-leak' -- run mode=debug:leak_report=0 $P
# Under another file name (a renamed or repackaged copy) the library still
# leaves its own frames out of the stacks. It told them by its name, and a
# copy's frames headed every stack: the loader's blocks (a thread's DTV)
# were then taken for leaks, and a program that leaked nothing exited 23.
cp "$LIB" "$W/liballoc-copy.so"
check renamed 23 '^SUMMARY: miniheap: memory-leak: 2650 bytes leaked in 6 allocations' ' in (stack_capture|mh_malloc|alloc_generic) ' \
    -- env LD_PRELOAD="$W/liballoc-copy.so" MINIHEAP_OPTIONS=mode=debug $P

# A block the program registered with mh_set_error_handler is held for it
# (the scan does not read the library's own data, where the argument is).
check handler_arg 23 '^SUMMARY: miniheap: memory-leak: 2000 bytes leaked in 2 allocations' '' -- run mode=debug $P handler

# Threads still running at exit are stopped while the heap is scanned: what
# they hold on their stacks, in registers or in TLS is not a leak. Before,
# the worker's block was reported, and exit() called on a thread other than
# main crashed in the scan (exit 139).
check thread_worker 23 '^SUMMARY: miniheap: memory-leak: 2000 bytes leaked in 2 allocations' '' -- run mode=debug $P worker
check thread_tls 23 '^SUMMARY: miniheap: memory-leak: 2000 bytes leaked in 2 allocations' '' -- run mode=debug $P tls
check thread_exit 23 '^SUMMARY: miniheap: memory-leak: 600 bytes leaked in 3 allocations' '' -- run mode=debug $P exit
# Threads that allocate and free while the program exits: nothing of theirs
# moves under the scan (before, about 250 of their blocks were reported at
# every run). Five runs: each stops them at other points.
for i in 1 2 3 4 5; do
    check thread_busy_$i 23 '^SUMMARY: miniheap: memory-leak: 2000 bytes leaked in 2 allocations' '' -- run mode=debug $P busy
done
# One that blocks SIGURG cannot be stopped: its block is reported, and the
# exit waits for it no longer than the scan's time-out.
check thread_blocked 23 '^SUMMARY: miniheap: memory-leak: 6321 bytes leaked in 3 allocations' '' -- run mode=debug $P blocked

# Threads that ran and were joined leave their DTV, a block of the dynamic
# loader's, with their stacks in glibc's cache, where no scan sees it. The
# report knows the loader's blocks by their allocation stacks, which a leak
# report now keeps without stacks=1: before, leak_report=1 in hardened or
# fast mode, and debug mode with stacks=0, reported the DTV as a leak.
for o in debug:mode=debug stackless:mode=debug:stacks=0 hardened:leak_report=1 fast:mode=fast:leak_report=1; do
    # (2048 in fast mode: without a canary a block's size is its slot's)
    check "joined_${o%%:*}" 23 '^SUMMARY: miniheap: memory-leak: 20(00|48) bytes leaked in 2 allocations' '' -- run "${o#*:}" $P joined
done
check joined_hardened_stack 23 ' in leak_b' '' -- run leak_report=1 $P joined

printf '# leak_a frees nothing on purpose\nleak:leak_a\n' >"$W/supp-a"
check suppress_one 23 '^SUMMARY: miniheap: memory-leak: 2050 bytes leaked in 3 allocations' ' in leak_a' \
    -- run mode=debug:suppressions=$PWD/$W/supp-a $P
grep -qE '^  3 600 leak:leak_a$' "$W/suppress_one.err" || fail "suppress_one: the suppressions list lacks '3 600 leak:leak_a'"
printf 'leak:^leak_*$\nleak:*/no/such/module.so\n' >"$W/supp-all"
check suppress_all 0 '' '.' -- run mode=debug:suppressions=$PWD/$W/supp-all $P
printf 'leak:leaky_but_not_this\n' >"$W/supp-none"
check suppress_none 23 'leaked in 6 allocations' '' -- run mode=debug:suppressions=$PWD/$W/supp-none $P
check suppress_missing 23 'cannot read the suppressions file' '' -- run mode=debug:suppressions=/no/such/file $P

# Interpreters and shells leak at exit by design: not reported by default.
check python 0 '' 'memory-leak' -- run mode=debug $PY -c 'import json, sqlite3; print(len(json.dumps(list(range(99)))))'
check python_system 23 'memory-leak' '' -- run mode=debug:leak_system=1 $PY -c 'import json, sqlite3; print(len(json.dumps(list(range(99)))))'
check shell 0 '' 'memory-leak' -- run mode=debug sh -c 'ls /usr | sort | head -3 >/dev/null; echo x | sed s/x/y/'
# ... wherever the runtime is installed (pyenv, a venv, conda): a program
# named like an interpreter whose every frame is its own counts as the
# runtime's; the same program under its own name is reported.
cp "$P" "$W/python3.99-leaky"
check runtime 0 '' 'memory-leak' -- run mode=debug "$W/python3.99-leaky"
check runtime_system 23 'leaked in 6 allocations' '' -- run mode=debug:leak_system=1 "$W/python3.99-leaky"
# A frame in no module at exit (code unloaded by dlclose) does not make a
# leak the program's: a plugin's thread leaks, the plugin is unloaded, and
# the leak's other frames are the C library's thread start. As with ld,
# which gcc runs to link, and which unloads its LTO plugin after it leaked
# (every gcc link exited 23 in debug mode).
check plugin 0 '' 'memory-leak' -- run mode=debug $P plugin "$BUILD/tests/leaks/plugin.so"
check plugin_system 23 'leaked in 1 allocation\.$' '' -- run mode=debug:leak_system=1 $P plugin "$BUILD/tests/leaks/plugin.so"
if command -v gcc >/dev/null; then
    printf 'int main(void) { return 0; }\n' >"$W/hello.c"
    check gcc_link 0 '' 'memory-leak' -- run mode=debug gcc "$W/hello.c" -o "$W/hello"
fi
# The python3 first on PATH, if it is not Debian's (a pyenv build, say).
path_py=$(command -v python3 || true)
if [ -n "$path_py" ] && [ "$(readlink -f "$path_py")" != "$(readlink -f "$PY")" ]; then
    check path_python 0 '' 'memory-leak' -- run mode=debug "$path_py" -c 'import json, sqlite3; print(len(json.dumps(list(range(99)))))'
fi
[ $fails -eq 0 ]
