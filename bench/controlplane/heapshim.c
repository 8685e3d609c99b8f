/* Live heap blocks by size, for grpcfloor.py --heap: LD_PRELOADed into the bare
 * grpc server, it wraps glibc's malloc family and keeps a count of live blocks
 * per usable size (16-byte steps, up to 128 KiB; larger ones share the last
 * slot). shim_dump(path) writes "usable_bytes live_count" lines. The diff of
 * two dumps around opening N streams says which buffers each stream keeps,
 * something RSS alone cannot: the TLS BIO pair's two 17 KiB buffers, say.
 * Counts only: no addresses, no locks (atomic adds), no allocation of its own.
 * Aligned allocations (posix_memalign, aligned_alloc) are not wrapped; their
 * frees show up as small negative counts, which the diff reports as they are. */
#define _GNU_SOURCE
#include <malloc.h>
#include <stddef.h>
#include <stdio.h>

extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);

#define SLOTS 8192
static long live[SLOTS + 1];

static void count(void *p, long delta) {
    if (p == NULL)
        return;
    size_t slot = malloc_usable_size(p) / 16;
    __atomic_fetch_add(&live[slot < SLOTS ? slot : SLOTS], delta, __ATOMIC_RELAXED);
}

void *malloc(size_t n) { void *p = __libc_malloc(n); count(p, 1); return p; }
void *calloc(size_t a, size_t b) { void *p = __libc_calloc(a, b); count(p, 1); return p; }
void free(void *p) { count(p, -1); __libc_free(p); }

void *realloc(void *p, size_t n) {
    count(p, -1);
    void *q = __libc_realloc(p, n);
    if (q != NULL)
        count(q, 1);
    else if (n != 0)
        count(p, 1);  /* failed: the old block is still live (n == 0 freed it) */
    return q;
}

/* Written to "<path>.part" and renamed, so a reader never sees half a dump. */
int shim_dump(const char *path) {
    char part[4096];
    if (snprintf(part, sizeof part, "%s.part", path) >= (int)sizeof part)
        return -1;
    FILE *f = fopen(part, "w");
    if (f == NULL)
        return -1;
    for (int i = 0; i <= SLOTS; i++)
        if (live[i] != 0)
            fprintf(f, "%d %ld\n", i * 16, live[i]);
    if (fclose(f) != 0)
        return -1;
    return rename(part, path);
}
