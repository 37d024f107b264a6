// A small fixed thread pool for the CPU reference backend: parallel_for(n, fn) runs fn(begin, end)
// over contiguous chunks of [0, n) and returns when all are done.
#pragma once
#include <cstdint>
#include <functional>

namespace tachyon {

void parallel_for(int64_t n, const std::function<void(int64_t begin, int64_t end)>& fn);
int cpu_thread_count();
// Overrides the thread count (0 = hardware concurrency). Call before the first parallel_for.
void set_cpu_thread_count(int n);

}  // namespace tachyon
