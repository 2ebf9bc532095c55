# Fuzz harnesses (included by the top-level Makefile). See fuzz/README.md.
#
#   make fuzz              build every harness for libFuzzer and for AFL++
#   make fuzz-smoke        replay corpus + regressions, then fuzz each harness
#                          with libFuzzer (FUZZ_SMOKE_RUNS inputs, default 3000)
#                          and AFL++ (FUZZ_SMOKE_EXECS, default 12000), each
#                          from a fixed seed (so CI repeats); fails on any crash
#   make fuzz-regress      only replay the corpus and fuzz/regressions/
#   make fuzz-planted      build with a planted allocator bug (MH_PLANT_BUG) and
#                          show that libFuzzer finds it within FUZZ_PLANTED_RUNS
#                          inputs (default 300000) from a fixed seed
#   make fuzz-campaign FUZZ_HARNESS=ops FUZZ_ENGINE=afl FUZZ_SECONDS=3600
#                          a long run that keeps its findings in $(BUILD)/fuzz/campaign
#   make fuzz-open         which reproducers of open allocator bugs still fail
#   make fuzz-coverage     line/branch coverage of src/ reached by the corpora
#                          (seeds, regressions, campaign corpora)
#   make fuzz-clean
#
# Uses CC-independent compilers: FUZZ_CC (clang, for libFuzzer) and AFL_CC
# (afl-clang-fast; installed with apt-get by fuzz/install-deps.sh if missing).

FUZZ_CC       ?= clang
AFL_CC        ?= afl-clang-fast
FUZZ_SECONDS  ?= 60
FUZZ_OUT      := $(BUILD)/fuzz
FUZZ_HARNESSES := ops bugs threads
# libFuzzer builds: the allocator and the harness under ASan and UBSan.
FUZZ_SAN      ?= -fsanitize=address,undefined -fno-sanitize-recover=undefined
# AFL++ builds: UBSan only by default (speed); FUZZ_AFL_SAN=-fsanitize=address,undefined for more.
FUZZ_AFL_SAN  ?= -fsanitize=undefined -fno-sanitize-recover=undefined
# The allocator is another team's code: its warnings must not break fuzz builds.
FUZZ_LIB_CFLAGS := $(filter-out -Werror,$(CFLAGS_LIB)) -Wno-unknown-warning-option
FUZZ_H_CFLAGS := $(CSTD) -O2 -g $(WARN) -pthread -Iinclude -Ifuzz $(EXTRA_FUZZ_CFLAGS)
FUZZ_H_DEPS   := fuzz/fz.h fuzz/fz_seq.h fuzz/fuzz.mk fuzz/coverage-ignore.txt
FUZZ_COMMON   := fz_common fz_seq
# Coverage instrumentation left out of functions that mh_reset() runs over big tables.
FUZZ_LF_COV   := -fsanitize=fuzzer-no-link -fsanitize-coverage-ignorelist=fuzz/coverage-ignore.txt
FUZZ_AFL_ENV  := AFL_QUIET=1 AFL_LLVM_DENYLIST=fuzz/coverage-ignore.txt

# Objects of one flavour: $(call fz_objs,DIR) -> allocator + common harness objects.
fz_core_objs = $(CORE_SRCS:src/%.c=$(1)/obj/%.o)
fz_common_objs = $(FUZZ_COMMON:%=$(1)/obj/fuzz/%.o)

LF_DIR   := $(FUZZ_OUT)/libfuzzer
AFL_DIR  := $(FUZZ_OUT)/afl
PLANT_IDS := 1 2
LF_BINS  := $(FUZZ_HARNESSES:%=$(LF_DIR)/fuzz_%)
AFL_BINS := $(FUZZ_HARNESSES:%=$(AFL_DIR)/fuzz_%)
PLANT_BINS := $(foreach n,$(PLANT_IDS),$(FUZZ_OUT)/planted$(n)/fuzz_ops)
# Programs reproducing allocator bugs (fuzz/regressions/): open ones fail
# while their bug is open, fixed ones must pass (fuzz-regress).
FUZZ_OPEN_BINS := $(patsubst fuzz/regressions/open/%.c,$(FUZZ_OUT)/open/%,$(wildcard fuzz/regressions/open/*.c))
FUZZ_FIXED_BINS := $(patsubst fuzz/regressions/fixed/%.c,$(FUZZ_OUT)/fixed/%,$(wildcard fuzz/regressions/fixed/*.c))

.PHONY: fuzz fuzz-libfuzzer fuzz-afl fuzz-smoke fuzz-regress fuzz-planted fuzz-campaign fuzz-open fuzz-clean fuzz-deps \
        fuzz-coverage
fuzz: fuzz-libfuzzer fuzz-afl
fuzz-libfuzzer: $(LF_BINS)
fuzz-afl: $(AFL_BINS)

# ---- libFuzzer --------------------------------------------------------------
$(LF_DIR)/obj/%.o: src/%.c $(HEADERS) fuzz/fuzz.mk fuzz/coverage-ignore.txt
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_LIB_CFLAGS) $(FUZZ_SAN) $(FUZZ_LF_COV) -c $< -o $@

$(LF_DIR)/obj/fuzz/%.o: fuzz/%.c $(FUZZ_H_DEPS) include/miniheap.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_H_CFLAGS) $(FUZZ_SAN) $(FUZZ_LF_COV) -c $< -o $@

$(LF_DIR)/fuzz_%: $(LF_DIR)/obj/fuzz/fuzz_%.o $(call fz_common_objs,$(LF_DIR)) $(call fz_core_objs,$(LF_DIR))
	$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -pthread $^ -o $@

# ---- planted bugs: the allocator built with -DMH_PLANT_BUG=N ------------------
define FZ_PLANTED
$(FUZZ_OUT)/planted$(1)/obj/%.o: src/%.c $(HEADERS) fuzz/fuzz.mk fuzz/coverage-ignore.txt
	@mkdir -p $$(dir $$@)
	$(FUZZ_CC) $(FUZZ_LIB_CFLAGS) -DMH_PLANT_BUG=$(1) $(FUZZ_SAN) $(FUZZ_LF_COV) -c $$< -o $$@
$(FUZZ_OUT)/planted$(1)/fuzz_ops: $(LF_DIR)/obj/fuzz/fuzz_ops.o $(call fz_common_objs,$(LF_DIR)) $(call fz_core_objs,$(FUZZ_OUT)/planted$(1))
	$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -pthread $$^ -o $$@
endef
$(foreach n,$(PLANT_IDS),$(eval $(call FZ_PLANTED,$(n))))

# ---- AFL++ (persistent mode, driver in fuzz/afl_driver.c) ----------------------
fuzz-deps:
	fuzz/install-deps.sh

$(AFL_DIR)/.afl-cc:
	@fuzz/install-deps.sh
	@mkdir -p $(dir $@) && touch $@

$(AFL_DIR)/obj/%.o: src/%.c $(HEADERS) fuzz/fuzz.mk fuzz/coverage-ignore.txt | $(AFL_DIR)/.afl-cc
	@mkdir -p $(dir $@)
	$(FUZZ_AFL_ENV) $(AFL_CC) $(FUZZ_LIB_CFLAGS) $(FUZZ_AFL_SAN) -c $< -o $@

$(AFL_DIR)/obj/fuzz/%.o: fuzz/%.c $(FUZZ_H_DEPS) include/miniheap.h | $(AFL_DIR)/.afl-cc
	@mkdir -p $(dir $@)
	$(FUZZ_AFL_ENV) $(AFL_CC) $(FUZZ_H_CFLAGS) $(FUZZ_AFL_SAN) -c $< -o $@

$(AFL_DIR)/fuzz_%: $(AFL_DIR)/obj/fuzz/fuzz_%.o $(AFL_DIR)/obj/fuzz/afl_driver.o $(call fz_common_objs,$(AFL_DIR)) $(call fz_core_objs,$(AFL_DIR))
	$(FUZZ_AFL_ENV) $(AFL_CC) $(FUZZ_AFL_SAN) -pthread $^ -o $@

# ---- runs ------------------------------------------------------------------------
FUZZ_RUN_ENV = FUZZ_OUT=$(FUZZ_OUT) FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_HARNESSES="$(FUZZ_HARNESSES)"

fuzz-regress: $(LF_BINS) $(AFL_BINS) $(FUZZ_FIXED_BINS)
	$(FUZZ_RUN_ENV) fuzz/run.sh replay

# Smoke runs are bounded by inputs; the time is only a cap for slow machines.
fuzz-smoke: FUZZ_SECONDS = 300
fuzz-smoke: $(LF_BINS) $(AFL_BINS) $(FUZZ_FIXED_BINS)
	$(FUZZ_RUN_ENV) fuzz/run.sh smoke

fuzz-planted: $(PLANT_BINS)
	$(FUZZ_RUN_ENV) PLANT_IDS="$(PLANT_IDS)" fuzz/run.sh planted

# ---- source coverage of the allocator reached by corpora --------------------------
# Each harness built with clang's source-based coverage and fuzz/afl_driver.c's
# file-replay main, run once over its inputs (FUZZ_COV_INPUTS_<h>: the seed
# corpus, the regressions and every campaign corpus under $(FUZZ_OUT)/campaign),
# then one llvm-cov report over src/ for all harnesses together.
COV_DIR       := $(FUZZ_OUT)/coverage
COV_FLAGS     := -fprofile-instr-generate -fcoverage-mapping
LLVM_PROFDATA ?= llvm-profdata
LLVM_COV      ?= llvm-cov
COV_BINS      := $(FUZZ_HARNESSES:%=$(COV_DIR)/fuzz_%)

$(COV_DIR)/fuzz_%: fuzz/fuzz_%.c fuzz/afl_driver.c $(FUZZ_COMMON:%=fuzz/%.c) $(CORE_SRCS) $(HEADERS) $(FUZZ_H_DEPS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_H_CFLAGS) $(COV_FLAGS) -D_GNU_SOURCE -Isrc -Wno-unknown-warning-option \
	    $< fuzz/afl_driver.c $(FUZZ_COMMON:%=fuzz/%.c) $(CORE_SRCS) -o $@ -lpthread

fuzz-coverage: $(COV_BINS)
	$(FUZZ_RUN_ENV) COV_DIR=$(COV_DIR) LLVM_PROFDATA=$(LLVM_PROFDATA) LLVM_COV=$(LLVM_COV) fuzz/run.sh coverage

FUZZ_HARNESS ?= ops
FUZZ_ENGINE  ?= libfuzzer
fuzz-campaign: $(LF_BINS) $(if $(filter afl,$(FUZZ_ENGINE)),$(AFL_BINS))
	$(FUZZ_RUN_ENV) fuzz/run.sh campaign $(FUZZ_HARNESS) $(FUZZ_ENGINE)

# Reproducers of allocator bugs as programs (fuzz/regressions/README.md):
# open/ ones fail while their bug is open, fixed/ ones must pass (fuzz-regress).
$(FUZZ_OUT)/open/%: fuzz/regressions/open/%.c $(BUILD)/libminiheap_prefixed.a
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) -O1 -g -Iinclude $< -o $@ $(BUILD)/libminiheap_prefixed.a -pthread
$(FUZZ_OUT)/fixed/%: fuzz/regressions/fixed/%.c $(BUILD)/libminiheap_prefixed.a
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) -O1 -g -Iinclude $< -o $@ $(BUILD)/libminiheap_prefixed.a -pthread

fuzz-open: $(LF_BINS) $(FUZZ_OPEN_BINS)
	$(FUZZ_RUN_ENV) fuzz/run.sh open

fuzz-clean:
	rm -rf $(FUZZ_OUT)

# Keep the objects (they are intermediate files of the pattern rules).
.SECONDARY: $(foreach d,$(LF_DIR) $(AFL_DIR) $(PLANT_IDS:%=$(FUZZ_OUT)/planted%),$(call fz_core_objs,$(d)) $(call fz_common_objs,$(d))) \
            $(FUZZ_HARNESSES:%=$(LF_DIR)/obj/fuzz/fuzz_%.o) $(FUZZ_HARNESSES:%=$(AFL_DIR)/obj/fuzz/fuzz_%.o) $(AFL_DIR)/obj/fuzz/afl_driver.o
