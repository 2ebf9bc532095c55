# Valgrind and sanitizer tests (included by the top-level Makefile).
#
#   make valgrind-test       memcheck on miniheap: valgrind/tests/ programs run
#                            with valgrind/miniheap-valgrind (LD_PRELOAD of
#                            $(BUILD)/libminiheap.so), reports checked
#   make valgrind-baseline   the same programs and checks on the system
#                            allocator (checks the tests, not miniheap)
#   make sanitizer-libs      $(BUILD)/{asan,msan,ubsan}/libminiheap_prefixed.a
#   make sanitizer-test      asan-test msan-test ubsan-test tsan-test:
#     asan-test    valgrind/tests/ programs built with -fsanitize=address on the
#                  mh_* API, linked with $(BUILD)/asan/libminiheap_prefixed.a
#     msan-test    the same with -fsanitize=memory (clang): uninitialised reads
#     ubsan-test   the clean programs, the unit tests of tests/ and the fuzz
#                  corpus (fuzz/) with miniheap built with -fsanitize=undefined
#     tsan-test    the thread tests of tests/ (threads, fork_modes, reports, mesh)
#                  with miniheap and the tests built with -fsanitize=thread
#                  (clang); any report fails
#
# The sanitizer libraries are built by the top-level Makefile's own rules in a
# sub-make (BUILD=$(BUILD)/asan EXTRA_CFLAGS=-fsanitize=address ...), so they
# follow CORE_SRCS and CFLAGS_LIB. Compilers: VG_ASAN_CC and VG_UBSAN_CC
# default to $(CC); VG_MSAN_CC to clang (gcc has no MSan).

VG_DIR       := $(BUILD)/valgrind
VG_PROGS     := vg_clean_api vg_clean_realloc vg_clean_threads vg_leak vg_bugs
VG_SAN_PROGS := vg_clean_api vg_clean_realloc vg_clean_threads vg_leak vg_bugs
VG_TEST_DEPS := valgrind/tests/vg_test.h include/miniheap.h valgrind/valgrind.mk
# -O0: the bugs stay where the source puts them; -fno-builtin: every
# malloc/free call is made.
VG_CFLAGS    := $(CSTD) -O0 -g -gdwarf-4 -fno-omit-frame-pointer $(WARN) -fno-builtin -pthread \
                -Iinclude -Ivalgrind/tests $(EXTRA_VG_CFLAGS)
VG_LDLIBS    := -pthread -ldl

VG_ASAN_CC   ?= $(CC)
VG_MSAN_CC   ?= clang
VG_UBSAN_CC  ?= $(CC)
VG_ASAN_FLAGS  ?= -fsanitize=address -fno-omit-frame-pointer
VG_MSAN_FLAGS  ?= -fsanitize=memory -fsanitize-memory-track-origins=2 -fno-omit-frame-pointer
VG_UBSAN_FLAGS ?= -fsanitize=undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer

.PHONY: valgrind-test valgrind-baseline valgrind-test-bins sanitizer-libs sanitizer-test \
        sanitizer-test-bins asan-test msan-test ubsan-test ubsan-unit-test ubsan-fuzz-corpus tsan-test \
        valgrind-clean

# ---- memcheck ------------------------------------------------------------------
VG_PLAIN_BINS := $(VG_PROGS:%=$(VG_DIR)/plain/%)

valgrind-test-bins: $(VG_PLAIN_BINS)

$(VG_DIR)/plain/%: valgrind/tests/%.c $(VG_TEST_DEPS)
	@mkdir -p $(dir $@)
	$(CC) $(VG_CFLAGS) $< -o $@ $(VG_LDLIBS)

valgrind-test: lib $(VG_PLAIN_BINS)
	BUILD=$(BUILD) VG_QUIET=1 valgrind/run-tests.sh --mode=miniheap

valgrind-baseline: $(VG_PLAIN_BINS)
	BUILD=$(BUILD) VG_QUIET=1 valgrind/run-tests.sh --mode=glibc

# ---- sanitizer builds of the library --------------------------------------------
# $(call vg_sublib,DIR,CC,FLAGS,TARGETS): the top-level rules in a sub-make.
vg_sublib = $(MAKE) --no-print-directory BUILD=$(1) CC=$(2) EXTRA_CFLAGS='$(3)' \
            LDLIBS_LIB='$(LDLIBS_LIB) $(3)' $(4)

# $(call vg_stamp,DIR,WORDS): the objects in DIR were built with other
# compiler/flags than WORDS (the rules do not track flags): remove them.
vg_stamp = mkdir -p $(1) && echo '$(2)' | cmp -s - $(1)/.vg-flags || \
           { rm -rf $(1)/obj $(1)/tests $(1)/libminiheap*; mkdir -p $(1) && echo '$(2)' >$(1)/.vg-flags; }

VG_FORCE:
.PHONY: VG_FORCE

$(BUILD)/asan/libminiheap_prefixed.a: VG_FORCE
	@$(call vg_stamp,$(BUILD)/asan,$(VG_ASAN_CC) $(VG_ASAN_FLAGS))
	+$(call vg_sublib,$(BUILD)/asan,$(VG_ASAN_CC),$(VG_ASAN_FLAGS),$@)
$(BUILD)/msan/libminiheap_prefixed.a: VG_FORCE
	@$(call vg_stamp,$(BUILD)/msan,$(VG_MSAN_CC) $(VG_MSAN_FLAGS))
	+$(call vg_sublib,$(BUILD)/msan,$(VG_MSAN_CC),$(VG_MSAN_FLAGS),$@)
$(BUILD)/ubsan/libminiheap_prefixed.a: VG_FORCE
	@$(call vg_stamp,$(BUILD)/ubsan,$(VG_UBSAN_CC) $(VG_UBSAN_FLAGS) $(VG_UBSAN_TEST_FLAGS))
	+$(call vg_sublib,$(BUILD)/ubsan,$(VG_UBSAN_CC),$(VG_UBSAN_FLAGS),$@)

sanitizer-libs: $(BUILD)/asan/libminiheap_prefixed.a $(BUILD)/msan/libminiheap_prefixed.a \
                $(BUILD)/ubsan/libminiheap_prefixed.a

# ---- test programs on the mh_* API ---------------------------------------------
# $(call vg_san_rules,NAME,CC,FLAGS)
define vg_san_rules
$(VG_DIR)/$(1)/%: valgrind/tests/%.c $(VG_TEST_DEPS) $(BUILD)/$(1)/libminiheap_prefixed.a
	@mkdir -p $$(dir $$@)
	$(2) $(VG_CFLAGS) $(3) -DVG_PREFIXED $$< -o $$@ $(BUILD)/$(1)/libminiheap_prefixed.a $(VG_LDLIBS)
endef
$(eval $(call vg_san_rules,asan,$(VG_ASAN_CC),$(VG_ASAN_FLAGS)))
$(eval $(call vg_san_rules,msan,$(VG_MSAN_CC),$(VG_MSAN_FLAGS)))
$(eval $(call vg_san_rules,ubsan,$(VG_UBSAN_CC),$(VG_UBSAN_FLAGS)))

# vg_lsan calls both ASan's malloc and mh_malloc: not built with VG_PREFIXED.
$(VG_DIR)/asan/vg_lsan: valgrind/tests/vg_lsan.c $(VG_TEST_DEPS) $(BUILD)/asan/libminiheap_prefixed.a
	@mkdir -p $(dir $@)
	$(VG_ASAN_CC) $(VG_CFLAGS) $(VG_ASAN_FLAGS) $< -o $@ $(BUILD)/asan/libminiheap_prefixed.a $(VG_LDLIBS)

VG_ASAN_BINS  := $(VG_SAN_PROGS:%=$(VG_DIR)/asan/%) $(VG_DIR)/asan/vg_lsan $(VG_DIR)/asan/vg_shadow
VG_MSAN_BINS  := $(VG_SAN_PROGS:%=$(VG_DIR)/msan/%)
VG_UBSAN_BINS := $(VG_SAN_PROGS:%=$(VG_DIR)/ubsan/%)

sanitizer-test-bins: $(VG_ASAN_BINS) $(VG_MSAN_BINS) $(VG_UBSAN_BINS)

asan-test: $(VG_ASAN_BINS)
	BUILD=$(BUILD) VG_QUIET=1 valgrind/run-tests.sh --mode=asan

msan-test: $(VG_MSAN_BINS)
	BUILD=$(BUILD) VG_QUIET=1 valgrind/run-tests.sh --mode=msan

# ---- UBSan: our clean programs, the unit tests, the fuzz corpus ---------------------
# The unit tests (tests/tests.mk) are built by their own rules in a sub-make
# with BUILD=$(BUILD)/ubsan and the UBSan flags added through EXTRA_CFLAGS and
# EXTRA_TEST_CFLAGS, then run by tests/run.sh, restricted to the C unit tests
# (test_NAME -> run.sh test NAME). The test programs themselves are built
# without the alignment check: clang checks glibc's alloc_align attribute on
# memalign(), and the tests call memalign(0, n) on purpose (glibc accepts it).
VG_UBSAN_UNIT ?= $(sort $(patsubst test_%,%,$(patsubst %_plain,%,$(notdir $(TEST_BINS)))))
VG_UBSAN_TEST_FLAGS ?= $(VG_UBSAN_FLAGS) -fno-sanitize=alignment

ubsan-unit-test: $(BUILD)/ubsan/libminiheap_prefixed.a
	@if [ -z "$(VG_UBSAN_UNIT)" ]; then echo "ubsan-unit-test: no unit tests (tests/tests.mk)"; exit 0; fi; \
	$(call vg_sublib,$(BUILD)/ubsan,$(VG_UBSAN_CC),$(VG_UBSAN_FLAGS),lib test-bins) \
	    EXTRA_TEST_CFLAGS='$(VG_UBSAN_TEST_FLAGS)' && \
	BUILD=$(BUILD)/ubsan MH_QUIET=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    tests/run.sh $(VG_UBSAN_UNIT)

# Fuzz corpus replay: each harness of fuzz/ (FUZZ_HARNESSES) built with
# fuzz/afl_driver.c's file-replay main, the UBSan flags and the UBSan library,
# run over every file of fuzz/corpus/HARNESS and fuzz/regressions/HARNESS.
VG_FUZZ_HARNESSES ?= $(FUZZ_HARNESSES)
VG_FUZZ_COMMON    ?= $(FUZZ_COMMON)
VG_FUZZ_DIR       := $(BUILD)/ubsan/fuzz-replay
VG_FUZZ_CFLAGS    := $(CSTD) -O1 -g -pthread -Iinclude -Ifuzz $(VG_UBSAN_FLAGS)
VG_FUZZ_BINS      := $(VG_FUZZ_HARNESSES:%=$(VG_FUZZ_DIR)/fuzz_%)

$(VG_FUZZ_DIR)/fuzz_%: fuzz/fuzz_%.c fuzz/afl_driver.c $(VG_FUZZ_COMMON:%=fuzz/%.c) $(wildcard fuzz/*.h) \
                       $(BUILD)/ubsan/libminiheap_prefixed.a
	@mkdir -p $(dir $@)
	$(VG_UBSAN_CC) $(VG_FUZZ_CFLAGS) $< fuzz/afl_driver.c $(VG_FUZZ_COMMON:%=fuzz/%.c) \
	    -o $@ $(BUILD)/ubsan/libminiheap_prefixed.a -pthread

ubsan-fuzz-corpus: $(VG_FUZZ_BINS)
	@set -e; n=0; \
	for h in $(VG_FUZZ_HARNESSES); do \
	    files=$$(find fuzz/corpus/$$h fuzz/regressions/$$h -type f 2>/dev/null | sort); \
	    [ -n "$$files" ] || { echo "ubsan-fuzz-corpus: no corpus for $$h"; continue; }; \
	    count=$$(echo "$$files" | wc -l); \
	    echo "ubsan-fuzz-corpus: $$h: $$count inputs"; \
	    echo "$$files" | UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	        xargs -d '\n' -n 200 $(VG_FUZZ_DIR)/fuzz_$$h >$(VG_FUZZ_DIR)/$$h.log 2>&1 || \
	        { tail -n 60 $(VG_FUZZ_DIR)/$$h.log; echo "FAIL ubsan-fuzz-corpus: $$h (log: $(VG_FUZZ_DIR)/$$h.log)"; exit 1; }; \
	    if grep -q "runtime error:" $(VG_FUZZ_DIR)/$$h.log; then \
	        grep -m5 -B2 -A10 "runtime error:" $(VG_FUZZ_DIR)/$$h.log; \
	        echo "FAIL ubsan-fuzz-corpus: $$h"; exit 1; fi; \
	    n=$$((n + count)); \
	done; echo "PASS ubsan-fuzz-corpus ($$n inputs)"

# ---- TSan: the thread tests ----------------------------------------------------
# The library by the top-level rules in a sub-make (BUILD=$(BUILD)/tsan), the
# prefixed thread tests against it, and test_threads once more with the
# statistics thread reading every cache. Nothing is suppressed at run time;
# two functions are built uninstrumented (MH_NO_TSAN in src/internal.h says
# why). test_last_thread is not run: TSan's own background thread keeps a
# process alive after its last thread ends, with or without us. Two TSan options
# are set, each for a reason that is not a race: detect_deadlocks=0, since its
# lock-order detector holds at most 64 locks and mh_check(), mh_stats() and
# fork() take every class lock (up to 8 x 68); die_after_fork=0, since
# test_fork_modes starts a thread in a child forked from a threaded parent.
VG_TSAN_CC    ?= clang
VG_TSAN_FLAGS ?= -fsanitize=thread
VG_TSAN_TESTS ?= test_threads test_fork_modes test_reports test_mesh
VG_TSAN_BINS  := $(VG_TSAN_TESTS:%=$(BUILD)/tsan/tests/%)
VG_TSAN_ENV   := TSAN_OPTIONS=halt_on_error=1:exitcode=66:detect_deadlocks=0:die_after_fork=0:second_deadlock_stack=1

$(BUILD)/tsan/libminiheap_prefixed.a: VG_FORCE
	@$(call vg_stamp,$(BUILD)/tsan,$(VG_TSAN_CC) $(VG_TSAN_FLAGS))
	+$(call vg_sublib,$(BUILD)/tsan,$(VG_TSAN_CC),$(VG_TSAN_FLAGS),$@)

$(BUILD)/tsan/tests/%: tests/%.c $(TEST_DEPS) $(BUILD)/tsan/libminiheap_prefixed.a
	@mkdir -p $(dir $@)
	$(VG_TSAN_CC) $(CSTD) -O1 -g $(WARN) -fno-builtin -pthread -Iinclude -Itests $(VG_TSAN_FLAGS) $< -o $@ \
	    $(BUILD)/tsan/libminiheap_prefixed.a $(TEST_LDLIBS)

tsan-test: $(VG_TSAN_BINS)
	@set -e; for t in $(VG_TSAN_BINS); do \
	    if $(VG_TSAN_ENV) $$t >$$t.log 2>&1; then echo "PASS tsan $$(basename $$t)"; \
	    else grep -A 48 'hung child' $$t.log | head -n 150; \
	    tail -n 80 $$t.log; echo "FAIL tsan $$(basename $$t) (log: $$t.log)"; exit 1; fi; \
	done; \
	t=$(BUILD)/tsan/tests/test_threads; \
	if $(VG_TSAN_ENV) MINIHEAP_OPTIONS=stats_interval_ms=5:stats_file=/dev/null $$t >$$t.stats.log 2>&1; \
	then echo "PASS tsan test_threads with the statistics thread"; \
	else tail -n 80 $$t.stats.log; echo "FAIL tsan test_threads with the statistics thread (log: $$t.stats.log)"; exit 1; fi

ubsan-test: $(VG_UBSAN_BINS)
	BUILD=$(BUILD) VG_QUIET=1 valgrind/run-tests.sh --mode=ubsan
	$(MAKE) --no-print-directory ubsan-unit-test
	$(MAKE) --no-print-directory ubsan-fuzz-corpus

sanitizer-test: asan-test msan-test ubsan-test tsan-test

valgrind-clean:
	rm -rf $(VG_DIR) $(BUILD)/asan $(BUILD)/msan $(BUILD)/ubsan $(BUILD)/tsan
