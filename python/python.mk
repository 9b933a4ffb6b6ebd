# python/: the kvcc Python package (ctypes binding + KvccPress). Included by the top Makefile.
#
#   make check-python        the binding vs the interpreter for every policy, python -m kvcc (system
#                            python + numpy); then, in the project venv $(PY_VENV) that
#                            python/setup-venv makes (torch, transformers, kvpress from PyPI; a SKIP
#                            saying why when it cannot), torch tensors, the Hugging Face model,
#                            KvccPress vs kvpress's presses and vs kvcc eval (stories 0-5), and
#                            pip install ./python with the README example
#   make check-python-full   the same with the kvcc eval comparison over all 70 stories
#   make py-venv             only make the venv

PY_VENV ?= $(B)/py-venv

# Under a sanitizer (make asan) the libraries need the sanitizer runtime loaded before python
# itself: the tier is skipped there, saying so.
PY_SAN_SKIP = @echo "SKIP check-python: libkvcc is built with $(SAN); python cannot load it without preloading the sanitizer runtime"

check-python: $(B)/kvcc $(B)/libkvcc.so
	$(if $(SAN),$(PY_SAN_SKIP),python/check.sh $(B) $(PYTHON) $(PY_VENV) $(SHARED)/data)

check-python-full: $(B)/kvcc $(B)/libkvcc.so
	$(if $(SAN),$(PY_SAN_SKIP),KVCC_PY_FULL=1 python/check.sh $(B) $(PYTHON) $(PY_VENV) $(SHARED)/data)

py-venv:
	PYTHON=$(PYTHON) python/setup-venv $(PY_VENV)

CHECK_MORE += check-python
.PHONY: check-python check-python-full py-venv
