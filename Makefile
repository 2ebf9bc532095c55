# miniheap — plain make, no generator step.
#   make            build/libminiheap.so, build/libminiheap.a, build/libminiheap_prefixed.a
#   make test       unit, stress, fork, real-program and memory tests
#   make bench      benchmarks against the peers (see bench/README.md)
#   make CC=clang   the same with clang

CC      ?= cc
CXX     ?= c++
AR      ?= ar
BUILD   ?= build
OPT     ?= -O2
WARN    := -Wall -Wextra -Werror -Wno-unused-parameter
CSTD    := -std=c17 -D_GNU_SOURCE
# -gdwarf-4: valgrind 3.19 cannot read the DWARF 5 that clang 14 emits by default.
CFLAGS_LIB := $(CSTD) $(OPT) -g -gdwarf-4 $(WARN) -fPIC -fvisibility=hidden -fno-omit-frame-pointer \
              -fno-builtin-malloc -fno-builtin-free -fno-builtin-calloc -fno-builtin-realloc \
              -ftls-model=initial-exec -Iinclude -Isrc $(EXTRA_CFLAGS)
CXXFLAGS_LIB := -std=c++17 $(OPT) -g -gdwarf-4 $(WARN) -fPIC -fvisibility=hidden -fno-omit-frame-pointer -Isrc $(EXTRA_CXXFLAGS)
LDLIBS_LIB := -lpthread

CORE_SRCS := src/os.c src/meta.c src/sizeclass.c src/miniheap.c src/slab.c src/large.c \
             src/tcache.c src/alloc.c src/options.c src/report.c src/check.c src/stats.c \
             src/stack.c src/fault.c src/leak.c src/random.c src/purge.c src/symbolize.c \
             src/mesh.c src/solo.c
CORE_OBJS := $(CORE_SRCS:src/%.c=$(BUILD)/obj/%.o)
OVERRIDE_OBJ := $(BUILD)/obj/override.o $(BUILD)/obj/new.o
HEADERS := $(wildcard src/*.h) include/miniheap.h

.PHONY: all lib clean test build-clang demo test-repeat
all: lib
lib: $(BUILD)/libminiheap.so $(BUILD)/libminiheap.a $(BUILD)/libminiheap_prefixed.a

# The entry points keep their stack frames (no sibling calls), so the stacks
# that valgrind and the sanitizers print go through malloc, free, mh_*.
# Under valgrind, malloc and free (override.c) and operator new and delete
# (new.cpp, through tracked_operator_*) keep theirs too: they make the
# block's client request after the call. Outside it they jump to mh_malloc,
# mh_free, mh_new and mh_delete_*: the call and frame of the hop were 26 of
# the 207 instructions of a fast-mode malloc and free, and 25 of the 245 of
# new and a sized delete.
# -fasynchronous-unwind-tables (x86-64's default, stated): operator new's
# bad_alloc is thrown through mh_new's frames.
$(BUILD)/obj/alloc.o: CFLAGS_LIB += -fno-optimize-sibling-calls -fasynchronous-unwind-tables

$(BUILD)/obj/%.o: src/%.c $(HEADERS) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_LIB) -c $< -o $@

$(BUILD)/obj/%.o: src/%.cpp $(HEADERS) Makefile
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS_LIB) -c $< -o $@

# Linked with the C driver: the C++ runtime is not a dependency (new.cpp
# binds to the program's own, weakly), and libgcc is linked in statically.
# The soname carries the ABI version (make install adds the links).
SONAME := libminiheap.so.1
$(BUILD)/libminiheap.so: $(CORE_OBJS) $(OVERRIDE_OBJ)
	$(CC) -shared -static-libgcc -o $@ $^ $(LDLIBS_LIB) -Wl,-z,now -Wl,--no-undefined -Wl,-soname,$(SONAME)

$(BUILD)/libminiheap.a: $(CORE_OBJS) $(OVERRIDE_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/libminiheap_prefixed.a: $(CORE_OBJS)
	@rm -f $@
	$(AR) rcs $@ $^

clean:
	rm -rf $(BUILD)

# The whole suite, as CI runs it. Each part is a target of its own
# (tests/tests.mk, bench/bench.mk, fuzz/fuzz.mk, valgrind/valgrind.mk).
TEST_PARTS := build-clang test-unit bench-smoke \
              $(if $(wildcard fuzz/fuzz.mk),fuzz-smoke fuzz-planted) \
              $(if $(wildcard valgrind/valgrind.mk),valgrind-test sanitizer-test)
test: lib
	@set -e; for t in $(TEST_PARTS); do \
	  echo "==== make $$t"; $(MAKE) --no-print-directory $$t; done; \
	echo "==== all test parts passed: $(TEST_PARTS)"

# make test N times in a row, each in a fresh clone of HEAD (tests/repeat.sh).
N ?= 5
test-repeat:
	tests/repeat.sh $(N) $(or $(REPEAT_TARGET),test)

# Warning-free with clang too (gcc is the default CC).
build-clang:
	$(MAKE) --no-print-directory CC=clang CXX=clang++ BUILD=$(BUILD)/clang lib

# Run a real program on miniheap and show what the allocator did.
demo: lib
	LD_PRELOAD=$(CURDIR)/$(BUILD)/libminiheap.so python3 -c \
	  'import ctypes, json; d = {str(i): list(range(i % 40)) for i in range(50000)}; \
	   print("python3 on miniheap: json of", len(json.dumps(d)), "bytes"); \
	   ctypes.CDLL(None).malloc_stats()'

-include tests/tests.mk
-include bench/bench.mk
-include fuzz/fuzz.mk
-include valgrind/valgrind.mk
-include tools/tools.mk
