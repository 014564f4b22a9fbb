// tbb::parallel_for and task_arena::execute for strata's CPU work, with the happens-before edges
// ThreadSanitizer cannot see: oneTBB's scheduler lives in an uninstrumented libtbb, so TSan misses
// that a task body runs after the code that spawned it and before the code after the join, and
// reports the body's reads of the caller's data as races. Under TSan these wrappers announce both
// edges (the caller releases a start token every body acquires; every body releases an end token
// the caller acquires after the join) — the bodies stay unordered among themselves, so a race
// between two of them is still found. Without TSan they are tbb's calls, nothing added.
#pragma once

#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/task_arena.h>

#include <utility>

#if defined(__SANITIZE_THREAD__)
#define STRATA_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define STRATA_TSAN 1
#endif
#endif

#if defined(STRATA_TSAN)
#include <sanitizer/tsan_interface.h>
#endif

namespace strata::kernels {

// tbb::parallel_for(range, body), body(const Range&).
template <class Range, class Body>
void parallel_for(const Range& range, const Body& body) {
#if defined(STRATA_TSAN)
  char start = 0, end = 0;  // their addresses are the tokens
  __tsan_release(&start);
  tbb::parallel_for(range, [&](const Range& sub) {
    __tsan_acquire(&start);
    body(sub);
    __tsan_release(&end);
  });
  __tsan_acquire(&end);
#else
  tbb::parallel_for(range, body);
#endif
}

// arena.execute(f): f may run on one of the arena's threads instead of the caller's.
template <class F>
auto arena_execute(tbb::task_arena& arena, F&& f) -> decltype(f()) {
#if defined(STRATA_TSAN)
  char start = 0, end = 0;
  __tsan_release(&start);
  struct Join {  // also when f returns a value
    char* end;
    ~Join() { __tsan_acquire(end); }
  } join{&end};
  return arena.execute([&]() -> decltype(f()) {
    __tsan_acquire(&start);
    struct Done {
      char* end;
      ~Done() { __tsan_release(end); }
    } done{&end};
    return f();
  });
#else
  return arena.execute(std::forward<F>(f));
#endif
}

}  // namespace strata::kernels
