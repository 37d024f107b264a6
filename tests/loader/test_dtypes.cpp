// Every element type read through a real file and converted to float, against values worked out
// by hand from the format definitions (IEEE half, bfloat16, OCP FP8, ggml block layouts).
#include <cmath>

#include <gtest/gtest.h>

#include "loader/gguf.h"
#include "loader/safetensors.h"
#include "loader_test_util.h"

namespace tachyon {
namespace {

using test::Bytes;
using test::bytes_of;

const float kInf = INFINITY;

std::vector<float> convert_safetensors(const std::string& dtype, const Bytes& data, int64_t count) {
  test::SafetensorsWriter writer;
  writer.add("t", dtype, {count}, data);
  Bytes file = writer.build();
  SafetensorsContents contents = parse_safetensors(file.data(), file.size(), "t.safetensors");
  EXPECT_EQ(contents.tensors.size(), 1u);
  return contents.tensors.at(0).to_float();
}

std::vector<float> convert_gguf(uint32_t ggml_type, const Bytes& data, uint64_t count) {
  test::GgufWriter writer;
  writer.tensor("t", ggml_type, {count}, data);
  Bytes file = writer.build();
  GgufContents contents = parse_gguf(file.data(), file.size(), "t.gguf");
  EXPECT_EQ(contents.tensors.size(), 1u);
  return contents.tensors.at(0).to_float();
}

// Exact comparison that also accepts NaN == NaN.
void expect_same(const std::vector<float>& actual, const std::vector<float>& expected) {
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    if (std::isnan(expected[i])) EXPECT_TRUE(std::isnan(actual[i])) << "element " << i;
    else EXPECT_EQ(actual[i], expected[i]) << "element " << i;
  }
}

TEST(LoaderDTypes, F16) {
  // sign | 5-bit exponent (bias 15) | 10-bit mantissa
  const std::vector<uint16_t> bits = {0x0000, 0x3C00, 0xC000, 0x3555, 0x7BFF, 0x0001, 0x0400, 0x7C00, 0xFC00, 0x7E00, 0x8000};
  const std::vector<float> expected = {0.0f, 1.0f, -2.0f, 1365.0f / 4096.0f, 65504.0f, 1.0f / 16777216.0f,
                                       1.0f / 16384.0f, kInf, -kInf, NAN, -0.0f};
  expect_same(convert_safetensors("F16", bytes_of(bits), bits.size()), expected);
  expect_same(convert_gguf(test::ggml::F16, bytes_of(bits), bits.size()), expected);
}

TEST(LoaderDTypes, BF16) {
  // The upper half of a float32.
  const std::vector<uint16_t> bits = {0x3F80, 0xC0A0, 0x4049, 0x0001, 0x7F80, 0x7FC0, 0xFF7F};
  const std::vector<float> expected = {1.0f, -5.0f, 3.140625f, std::ldexp(1.0f, -133), kInf, NAN,
                                       -3.3895313892515355e38f};
  expect_same(convert_safetensors("BF16", bytes_of(bits), bits.size()), expected);
  expect_same(convert_gguf(test::ggml::BF16, bytes_of(bits), bits.size()), expected);
}

TEST(LoaderDTypes, F8E4M3) {
  // 4-bit exponent (bias 7), 3-bit mantissa, no infinities, S.1111.111 is NaN.
  const Bytes bits = {0x00, 0x38, 0x3C, 0xB8, 0x7E, 0x7F, 0x01, 0x08, 0x07, 0xFE};
  const std::vector<float> expected = {0.0f, 1.0f, 1.5f, -1.0f, 448.0f, NAN, 1.0f / 512.0f, 1.0f / 64.0f,
                                       7.0f / 512.0f, -448.0f};
  expect_same(convert_safetensors("F8_E4M3", bits, bits.size()), expected);
}

TEST(LoaderDTypes, F8E5M2) {
  // 5-bit exponent (bias 15), 2-bit mantissa, IEEE-like infinities and NaNs.
  const Bytes bits = {0x3C, 0x7B, 0x01, 0xC0, 0x7C, 0x7D, 0x3E, 0x00};
  const std::vector<float> expected = {1.0f, 57344.0f, 1.0f / 65536.0f, -2.0f, kInf, NAN, 1.5f, 0.0f};
  expect_same(convert_safetensors("F8_E5M2", bits, bits.size()), expected);
}

TEST(LoaderDTypes, F8E8M0) {
  const Bytes bits = {127, 130, 0, 0xFF, 126};
  expect_same(convert_safetensors("F8_E8M0", bits, bits.size()), {1.0f, 8.0f, std::ldexp(1.0f, -127), NAN, 0.5f});
}

TEST(LoaderDTypes, PlainIntegersAndFloats) {
  expect_same(convert_safetensors("F32", bytes_of<float>({1.5f, -2.25f}), 2), {1.5f, -2.25f});
  expect_same(convert_safetensors("F64", bytes_of<double>({0.1, -1e10}), 2), {0.1f, -1e10f});
  expect_same(convert_safetensors("I8", bytes_of<int8_t>({-128, 127}), 2), {-128.0f, 127.0f});
  expect_same(convert_safetensors("I16", bytes_of<int16_t>({-32768, 5}), 2), {-32768.0f, 5.0f});
  expect_same(convert_safetensors("I32", bytes_of<int32_t>({-100000, 7}), 2), {-100000.0f, 7.0f});
  expect_same(convert_safetensors("I64", bytes_of<int64_t>({-(int64_t{1} << 40), 3}), 2), {-1099511627776.0f, 3.0f});
  expect_same(convert_safetensors("U8", bytes_of<uint8_t>({255, 0}), 2), {255.0f, 0.0f});
  expect_same(convert_safetensors("U16", bytes_of<uint16_t>({65535, 1}), 2), {65535.0f, 1.0f});
  expect_same(convert_safetensors("U32", bytes_of<uint32_t>({4000000000u, 2}), 2), {4000000000.0f, 2.0f});
  expect_same(convert_safetensors("U64", bytes_of<uint64_t>({uint64_t{1} << 50, 9}), 2), {1125899906842624.0f, 9.0f});
  expect_same(convert_safetensors("BOOL", Bytes{1, 0}, 2), {1.0f, 0.0f});
  expect_same(convert_gguf(test::ggml::F32, bytes_of<float>({3.5f}), 1), {3.5f});
  expect_same(convert_gguf(test::ggml::F64, bytes_of<double>({-0.5}), 1), {-0.5f});
  expect_same(convert_gguf(test::ggml::I8, bytes_of<int8_t>({-3}), 1), {-3.0f});
  expect_same(convert_gguf(test::ggml::I16, bytes_of<int16_t>({-300}), 1), {-300.0f});
  expect_same(convert_gguf(test::ggml::I32, bytes_of<int32_t>({70000}), 1), {70000.0f});
  expect_same(convert_gguf(test::ggml::I64, bytes_of<int64_t>({-5}), 1), {-5.0f});
}

// Q8_0 block: f16 scale d, then 32 signed bytes q; x = d * q.
TEST(LoaderDTypes, Q8_0) {
  Bytes data;
  std::vector<float> expected;
  test::append<uint16_t>(data, 0x3800);  // d = 0.5
  for (int i = 0; i < 32; ++i) {
    int q = i == 0 ? -128 : i == 31 ? 127 : i - 16;
    data.push_back(static_cast<uint8_t>(static_cast<int8_t>(q)));
    expected.push_back(0.5f * static_cast<float>(q));
  }
  test::append<uint16_t>(data, 0xB400);  // d = -0.25
  for (int i = 0; i < 32; ++i) {
    int q = 3 * i - 50;
    data.push_back(static_cast<uint8_t>(static_cast<int8_t>(q)));
    expected.push_back(-0.25f * static_cast<float>(q));
  }
  expect_same(convert_gguf(test::ggml::Q8_0, data, 64), expected);
}

// Q4_0 block: f16 scale d, then 16 bytes; byte j holds element j in its low nibble and element
// j + 16 in its high nibble; x = d * (nibble - 8).
TEST(LoaderDTypes, Q4_0) {
  Bytes data;
  std::vector<float> expected(64);
  const uint16_t scales[2] = {0x3400, 0xC200};  // 0.25, -3
  const float scale_values[2] = {0.25f, -3.0f};
  for (int b = 0; b < 2; ++b) {
    test::append<uint16_t>(data, scales[b]);
    for (int j = 0; j < 16; ++j) {
      int low = b == 0 ? j : (5 * j + 3) % 16;
      int high = b == 0 ? 15 - j : (7 * j + 1) % 16;
      data.push_back(static_cast<uint8_t>(low | (high << 4)));
      expected[b * 32 + j] = scale_values[b] * static_cast<float>(low - 8);
      expected[b * 32 + j + 16] = scale_values[b] * static_cast<float>(high - 8);
    }
  }
  expect_same(convert_gguf(test::ggml::Q4_0, data, 64), expected);
}

// Q4_1 block: f16 scale d, f16 minimum m, then 16 bytes (nibbles as in Q4_0); x = d * nibble + m.
TEST(LoaderDTypes, Q4_1) {
  Bytes data;
  std::vector<float> expected(64);
  const uint16_t scales[2] = {0x3800, 0x3C00}, minimums[2] = {0xBC00, 0x4000};  // (0.5, -1), (1, 2)
  const float scale_values[2] = {0.5f, 1.0f}, minimum_values[2] = {-1.0f, 2.0f};
  for (int b = 0; b < 2; ++b) {
    test::append<uint16_t>(data, scales[b]);
    test::append<uint16_t>(data, minimums[b]);
    for (int j = 0; j < 16; ++j) {
      int low = b == 0 ? j : (7 * j) % 16;
      int high = b == 0 ? 15 - j : (3 * j) % 16;
      data.push_back(static_cast<uint8_t>(low | (high << 4)));
      expected[b * 32 + j] = scale_values[b] * static_cast<float>(low) + minimum_values[b];
      expected[b * 32 + j + 16] = scale_values[b] * static_cast<float>(high) + minimum_values[b];
    }
  }
  expect_same(convert_gguf(test::ggml::Q4_1, data, 64), expected);
}

TEST(LoaderDTypes, QuantizedRowsAndPartialReads) {
  // Two rows of one Q8_0 block each: rows convert independently, a mid-block start is refused.
  Bytes data;
  for (int row = 0; row < 2; ++row) {
    test::append<uint16_t>(data, 0x3C00);  // d = 1
    for (int i = 0; i < 32; ++i) data.push_back(static_cast<uint8_t>(row * 32 + i));
  }
  test::GgufWriter writer;
  writer.tensor("t", test::ggml::Q8_0, {32, 2}, data);
  Bytes file = writer.build();
  GgufContents contents = parse_gguf(file.data(), file.size(), "t.gguf");
  const TensorView& view = contents.tensors.at(0);
  EXPECT_EQ(view.shape, (std::vector<int64_t>{2, 32}));
  std::vector<float> row(32);
  view.row_to_float(1, row.data());
  EXPECT_EQ(row[0], 32.0f);
  EXPECT_EQ(row[31], 63.0f);
  EXPECT_THROW(view.to_float(1, 32, row.data()), Error);
}

}  // namespace
}  // namespace tachyon
