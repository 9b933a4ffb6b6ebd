# python/: the kvcc Python package (ctypes binding + KvccPress). Included by the top Makefile.
#
#   make check-python        (in make check) the numpy half: the binding vs the interpreter for
#                            every policy and python -m kvcc, with $(PYTHON) (numpy only); one
#                            SKIP line names the command for the other half
#   make check-python-full   (in make check-full) the numpy half, then in the project venv
#                            $(PY_VENV) that python/setup-venv makes (torch, transformers, kvpress
#                            from PyPI; a SKIP saying why when it cannot): torch tensors, the
#                            Hugging Face model, KvccPress vs kvpress's presses and vs kvcc eval
#                            (all 70 stories), pip install ./python with the README example
#   make py-venv             only make the venv

PY_VENV ?= $(B)/py-venv

# Under a sanitizer (make asan) the libraries need the sanitizer runtime loaded before python
# itself: the tiers are skipped there, saying so.
PY_SAN_SKIP = @echo "SKIP $@: libkvcc is built with $(SAN); python cannot load it without preloading the sanitizer runtime"

check-python: $(B)/kvcc $(B)/libkvcc.so
	$(if $(SAN),$(PY_SAN_SKIP),python/check.sh fast $(B) "$(PYTHON)" $(PY_VENV) $(SHARED)/data)

check-python-full: $(B)/kvcc $(B)/libkvcc.so
	$(if $(SAN),$(PY_SAN_SKIP),python/check.sh full $(B) "$(PYTHON)" $(PY_VENV) $(SHARED)/data)

py-venv:
	PYTHON=$(PYTHON) python/setup-venv $(PY_VENV)

CHECK_MORE += check-python
CHECK_FULL += check-python-full
CHECK_FULL_OMIT += check-python
.PHONY: check-python check-python-full py-venv
