/*
** kc.h — what every folder of kvcc shares. Public functions carry KVCC_API
** (include/kvcc.h, include/kvcc_compiler.h); every other function that crosses a
** file is declared KC_FUNC: hidden, so each library exports exactly its API
** (the build also passes -fvisibility=hidden).
*/
#ifndef KVCC_KC_H
#define KVCC_KC_H

#define KC_FUNC __attribute__((visibility("hidden"))) extern

#endif
