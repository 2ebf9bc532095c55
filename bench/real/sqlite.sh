#!/bin/bash
# sqlite3 workload: bench/real/sqlite.sh [scale]
# Runs sqlite3 on an in-memory database with the script sqlite.sql.in
# (scale 1 = 150,000 rows). The allocator under test is preloaded by the
# caller (LD_PRELOAD is inherited by sqlite3). Prints RESULT time_s=...
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
scale=${1:-1}
if ! command -v sqlite3 >/dev/null 2>&1; then
    echo "SKIP sqlite3 not installed (apt-get install -y sqlite3)"
    exit 0
fi
rows=$(awk -v s="$scale" 'BEGIN { r = int(150000 * s); if (r < 100) r = 100; print r }')
sql=$(sed "s/@ROWS@/$rows/g" "$here/sqlite.sql.in")
t0=$(date +%s.%N)
out=$(printf '%s\n' "$sql" | sqlite3 -bail :memory:)
t1=$(date +%s.%N)
lines=$(printf '%s\n' "$out" | wc -l)
awk -v a="$t0" -v b="$t1" -v r="$rows" -v l="$lines" \
    'BEGIN { printf "RESULT time_s=%.6f rows=%d lines=%d\n", b - a, r, l }'
