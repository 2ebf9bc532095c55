# Heap-bug programs of issue #3 (included by tests/tests.mk). They link with
# nothing of ours: tests/t_bugs.sh runs them under LD_PRELOAD=$(BUILD)/libminiheap.so.
# -rdynamic and frame pointers let debug-mode reports name their functions;
# -fsized-deallocation makes clang call sized delete as g++ does (C++14 default).
#
#   make bugs-bins      build $(BUILD)/tests/bugs/bugs, bugs_cxx and libprivate_new.so

BUGS_DIR      := $(BUILD)/tests/bugs
BUGS_FLAGS    := -O1 -g -fno-omit-frame-pointer -rdynamic -pthread $(WARN)
BUGS_CFLAGS   := $(CSTD) -fno-builtin -Iinclude $(BUGS_FLAGS) $(EXTRA_TEST_CFLAGS)
BUGS_CXXFLAGS := -std=c++17 -fsized-deallocation $(BUGS_FLAGS) $(EXTRA_TEST_CXXFLAGS)
BUGS_BINS     := $(BUGS_DIR)/bugs $(BUGS_DIR)/bugs_cxx $(BUGS_DIR)/libprivate_new.so

.PHONY: bugs-bins
bugs-bins: $(BUGS_BINS)

$(BUGS_DIR)/bugs: tests/bugs/bugs.c tests/bugs/bugs.mk include/miniheap.h
	@mkdir -p $(dir $@)
	$(CC) $(BUGS_CFLAGS) $< -o $@ -ldl

$(BUGS_DIR)/bugs_cxx: tests/bugs/bugs_cxx.cpp tests/bugs/bugs.mk
	@mkdir -p $(dir $@)
	$(CXX) $(BUGS_CXXFLAGS) $< -o $@

# bugs_cxx private_new loads it from its own directory.
$(BUGS_DIR)/libprivate_new.so: tests/bugs/private_new.cpp tests/bugs/bugs.mk
	@mkdir -p $(dir $@)
	$(CXX) $(BUGS_CXXFLAGS) -shared -fPIC -Wl,-Bsymbolic-functions $< -o $@
