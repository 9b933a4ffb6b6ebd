/*
** Persistent thread pool (see pool.h). Tasks are claimed with an atomic counter;
** a generation number wakes the workers; the caller works too and then waits.
*/
#include <stdlib.h>
#include "runtime/pool.h"

static void drain(KrPool *p, int tid)
{
	for (;;) {
		int i = __atomic_fetch_add(&p->next, 1, __ATOMIC_RELAXED);
		if (i >= p->ntask)
			return;
		p->fn(p->arg, i, tid);
	}
}

typedef struct Arg { KrPool *p; int tid; } Arg;

static void *worker(void *arg)
{
	Arg *a = arg;
	KrPool *p = a->p;
	int tid = a->tid;
	unsigned long seen = 0;
	for (;;) {
		pthread_mutex_lock(&p->mu);
		while (!p->quit && p->gen == seen)
			pthread_cond_wait(&p->go, &p->mu);
		if (p->quit) {
			pthread_mutex_unlock(&p->mu);
			return NULL;
		}
		seen = p->gen;
		pthread_mutex_unlock(&p->mu);
		drain(p, tid);
		pthread_mutex_lock(&p->mu);
		if (--p->busy == 0)
			pthread_cond_signal(&p->done);
		pthread_mutex_unlock(&p->mu);
	}
}

int kr_pool_init(KrPool *p, int nthreads)
{
	p->n = 0, p->gen = 0, p->quit = 0, p->busy = 0;
	p->th = NULL, p->args = NULL;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->go, NULL);
	pthread_cond_init(&p->done, NULL);
	if (nthreads <= 1)
		return 0;
	p->th = calloc((size_t)nthreads, sizeof *p->th);
	p->args = calloc((size_t)nthreads, sizeof(Arg));
	if (!p->th || !p->args)
		return -1;
	Arg *args = p->args;
	for (int i = 0; i < nthreads - 1; i++) {
		args[p->n] = (Arg){ p, p->n + 1 };
		if (pthread_create(&p->th[p->n], NULL, worker, &args[p->n]) == 0)
			p->n++;
	}
	return 0;
}

void kr_pool_free(KrPool *p)
{
	pthread_mutex_lock(&p->mu);
	p->quit = 1;
	pthread_cond_broadcast(&p->go);
	pthread_mutex_unlock(&p->mu);
	for (int i = 0; i < p->n; i++)
		pthread_join(p->th[i], NULL);
	free(p->th);
	free(p->args);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->go);
	pthread_cond_destroy(&p->done);
}

void kr_pool_run(KrPool *p, void (*fn)(void *, int, int), void *arg, int ntask)
{
	if (ntask <= 0)
		return;
	if (ntask == 1 || p->n == 0) {
		for (int i = 0; i < ntask; i++)
			fn(arg, i, 0);
		return;
	}
	pthread_mutex_lock(&p->mu);
	p->fn = fn, p->arg = arg, p->ntask = ntask, p->next = 0, p->busy = p->n;
	p->gen++;
	pthread_cond_broadcast(&p->go);
	pthread_mutex_unlock(&p->mu);
	drain(p, 0);
	pthread_mutex_lock(&p->mu);
	while (p->busy > 0)
		pthread_cond_wait(&p->done, &p->mu);
	pthread_mutex_unlock(&p->mu);
}
