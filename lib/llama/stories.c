/* stories.c - evaluation texts: stories separated by <|endoftext|>, or chunks of a text. */
#include "stories.h"
#include "file.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
}

void llama_stories_free(LlamaStories *s)
{
    if (!s)
        return;
    free(s->buf);
    free(s->text);
    free(s->len);
    memset(s, 0, sizeof *s);
}

/* Appends [a, b) with its surrounding newlines stripped, unless it is empty. */
static int add(LlamaStories *s, const char *a, const char *b, int *cap)
{
    while (a < b && *a == '\n')
        a++;
    while (b > a && b[-1] == '\n')
        b--;
    if (a == b)
        return 0;
    if (s->n == *cap) {
        int nc = *cap ? *cap * 2 : 64;
        char **t = realloc(s->text, (size_t)nc * sizeof *t);
        if (!t)
            return -1;
        s->text = t;
        size_t *l = realloc(s->len, (size_t)nc * sizeof *l);
        if (!l)
            return -1;
        s->len = l;
        *cap = nc;
    }
    s->text[s->n] = (char *)a;
    s->len[s->n] = (size_t)(b - a);
    s->n++;
    return 0;
}

static size_t codepoints(const char *a, const char *b)
{
    size_t n = 0;
    for (; a < b; a++)
        n += ((unsigned char)*a & 0xC0) != 0x80;
    return n;
}

int llama_stories_load(LlamaStories *s, const char *path, long chunk_chars, const char *from,
                       char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    if (chunk_chars < 0) {
        seterr(err, errlen, "chunk size must be positive, got %ld", chunk_chars);
        return -1;
    }
    FILE *f = llama_fopen(path, err, errlen);
    if (!f)
        return -1;
    size_t cap = 0, size = 0;
    for (;;) {
        if (size + 1 >= cap) {
            cap = cap ? cap * 2 : 1 << 16;
            char *nb = realloc(s->buf, cap);
            if (!nb) {
                fclose(f);
                llama_stories_free(s);
                seterr(err, errlen, "%s: out of memory", path);
                return -1;
            }
            s->buf = nb;
        }
        size_t r = fread(s->buf + size, 1, cap - size - 1, f);
        size += r;
        if (r == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        llama_stories_free(s);
        seterr(err, errlen, "%s: read error", path);
        return -1;
    }
    s->buf[size] = 0;
    char *start = s->buf, *end = s->buf + size;
    if (from && *from) {
        size_t fl = strlen(from);
        char *line = s->buf;
        while (line < end && !((size_t)(end - line) >= fl && memcmp(line, from, fl) == 0)) {
            char *nl = memchr(line, '\n', (size_t)(end - line));
            line = nl ? nl + 1 : end;
        }
        if (line >= end) {
            llama_stories_free(s);
            seterr(err, errlen, "%s: no line begins with '%s'", path, from);
            return -1;
        }
        start = line;
    }
    static const char sep[] = "<|endoftext|>";
    const size_t seplen = sizeof sep - 1;
    int scap = 0, rc = 0;
    char *story = start, *line = start;
    size_t chars = 0;
    while (line < end && rc == 0) {
        char *nl = memchr(line, '\n', (size_t)(end - line));
        char *eol = nl ? nl : end, *next = nl ? nl + 1 : end;
        if (chunk_chars > 0) {
            chars += codepoints(line, next);
            if (chars >= (size_t)chunk_chars) {
                rc = add(s, story, next, &scap);
                story = next;
                chars = 0;
            }
        } else {
            if ((size_t)(eol - line) == seplen && memcmp(line, sep, seplen) == 0) {
                rc = add(s, story, line, &scap);
                story = next;
            }
        }
        line = next;
    }
    if (rc == 0)
        rc = add(s, story, end, &scap);
    if (rc) {
        llama_stories_free(s);
        seterr(err, errlen, "%s: out of memory", path);
        return -1;
    }
    return 0;
}

int llama_parse_range(const char *arg, int n, int *lo, int *hi)
{
    *lo = 0;
    *hi = n;
    if (!arg)
        return 0;
    const char *colon = strchr(arg, ':');
    char *e;
    if (!colon)
        return -1;
    if (colon != arg) {
        long a = strtol(arg, &e, 10);
        if (e != colon || a < 0)
            return -1;
        *lo = a > n ? n : (int)a;
    }
    if (colon[1]) {
        long b = strtol(colon + 1, &e, 10);
        if (*e || b < 0)
            return -1;
        if (b < (colon != arg ? strtol(arg, NULL, 10) : 0))
            return -1;
        *hi = b > n ? n : (int)b;
    }
    if (*hi < *lo)
        *hi = *lo;
    return 0;
}
