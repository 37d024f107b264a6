// Kernel timing for the benches: `launches` calls of launch(i, stream) captured in one CUDA graph and replayed,
// so launch gaps shrink to graph-node cost. Returns the median microseconds per launch over `replays`.
#pragma once
#include <algorithm>
#include <functional>
#include <vector>

#include "cuda/cuda_check.h"
#include "cuda/stream.h"

namespace tachyon::kernels {

inline double graph_time_us(const std::function<void(int, cudaStream_t)>& launch, int launches, int replays = 15) {
  cuda::Stream stream;
  launch(0, stream);  // outside capture: one-time setup (attributes, cuBLASLt plans)
  stream.synchronize();
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  TACHYON_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < launches; ++i) launch(i, stream);
  TACHYON_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  TACHYON_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  for (int w = 0; w < 2; ++w) TACHYON_CUDA_CHECK(cudaGraphLaunch(exec, stream));
  std::vector<double> times;
  cuda::Event start, stop;
  for (int r = 0; r < replays; ++r) {
    start.record(stream);
    TACHYON_CUDA_CHECK(cudaGraphLaunch(exec, stream));
    stop.record(stream);
    stop.synchronize();
    times.push_back(1000.0 * stop.elapsed_ms_since(start) / launches);
  }
  TACHYON_CUDA_CHECK(cudaGraphExecDestroy(exec));
  TACHYON_CUDA_CHECK(cudaGraphDestroy(graph));
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace tachyon::kernels
