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

TEST_PREFIXED := $(TEST_DIR)/test_api $(TEST_DIR)/test_threads $(TEST_DIR)/test_fork
TEST_PLAIN    := $(TEST_DIR)/test_api_plain $(TEST_DIR)/test_threads_plain $(TEST_DIR)/test_fork_plain \
                 $(TEST_DIR)/test_spike_plain
TEST_BINS     := $(TEST_PREFIXED) $(TEST_PLAIN)

include tests/bugs/bugs.mk

.PHONY: test-unit test-bins test-bins-plain
test-bins: $(TEST_BINS)
test-bins-plain: $(TEST_PLAIN)

test-unit: lib $(TEST_BINS) $(BUGS_BINS)
	BUILD=$(BUILD) bash tests/run.sh

$(TEST_PREFIXED): $(TEST_DIR)/%: tests/%.c $(TEST_DEPS) $(BUILD)/libminiheap_prefixed.a
	@mkdir -p $(dir $@)
	$(CC) $(TEST_CFLAGS) $< -o $@ $(BUILD)/libminiheap_prefixed.a $(TEST_LDLIBS)

$(TEST_PLAIN): $(TEST_DIR)/%_plain: tests/%.c $(TEST_DEPS)
	@mkdir -p $(dir $@)
	$(CC) $(TEST_CFLAGS) -DUSE_PLAIN $< -o $@ $(TEST_LDLIBS)
