#include <gtest/gtest.h>

#include "loader/checkpoint.h"
#include "loader/safetensors.h"
#include "loader_test_util.h"

namespace tachyon {
namespace {

using test::Bytes;
using test::bytes_of;
using test::error_of;

const char* kName = "dir/bad.safetensors";

test::SafetensorsWriter small_writer() {
  test::SafetensorsWriter writer;
  writer.metadata({{"format", "pt"}});
  writer.add("model.embed_tokens.weight", "F32", {2, 3}, test::f32_data(6, 1.0f, 1.0f));
  writer.add("model.norm.weight", "BF16", {4}, bytes_of<uint16_t>({0x3F80, 0x4000, 0x4040, 0x4080}));
  writer.add("scale", "F16", {}, bytes_of<uint16_t>({0x3C00}));
  return writer;
}

// Parses `file` expecting an Error; returns its message.
std::string parse_error(const Bytes& file) {
  return error_of([&] { parse_safetensors(file.data(), file.size(), kName); });
}

TEST(LoaderSafetensors, ParsesTensorsAndMetadata) {
  Bytes file = small_writer().build();
  SafetensorsContents contents = parse_safetensors(file.data(), file.size(), "a.safetensors");
  ASSERT_EQ(contents.tensors.size(), 3u);
  EXPECT_EQ(contents.metadata, nlohmann::json({{"format", "pt"}}));
  const TensorView* embed = nullptr;
  const TensorView* norm = nullptr;
  const TensorView* scale = nullptr;
  for (const TensorView& t : contents.tensors) {
    if (t.name == "model.embed_tokens.weight") embed = &t;
    if (t.name == "model.norm.weight") norm = &t;
    if (t.name == "scale") scale = &t;
  }
  ASSERT_TRUE(embed && norm && scale);
  EXPECT_EQ(embed->file, "a.safetensors");
  EXPECT_EQ(embed->dtype, DType::F32);
  EXPECT_EQ(embed->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(embed->to_float(), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(norm->to_float(), (std::vector<float>{1, 2, 3, 4}));
  EXPECT_TRUE(scale->shape.empty());
  EXPECT_EQ(scale->to_float(), (std::vector<float>{1}));
  // The views point into the buffer: nothing was copied.
  EXPECT_GE(embed->data, file.data());
  EXPECT_LT(embed->data, file.data() + file.size());
}

TEST(LoaderSafetensors, ZeroSizedTensorsAndEmptyHeader) {
  test::SafetensorsWriter writer;
  writer.add("empty", "F32", {0, 5}, {});
  Bytes file = writer.build();
  SafetensorsContents contents = parse_safetensors(file.data(), file.size(), "a.safetensors");
  ASSERT_EQ(contents.tensors.size(), 1u);
  EXPECT_EQ(contents.tensors[0].numel(), 0);
  Bytes empty_header = test::SafetensorsWriter().build();
  EXPECT_TRUE(parse_safetensors(empty_header.data(), empty_header.size(), "e.safetensors").tensors.empty());
}

TEST(LoaderSafetensors, EveryTruncationIsAnErrorNamingTheFile) {
  const Bytes file = small_writer().build();
  for (size_t length = 0; length < file.size(); ++length) {
    // A fresh copy of exactly `length` bytes, so that ASan catches any read past it.
    Bytes prefix(file.begin(), file.begin() + static_cast<std::ptrdiff_t>(length));
    std::string message = parse_error(prefix);
    EXPECT_NE(message.find(kName), std::string::npos) << "length " << length << ": " << message;
  }
}

TEST(LoaderSafetensors, HeaderLengthPastEnd) {
  Bytes file = small_writer().build();
  file[0] = 0xff;
  file[1] = 0xff;
  EXPECT_NE(parse_error(file).find("header length"), std::string::npos);
  for (int i = 0; i < 8; ++i) file[i] = 0xff;  // 2^64 - 1: must not wrap around
  EXPECT_NE(parse_error(file).find("header length"), std::string::npos);
}

TEST(LoaderSafetensors, InvalidJsonAndNonObjectHeaders) {
  test::SafetensorsWriter writer;
  EXPECT_NE(parse_error(writer.build_with_header("{\"a\": ")).find("not valid JSON"), std::string::npos);
  EXPECT_NE(parse_error(writer.build_with_header("[1, 2]")).find("expected a JSON object"), std::string::npos);
  EXPECT_NE(parse_error(writer.build_with_header("{\"t\": 5}")).find("tensor t"), std::string::npos);
  EXPECT_NE(parse_error(writer.build_with_header("{\"t\": \"\xff\"}")).find("not valid JSON"), std::string::npos);
  // Deep nesting must neither crash the parser nor the destructor.
  std::string deep(100000, '[');
  EXPECT_NE(parse_error(writer.build_with_header(deep)).find(kName), std::string::npos);
  EXPECT_NE(parse_error(writer.build_with_header(deep + std::string(100000, ']'))).find(kName), std::string::npos);
}

TEST(LoaderSafetensors, BadEntries) {
  auto with_entry = [](nlohmann::ordered_json entry) {
    test::SafetensorsWriter writer;
    writer.add("w", "F32", {2}, test::f32_data(2));
    writer.header()["w"] = std::move(entry);
    return parse_error(writer.build());
  };
  using J = nlohmann::ordered_json;
  EXPECT_EQ(with_entry({{"dtype", "F4"}, {"shape", {2}}, {"data_offsets", {0, 8}}}),
            std::string(kName) + ": tensor w has unknown dtype F4");
  EXPECT_NE(with_entry({{"shape", {2}}, {"data_offsets", {0, 8}}}).find("no dtype"), std::string::npos);
  EXPECT_NE(with_entry({{"dtype", "F32"}, {"data_offsets", {0, 8}}}).find("no shape"), std::string::npos);
  EXPECT_NE(with_entry({{"dtype", "F32"}, {"shape", {2}}}).find("data_offsets"), std::string::npos);
  EXPECT_NE(with_entry({{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0, 8, 9}}}).find("data_offsets"), std::string::npos);
  EXPECT_NE(with_entry({{"dtype", "F32"}, {"shape", {-2}}, {"data_offsets", {0, 8}}}).find("non-negative"), std::string::npos);
  EXPECT_NE(with_entry({{"dtype", "F32"}, {"shape", {2.5}}, {"data_offsets", {0, 8}}}).find("non-negative"), std::string::npos);
  EXPECT_NE(with_entry({{"dtype", "F32"}, {"shape", J::array({"2"})}, {"data_offsets", {0, 8}}}).find("non-negative"), std::string::npos);
  EXPECT_NE(with_entry({{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {-1, 8}}}).find("data_offsets"), std::string::npos);
  // Data offsets past the end, reversed, and a byte count that does not match dtype x shape.
  EXPECT_NE(with_entry({{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0, 16}}}).find("past the end"), std::string::npos);
  EXPECT_NE(with_entry({{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {8, 0}}}).find("begin after end"), std::string::npos);
  EXPECT_EQ(with_entry({{"dtype", "F16"}, {"shape", {2}}, {"data_offsets", {0, 8}}}),
            std::string(kName) + ": tensor w has 8 bytes, but dtype F16 and shape [2] need 4");
  // Absurd dimensions: 2^62 alone, and products that overflow 64 bits.
  const uint64_t huge = uint64_t{1} << 62;
  EXPECT_NE(with_entry({{"dtype", "F32"}, {"shape", {huge}}, {"data_offsets", {0, 8}}}).find("overflows"), std::string::npos);
  EXPECT_NE(with_entry({{"dtype", "F32"}, {"shape", {huge, huge}}, {"data_offsets", {0, 8}}}).find("overflows"), std::string::npos);
  EXPECT_NE(with_entry({{"dtype", "F32"}, {"shape", {uint64_t{1} << 32, uint64_t{1} << 32}}, {"data_offsets", {0, 8}}}).find("overflows"), std::string::npos);
  EXPECT_NE(with_entry({{"dtype", "F32"}, {"shape", {1e30}}, {"data_offsets", {0, 8}}}).find("non-negative"), std::string::npos);
}

// --- directories ---

void write_shard(const std::string& path, const std::vector<std::string>& names) {
  test::SafetensorsWriter writer;
  float value = 0.0f;
  for (const std::string& name : names) writer.add(name, "F32", {2}, test::f32_data(2, value += 1.0f));
  test::write_file(path, writer.build());
}

TEST(LoaderSafetensors, DirectoryWithIndex) {
  test::TempDir dir;
  write_shard(dir.file("model-00001-of-00002.safetensors"), {"a", "b"});
  write_shard(dir.file("model-00002-of-00002.safetensors"), {"c"});
  nlohmann::json index = {{"metadata", {{"total_size", 24}}},
                          {"weight_map",
                           {{"a", "model-00001-of-00002.safetensors"},
                            {"b", "model-00001-of-00002.safetensors"},
                            {"c", "model-00002-of-00002.safetensors"}}}};
  test::write_file(dir.file("model.safetensors.index.json"), index.dump());
  WeightStore store;
  load_safetensors_dir(dir.path().string(), store);
  EXPECT_EQ(store.all().size(), 3u);
  EXPECT_EQ(store.get("c").file, dir.file("model-00002-of-00002.safetensors"));
  EXPECT_EQ(store.get("b").to_float(), (std::vector<float>{2, 2}));
}

TEST(LoaderSafetensors, IndexErrors) {
  test::TempDir dir;
  write_shard(dir.file("one.safetensors"), {"a"});
  const std::string index_path = dir.file("model.safetensors.index.json");
  auto load_error = [&](const nlohmann::json& index) {
    test::write_file(index_path, index.dump());
    WeightStore store;
    return error_of([&] { load_safetensors_dir(dir.path().string(), store); });
  };
  std::string missing = load_error({{"weight_map", {{"a", "one.safetensors"}, {"b", "two.safetensors"}, {"c", "three.safetensors"}}}});
  EXPECT_EQ(missing, index_path + ": missing shard files: three.safetensors, two.safetensors");
  std::string wrong_shard = load_error({{"weight_map", {{"a", "one.safetensors"}, {"z", "one.safetensors"}}}});
  EXPECT_NE(wrong_shard.find("tensor z"), std::string::npos) << wrong_shard;
  EXPECT_NE(load_error({{"weight_map", {{"a", "../one.safetensors"}}}}).find("invalid shard"), std::string::npos);
  EXPECT_NE(load_error({{"weight_map", {{"a", 3}}}}).find("invalid shard"), std::string::npos);
  EXPECT_NE(load_error({{"no_map", 1}}).find("weight_map"), std::string::npos);
  test::write_file(index_path, std::string("{not json"));
  WeightStore store;
  EXPECT_NE(error_of([&] { load_safetensors_dir(dir.path().string(), store); }).find(index_path + ": invalid JSON"),
            std::string::npos);
}

TEST(LoaderSafetensors, SingleFileAndGlob) {
  test::TempDir single;
  write_shard(single.file("model.safetensors"), {"a"});
  write_shard(single.file("ignored.safetensors"), {"ignored"});  // model.safetensors wins
  WeightStore store;
  load_safetensors_dir(single.path().string(), store);
  EXPECT_EQ(store.all().size(), 1u);

  test::TempDir glob;
  write_shard(glob.file("x.safetensors"), {"a"});
  write_shard(glob.file("y.safetensors"), {"b"});
  WeightStore both;
  load_safetensors_dir(glob.path().string(), both);
  EXPECT_TRUE(both.has("a") && both.has("b"));

  write_shard(glob.file("z.safetensors"), {"a"});  // a duplicate across files names both
  WeightStore duplicate;
  std::string message = error_of([&] { load_safetensors_dir(glob.path().string(), duplicate); });
  EXPECT_NE(message.find(glob.file("x.safetensors")), std::string::npos) << message;
  EXPECT_NE(message.find(glob.file("z.safetensors")), std::string::npos) << message;

  test::TempDir empty;
  WeightStore none;
  EXPECT_NE(error_of([&] { load_safetensors_dir(empty.path().string(), none); }).find("no safetensors"), std::string::npos);
}

TEST(LoaderSafetensors, TruncatedFileOnDiskNamesIt) {
  test::TempDir dir;
  const Bytes file = small_writer().build();
  const std::string path = dir.file("model.safetensors");
  for (size_t length : {size_t{0}, size_t{3}, size_t{8}, size_t{40}, file.size() - 1}) {
    test::write_file(path, Bytes(file.begin(), file.begin() + static_cast<std::ptrdiff_t>(length)));
    WeightStore store;
    std::string message = error_of([&] { load_safetensors_file(path, store); });
    EXPECT_EQ(message.rfind(path + ": ", 0), 0u) << message;
  }
}

}  // namespace
}  // namespace tachyon
