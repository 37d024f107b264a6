#include <gtest/gtest.h>

#include "core/error.h"
#include "loader/weights.h"
#include "loader_test_util.h"

namespace tachyon {
namespace {

using test::Bytes;
using test::error_of;

// A view over bytes owned by the test.
TensorView make_view(const std::string& name, DType dtype, std::vector<int64_t> shape, const Bytes& data) {
  TensorView view;
  view.name = name;
  view.dtype = dtype;
  view.shape = std::move(shape);
  view.data = data.data();
  view.nbytes = data.size();
  view.file = "models/x.gguf";
  return view;
}

TEST(LoaderWeights, NumelAndShapeString) {
  Bytes data(24);
  TensorView view = make_view("w", DType::F32, {2, 3}, data);
  EXPECT_EQ(view.numel(), 6);
  EXPECT_EQ(view.rows(), 2);
  EXPECT_EQ(view.cols(), 3);
  EXPECT_EQ(view.shape_string(), "[2, 3]");
  view.shape = {};
  EXPECT_EQ(view.numel(), 1);
  EXPECT_EQ(view.shape_string(), "[]");
  view.shape = {4, 0};
  EXPECT_EQ(view.numel(), 0);
  view.shape = {int64_t{1} << 40, int64_t{1} << 40};
  EXPECT_THROW(view.numel(), Error);
  view.shape = {-1};
  EXPECT_THROW(view.numel(), Error);
}

TEST(LoaderWeights, ToFloatRangesAndRows) {
  Bytes data = test::f32_data(6, 1.0f, 1.0f);  // 1..6
  TensorView view = make_view("w", DType::F32, {2, 3}, data);
  EXPECT_EQ(view.to_float(), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  float row[3];
  view.row_to_float(1, row);
  EXPECT_EQ(row[0], 4.0f);
  EXPECT_EQ(row[2], 6.0f);
  float part[2];
  view.to_float(2, 2, part);
  EXPECT_EQ(part[0], 3.0f);
  EXPECT_EQ(part[1], 4.0f);
  view.to_float(6, 0, part);  // an empty range at the end is fine
}

TEST(LoaderWeights, ToFloatRejectsOutOfRange) {
  Bytes data = test::f32_data(6);
  TensorView view = make_view("model.w", DType::F32, {2, 3}, data);
  float out[8];
  std::string message = error_of([&] { view.to_float(4, 3, out); });
  EXPECT_NE(message.find("models/x.gguf"), std::string::npos) << message;
  EXPECT_NE(message.find("model.w"), std::string::npos) << message;
  EXPECT_THROW(view.to_float(-1, 1, out), Error);
  EXPECT_THROW(view.to_float(0, -1, out), Error);
  EXPECT_THROW(view.to_float(INT64_MAX, 2, out), Error);
  // A view that claims more elements than it has bytes must not read past them.
  view.nbytes = 8;
  EXPECT_THROW(view.to_float(0, 6, out), Error);
  view.data = nullptr;
  EXPECT_THROW(view.to_float(0, 1, out), Error);
}

TEST(LoaderWeights, ToFloatRequiresBlockBoundaries) {
  Bytes data(34 * 2);
  TensorView view = make_view("q", DType::Q8_0, {64}, data);
  std::vector<float> out(64);
  view.to_float(32, 32, out.data());
  std::string message = error_of([&] { view.to_float(1, 31, out.data()); });
  EXPECT_NE(message.find("block"), std::string::npos) << message;
  EXPECT_THROW(view.to_float(0, 16, out.data()), Error);
}

TEST(LoaderWeights, StoreAddFindGet) {
  Bytes data(8);
  WeightStore store;
  store.set_source("models/x.gguf");
  store.add(make_view("a", DType::F32, {2}, data));
  EXPECT_TRUE(store.has("a"));
  EXPECT_FALSE(store.has("b"));
  EXPECT_EQ(store.find("b"), nullptr);
  EXPECT_EQ(store.get("a").name, "a");
  EXPECT_EQ(error_of([&] { store.get("b"); }), "models/x.gguf: missing tensor b");
  std::string duplicate = error_of([&] { store.add(make_view("a", DType::F32, {2}, data)); });
  EXPECT_NE(duplicate.find("a appears twice"), std::string::npos) << duplicate;
  TensorView other = make_view("a", DType::F32, {2}, data);
  other.file = "models/y.safetensors";
  duplicate = error_of([&] { store.add(other); });
  EXPECT_NE(duplicate.find("models/x.gguf"), std::string::npos) << duplicate;
  EXPECT_NE(duplicate.find("models/y.safetensors"), std::string::npos) << duplicate;
}

TEST(LoaderWeights, GetWithShapeNamesFileTensorAndBothShapes) {
  Bytes data(1536 * 576 * 4);
  WeightStore store;
  store.add(make_view("model.layers.3.mlp.up_proj.weight", DType::F32, {1536, 576}, data));
  EXPECT_EQ(store.get("model.layers.3.mlp.up_proj.weight", {1536, 576}).numel(), 1536 * 576);
  EXPECT_EQ(error_of([&] { store.get("model.layers.3.mlp.up_proj.weight", {1536, 512}); }),
            "models/x.gguf: tensor model.layers.3.mlp.up_proj.weight has shape [1536, 576], config implies [1536, 512]");
  EXPECT_THROW(store.get("model.layers.3.mlp.up_proj.weight", {1536}), Error);
  EXPECT_THROW(store.get("model.layers.3.mlp.up_proj.weight", {1536, 576, 1}), Error);
}

TEST(LoaderWeights, Rename) {
  Bytes data(8);
  WeightStore store;
  store.add(make_view("a", DType::F32, {2}, data));
  store.add(make_view("b", DType::F32, {2}, data));
  store.rename("a", "c");
  EXPECT_FALSE(store.has("a"));
  ASSERT_TRUE(store.has("c"));
  EXPECT_EQ(store.get("c").name, "c");
  EXPECT_THROW(store.rename("missing", "d"), Error);
  EXPECT_THROW(store.rename("c", "b"), Error);
  EXPECT_TRUE(store.has("c"));  // a failed rename leaves the store as it was
  EXPECT_TRUE(store.has("b"));
  EXPECT_EQ(store.all().size(), 2u);
}

}  // namespace
}  // namespace tachyon
