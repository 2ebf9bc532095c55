"""python3 workload for the miniheap benchmarks (run with PYTHONMALLOC=malloc
so that every object goes through the allocator under test).

Usage: python3 pywork.py [scale]

Builds and drops dicts of strings, lists of tuples, sorts, string joins and
JSON round trips: the allocation mix of ordinary Python programs. Fixed seed.
Prints "RESULT time_s=..." (time without interpreter start-up).
"""
import json
import random
import sys
import time


def work(n, rng):
    # a dict of records, as a parser or a cache builds
    table = {}
    for i in range(n):
        key = "key:%d:%x" % (i, rng.getrandbits(32))
        table[key] = {"id": i, "name": "n" * (i % 40), "tags": [i, i + 1, str(i)]}
    # sort and group
    rows = sorted(table.items(), key=lambda kv: kv[1]["id"] % 97)
    groups = {}
    for k, v in rows:
        groups.setdefault(v["id"] % 97, []).append(k)
    # string building
    text = "\n".join(",".join(g[:20]) for g in groups.values())
    words = text.split(",")
    # JSON round trip of a slice
    blob = json.dumps([table[k] for k in words[: n // 4] if k in table])
    back = json.loads(blob)
    # churn: delete half, add tuples
    keys = list(table)
    rng.shuffle(keys)
    for k in keys[: n // 2]:
        del table[k]
    extra = [(i, str(i) * 3, float(i)) for i in range(n // 2)]
    return len(table) + len(back) + len(extra) + len(text)


def main():
    scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    rng = random.Random(0x6D696E6968656170)
    n = max(200, int(15000 * scale))
    rounds = 6
    t0 = time.perf_counter()
    check = 0
    for _ in range(rounds):
        check += work(n, rng)
    t1 = time.perf_counter()
    print("RESULT time_s=%.6f check=%d" % (t1 - t0, check))


if __name__ == "__main__":
    main()
