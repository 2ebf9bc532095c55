#!/bin/bash
# redis workload: bench/real/redis.sh [scale]
#
# Starts redis-server on 127.0.0.1 (a free port, no persistence) with the
# allocator under test preloaded, runs redis-benchmark against it (the client
# runs with the system allocator), and stops the server.
#   BENCH_PRELOAD   library to preload into redis-server only ("" = glibc)
# Debian's redis-server is linked with jemalloc; for the glibc column
# libc.so.6 is preloaded so that glibc's malloc is the one used.
# Scale 1 = 50,000 requests per test, 8 tests, pipelining 16.
# Prints RESULT time_s=<sum over tests of requests/rps> peak_kb=<server VmHWM>.
set -euo pipefail
scale=${1:-1}
for cmd in redis-server redis-benchmark redis-cli; do
    if ! command -v "$cmd" >/dev/null 2>&1; then
        echo "SKIP $cmd not installed (apt-get install -y redis-server redis-tools)"
        exit 0
    fi
done
preload=${BENCH_PRELOAD:-}
if [ -z "$preload" ]; then
    preload=$(ldconfig -p | awk '/libc\.so\.6 .*x86-64/ && p == "" { p = $NF } END { print p }')
    [ -n "$preload" ] || preload=/lib/x86_64-linux-gnu/libc.so.6
fi
requests=$(awk -v s="$scale" 'BEGIN { r = int(50000 * s); if (r < 200) r = 200; print r }')
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
dir=$(mktemp -d /tmp/miniheap-redis.XXXXXX)
server=""
cleanup() {
    if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    rm -rf "$dir"
}
trap cleanup EXIT

LD_PRELOAD="$preload" redis-server --port "$port" --bind 127.0.0.1 --protected-mode yes \
    --save "" --appendonly no --daemonize no --dir "$dir" --logfile "$dir/redis.log" \
    --loglevel warning &
server=$!
for _ in $(seq 1 200); do
    if redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1; then break; fi
    if ! kill -0 "$server" 2>/dev/null; then
        echo "redis-server exited at start:" >&2
        cat "$dir/redis.log" >&2 || true
        wait "$server" || exit $?
        exit 1
    fi
    sleep 0.05
done
redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null

csv=$(env -u LD_PRELOAD redis-benchmark -h 127.0.0.1 -p "$port" -n "$requests" -r 100000 \
    -d 256 -P 16 -c 20 -t set,get,incr,lpush,lpop,sadd,hset,lrange_100 --csv -q)
total=$(printf '%s\n' "$csv" | awk -F, -v n="$requests" '
    NR > 1 { gsub(/"/, "", $2); if ($2 + 0 > 0) { t += n / $2; k++ } }
    END { if (k == 0) exit 1; printf "%.6f %d", t, k }') || {
    echo "redis-benchmark gave no results:" >&2
    printf '%s\n' "$csv" >&2
    exit 1
}
hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$server/status")
used=$(redis-cli -h 127.0.0.1 -p "$port" info memory | awk -F: '/^used_memory:/ { print $2 + 0 }')
redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || true
status=0
wait "$server" || status=$?
server=""
if [ "$status" -ne 0 ]; then
    echo "redis-server exited with status $status" >&2
    cat "$dir/redis.log" >&2 || true
    exit 1
fi
set -- $total
echo "RESULT time_s=$1 tests=$2 requests=$requests peak_kb=$hwm used_memory=$used"
