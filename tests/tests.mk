# Test suite (included by the top-level Makefile).
#
#   make test-unit          build lib + tests, run tests/run.sh (part of make test)
#   make test-unit CC=clang the same with clang
#   make test-bins          only build the test programs
#   make test-bins-plain    only the plain-name ones (need no library)
#
# Each C test is built into $(BUILD)/tests/ in up to two flavours:
#   NAME        the mh_* API, linked with $(BUILD)/libminiheap_prefixed.a
#   NAME_plain  the plain malloc names (-DUSE_PLAIN), linked with nothing of
#               ours; run.sh runs it under LD_PRELOAD=$(BUILD)/libminiheap.so
# -fno-builtin keeps the compiler from folding or eliding the calls under test.

TEST_DIR      := $(BUILD)/tests
TEST_CFLAGS   := $(CSTD) -O2 -g $(WARN) -fno-builtin -pthread -Iinclude -Itests $(EXTRA_TEST_CFLAGS)
TEST_LDLIBS   := -pthread -ldl
TEST_DEPS     := tests/mh_test.h include/miniheap.h tests/tests.mk

TEST_PREFIXED := $(TEST_DIR)/test_api $(TEST_DIR)/test_threads $(TEST_DIR)/test_fork $(TEST_DIR)/test_oom \
                 $(TEST_DIR)/test_fork_modes $(TEST_DIR)/test_reports $(TEST_DIR)/test_faults \
                 $(TEST_DIR)/test_options $(TEST_DIR)/test_mesh $(TEST_DIR)/test_large_cache \
                 $(TEST_DIR)/test_solo $(TEST_DIR)/test_last_thread
TEST_PLAIN    := $(TEST_DIR)/test_api_plain $(TEST_DIR)/test_threads_plain $(TEST_DIR)/test_fork_plain \
                 $(TEST_DIR)/test_spike_plain $(TEST_DIR)/test_oom_plain \
                 $(TEST_DIR)/test_idle_plain $(TEST_DIR)/test_sigaction_plain $(TEST_DIR)/test_seccomp_plain \
                 $(TEST_DIR)/test_last_thread_plain
TEST_BINS     := $(TEST_PREFIXED) $(TEST_PLAIN)

include tests/bugs/bugs.mk

# A libFuzzer target with a planted overflow (tests/t_fuzz_crash_file.sh),
# with miniheap preloaded and linked in. clang: libFuzzer comes with it.
FUZZ_TARGET_DIR  := $(TEST_DIR)/fuzzing
FUZZ_TARGET_BINS := $(FUZZ_TARGET_DIR)/overflow_target $(FUZZ_TARGET_DIR)/overflow_target_linked
$(FUZZ_TARGET_DIR)/overflow_target: tests/fuzzing/overflow_target.c tests/tests.mk
	@mkdir -p $(dir $@)
	clang -O1 -g -fno-builtin -fsanitize=fuzzer $< -o $@
$(FUZZ_TARGET_DIR)/overflow_target_linked: tests/fuzzing/overflow_target.c tests/tests.mk $(BUILD)/libminiheap.a
	@mkdir -p $(dir $@)
	clang++ -O1 -g -fno-builtin -fsanitize=fuzzer -x c $< -x none -Wl,--whole-archive $(BUILD)/libminiheap.a \
	    -Wl,--no-whole-archive -pthread -o $@

.PHONY: test-unit test-bins test-bins-plain
test-bins: $(TEST_BINS)
test-bins-plain: $(TEST_PLAIN)

# Start-up environments (tests/t_startup.sh): a fake page size, a
# set-user-ID program linked with libminiheap.a (by the C driver: no C++
# runtime needed), a C program that loads C++ code with dlopen.
STARTUP_DIR  := $(TEST_DIR)/startup
STARTUP_BINS := $(STARTUP_DIR)/pagesize_shim.so $(STARTUP_DIR)/overflow_static \
                $(STARTUP_DIR)/dlopen_cxx $(STARTUP_DIR)/cxx_plugin.so
$(STARTUP_DIR)/pagesize_shim.so: tests/startup/pagesize_shim.c tests/tests.mk
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) -O1 -shared -fPIC $< -o $@ -ldl
$(STARTUP_DIR)/overflow_static: tests/startup/overflow_static.c tests/tests.mk $(BUILD)/libminiheap.a
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) -O1 -g -fno-builtin $< $(BUILD)/libminiheap.a -pthread -o $@
$(STARTUP_DIR)/dlopen_cxx: tests/startup/dlopen_cxx.c tests/tests.mk
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) -O1 -g $< -o $@ -ldl
$(STARTUP_DIR)/cxx_plugin.so: tests/startup/cxx_plugin.cpp tests/tests.mk
	@mkdir -p $(dir $@)
	$(CXX) -std=c++17 -O1 -g -shared -fPIC $(WARN) $< -o $@

# A program that leaks from two functions (tests/t_leaks.sh).
LEAK_BINS := $(TEST_DIR)/leaks/leaky $(TEST_DIR)/leaks/plugin.so
$(TEST_DIR)/leaks/leaky: tests/leaks/leaky.c tests/tests.mk
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) -O1 -g -fno-omit-frame-pointer -fno-builtin -rdynamic -pthread $< -o $@ -ldl
$(TEST_DIR)/leaks/plugin.so: tests/leaks/plugin.c tests/tests.mk
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) -O1 -g -fno-omit-frame-pointer -fno-builtin -shared -fPIC -pthread $< -o $@

test-unit: lib $(TEST_BINS) $(BUGS_BINS) $(FUZZ_TARGET_BINS) $(STARTUP_BINS) $(LEAK_BINS)
	BUILD=$(BUILD) bash tests/run.sh

$(TEST_PREFIXED): $(TEST_DIR)/%: tests/%.c $(TEST_DEPS) $(BUILD)/libminiheap_prefixed.a
	@mkdir -p $(dir $@)
	$(CC) $(TEST_CFLAGS) $< -o $@ $(BUILD)/libminiheap_prefixed.a $(TEST_LDLIBS)

$(TEST_PLAIN): $(TEST_DIR)/%_plain: tests/%.c $(TEST_DEPS)
	@mkdir -p $(dir $@)
	$(CC) $(TEST_CFLAGS) -DUSE_PLAIN $< -o $@ $(TEST_LDLIBS)
