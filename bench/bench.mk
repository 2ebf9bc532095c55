# bench/bench.mk: the benchmark suite (issue #6), included by the top-level
# Makefile. See bench/README.md.
#
#   make bench-build   build every workload into $(BUILD)/bench/
#   make bench-smoke   build, then run each workload on a tiny input under
#                      LD_PRELOAD=$(BUILD)/libminiheap.so (fails only on a
#                      crash or non-zero exit; well under a minute)
#   make bench         the full comparison against the peers (bench/run);
#                      pass options with BENCH_ARGS="--quick --reps 1"
#   make bench-quick   bench/run --quick --reps 1

BENCH_BUILD  := $(BUILD)/bench
BENCH_PROGS  := churn larson xmalloc prodcons mstress tasks realloc large bigreuse memory scale
BENCH_BINS   := $(BENCH_PROGS:%=$(BENCH_BUILD)/%) $(BENCH_BUILD)/runpeak
BENCH_OPT    ?= -O2
BENCH_CFLAGS := $(CSTD) $(BENCH_OPT) -g $(WARN) -pthread
BENCH_ARGS   ?=

.PHONY: bench-build bench-smoke bench-quick

bench-build: $(BENCH_BINS)

$(BENCH_BUILD)/%: bench/src/%.c bench/src/bench.h bench/bench.mk
	@mkdir -p $(dir $@)
	$(CC) $(BENCH_CFLAGS) $< -o $@

bench-smoke: bench-build lib
	BENCH_BUILD=$(BENCH_BUILD) bench/smoke $(BUILD)/libminiheap.so

# The peers are benchmarked even when the allocator does not build (yet).
bench: bench-build
	@$(MAKE) --no-print-directory lib || echo "bench: libminiheap did not build; benchmarking the peers only" >&2
	BENCH_BUILD=$(BENCH_BUILD) bench/run --lib $(BUILD)/libminiheap.so $(BENCH_ARGS)

bench-quick: bench-build
	@$(MAKE) --no-print-directory lib || echo "bench: libminiheap did not build; benchmarking the peers only" >&2
	BENCH_BUILD=$(BENCH_BUILD) bench/run --lib $(BUILD)/libminiheap.so --quick --reps 1 $(BENCH_ARGS)
