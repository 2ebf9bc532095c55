#!/usr/bin/env python3
"""Write the seed corpus of the fuzz harnesses (fuzz/corpus/*/seed-*).

The encodings follow fz_common.c (options, sizes), fz_seq.c (operations) and
fuzz_threads.c. Run from the repository root: python3 fuzz/gen_corpus.py
"""
import os
import random
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")

# fz_seq.c opcodes
(MALLOC, MALLOC2, CALLOC, REALLOC, REALLOC2, REALLOCARRAY, FREE, FREE_SIZED, FREE_ALIGNED_SIZED,
 POSIX_MEMALIGN, ALIGNED_ALLOC, MEMALIGN, PAGE_ALLOC, USABLE, TRIM, WRITE_USABLE, VERIFY, FREE_ALL,
 BUG, MALLOC_SAME, BURST_MALLOC, BURST_FREE) = range(22)
NBUGS = 12


def opts(tcache=1, decay=0, float_pct=1, cache=2, large_cache=3, mode=1, quar=0, rate=0, extra=0):
    """fz_apply_options: mode 0 fast, 1 hardened, 2 debug; extra bits: random,
    slab_guards, poison=2, fill_new, check_every (0x10: 1, 0x20: 7, 0x30: 64)."""
    a = (0 if tcache else 1) | (decay << 1) | (float_pct << 3) | (cache << 5)
    b = large_cache | (mode << 2) | (quar << 4) | (rate << 6)
    return bytes([a, b, extra])


# size encodings (fz_size)
def tiny(n): return bytes([0, n])
def boundary(cls, d=0): return bytes([3, cls, d + 2])
def medium(n): return bytes([6]) + struct.pack("<H", (n - 129) % (16384 - 128))
def border_range(n): return bytes([8]) + struct.pack("<I", n)
def large(n): return bytes([9]) + struct.pack("<I", n - (128 << 10) - 1)
def large_border(d): return bytes([11, d + 1])
def huge(k): return bytes([12, k])
def failing(k): return bytes([13, k])
def raw(n): return bytes([14]) + struct.pack("<H", n)


def op(code, slot, *args):
    return bytes([code, slot]) + b"".join(args)


def write(sub, name, data):
    d = os.path.join(ROOT, sub)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def ops_seeds():
    s = {}
    # every class boundary, -2..+2, allocated and freed in turn
    b = opts()
    for c in range(64):
        b += op(MALLOC, c % 32, boundary(c, (c % 5) - 2))
        if c % 3 == 2:
            b += op(FREE, (c - 1) % 32)
    b += op(FREE_ALL, 0)
    s["boundaries"] = b
    # realloc chain through every range, then to zero
    b = opts(decay=1)
    b += op(MALLOC, 1, tiny(1))
    for sz in (tiny(24), boundary(10), medium(3000), border_range(128 << 10), large(300000),
               large(4 << 20), border_range(100), huge(0), tiny(0), tiny(5)):
        b += op(REALLOC, 1, sz)
    b += op(REALLOC, 1, tiny(0))
    s["realloc-chain"] = b
    # calloc: plain, overflowing, huge
    b = opts(tcache=0)
    b += op(CALLOC, 0, bytes([0]), medium(700))
    b += op(CALLOC, 1, bytes([1]), large(200000))
    b += op(CALLOC, 2, bytes([2 | (15 << 2)]), failing(0))
    b += op(CALLOC, 3, bytes([3 | (2 << 2)]), tiny(2))
    b += op(CALLOC, 4, bytes([3]), tiny(16))
    b += op(FREE, 0) + op(FREE, 1)
    s["calloc"] = b
    # aligned allocations, valid and not
    b = opts(float_pct=0)
    for i, al in enumerate([0, 3, 4, 5, 6, 12, 16, 20, 0x80 + 40, 0x80 + 63, 0xc0, 0xc1, 0xc2, 0xc6, 0xc7]):
        b += op(POSIX_MEMALIGN + i % 3, i, bytes([al]), boundary(i * 3))
    b += op(PAGE_ALLOC, 20, bytes([0]), medium(5000)) + op(PAGE_ALLOC, 21, bytes([1]), raw(0))
    b += op(PAGE_ALLOC, 22, bytes([1]), failing(0))
    b += op(FREE_ALIGNED_SIZED, 5) + op(FREE_SIZED, 6)
    s["aligned"] = b
    # large and huge, failing sizes
    b = opts(large_cache=0)
    for k in range(8):
        b += op(MALLOC, k, huge(k)) + op(MALLOC, 8 + k, failing(k))
    b += op(MALLOC, 20, large_border(-1)) + op(MALLOC, 21, large_border(0)) + op(MALLOC, 22, large_border(1))
    b += op(REALLOCARRAY, 20, bytes([8]), tiny(3)) + op(REALLOCARRAY, 21, bytes([2]), large(600000))
    b += op(TRIM, 0, bytes([0]))
    s["large-huge"] = b
    # fill many slots of one class, free, reuse, trim, write up to usable
    b = opts(decay=0, cache=0, extra=0x13)
    for k in range(32):
        b += op(MALLOC, k, boundary(20 + k % 3))
    for k in range(0, 32, 2):
        b += op(FREE, k)
    for k in range(0, 32, 2):
        b += op(MALLOC_SAME, k, bytes([k + 1]))
    for k in range(32):
        b += op(WRITE_USABLE, k) + op(USABLE, k)
    b += op(REALLOC, 3, medium(9000)) + op(TRIM, 0, bytes([1])) + op(FREE_ALL, 0)
    s["fill-reuse"] = b
    # bursts of one size fill slabs; bursts of frees empty them
    b = opts(tcache=0, decay=0)
    for k, sz in enumerate((tiny(40), boundary(40), medium(6000), border_range(100000))):
        b += op(BURST_MALLOC, 8 * k, bytes([6]), sz)
    b += op(BURST_FREE, 0, bytes([7])) + op(BURST_FREE, 16, bytes([0x0f]))
    b += op(BURST_MALLOC, 0, bytes([3]), large(300000)) + op(BURST_FREE, 0, bytes([3]))
    s["bursts"] = b
    # bugs (in fuzz_ops they only verify): one of each on a fresh slot
    rnd = random.Random(4)
    for k in range(4):
        b = opts(tcache=k & 1, mode=k % 3, extra=(0, 0x3f, 0x15, 0x2a)[k])
        for _ in range(120):
            code = rnd.randrange(22)
            b += bytes([code, rnd.randrange(32)]) + bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 6)))
        s["random-%d" % k] = b
    return s


def bugs_seeds():
    s = {}
    for bug in range(NBUGS):
        for v in (0, 1, 2, 37):
            b = opts(mode=v % 3)
            b += op(MALLOC, 0, boundary(12)) + op(MALLOC, 1, large(700000))
            b += op(BUG, v % 2, bytes([bug, v]), boundary(30))
            b += op(MALLOC, 2, tiny(8)) + op(FREE, 2)
            s["bug%02d-v%d" % (bug, v)] = b
    return s


def threads_seeds():
    s = {}
    T_MALLOC, T_CALLOC, T_MEMALIGN, T_REALLOC, T_FREE, T_FREE_SIZED, T_VERIFY, T_CHECK, T_TRIM = range(9)

    def top(code, slot, extra=0, size=b""):
        return bytes([code, slot, extra]) + (size if code <= T_REALLOC else b"")

    # lockstep: spawn 3, allocate in one, free in another, exit the allocator first
    b = opts() + bytes([0])
    b += bytes([0, 0, 0])  # three spawns
    for k in range(12):
        b += bytes([2 | (0 << 3)]) + top(T_MALLOC, k, 0, boundary(k * 4))
    b += bytes([1 | (0 << 3)])  # thread 0 exits with its cache
    for k in range(12):
        b += bytes([2 | (1 << 3)]) + top(T_FREE if k % 2 else T_REALLOC, k, 0, medium(500 + k))
    b += bytes([2 | (2 << 3)]) + top(T_CHECK, 0) + bytes([2 | (1 << 3)]) + top(T_TRIM, 0)
    s["lockstep"] = b
    # free-running waves
    b = opts(decay=1) + bytes([1])
    for wave in range(3):
        b += bytes([2])  # 2 + 2 % 3 = 4 threads
        for t in range(4):
            b += bytes([24])
            for k in range(24):
                code = (T_MALLOC, T_FREE, T_REALLOC, T_MEMALIGN, T_CALLOC, T_CHECK)[(k + t) % 6]
                b += top(code, (k * 5 + t) % 24, k, boundary((k * 7 + t) % 60))
    s["waves"] = b
    return s


def main():
    for name, data in ops_seeds().items():
        write("ops", name, data)
        write("bugs", name, data)
    for name, data in bugs_seeds().items():
        write("bugs", name, data)
    for name, data in threads_seeds().items():
        write("threads", name, data)


if __name__ == "__main__":
    main()
