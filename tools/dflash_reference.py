#!/usr/bin/env python3
"""An independent PyTorch implementation of the DFlash drafter forward, and the fixture it makes.

The drafter (z-lab layout, architectures ["DFlashDraftModel"]) is written here from the published
algorithm (shared/docs/dflash.md, the DFlash paper) with plain torch ops: no z-lab code, no transformers
modules. It is the ground truth for tachyon's C++ drafter (src/models/dflash_drafter.cpp) and the model
that tools/train_dflash.py trains.

  ctx  = hidden_norm(fc(concat_K target features))                      [c, D]
  x    = embed(block) * input_embedding_scale                           [b, D]   block = [bonus, MASK...]
  per layer:  h = input_layernorm(x)
              q = rope(q_norm(W_q h), block positions)
              k = rope(k_norm(W_k [ctx; h]), [ctx positions; block positions]),  v = W_v [ctx; h]
              x = x + W_o attention(q, k, v)          (no mask at inference: every query sees every key)
              x = x + mlp(post_attention_layernorm(x))
  logits = lm_head_of_target(norm(x))[1:]              slot j predicts the token AT slot j (no shift)

Training (train_dflash.py) runs the same module over many blocks at once with a block-sparse mask.

Fixture mode (run from the repository root):
  dflash_reference.py make-fixture [--out tests/fixtures/dflash]
writes, for each tiny target in FIXTURES:
  <name>/drafter/{config.json, model.safetensors}   a random drafter (bf16), z-lab layout
  <name>/features.f32        HF target features hidden_states[l + 1] for l in target_layer_ids, [T, K*D]
  <name>/draft_logits.f32    the reference draft logits of every round, concatenated [sum(b - 1), vocab]
  <name>/reference.json      sequence ids, rounds (context rows, block start, block size), tolerance
Each round is computed from scratch (all context rows at once, no cache), so the C++ drafter, which keeps
the projected context in its own KV cache across rounds, is checked against an independent computation.
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

TOLERANCE = 2e-3  # max |ours - ref| / max |ref| per round, float32 CPU vs float32 torch
METRIC = "per round: max_i |ours_i - ref_i| / max_i |ref_i| over all slots and the vocabulary"


# ----------------------------------------------------------------------------------------------
# Configuration


def draft_value(config, name, default=None):
    """A field of dflash_config, else of the top level (newer drafters nest block_size and rope there)."""
    nested = config.get("dflash_config") or {}
    if name in nested and nested[name] is not None:
        return nested[name]
    value = config.get(name)
    return default if value is None else value


def default_target_layer_ids(num_target_layers, num_features):
    """z-lab's spread of K layers from 1 to n-3 (Python round: half to even)."""
    if num_features == 1:
        return [num_target_layers // 2]
    start, end = 1, num_target_layers - 3
    return [int(round(start + i * (end - start) / (num_features - 1))) for i in range(num_features)]


def target_layer_ids(config):
    ids = draft_value(config, "target_layer_ids")
    if ids is None:
        ids = default_target_layer_ids(int(config["num_target_layers"]), int(config["num_hidden_layers"]))
    return [int(i) for i in ids]


def rope_theta(config):
    params = draft_value(config, "rope_parameters") or {}
    theta = params.get("rope_theta", draft_value(config, "rope_theta", 10000.0))
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type != "default":
        raise ValueError(f"reference supports default RoPE only, got {rope_type}")
    return float(theta)


# ----------------------------------------------------------------------------------------------
# The drafter


def rms_norm(x, weight, eps):
    x32 = x.float()
    return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps))


def rotate(x, positions, inv_freq):
    """NeoX-style RoPE (rotate the two halves) of x [B, H, n, head_dim] at positions [n] or [B, n]."""
    angles = positions.float()[..., None] * inv_freq  # [(B,) n, hd/2]
    cos = torch.cat([angles.cos(), angles.cos()], -1)
    sin = torch.cat([angles.sin(), angles.sin()], -1)
    if positions.dim() == 2:
        cos, sin = cos[:, None], sin[:, None]
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], -1)
    return x * cos + rotated * sin


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, hd = c["hidden_size"], c["head_dim"]
        bias = bool(c.get("attention_bias", False))
        self.q_proj = nn.Linear(d, c["num_attention_heads"] * hd, bias=bias)
        self.k_proj = nn.Linear(d, c["num_key_value_heads"] * hd, bias=bias)
        self.v_proj = nn.Linear(d, c["num_key_value_heads"] * hd, bias=bias)
        self.o_proj = nn.Linear(c["num_attention_heads"] * hd, d, bias=bias)
        self.q_norm = nn.Parameter(torch.ones(hd))
        self.k_norm = nn.Parameter(torch.ones(hd))
        self.gate_proj = nn.Linear(d, c["intermediate_size"], bias=False)
        self.up_proj = nn.Linear(d, c["intermediate_size"], bias=False)
        self.down_proj = nn.Linear(c["intermediate_size"], d, bias=False)
        self.input_layernorm = nn.Parameter(torch.ones(d))
        self.post_attention_layernorm = nn.Parameter(torch.ones(d))


class Drafter(nn.Module):
    """The DFlash drafter. forward() takes target features and block embeddings, returns normed hidden states."""

    def __init__(self, config):
        super().__init__()
        c = dict(config)
        c.setdefault("head_dim", c["hidden_size"] // c["num_attention_heads"])
        c.setdefault("num_key_value_heads", c["num_attention_heads"])
        self.config = c
        self.layer_ids = target_layer_ids(c)
        d = c["hidden_size"]
        self.eps = float(c.get("rms_norm_eps", 1e-6))
        self.heads, self.kv_heads, self.head_dim = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        self.fc = nn.Linear(len(self.layer_ids) * d, d, bias=False)
        self.hidden_norm = nn.Parameter(torch.ones(d))
        self.norm = nn.Parameter(torch.ones(d))
        self.layers = nn.ModuleList([Layer(c) for _ in range(c["num_hidden_layers"])])
        theta = rope_theta(c)
        hd = self.head_dim
        self.register_buffer("inv_freq", 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd)),
                             persistent=False)
        types = c.get("layer_types") or ["full_attention"] * c["num_hidden_layers"]
        is_causal = c.get("is_causal")
        self.layer_masks = []  # (causal, window) per layer, as z-lab: sliding layers are causal by default
        for t in types:
            sliding = t == "sliding_attention"
            causal = sliding if is_causal is None else bool(is_causal)
            self.layer_masks.append((causal, int(c["sliding_window"]) if sliding else 0))
        self.block_size = int(draft_value(c, "block_size", 16))
        self.mask_token_id = int(draft_value(c, "mask_token_id"))
        self.embedding_scale = float(draft_value(c, "input_embedding_scale", 1.0))
        self.output_multiplier = float(draft_value(c, "output_multiplier", 1.0))
        self.softcap = draft_value(c, "final_logit_softcapping")

    def context(self, target_features):
        return rms_norm(self.fc(target_features), self.hidden_norm, self.eps)

    def forward(self, target_features, block_embeddings, ctx_positions, block_positions, mask=None):
        """target_features [B, C, K*D], block_embeddings [B, N, D], positions [C] and [N] or [B, N] (int64).
        mask: None (inference, z-lab's per-layer causal/window rule) or bool [B, N, C + N], True = visible
        (training: block-sparse)."""
        ctx = self.context(target_features)
        x = block_embeddings * self.embedding_scale
        B, N, _ = x.shape
        C = ctx.shape[1]
        if block_positions.dim() == 2:
            key_positions = torch.cat([ctx_positions.expand(B, -1), block_positions], 1)
        else:
            key_positions = torch.cat([ctx_positions, block_positions])
        for layer, (causal, window) in zip(self.layers, self.layer_masks):
            h = rms_norm(x, layer.input_layernorm, self.eps)
            q = layer.q_proj(h).view(B, N, self.heads, self.head_dim)
            q = rms_norm(q, layer.q_norm, self.eps).transpose(1, 2)
            kv_input = torch.cat([ctx, h], 1)
            k = layer.k_proj(kv_input).view(B, C + N, self.kv_heads, self.head_dim)
            k = rms_norm(k, layer.k_norm, self.eps).transpose(1, 2)
            v = layer.v_proj(kv_input).view(B, C + N, self.kv_heads, self.head_dim).transpose(1, 2)
            q = rotate(q, block_positions, self.inv_freq)
            k = rotate(k, key_positions, self.inv_freq)
            group = self.heads // self.kv_heads
            k = k.repeat_interleave(group, 1)
            v = v.repeat_interleave(group, 1)
            if mask is not None:  # training: memory-efficient kernel, same math
                dtype = v.dtype  # bf16 under CUDA autocast (the norms above return float32), else float32
                attention = F.scaled_dot_product_attention(q.to(dtype), k.to(dtype), v, attn_mask=mask[:, None],
                                                           scale=1.0 / math.sqrt(self.head_dim))
                x = x + layer.o_proj(attention.transpose(1, 2).reshape(B, N, -1))
                h = rms_norm(x, layer.post_attention_layernorm, self.eps)
                x = x + layer.down_proj(F.silu(layer.gate_proj(h)) * layer.up_proj(h))
                continue
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)  # [B, H, N, C + N]
            visible = None
            if causal or window:
                # Keys are cache rows: z-lab numbers queries as the last N rows of the key sequence.
                qpos = (C + torch.arange(N))[:, None]
                kpos = torch.arange(C + N)[None, :]
                visible = torch.ones(N, C + N, dtype=torch.bool)
                if causal:
                    visible &= kpos <= qpos
                if window:
                    visible &= (qpos - kpos) < window
                    if not causal:
                        visible &= (kpos - qpos) < window
            if visible is not None:
                scores = scores.masked_fill(~visible, float("-inf"))
            attention = torch.softmax(scores.float(), -1) @ v
            x = x + layer.o_proj(attention.transpose(1, 2).reshape(B, N, -1))
            h = rms_norm(x, layer.post_attention_layernorm, self.eps)
            x = x + layer.down_proj(F.silu(layer.gate_proj(h)) * layer.up_proj(h))
        return rms_norm(x, self.norm, self.eps)

    def logits(self, hidden, lm_head_weight):
        logits = (hidden @ lm_head_weight.t()) * self.output_multiplier
        if self.softcap is not None and float(self.softcap) > 0:
            logits = torch.tanh(logits / float(self.softcap)) * float(self.softcap)
        return logits

    # z-lab checkpoint names (no "model." prefix) <-> module parameters
    def state_for_export(self):
        out = {"fc.weight": self.fc.weight, "hidden_norm.weight": self.hidden_norm, "norm.weight": self.norm}
        for i, layer in enumerate(self.layers):
            p = f"layers.{i}."
            for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
                out[p + f"self_attn.{name}.weight"] = getattr(layer, name).weight
                if getattr(layer, name).bias is not None:
                    out[p + f"self_attn.{name}.bias"] = getattr(layer, name).bias
            out[p + "self_attn.q_norm.weight"] = layer.q_norm
            out[p + "self_attn.k_norm.weight"] = layer.k_norm
            for name in ("gate_proj", "up_proj", "down_proj"):
                out[p + f"mlp.{name}.weight"] = getattr(layer, name).weight
            out[p + "input_layernorm.weight"] = layer.input_layernorm
            out[p + "post_attention_layernorm.weight"] = layer.post_attention_layernorm
        return out

    def load_export_state(self, tensors):
        own = self.state_for_export()
        missing = sorted(set(own) - set(tensors))
        extra = sorted(set(tensors) - set(own))
        if missing or extra:
            raise ValueError(f"drafter checkpoint: missing {missing}, unexpected {extra}")
        with torch.no_grad():
            for name, param in own.items():
                if tuple(param.shape) != tuple(tensors[name].shape):
                    raise ValueError(f"{name}: shape {tuple(tensors[name].shape)}, expected {tuple(param.shape)}")
                param.copy_(tensors[name].float())


def load_drafter(directory):
    """A drafter directory: config.json and model.safetensors or shards listed in model.safetensors.index.json."""
    from safetensors.torch import load_file

    with open(os.path.join(directory, "config.json")) as f:
        config = json.load(f)
    drafter = Drafter(config)
    index_path = os.path.join(directory, "model.safetensors.index.json")
    if os.path.exists(index_path):
        with open(index_path) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
        tensors = {}
        for name in files:
            tensors.update(load_file(os.path.join(directory, name)))
    else:
        tensors = load_file(os.path.join(directory, "model.safetensors"))
    drafter.load_export_state(tensors)
    return drafter


def save_drafter(drafter, directory, dtype=torch.bfloat16, max_shard_bytes=None):
    """z-lab layout. With max_shard_bytes, weights larger than that are split into
    model-0000i-of-0000n.safetensors files plus model.safetensors.index.json (HF's sharded layout)."""
    from safetensors.torch import save_file

    os.makedirs(directory, exist_ok=True)
    tensors = {k: v.detach().to(dtype).contiguous() for k, v in drafter.state_for_export().items()}
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    for stale in os.listdir(directory):  # a previous export of another shape must not linger
        if stale.endswith(".safetensors") or stale == "model.safetensors.index.json":
            os.remove(os.path.join(directory, stale))
    if not max_shard_bytes or total <= max_shard_bytes:
        save_file(tensors, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    else:
        shards, current, size = [], {}, 0
        for name, t in tensors.items():  # in export order; a tensor is never split
            nbytes = t.numel() * t.element_size()
            if current and size + nbytes > max_shard_bytes:
                shards.append(current)
                current, size = {}, 0
            current[name] = t
            size += nbytes
        shards.append(current)
        weight_map = {}
        for i, shard in enumerate(shards):
            file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, os.path.join(directory, file), metadata={"format": "pt"})
            weight_map.update({name: file for name in shard})
        with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=1)
            f.write("\n")
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(drafter.config, f, indent=2)
        f.write("\n")


def drafter_config_for(target_config, *, layers, block_size, mask_token_id, target_layer_ids=None,
                       intermediate_size=None, heads=None, kv_heads=None, head_dim=None, extra=None):
    """A z-lab config.json for a drafter of a target (hidden size = the target's)."""
    d = target_config["hidden_size"]
    heads = heads or target_config["num_attention_heads"]
    config = {
        "architectures": ["DFlashDraftModel"],
        "model_type": "qwen3",
        "block_size": block_size,
        "dflash_config": {"mask_token_id": mask_token_id},
        "num_target_layers": target_config["num_hidden_layers"],
        "hidden_size": d,
        "intermediate_size": intermediate_size or target_config.get("intermediate_size", 4 * d),
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads or target_config.get("num_key_value_heads", heads),
        "head_dim": head_dim or target_config.get("head_dim") or d // target_config["num_attention_heads"],
        "rms_norm_eps": target_config.get("rms_norm_eps", 1e-6),
        "rope_theta": 1000000.0,
        "max_position_embeddings": target_config.get("max_position_embeddings", 4096),
        "layer_types": ["full_attention"] * layers,
        "vocab_size": target_config["vocab_size"],
        "hidden_act": "silu",
        "attention_bias": False,
        "tie_word_embeddings": False,
    }
    if target_layer_ids is not None:
        config["dflash_config"]["target_layer_ids"] = list(target_layer_ids)
    if extra:
        config.update(extra)
    return config


def randomize(drafter, seed, weight_std=0.15, norm_std=0.2):
    """Seeded random weights, large enough that logits are far from flat."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in drafter.state_for_export().items():
            if name.endswith("norm.weight"):
                p.copy_(1 + norm_std * torch.randn(p.shape, generator=g))
            else:
                p.copy_(weight_std * torch.randn(p.shape, generator=g))


# ----------------------------------------------------------------------------------------------
# Target side (transformers) for the fixture


def target_features(target, ids, layer_ids):
    """HF hidden_states[l + 1] for each l (the last layer's entry is after the final norm)."""
    with torch.no_grad():
        out = target(torch.tensor([ids]), output_hidden_states=True)
    return torch.cat([out.hidden_states[l + 1][0] for l in layer_ids], -1).float()


def lm_head_weight(target):
    return target.get_output_embeddings().weight.detach().float()


def embedding_weight(target):
    return target.get_input_embeddings().weight.detach().float()


def reference_round(drafter, features, ids, start, block, embed, head):
    """Draft logits [block - 1, vocab] of the round whose bonus sits at `start` (context rows [0, start))."""
    tokens = torch.tensor([ids[start]] + [drafter.mask_token_id] * (block - 1))
    with torch.no_grad():
        hidden = drafter(features[None, :start], embed[tokens][None], torch.arange(start),
                         torch.arange(start, start + block))
        return drafter.logits(hidden[0, 1:], head)


FIXTURES = {
    # Qwen3 target; K = 2 features of a 2-layer target includes its last layer (post-norm in HF).
    "qwen3": dict(target="tiny/qwen3", seed=5001, layers=2, block_size=8, mask_token_id=383,
                  target_layer_ids=[0, 1], intermediate_size=96, heads=4, kv_heads=2, head_dim=16),
    # Llama target (untied lm_head, attention biases); one feature layer; a sliding-window drafter layer
    # (causal within its window, z-lab's rule for sliding_attention) and non-default scales.
    "llama_sliding": dict(target="tiny/llama", seed=5002, layers=2, block_size=6, mask_token_id=0,
                          target_layer_ids=[0], intermediate_size=64, heads=4, kv_heads=1, head_dim=12,
                          extra={"layer_types": ["sliding_attention", "full_attention"], "sliding_window": 5,
                                 "dflash_config": {"mask_token_id": 0, "target_layer_ids": [0],
                                                   "input_embedding_scale": 1.5, "output_multiplier": 0.8}}),
}
# Rounds: (accepted rows that become context before this round's bonus, block size). The first round's
# context is the prompt.
ROUNDS = [(None, None), (3, None), (1, None), (2, 4), (5, None)]
PROMPT = 9


def make_fixture(name, spec, out_root, fixtures_root):
    from safetensors.torch import load_file  # noqa: F401 (import check)
    from transformers import AutoModelForCausalLM

    target_dir = os.path.join(fixtures_root, spec["target"])
    with open(os.path.join(target_dir, "config.json")) as f:
        target_config = json.load(f)
    target = AutoModelForCausalLM.from_pretrained(target_dir, dtype=torch.float32).eval()
    config = drafter_config_for(target_config, layers=spec["layers"], block_size=spec["block_size"],
                                mask_token_id=spec["mask_token_id"], target_layer_ids=spec["target_layer_ids"],
                                intermediate_size=spec["intermediate_size"], heads=spec["heads"],
                                kv_heads=spec["kv_heads"], head_dim=spec["head_dim"], extra=spec.get("extra"))
    drafter = Drafter(config)
    randomize(drafter, spec["seed"])
    out = os.path.join(out_root, name)
    save_drafter(drafter, os.path.join(out, "drafter"))
    drafter = load_drafter(os.path.join(out, "drafter"))  # the bf16-rounded weights, as C++ reads them

    rng = np.random.default_rng(spec["seed"])
    vocab = target_config["vocab_size"]
    total = PROMPT + sum((a or 0) for a, _ in ROUNDS) + 1 + 16
    ids = [int(t) for t in rng.integers(1, vocab - 1, size=total)]
    features = target_features(target, ids, drafter.layer_ids)
    embed, head = embedding_weight(target), lm_head_weight(target)

    rounds, logits = [], []
    start = PROMPT
    for accepted, block in ROUNDS:
        if accepted is not None:
            start += accepted
        b = block or drafter.block_size
        logits.append(reference_round(drafter, features, ids, start, b, embed, head))
        rounds.append({"start": start, "block_size": b, "draft_argmax": logits[-1].argmax(-1).tolist()})
    all_logits = torch.cat(logits).numpy().astype("<f4")
    all_logits.tofile(os.path.join(out, "draft_logits.f32"))
    features.numpy().astype("<f4").tofile(os.path.join(out, "features.f32"))
    reference = {
        "target": spec["target"],
        "seed": spec["seed"],
        "ids": ids,
        "target_layer_ids": drafter.layer_ids,
        "features_file": "features.f32",
        "features_shape": list(features.shape),
        "rounds": rounds,
        "draft_logits_file": "draft_logits.f32",
        "draft_logits_shape": list(all_logits.shape),
        "tolerance": TOLERANCE,
        "metric": METRIC,
        "feature_tolerance": 1e-3,
        "feature_metric": "max |ours - ref| / max |ref| over all rows",
        "torch_version": torch.__version__,
        "logits_std": float(all_logits.std()),
    }
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(reference, f, indent=1)
        f.write("\n")
    print(f"{name}: {len(rounds)} rounds, logits {all_logits.shape}, std {all_logits.std():.3f}, "
          f"features {tuple(features.shape)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("make-fixture", help="write tests/fixtures/dflash")
    make.add_argument("--out", default="tests/fixtures/dflash")
    make.add_argument("--fixtures", default="tests/fixtures")
    rand = sub.add_parser("random-drafter", help="write a random drafter for a target checkpoint directory")
    rand.add_argument("--target-config", required=True, help="the target's config.json")
    rand.add_argument("--out", required=True)
    rand.add_argument("--layers", type=int, default=1)
    rand.add_argument("--block-size", type=int, default=16)
    rand.add_argument("--mask-token-id", type=int, required=True)
    rand.add_argument("--intermediate-size", type=int, default=None)
    rand.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.command == "make-fixture":
        for name, spec in FIXTURES.items():
            make_fixture(name, spec, args.out, args.fixtures)
    else:
        with open(args.target_config) as f:
            target_config = json.load(f)
        drafter = Drafter(drafter_config_for(target_config, layers=args.layers, block_size=args.block_size,
                                             mask_token_id=args.mask_token_id,
                                             intermediate_size=args.intermediate_size))
        randomize(drafter, args.seed)
        save_drafter(drafter, args.out)
        print(f"wrote {args.out}: target layers {drafter.layer_ids}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
