/* A small task pool for the compiled kernels: run task(ctx, 0) ... task(ctx, tasks - 1) on the
 * calling thread and up to threads - 1 helper threads, then return.
 *
 *   static int tropic_pool_run(tropic_task task, void *ctx, int tasks, int threads)
 *
 * (on the pool of this module, or of the module compiled.py shares, see tropic_pool_share below)
 *
 * Why not OpenMP or Python's thread pool. Python's pool hands the GIL between threads at every wake-up
 * (some 0.1 ms on these VMs: a 4 M-pair product gained nothing from a second thread). An OpenMP team
 * wakes fast, but its closing barrier waits for every thread of the team: when another process holds
 * a core, the thread scheduled there arrives a time slice later and the whole call waits milliseconds
 * for it. Here tasks are claimed one at a time from a shared counter and the caller works too, so
 * the call returns once every *claimed* task is done: a helper that wakes late finds nothing left.
 *
 * Protocol (all atomics sequentially consistent where two threads meet):
 *  - one caller at a time owns the pool (`busy`); a second caller (another Python thread: the
 *    kernels run without the GIL) runs its tasks inline, on its own thread;
 *  - the owner publishes the job (a struct on its stack) in `job`, bumps `generation` and wakes
 *    sleeping helpers; it then claims tasks itself and, when none is left, withdraws the job
 *    (`job = NULL`) and waits until no helper is `active` (a helper is active while it runs the
 *    tasks it claimed, so that is also the wait for them);
 *  - a helper waits for a new generation (spinning briefly, then on a condition variable), counts
 *    itself `active`, then reads `job`. Store-then-load on both sides (owner: job = NULL, read
 *    active; helper: active++, read job) means a helper either is counted before the owner looks, or
 *    reads NULL: no helper touches a job after its owner returned.
 * Results do not depend on which thread ran a task: the tasks write disjoint outputs.
 * A forked child starts with no helpers (pthread_atfork) and makes its own on first use.
 * The status returned is 0, or the first nonzero status a task returned. */
#ifndef TROPIC_THREAD_POOL_H
#define TROPIC_THREAD_POOL_H

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TROPIC_RELAX() _mm_pause()
#else
#define TROPIC_RELAX() ((void)0)
#endif

#define TROPIC_POOL_MAX_HELPERS 63

typedef int (*tropic_task)(void *ctx, int task, int tasks);

struct tropic_job {
  tropic_task task;
  void *ctx;
  int tasks;
  int helpers; /* helpers with an index below this may join */
  atomic_int next; /* next unclaimed task */
  atomic_int status;
};

static struct {
  pthread_mutex_t lock; /* for sleeping helpers only */
  pthread_cond_t wake;
  atomic_int busy;
  _Atomic(struct tropic_job *) job;
  atomic_uint generation;
  atomic_int active;
  atomic_int sleepers;
  int helpers; /* helper threads started (changed by the owner only) */
  int spin_ns; /* how long an idle helper spins before it sleeps */
} tropic_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, NULL, 0, 0, 0, 0, -1};

static int64_t tropic_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Claim and run tasks until none is left. */
static void tropic_pool_work(struct tropic_job *job) {
  for (;;) {
    const int t = atomic_fetch_add(&job->next, 1);
    if (t >= job->tasks) return;
    const int status = job->task(job->ctx, t, job->tasks);
    if (status) {
      int expected = 0;
      atomic_compare_exchange_strong(&job->status, &expected, status);
    }
  }
}

static void *tropic_pool_helper(void *arg) {
  const int index = (int)(intptr_t)arg;
  unsigned seen = atomic_load(&tropic_pool.generation);
  for (;;) {
    /* wait for the next job: spin a little (kernels often come back to back), then sleep */
    const int64_t deadline = tropic_now_ns() + tropic_pool.spin_ns;
    for (int spins = 0; atomic_load_explicit(&tropic_pool.generation, memory_order_acquire) == seen;) {
      TROPIC_RELAX();
      if (++spins % 64 == 0 && tropic_now_ns() > deadline) {
        pthread_mutex_lock(&tropic_pool.lock);
        atomic_fetch_add(&tropic_pool.sleepers, 1);
        while (atomic_load(&tropic_pool.generation) == seen)
          pthread_cond_wait(&tropic_pool.wake, &tropic_pool.lock);
        atomic_fetch_sub(&tropic_pool.sleepers, 1);
        pthread_mutex_unlock(&tropic_pool.lock);
      }
    }
    seen = atomic_load(&tropic_pool.generation);
    atomic_fetch_add(&tropic_pool.active, 1);
    struct tropic_job *job = atomic_load(&tropic_pool.job);
    if (job != NULL && index < job->helpers) tropic_pool_work(job);
    atomic_fetch_sub(&tropic_pool.active, 1);
  }
  return NULL;
}

static void tropic_pool_after_fork(void) {
  /* the child has this thread only: no helper, nobody owning the pool */
  pthread_mutex_init(&tropic_pool.lock, NULL);
  pthread_cond_init(&tropic_pool.wake, NULL);
  atomic_store(&tropic_pool.busy, 0);
  atomic_store(&tropic_pool.job, NULL);
  atomic_store(&tropic_pool.active, 0);
  atomic_store(&tropic_pool.sleepers, 0);
  tropic_pool.helpers = 0;
}

/* Start helpers up to `wanted` (the owner calls this); returns how many there are. */
static int tropic_pool_grow(int wanted) {
  if (tropic_pool.spin_ns < 0) {
    const char *env = getenv("TROPIC_POOL_SPIN_US");
    tropic_pool.spin_ns = env ? (int)(atof(env) * 1000.0) : 50000;
    pthread_atfork(NULL, NULL, tropic_pool_after_fork);
  }
  if (wanted > TROPIC_POOL_MAX_HELPERS) wanted = TROPIC_POOL_MAX_HELPERS;
  while (tropic_pool.helpers < wanted) {
    pthread_t thread;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    const int failed =
        pthread_create(&thread, &attr, tropic_pool_helper, (void *)(intptr_t)tropic_pool.helpers);
    pthread_attr_destroy(&attr);
    if (failed) break; /* run with the helpers there are */
    tropic_pool.helpers++;
  }
  return tropic_pool.helpers;
}

static int tropic_pool_run_here(tropic_task task, void *ctx, int tasks, int threads) {
  if (tasks <= 0) return 0;
  int expected = 0;
  if (threads > tasks) threads = tasks;
  if (threads <= 1 || !atomic_compare_exchange_strong(&tropic_pool.busy, &expected, 1)) {
    int status = 0; /* inline, in task order */
    for (int t = 0; t < tasks; t++) {
      const int s = task(ctx, t, tasks);
      if (s && !status) status = s;
    }
    return status;
  }
  int helpers = tropic_pool_grow(threads - 1);
  if (helpers > threads - 1) helpers = threads - 1;
  struct tropic_job job = {task, ctx, tasks, helpers, 0, 0};
  atomic_store(&tropic_pool.job, &job);
  atomic_fetch_add(&tropic_pool.generation, 1);
  if (atomic_load(&tropic_pool.sleepers) > 0) {
    pthread_mutex_lock(&tropic_pool.lock);
    pthread_cond_broadcast(&tropic_pool.wake);
    pthread_mutex_unlock(&tropic_pool.lock);
  }
  tropic_pool_work(&job);
  /* tasks a helper claimed may still run; yield now and then in case it shares this core */
  atomic_store(&tropic_pool.job, NULL);
  for (int spins = 1; atomic_load(&tropic_pool.active) > 0; spins++) {
    TROPIC_RELAX();
    if (spins % 1024 == 0) sched_yield();
  }
  const int status = atomic_load(&job.status);
  atomic_store(&tropic_pool.busy, 0);
  return status;
}

/* One pool for all of tropic's kernel modules. Each module compiles this header, so each has a pool;
 * compiled.py hands the first module's run function to the others (tropic_pool_share), so that one
 * set of helpers serves every kernel: with a pool per module, a call right after another module's
 * can find the core held by that pool's spinning helper (in-process A/B, a product, a convolution
 * and a product's backward in turn on two threads: 716-721 us with a pool each, 696-698 shared). */
typedef int (*tropic_pool_runner)(tropic_task task, void *ctx, int tasks, int threads);
static _Atomic(tropic_pool_runner) tropic_pool_shared = NULL;

static int tropic_pool_run(tropic_task task, void *ctx, int tasks, int threads) {
  const tropic_pool_runner shared = atomic_load_explicit(&tropic_pool_shared, memory_order_acquire);
  return shared != NULL ? shared(task, ctx, tasks, threads) : tropic_pool_run_here(task, ctx, tasks, threads);
}

/* This module's own runner, for compiled.py to hand to the other modules. */
__attribute__((visibility("default"))) void *tropic_pool_runner_address(void) {
  return (void *)tropic_pool_run_here;
}

/* Run this module's tasks on `runner` (another module's tropic_pool_runner_address), or NULL: on its
 * own pool again. Set before any call of the module's kernels (at import). */
__attribute__((visibility("default"))) void tropic_pool_share(void *runner) {
  atomic_store_explicit(&tropic_pool_shared, (tropic_pool_runner)runner, memory_order_release);
}

/* Whether this module runs its tasks on another module's pool (for the tests). */
__attribute__((visibility("default"))) int tropic_pool_is_shared(void) {
  return atomic_load(&tropic_pool_shared) != NULL;
}


/* Items per task when `items` independent items are cut into about four tasks per thread (more
 * tasks than threads: a helper that starts late leaves less behind); all of them in one task on one
 * thread. The tasks are then ceil(items / per_task). */
static inline int64_t tropic_items_per_task(int64_t items, int threads) {
  const int64_t wanted = threads > 1 ? 4 * (int64_t)threads : 1;
  return items > 0 ? (items + wanted - 1) / wanted : 1;
}

/* A buffer of at least `bytes` for the calling thread, kept for its next call (slot 0 .. 3: a task
 * may hold several at once) and freed when the thread ends; NULL if it cannot be allocated. Tasks
 * use it for their working copies: fresh memory each call would cost page faults. */
#define TROPIC_THREAD_BUFFERS 4
struct tropic_thread_buffer {
  void *data;
  size_t bytes;
};
static pthread_key_t tropic_buffer_key;
static pthread_once_t tropic_buffer_once = PTHREAD_ONCE_INIT;

static inline void tropic_free_buffers(void *buffers) {
  struct tropic_thread_buffer *b = buffers;
  for (int i = 0; i < TROPIC_THREAD_BUFFERS; i++) free(b[i].data);
  free(b);
}

static inline void tropic_make_buffer_key(void) { pthread_key_create(&tropic_buffer_key, tropic_free_buffers); }

static inline void *tropic_thread_buffer(int slot, size_t bytes) {
  if (bytes == 0) bytes = 1; /* a valid pointer even for nothing */
  pthread_once(&tropic_buffer_once, tropic_make_buffer_key);
  struct tropic_thread_buffer *b = pthread_getspecific(tropic_buffer_key);
  if (b == NULL) {
    b = calloc(TROPIC_THREAD_BUFFERS, sizeof *b);
    if (b == NULL || pthread_setspecific(tropic_buffer_key, b)) {
      free(b);
      return NULL;
    }
  }
  if (b[slot].bytes < bytes) {
    free(b[slot].data);
    b[slot].bytes = 0;
    b[slot].data = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (b[slot].data == NULL) return NULL;
    b[slot].bytes = bytes;
  }
  return b[slot].data;
}


/* A task's working buffer: the thread's kept one (slot 0) up to 8 MiB, above that a fresh one that
 * tropic_task_buffer_done frees (a thread should not keep a huge image's buffer for ever). */
#define TROPIC_KEPT_BUFFER_BYTES ((size_t)1 << 23)

static inline void *tropic_task_buffer(size_t bytes) {
  return bytes <= TROPIC_KEPT_BUFFER_BYTES ? tropic_thread_buffer(0, bytes) : malloc(bytes);
}

static inline void tropic_task_buffer_done(void *buffer, size_t bytes) {
  if (bytes > TROPIC_KEPT_BUFFER_BYTES) free(buffer);
}

#endif
