# python/: the kvcc Python package (ctypes binding + KvccPress). Included by the top Makefile.
#
#   make check-python        (in make check) the numpy half: the binding vs the interpreter for
#                            every policy and python -m kvcc, with $(PYTHON) (numpy only)
#   make check-python-torch  (in make check, its last tier) the torch half, in the project venv
#                            $(PY_VENV) that python/setup-venv makes (torch, transformers,
#                            kvpress from PyPI, ~6 GB; a SKIP saying why when it cannot, never a
#                            pass): torch tensors, the Hugging Face model, KvccPress vs kvpress's
#                            presses and vs kvcc eval (stories 0-5), pip install ./python with the
#                            README example. make check starts the venv's install in the
#                            background before its C tiers (CHECK_START), so that it overlaps them.
#   make check-python-full   (in make check-full, instead of both) both halves, kvcc eval on all
#                            70 stories
#   make py-venv             only make the venv

PY_VENV ?= $(B)/py-venv

# Under a sanitizer (make asan) the libraries need the sanitizer runtime loaded before python
# itself: the tiers are skipped there, saying so.
PY_SAN_SKIP = @echo "SKIP $@: libkvcc is built with $(SAN); python cannot load it without preloading the sanitizer runtime"

check-python: $(B)/kvcc $(B)/libkvcc.so $(B)/libfakecuda.so
	$(if $(SAN),$(PY_SAN_SKIP),python/check.sh numpy $(B) "$(PYTHON)" $(PY_VENV) $(SHARED)/data)

check-python-torch: $(B)/kvcc $(B)/libkvcc.so
	$(if $(SAN),$(PY_SAN_SKIP),python/check.sh torch $(B) "$(PYTHON)" $(PY_VENV) $(SHARED)/data)

check-python-full: $(B)/kvcc $(B)/libkvcc.so $(B)/libfakecuda.so
	$(if $(SAN),$(PY_SAN_SKIP),python/check.sh full $(B) "$(PYTHON)" $(PY_VENV) $(SHARED)/data)

py-venv:
	PYTHON=$(PYTHON) python/setup-venv $(PY_VENV)

# a recipe line of make check / make check-full ($$PPID: that make; the install stops if it exits)
CHECK_START += $(if $(SAN),,PYTHON=$(PYTHON) python/setup-venv --background $(PY_VENV) $(B)/py-venv.log $$PPID)
# the end of make check's last line when the torch half was skipped (python/check.sh)
PY_SKIPPED = $$(test -f $(B)/py-torch.skipped && echo ", but the torch half of the Python tiers was SKIPPED (see above)")
CHECK_MORE += check-python
CHECK_LAST += check-python-torch
CHECK_FULL += check-python-full
CHECK_FULL_LAST += check-python-full
CHECK_FULL_OMIT += check-python check-python-torch
.PHONY: check-python check-python-torch check-python-full py-venv
