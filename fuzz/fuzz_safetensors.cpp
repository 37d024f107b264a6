// libFuzzer target: any byte string must either parse as safetensors or throw tachyon::Error.
// Anything else (a crash, a sanitizer report, another exception type, a huge allocation) is a bug.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "loader/safetensors.h"

namespace {
// Converting small tensors whole and big ones in part touches the first bytes of every view,
// which is where an offset that escaped validation would show up under ASan.
constexpr int64_t kMaxConvertedElements = 4096;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    tachyon::SafetensorsContents contents = tachyon::parse_safetensors(data, size, "fuzz.safetensors");
    std::vector<float> values;
    for (const tachyon::TensorView& tensor : contents.tensors) {
      const int64_t count = std::min(tensor.numel(), kMaxConvertedElements);
      values.resize(static_cast<size_t>(count));
      tensor.to_float(0, count, values.data());
      if (count < tensor.numel()) tensor.to_float(tensor.numel() - 1, 1, values.data());  // and the last byte
    }
  } catch (const tachyon::Error&) {
    // Rejected input: the expected outcome for most mutations.
  }
  return 0;
}
