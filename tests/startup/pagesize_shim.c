/* Preloaded before libminiheap.so: tells whoever asks getauxval() for the
 * page size that pages are 16 KiB (arm64 and ppc64 systems have them), so
 * tests/t_startup.sh can check that miniheap refuses to run with a clear
 * message instead of cutting guard pages in the wrong places. */
#include <dlfcn.h>
#include <sys/auxv.h>

unsigned long getauxval(unsigned long type) {
    static unsigned long (*real)(unsigned long);
    if (type == AT_PAGESZ) return 16384;
    if (!real) real = (unsigned long (*)(unsigned long))dlsym(RTLD_NEXT, "getauxval");
    return real ? real(type) : 0;
}
