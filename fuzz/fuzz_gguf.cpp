// libFuzzer target: any byte string must either load as GGUF (including the Hugging Face view:
// config synthesis, name mapping, expert splitting) or throw tachyon::Error. Anything else (a
// crash, a sanitizer report, another exception type, a huge allocation) is a bug.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "loader/checkpoint.h"
#include "loader/gguf.h"

namespace {
constexpr int64_t kMaxConvertedElements = 4096;

// Converts the start of the tensor (whole blocks) and its last block.
void touch(const tachyon::TensorView& tensor, std::vector<float>& values) {
  const int64_t block = tachyon::dtype_info(tensor.dtype).block_elements;
  const int64_t numel = tensor.numel();
  int64_t count = std::min(numel, kMaxConvertedElements);
  count -= count % block;
  values.resize(static_cast<size_t>(std::max<int64_t>(count, block)));
  tensor.to_float(0, count, values.data());
  if (numel >= block) tensor.to_float(numel - block, block, values.data());
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<float> values;
  tachyon::GgufContents contents;
  try {
    contents = tachyon::parse_gguf(data, size, "fuzz.gguf");
    for (const tachyon::TensorView& tensor : contents.tensors) touch(tensor, values);
  } catch (const tachyon::Error&) {
    return 0;  // rejected input: the expected outcome for most mutations
  }
  try {
    tachyon::Checkpoint checkpoint;
    tachyon::fill_checkpoint_from_gguf(std::move(contents), "fuzz.gguf", checkpoint);
    for (const auto& [name, tensor] : checkpoint.weights.all()) touch(tensor, values);
  } catch (const tachyon::Error&) {
  }
  return 0;
}
