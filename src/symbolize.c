/* Function names and file:line for the frames of a report, from the
 * modules' symbol tables and DWARF line tables, static functions included.
 * As AddressSanitizer does, by running a symbolizer: llvm-symbolizer if it
 * is on PATH (or the option symbolizer=PATH names one), else addr2line;
 * once per module for all the frames of a report, at report time only.
 * Without one, frames show what dladdr knows (exported names) and
 * module+offset, which addr2line can turn into a line later.
 *
 * A report collects its frames (sym_add), resolves them together
 * (sym_resolve), then prints (sym_lookup). Reports are serialised by the
 * report lock (the leak report runs alone at exit), so one table serves. */
#include "internal.h"

#include <dlfcn.h>
#include <elf.h>
#include <link.h>

#define SYM_MAX   512
#define SYM_TEXT  224
#define BATCH     64          /* addresses per symbolizer run */

typedef struct sym { uintptr_t pc; char text[SYM_TEXT]; } sym_t;
static sym_t table[SYM_MAX];
static uint32_t n_table;

static char tool[256];        /* the symbolizer's path; "" none */
static bool tool_llvm;
static int tool_state;        /* 0 not looked for, 1 found, -1 none */

void sym_reset(void) { n_table = 0; }

void sym_add(uintptr_t pc) {
    for (uint32_t i = 0; i < n_table; i++)
        if (table[i].pc == pc) return;
    if (n_table < SYM_MAX) table[n_table++] = (sym_t){.pc = pc};
}

const char *sym_lookup(uintptr_t pc) {
    for (uint32_t i = 0; i < n_table; i++)
        if (table[i].pc == pc) return table[i].text[0] ? table[i].text : NULL;
    return NULL;
}

extern char **environ;

static bool find_on_path(const char *name, char *out, size_t cap) {
    const char *path = NULL;
    for (char **e = environ; e && *e; e++)
        if (strncmp(*e, "PATH=", 5) == 0) path = *e + 5;
    if (!path) path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        const char *end = path;
        while (*end && *end != ':') end++;
        mh_buf_t b = {out, 0, cap};
        out[0] = 0;
        for (const char *c = path; c < end && b.len + 1 < cap; c++) b.p[b.len++] = *c;
        b.p[b.len] = 0;
        buf_str(&b, "/");
        buf_str(&b, name);
        if (b.len + 1 < cap && os_executable(out)) return true;
        path = *end ? end + 1 : end;
    }
    return false;
}

static bool find_tool(void) {
    if (tool_state) return tool_state > 0;
    tool_state = -1;
    if (mh_opt.symbolizer[0]) {
        memcpy(tool, mh_opt.symbolizer, sizeof tool);
        tool[sizeof tool - 1] = 0;
    } else if (!find_on_path("llvm-symbolizer", tool, sizeof tool) && !find_on_path("addr2line", tool, sizeof tool)) {
        return false;
    }
    if (!os_executable(tool)) return false;
    tool_llvm = strstr(tool, "llvm-symbolizer") != NULL;
    tool_state = 1;
    return true;
}

/* The main program's dladdr name is how it was started ("prog"): its real
 * path is what a symbolizer needs. */
static uintptr_t main_base;
static int find_main(struct dl_phdr_info *info, size_t size, void *arg) {
    (void)size;
    (void)arg;
    main_base = info->dlpi_addr; /* the first object is the program */
    for (int i = 0; i < info->dlpi_phnum; i++)
        if (info->dlpi_phdr[i].p_type == PT_LOAD) {
            main_base = info->dlpi_addr + info->dlpi_phdr[i].p_vaddr - info->dlpi_phdr[i].p_offset;
            break;
        }
    return 1;
}

/* Lines of the symbolizer's output, two per address (GNU style: function,
 * then file:line). */
static void take_results(char *out, uint32_t *idx, uint32_t n) {
    char *line = out;
    for (uint32_t k = 0; k < n && *line; k++) {
        char *fn = line, *nl = strchr(fn, '\n');
        if (!nl) break;
        *nl = 0;
        char *loc = nl + 1;
        nl = strchr(loc, '\n');
        if (!nl) break;
        *nl = 0;
        line = nl + 1;
        char *disc = strstr(loc, " (discriminator");
        if (disc) *disc = 0;
        sym_t *s = &table[idx[k]];
        mh_buf_t b = {s->text, 0, sizeof s->text};
        s->text[0] = 0;
        bool known_fn = strcmp(fn, "??") != 0, known_loc = strncmp(loc, "??", 2) != 0 && strcmp(loc, "") != 0;
        if (!known_fn && !known_loc) continue;
        buf_str(&b, known_fn ? fn : "??");
        if (known_loc) {
            buf_str(&b, " ");
            buf_str(&b, loc);
        }
    }
}

/* One module: every table entry whose pc falls in it. */
static void resolve_module(uintptr_t base, const char *path, bool *done) {
    /* A position-dependent executable (ET_EXEC) is addressed by absolute
     * addresses, everything else by offsets from its base. */
    const ElfW(Ehdr) *eh = (const ElfW(Ehdr) *)base;
    bool absolute = eh->e_type == ET_EXEC;
    uint32_t idx[BATCH], n = 0;
    char addrs[BATCH][24];
    const char *argv[BATCH + 10];
    for (uint32_t i = 0; i < n_table; i++) {
        if (done[i]) continue;
        Dl_info info;
        if (!dladdr((void *)(table[i].pc - 1), &info) || (uintptr_t)info.dli_fbase != base) continue;
        done[i] = true;
        uintptr_t a = table[i].pc - 1 - (absolute ? 0 : base); /* the call instruction, not the return address */
        mh_buf_t b = {addrs[n], 0, sizeof addrs[n]};
        buf_hex(&b, a);
        idx[n++] = i;
        if (n == BATCH) break;
    }
    if (!n) return;
    uint32_t k = 0;
    argv[k++] = tool;
    if (tool_llvm) {
        argv[k++] = "--output-style=GNU";
        argv[k++] = "--no-inlines";
    }
    argv[k++] = "-f";
    argv[k++] = "-C";
    argv[k++] = "-e";
    argv[k++] = path;
    for (uint32_t i = 0; i < n; i++) argv[k++] = addrs[i];
    argv[k] = NULL;
    static char out[BATCH * 2 * 300];
    long len = os_run_capture(argv, out, sizeof out, 5000);
    if (len > 0) take_results(out, idx, n);
}

void sym_resolve(void) {
    if (!n_table || !mh_opt.symbolize || !find_tool()) return;
    if (!main_base) dl_iterate_phdr(find_main, NULL);
    static char self[512];
    os_self_exe(self, sizeof self);
    bool done[SYM_MAX] = {false};
    for (uint32_t i = 0; i < n_table; i++) {
        if (done[i]) continue;
        Dl_info info;
        if (!dladdr((void *)(table[i].pc - 1), &info) || !info.dli_fname) {
            done[i] = true;
            continue;
        }
        uintptr_t base = (uintptr_t)info.dli_fbase;
        const char *path = base == main_base && self[0] ? self : info.dli_fname;
        /* A module may have more frames than one run takes: repeat. */
        while (!done[i]) resolve_module(base, path, done);
    }
}
