# tools/: the generated part of doc/kir.md (the op index, from ops.h).
#
#   make doc-kir        rewrite the table between <!-- ops --> and <!-- /ops --> in doc/kir.md
#   make check-kirdoc   fail when that table differs from what ops.h gives (part of make check)

$(B)/kirdoc: tools/kirdoc.c compiler/ops.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ tools/kirdoc.c

doc-kir: $(B)/kirdoc
	@grep -q '^<!-- ops -->$$' doc/kir.md && grep -q '^<!-- /ops -->$$' doc/kir.md || \
	  { echo "doc/kir.md lacks the <!-- ops --> ... <!-- /ops --> markers" >&2; exit 1; }
	$(B)/kirdoc > $(B)/kir-ops.md
	awk -v t=$(B)/kir-ops.md '/^<!-- ops -->$$/ { print; while ((getline l < t) > 0) print l; skip = 1; next } \
	  /^<!-- \/ops -->$$/ { skip = 0 } !skip' doc/kir.md > $(B)/kir.md.new
	mv $(B)/kir.md.new doc/kir.md

check-kirdoc: $(B)/kirdoc
	$(B)/kirdoc > $(B)/kir-ops.md
	sed -n '/^<!-- ops -->$$/,/^<!-- \/ops -->$$/p' doc/kir.md | sed '1d;$$d' > $(B)/kir-ops.doc
	@diff -u $(B)/kir-ops.doc $(B)/kir-ops.md || \
	  { echo "doc/kir.md: the op table differs from compiler/ops.h; run make doc-kir" >&2; exit 1; }

CHECK_MORE += check-kirdoc

.PHONY: doc-kir check-kirdoc
