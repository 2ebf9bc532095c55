#!/usr/bin/env bash
# Make sure the fuzzing tools are there: clang with libFuzzer (Debian's
# clang package ships it) and AFL++ (Debian's afl++). Installs what is
# missing with apt-get when run as root; waits for another apt/dpkg run.
set -eu
need=()
command -v "${FUZZ_CC:-clang}" >/dev/null 2>&1 || need+=(clang)
command -v "${AFL_CC:-afl-clang-fast}" >/dev/null 2>&1 || need+=(afl++)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "fuzz: missing ${need[*]}; install them (apt-get install ${need[*]})" >&2
    exit 1
fi
echo "fuzz: installing ${need[*]}" >&2
apt_get() { apt-get -o DPkg::Lock::Timeout=900 -o Acquire::Retries=3 "$@"; }
apt_get install -y -q "${need[@]}" >/dev/null ||
    { apt_get update -q >/dev/null && apt_get install -y -q "${need[@]}" >/dev/null; } || {
    echo "fuzz: could not install ${need[*]}" >&2
    exit 1
}
