/* stories.h - evaluation texts: a file of stories, or a plain text cut into chunks.
 *
 * Stories mode (chunk_chars 0): stories are separated by lines that are exactly
 * "<|endoftext|>" (../shared/data/README.md section 3); each story is the text between
 * separators with its surrounding newlines stripped; empty pieces are dropped.
 *
 * Chunk mode (chunk_chars K > 0): the file is one plain text, cut into consecutive chunks at
 * line boundaries: a chunk ends at the end of the first line that brings it to K characters
 * (UTF-8 code points) or more, so every chunk but the last has at least K characters and
 * fewer than K plus one line.  Each chunk is one story (surrounding newlines stripped, empty
 * chunks dropped); the last chunk is whatever remains.
 *
 * from (optional, both modes): the text starts at the first line that begins with this
 * string (e.g. "CHAPTER I." for Alice); an error when no line does. */
#ifndef KVCC_LIB_LLAMA_STORIES_H
#define KVCC_LIB_LLAMA_STORIES_H

#include <stddef.h>

typedef struct {
    char *buf;    /* the file, NUL-terminated, owned */
    char **text;  /* [n] start of each story inside buf (not NUL-terminated) */
    size_t *len;  /* [n] its length in bytes */
    int n;
} LlamaStories;

/* Returns 0, or -1 with a message in err (cannot open, read error, out of memory, `from`
 * not found, chunk_chars < 0). */
int llama_stories_load(LlamaStories *s, const char *path, long chunk_chars, const char *from,
                       char *err, size_t errlen);
void llama_stories_free(LlamaStories *s);

/* "a:b" (either side may be empty) -> [lo, hi) clamped to [0, n].  Returns 0, or -1 when the
 * text is not of that form or b < a. */
int llama_parse_range(const char *arg, int n, int *lo, int *hi);

#endif
