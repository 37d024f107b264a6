// Constructors of the architecture files, and config checks several of them share.
// model.cpp dispatches on config.json "architectures" to these.
#pragma once
#include <memory>

#include "models/config.h"
#include "models/model.h"

namespace tachyon {

std::unique_ptr<Model> make_llama(const Checkpoint& checkpoint);
std::unique_ptr<Model> make_qwen2(const Checkpoint& checkpoint);
std::unique_ptr<Model> make_qwen3(const Checkpoint& checkpoint);
std::unique_ptr<Model> make_qwen3_moe(const Checkpoint& checkpoint);
std::unique_ptr<Model> make_mixtral(const Checkpoint& checkpoint);
std::unique_ptr<Model> make_deepseek_v2(const Checkpoint& checkpoint);
std::unique_ptr<Model> make_deepseek_v3(const Checkpoint& checkpoint);
std::unique_ptr<Model> make_gpt_oss(const Checkpoint& checkpoint);

// hidden_act must be silu (SwiGLU); anything else is an error naming the field.
void require_silu_mlp(const ConfigReader& config);
// use_sliding_window: true (Qwen2/Qwen3 long-context option) is not supported yet.
void reject_sliding_window(const ConfigReader& config);

}  // namespace tachyon
