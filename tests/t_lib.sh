# Sourced by the tests/t_*.sh scripts: what each of them sets up first.
#   BUILD     the build directory (default build)
#   LIB       the preloaded library, an absolute path (MH_LIB, default
#             $BUILD/libminiheap.so); a script that needs miniheap exits 0
#             with SKIP when it is "none" (MH_PRELOAD=none: the system
#             allocator, to check the tests themselves)
#   PY        python3 (Debian's, when there)
#   fail MSG  print FAIL: MSG and count it; end with `[ $fails -eq 0 ]`
# (Not executable and not named t_*.sh: tests/run.sh does not run it.)
cd "$(dirname "$0")/.." || exit 2
BUILD=${BUILD:-build}
LIB=${MH_LIB:-$BUILD/libminiheap.so}
[ "$LIB" = none ] && { echo "SKIP: needs miniheap (MH_PRELOAD=none)"; exit 0; }
case $LIB in /*) ;; *) LIB=$PWD/$LIB ;; esac
PY=/usr/bin/python3
[ -x $PY ] || PY=$(command -v python3 || echo python3)
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
