# tools/: the generated part of doc/kir.md (the op index, from ops.h).
#
#   make doc-kir        rewrite the table between <!-- ops --> and <!-- /ops --> in doc/kir.md
#   make check-kirdoc   fail when that table differs from what ops.h gives (part of make check),
#                       or doc/policies.md's size table from scripts/policy-sizes (issue 13)
#   make doc-policies   rewrite the table between <!-- sizes --> and <!-- /sizes --> in doc/policies.md

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

check-kirdoc: $(B)/kirdoc $(B)/kvcc
	$(B)/kirdoc > $(B)/kir-ops.md
	sed -n '/^<!-- ops -->$$/,/^<!-- \/ops -->$$/p' doc/kir.md | sed '1d;$$d' > $(B)/kir-ops.doc
	@diff -u $(B)/kir-ops.doc $(B)/kir-ops.md || \
	  { echo "doc/kir.md: the op table differs from compiler/ops.h; run make doc-kir" >&2; exit 1; }
	scripts/policy-sizes $(B) > $(B)/policy-sizes.md
	sed -n '/^<!-- sizes -->$$/,/^<!-- \/sizes -->$$/p' doc/policies.md | sed '1d;$$d' > $(B)/policy-sizes.doc
	@diff -u $(B)/policy-sizes.doc $(B)/policy-sizes.md || \
	  { echo "doc/policies.md: the size table differs from policies/; run make doc-policies" >&2; exit 1; }

# doc/policies.md: every shipped policy's line count and KIR size (scripts/policy-sizes)
doc-policies: $(B)/kvcc
	@grep -q '^<!-- sizes -->$$' doc/policies.md && grep -q '^<!-- /sizes -->$$' doc/policies.md || \
	  { echo "doc/policies.md lacks the <!-- sizes --> ... <!-- /sizes --> markers" >&2; exit 1; }
	scripts/policy-sizes $(B) > $(B)/policy-sizes.md
	awk -v t=$(B)/policy-sizes.md '/^<!-- sizes -->$$/ { print; while ((getline l < t) > 0) print l; skip = 1; next } \
	  /^<!-- \/sizes -->$$/ { skip = 0 } !skip' doc/policies.md > $(B)/policies.md.new
	mv $(B)/policies.md.new doc/policies.md

CHECK_MORE += check-kirdoc

.PHONY: doc-kir check-kirdoc doc-policies
