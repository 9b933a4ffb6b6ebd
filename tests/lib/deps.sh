#!/bin/sh
# The library split (DESIGN §2): libkvcc_rt links libc, libm, libpthread and libdl only (and the
# sanitizers' runtimes in `make asan`) — no Lua, no LLVM, no NVRTC, no libkvcc — calls no
# compiler function and exports the runtime API only; libkvcc (the compiler) is built on it and
# exports the compile API only; examples/compress links the runtime alone.
#   tests/lib/deps.sh BUILD_DIR
B=${1:-build}
pass=0 fail=0
t() { if eval "$2"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL deps: $1"; fi; }
rt=$B/libkvcc_rt.so lib=$B/libkvcc.so
t "libkvcc_rt needs only libc, libm, libpthread, libdl" \
  '[ -z "$(readelf -d $rt | sed -n "s/.*NEEDED.*\[\(.*\)\]/\1/p" | grep -v -e "^libc\.so" -e "^libm\.so" -e "^libpthread\.so" -e "^libdl\.so" -e "^ld-linux" -e "^libasan" -e "^libubsan")" ]'
t "ldd libkvcc_rt: no Lua, LLVM, NVRTC" '! ldd $rt | grep -i -q -e lua -e llvm -e nvrtc -e libkvcc\\.'
t "libkvcc_rt calls no compiler or Lua/LLVM function" \
  '! nm -D --undefined-only $rt | grep -q -e " k[icdxp]_" -e " lua" -e " LLVM" -e " nvrtc"'
t "libkvcc_rt exports the runtime API only" \
  '[ -z "$(nm -D --defined-only $rt | awk "{print \$3}" | grep -v -e "^kvcc_" -e "^kvcc__seterr$" -e "^_init$" -e "^_fini$" -e "^__bss_start$" -e "^_edata$" -e "^_end$")" ]'
t "libkvcc_rt exports no compile function" '! nm -D --defined-only $rt | grep -q -e kvcc_compile -e kvcc_check'
t "libkvcc needs libkvcc_rt, Lua and LLVM" \
  'readelf -d $lib | grep -q "NEEDED.*libkvcc_rt\.so" && readelf -d $lib | grep -q "NEEDED.*lua" && readelf -d $lib | grep -q "NEEDED.*LLVM"'
t "libkvcc exports the compile API only" \
  '[ -z "$(nm -D --defined-only $lib | awk "{print \$3}" | grep -v -e "^kvcc_compile_so$" -e "^kvcc_compile_so_gpu$" -e "^kvcc_compile_file$" -e "^kvcc_check$" -e "^_init$" -e "^_fini$" -e "^__bss_start$" -e "^_edata$" -e "^_end$")" ]'
t "examples/compress links libkvcc_rt, not libkvcc" \
  'readelf -d $B/compress | grep -q "NEEDED.*libkvcc_rt\.so" && ! readelf -d $B/compress | grep -q "NEEDED.*libkvcc\.so"'
t "the public runtime header declares no artifact internals" \
  '! grep -q -e "struct kvcc_artifact" -e kvcc_tmap_ctx -e "(\*sstat)" -e "(\*ckeepidx)" -e "struct kvcc_gpu_header" -e "KVCC_API int kvcc_compile" include/kvcc.h'
echo "deps: $pass passed, $fail failed"
[ $fail -eq 0 ]
