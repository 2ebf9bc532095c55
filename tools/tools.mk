# Install and uninstall (included by the top-level Makefile). docs/TOOL.md.
#
#   make install [PREFIX=/usr/local] [DESTDIR=]   the libraries, the header,
#                          pkg-config files, the miniheap command, the
#                          valgrind wrapper and the man pages
#   make uninstall [PREFIX=...] [DESTDIR=]         remove exactly those files
#
# Installed (PREFIX=/usr/local):
#   lib/libminiheap.so.1.0.0, lib/libminiheap.so.1 -> libminiheap.so.1.0.0,
#   lib/libminiheap.so -> libminiheap.so.1, lib/libminiheap.a,
#   lib/libminiheap_prefixed.a, include/miniheap.h,
#   lib/pkgconfig/miniheap.pc (-lminiheap: libminiheap.so, the malloc
#   replacement), lib/pkgconfig/miniheap-prefixed.pc (libminiheap_prefixed.a,
#   the mh_* API only), bin/miniheap (tools/miniheap), bin/miniheap-valgrind
#   and share/miniheap/miniheap.supp (valgrind/), share/man/man1/miniheap.1,
#   share/man/man3/miniheap.3 (docs/man/).
#
# The directories can be changed one by one (BINDIR, LIBDIR, INCLUDEDIR,
# DATADIR, MANDIR, PKGCONFIGDIR). DESTDIR stages the files elsewhere (for
# packaging); the paths written into the scripts and .pc files are the
# PREFIX ones. As root and without DESTDIR, install runs ldconfig
# (LDCONFIG=: skips it); run it yourself after installing elsewhere.

PREFIX       ?= /usr/local
DESTDIR      ?=
BINDIR       ?= $(PREFIX)/bin
LIBDIR       ?= $(PREFIX)/lib
INCLUDEDIR   ?= $(PREFIX)/include
DATADIR      ?= $(PREFIX)/share
MANDIR       ?= $(DATADIR)/man
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
LDCONFIG     ?= ldconfig
INSTALL      ?= install

MH_VERSION   := 1.0.0
MH_SOVERSION := 1
MH_REAL_SO   := libminiheap.so.$(MH_VERSION)
MH_SO_LINK   := libminiheap.so.$(MH_SOVERSION)

# In the .pc files, paths under PREFIX are written as ${prefix}/...
mh_pc_path = $(patsubst $(PREFIX)/%,$${prefix}/%,$(1))

MH_INSTALL_FILES := \
    $(LIBDIR)/$(MH_REAL_SO) $(LIBDIR)/$(MH_SO_LINK) $(LIBDIR)/libminiheap.so \
    $(LIBDIR)/libminiheap.a $(LIBDIR)/libminiheap_prefixed.a \
    $(INCLUDEDIR)/miniheap.h \
    $(PKGCONFIGDIR)/miniheap.pc $(PKGCONFIGDIR)/miniheap-prefixed.pc \
    $(BINDIR)/miniheap $(BINDIR)/miniheap-valgrind $(DATADIR)/miniheap/miniheap.supp \
    $(MANDIR)/man1/miniheap.1 $(MANDIR)/man3/miniheap.3

.PHONY: install uninstall

install: lib
	@set -e; d='$(DESTDIR)'; \
	for dir in '$(BINDIR)' '$(LIBDIR)' '$(INCLUDEDIR)' '$(PKGCONFIGDIR)' '$(DATADIR)/miniheap' \
	           '$(MANDIR)/man1' '$(MANDIR)/man3'; do \
	  $(INSTALL) -d "$$d$$dir"; \
	done; \
	echo "install: $(BUILD)/libminiheap.so, .a, _prefixed.a -> $$d$(LIBDIR)"; \
	$(INSTALL) -m 0755 '$(BUILD)/libminiheap.so' "$$d$(LIBDIR)/$(MH_REAL_SO)"; \
	ln -sfn '$(MH_REAL_SO)' "$$d$(LIBDIR)/$(MH_SO_LINK)"; \
	ln -sfn '$(MH_SO_LINK)' "$$d$(LIBDIR)/libminiheap.so"; \
	$(INSTALL) -m 0644 '$(BUILD)/libminiheap.a' '$(BUILD)/libminiheap_prefixed.a' "$$d$(LIBDIR)/"; \
	$(INSTALL) -m 0644 include/miniheap.h "$$d$(INCLUDEDIR)/miniheap.h"; \
	for pc in miniheap miniheap-prefixed; do \
	  sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(call mh_pc_path,$(LIBDIR))|g' \
	      -e 's|@INCLUDEDIR@|$(call mh_pc_path,$(INCLUDEDIR))|g' -e 's|@VERSION@|$(MH_VERSION)|g' \
	      "tools/$$pc.pc.in" >"$$d$(PKGCONFIGDIR)/$$pc.pc.tmp"; \
	  if grep -q '@[A-Z]*@' "$$d$(PKGCONFIGDIR)/$$pc.pc.tmp"; then \
	    echo "install: tools/$$pc.pc.in has an unknown @VARIABLE@" >&2; exit 1; fi; \
	  chmod 0644 "$$d$(PKGCONFIGDIR)/$$pc.pc.tmp"; \
	  mv -f "$$d$(PKGCONFIGDIR)/$$pc.pc.tmp" "$$d$(PKGCONFIGDIR)/$$pc.pc"; \
	done; \
	echo "install: miniheap, miniheap-valgrind -> $$d$(BINDIR)"; \
	sed -e 's|^MH_LAYOUT=source$$|MH_LAYOUT=installed|' \
	    -e 's|^MH_INSTALLED_LIB=$$|MH_INSTALLED_LIB=$(LIBDIR)/$(MH_SO_LINK)|' \
	    -e 's|^MH_VERSION=.*|MH_VERSION=$(MH_VERSION)|' \
	    tools/miniheap >"$$d$(BINDIR)/miniheap.tmp"; \
	grep -q '^MH_LAYOUT=installed$$' "$$d$(BINDIR)/miniheap.tmp" && \
	grep -q '^MH_INSTALLED_LIB=/' "$$d$(BINDIR)/miniheap.tmp" || \
	  { echo "install: could not set the installed paths in tools/miniheap" >&2; exit 1; }; \
	chmod 0755 "$$d$(BINDIR)/miniheap.tmp"; mv -f "$$d$(BINDIR)/miniheap.tmp" "$$d$(BINDIR)/miniheap"; \
	sed -e 's|$$root/build/libminiheap.so|$(LIBDIR)/$(MH_SO_LINK)|' \
	    -e 's|$$here/miniheap.supp|$(DATADIR)/miniheap/miniheap.supp|' \
	    valgrind/miniheap-valgrind >"$$d$(BINDIR)/miniheap-valgrind.tmp"; \
	grep -q '$(LIBDIR)/$(MH_SO_LINK)' "$$d$(BINDIR)/miniheap-valgrind.tmp" && \
	grep -q '$(DATADIR)/miniheap/miniheap.supp' "$$d$(BINDIR)/miniheap-valgrind.tmp" || \
	  { echo "install: could not set the installed paths in valgrind/miniheap-valgrind" \
	         "(the library and suppressions lines changed? see tools/tools.mk)" >&2; exit 1; }; \
	chmod 0755 "$$d$(BINDIR)/miniheap-valgrind.tmp"; \
	mv -f "$$d$(BINDIR)/miniheap-valgrind.tmp" "$$d$(BINDIR)/miniheap-valgrind"; \
	$(INSTALL) -m 0644 valgrind/miniheap.supp "$$d$(DATADIR)/miniheap/miniheap.supp"; \
	$(INSTALL) -m 0644 docs/man/miniheap.1 "$$d$(MANDIR)/man1/miniheap.1"; \
	$(INSTALL) -m 0644 docs/man/miniheap.3 "$$d$(MANDIR)/man3/miniheap.3"; \
	echo "install: man pages -> $$d$(MANDIR), pkg-config files -> $$d$(PKGCONFIGDIR)"; \
	if [ -z "$$d" ] && [ "$$(id -u)" = 0 ] && [ -n '$(LDCONFIG)' ] && command -v '$(LDCONFIG)' >/dev/null 2>&1; then \
	  '$(LDCONFIG)' || echo "install: warning: $(LDCONFIG) failed" >&2; \
	fi

uninstall:
	@set -e; d='$(DESTDIR)'; \
	for f in $(MH_INSTALL_FILES); do \
	  if [ -e "$$d$$f" ] || [ -L "$$d$$f" ]; then rm -f "$$d$$f"; echo "uninstall: removed $$d$$f"; fi; \
	done; \
	rmdir "$$d$(DATADIR)/miniheap" 2>/dev/null || true
