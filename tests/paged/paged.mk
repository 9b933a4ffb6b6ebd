# tests/paged: batched and paged caches (DESIGN §7 "Layouts") — every policy of the noalloc
# matrix in batches of contiguous caches and in paged pools (page sizes 1, 16, 64, 256; shared
# and per-head tables; dense and CSR) against the contiguous path; guards, spare pages, freed
# pages; bad plans and tables refused with nothing changed.
#
#   make check-paged

$(B)/paged_tests: $(B)/tests/paged/paged.o $(LIBOBJ)
	$(CC) -o $@ $^ $(LDLIBS) $(LLVM_LIBS_USED)

check-paged: $(B)/paged_tests
	rm -rf $(B)/paged-cache
	KVCC_CACHE_DIR=$(abspath $(B))/paged-cache $(B)/paged_tests

.PHONY: check-paged
