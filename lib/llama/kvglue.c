/* kvglue.c - the llama model's use of libkvcc: policies, decode attention, queries. */
#include "kvglue.h"
#include "kvcc_compiler.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int llama_kvcc_has_decode(void)
{
#ifdef LLAMA_KVCC_DECODE
    return 1;
#else
    return 0;
#endif
}

static int endswith(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

int llama_policy_load(const char *path, const LlamaConfig *cfg, kvcc_policy **out, char *err,
                      size_t errlen)
{
    kvcc_spec want = {KVCC_F32, cfg->head_dim, cfg->group, KVCC_TARGET_NATIVE};
    kvcc_policy *p = NULL;
    *out = NULL;
    int rc = endswith(path, ".so") ? kvcc_open(path, &p) : kvcc_compile_file(path, &want, &p);
    if (rc) {
        snprintf(err, errlen, "%s", kvcc_last_error());
        return rc;
    }
    kvcc_spec got;
    if ((rc = kvcc_policy_spec(p, &got)) != 0) {
        snprintf(err, errlen, "%s", kvcc_last_error());
        kvcc_close(p);
        return rc;
    }
    if (got.dtype != KVCC_F32 || got.head_dim != want.head_dim || got.group != want.group) {
        snprintf(err, errlen,
                 "%s was compiled for dtype %d, head_dim %d, group %d; this model's cache is "
                 "f32 (0), head_dim %d, group %d: kvcc compile %s --dtype f32 --head-dim %d "
                 "--group %d",
                 path, got.dtype, got.head_dim, got.group, want.head_dim, want.group,
                 "POLICY.lua -o POLICY.so", want.head_dim, want.group);
        kvcc_close(p);
        return KVCC_ESPEC;
    }
    *out = p;
    return 0;
}

int llama_plain_policy(const LlamaConfig *cfg, kvcc_policy **out, char *err, size_t errlen)
{
    static const char text[] =
        "-- plain attention: planned for decode attention, never run (lib/llama)\n"
        "local kv = require \"kvcc\"\n"
        "return kv.policy \"attend\" { score = function(x) return x.t end, select = kv.topk {} }\n";
    /* A fixed file name: the policy's KIR (and so libkvcc's compile-cache key) names its
     * source file, so one name gives one cached artifact.  Written to a temporary file and
     * renamed over it, so that concurrent runs never see a partial file; left in place. */
    const char *dir = getenv("TMPDIR");
    char path[512], tmp[600];
    dir = dir && *dir ? dir : "/tmp";
    snprintf(path, sizeof path, "%s/kvcc-llama-attend-%ld.lua", dir, (long)getuid());
    snprintf(tmp, sizeof tmp, "%s.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create a temporary file in %s", dir);
        return KVCC_EIO;
    }
    FILE *f = fdopen(fd, "w");
    int bad = !f || fputs(text, f) < 0;
    if (f)
        bad |= fclose(f) != 0;
    else
        close(fd);
    if (bad || rename(tmp, path) != 0) {
        unlink(tmp);
        snprintf(err, errlen, "%s: write error", path);
        return KVCC_EIO;
    }
    return llama_policy_load(path, cfg, out, err, errlen);
}

int llama_policy_is_decode(const kvcc_policy *p, int *every)
{
    *every = 0;
#ifdef LLAMA_KVCC_DECODE
    int e = 0;
    if (kvcc_policy_when(p, &e) == 1) {
        *every = e > 0 ? e : 1;
        return 1;
    }
#else
    (void)p;
#endif
    return 0;
}

int llama_policy_nstate(const kvcc_policy *p)
{
#ifdef LLAMA_KVCC_DECODE
    int n = kvcc_state_count(p);
    return n > 0 ? n : 0;
#else
    (void)p;
    return 0;
#endif
}

int llama_policy_params(const kvcc_policy *p, const char *const *sets, int n, double *vals,
                        char *err, size_t errlen)
{
    int np = kvcc_param_count(p);
    for (int i = 0; i < np; i++)
        kvcc_param_info(p, i, NULL, &vals[i]);
    for (int j = 0; j < n; j++) {
        const char *eq = strchr(sets[j], '=');
        char name[64];
        if (!eq || eq == sets[j] || (size_t)(eq - sets[j]) >= sizeof name) {
            snprintf(err, errlen, "--param wants NAME=NUMBER, got '%s'", sets[j]);
            return -1;
        }
        memcpy(name, sets[j], (size_t)(eq - sets[j]));
        name[eq - sets[j]] = 0;
        for (int i = 0; i < np; i++) {
            const char *pn;
            kvcc_param_info(p, i, &pn, NULL);
            if (strcmp(pn, name) == 0) {
                char *e;
                double v = strtod(eq + 1, &e);
                if (e == eq + 1 || *e) {
                    snprintf(err, errlen, "--param %s: '%s' is not a number", name, eq + 1);
                    return -1;
                }
                vals[i] = v;
            }
        }
    }
    return 0;
}

int llama_kvcc_layer(void *plan, LlamaCache *c, int layer, const float *q, const float *k,
                     const float *v, int pos, float *out)
{
#ifdef LLAMA_KVCC_DECODE
    int rc = kvcc_append(plan, &c->kc, layer, k, v, pos);
    return rc ? rc : kvcc_decode_layer(plan, &c->kc, layer, q, out);
#else
    (void)plan, (void)c, (void)layer, (void)q, (void)k, (void)v, (void)pos, (void)out;
    return KVCC_EUNSUPPORTED;
#endif
}

int llama_obs_pack(const LlamaObs *obs, int nobs, float *Q, int32_t *qpos)
{
    if (nobs < 0 || obs->start != 0 || nobs > obs->count)
        return -1;
    const size_t hd = (size_t)obs->head_dim, first = (size_t)(obs->count - nobs);
    for (int l = 0; l < obs->n_layers; l++)
        for (int qh = 0; qh < obs->n_heads; qh++) /* qh = h * G + g: [l][h][g] order */
            memcpy(Q + ((size_t)l * obs->n_heads + qh) * nobs * hd,
                   obs->q + (((size_t)l * obs->n_heads + qh) * obs->window + first) * hd,
                   (size_t)nobs * hd * sizeof(float));
    for (int o = 0; o < nobs; o++)
        qpos[o] = obs->qpos[first + o];
    return 0;
}
