/*
** A persistent thread pool (one per plan): kp_pool_run hands `ntask` task indices
** to the caller (tid 0) and the workers (tid 1..n), returns when all are done. Generated kernels are
** single-threaded per task (DESIGN §7); the runtime schedules tasks.
*/
#ifndef KVCC_POOL_H
#define KVCC_POOL_H

#include <pthread.h>
#include "runtime/kc.h"

typedef struct KrPool {
	int n;                          /* worker threads besides the caller */
	pthread_t *th;
	void *args;
	pthread_mutex_t mu;
	pthread_cond_t go, done;
	unsigned long gen;
	void (*fn)(void *arg, int task, int tid);
	void *arg;
	int ntask, next, busy, quit;
} KrPool;

/* nthreads in all (the caller counts as one); 0 or -1 on failure */
KC_FUNC int kr_pool_init(KrPool *p, int nthreads);
KC_FUNC void kr_pool_free(KrPool *p);
KC_FUNC void kr_pool_run(KrPool *p, void (*fn)(void *, int, int), void *arg, int ntask);

#endif
