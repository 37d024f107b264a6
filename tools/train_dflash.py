#!/usr/bin/env python3
"""Trains a DFlash drafter for a target model and exports it in z-lab's layout (tachyon generate --draft DIR).

Recipe (shared/docs/dflash.md, the DFlash paper):
  data      prompts answered by the TARGET itself (greedy by default), through the same chat template that
            `tachyon generate --chat` uses (code prompts are raw completions); stored as token ids in
            <out>/data.jsonl, or given with --data (any file of {"ids": [...], "prompt_length": P} lines, e.g.
            made with `tachyon generate --print-ids`);
  features  target hidden states hidden_states[l + 1] of the drafter's target_layer_ids (frozen target);
  anchors   per sequence up to --anchors positions p in the response; each starts a block [token p, MASK...] at
            positions p..p+b-1 whose slot k is trained to predict token p + k;
  mask      block-sparse: a block sees the target features of rows < p and its own block (bidirectionally),
            never another block;
  loss      cross-entropy on slots 1..b-1 weighted exp(-(k - 1) / gamma), gamma 7 / 5 / 4 for b = 16 / 10 / 8;
  optimizer AdamW lr 6e-4, cosine schedule with 4% warm-up, gradient clip 1.0 (bf16 autocast on CUDA);
  held-out  greedy acceptance on the fixed prompt set (prompts/*.jsonl, never trained on): for each prompt the
            target's greedy answer S, then DFlash rounds are replayed exactly: a block drafted at position s is
            accepted for its longest prefix equal to S, so tau (tokens per target pass, bonus included) is what
            greedy speculative decoding would get;
  export    <out>/drafter/{config.json, model.safetensors} (bf16, no "model." prefix), <out>/training_log.jsonl,
            <out>/eval.json, <out>/command.txt.

The drafter module is tools/dflash_reference.py's Drafter, the implementation tachyon's C++ drafter is tested
against, so what is trained here is what tachyon runs.

Subcommands:
  code-prompts  write the fixed code-completion prompts (function prefixes from this Python's standard library)
  train         regenerate data (or load --data), train, evaluate, export
  eval          held-out acceptance of an exported drafter
  selftest      the block-sparse training forward equals per-block inference forwards (CPU, tiny target)

Examples:
  # CPU smoke test on a tiny target without a tokenizer (random token prompts):
  train_dflash.py train --target tests/fixtures/tiny/qwen3 --out /tmp/dflash-tiny --token-prompts 64 \\
      --mask-token-id 383 --drafter-layers 2 --target-layer-ids 0 1 --block-size 8 --steps 20 --anchors 16
  # SmolLM2-135M-Instruct on a GPU host (HF directory, or the GGUF with the gguf package installed):
  train_dflash.py train --target models/SmolLM2-135M-Instruct --out runs/smollm2-dflash --mask-token-id 16 \\
      --drafter-layers 3 --block-size 16 --train-prompts 12000 --steps 6000 --batch-size 8
"""

import argparse
import ast
import json
import math
import os
import random
import sys
import sysconfig
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dflash_reference import Drafter, default_target_layer_ids, drafter_config_for, load_drafter, save_drafter  # noqa: E402

GAMMA = {16: 7.0, 10: 5.0, 8: 4.0}
PROMPT_FILES = ["prompts/chat.jsonl", "prompts/code.jsonl", "prompts/math.jsonl"]


def log(*args):
    print(*args, flush=True)


# ----------------------------------------------------------------------------------------------
# Prompts


def stdlib_functions(min_body_lines=6, exclude_files=()):
    """(relative file, line, prefix) for functions of the standard library, in a fixed order."""
    root = sysconfig.get_paths()["stdlib"]
    skip_dirs = {"test", "tests", "idlelib", "lib2to3", "tkinter", "turtledemo", "site-packages", "dist-packages",
                 "ensurepip", "pydoc_data", "__pycache__", "config-3.11-x86_64-linux-gnu"}
    out = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in skip_dirs and not d.startswith("config-"))
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, root)
            if relative in exclude_files:
                continue
            try:
                with open(path, encoding="utf-8") as f:
                    source = f.read()
                tree = ast.parse(source)
            except (SyntaxError, UnicodeDecodeError, OSError):
                continue
            lines = source.splitlines()
            for node in ast.walk(tree):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or not node.body:
                    continue
                end = getattr(node, "end_lineno", None)
                if end is None or end - node.lineno + 1 < min_body_lines + 1:
                    continue
                # The prefix: the signature, the docstring if any, and the first two statements' first lines.
                body = node.body
                cut = body[0].end_lineno if ast.get_docstring(node) is not None else node.body[0].lineno - 1
                cut = min(end - 2, max(cut, node.lineno) + 2)
                first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
                prefix_lines = lines[first - 1:cut]
                if not prefix_lines:
                    continue
                indent = len(prefix_lines[0]) - len(prefix_lines[0].lstrip())
                prefix = "\n".join(line[indent:] for line in prefix_lines) + "\n"
                if 80 <= len(prefix) <= 900:
                    out.append((relative, node.lineno, prefix))
    return out


def code_prompts(count, seed, exclude_files=()):
    functions = stdlib_functions(exclude_files=exclude_files)
    rng = random.Random(seed)
    chosen, files = [], set()
    for relative, line, prefix in rng.sample(functions, len(functions)):
        if relative in files:
            continue  # one function per file: more variety
        files.add(relative)
        chosen.append({"category": "code", "chat": False, "prompt": prefix,
                       "source": f"{relative}:{line} (Python {sys.version_info.major}.{sys.version_info.minor})"})
        if len(chosen) == count:
            break
    return chosen


CHAT_TOPICS = ["photosynthesis", "the French Revolution", "volcanoes", "machine learning", "the stock market",
               "coral reefs", "the immune system", "jazz music", "renewable energy", "the Roman Empire",
               "quantum computing", "honey bees", "the internet", "climate change", "chess", "the moon landing",
               "bread baking", "electric cars", "sleep", "the printing press", "black holes", "gardening",
               "public speaking", "the human heart", "earthquakes", "cryptography", "the Olympic Games",
               "recycling", "glaciers", "opera", "databases", "time management", "rainforests", "vaccines",
               "the Silk Road", "solar panels", "meditation", "bridges", "coffee", "DNA", "marathon training",
               "the Renaissance", "budgeting", "tides", "operating systems", "origami", "wolves", "compilers"]
CHAT_FORMS = ["Explain {t} in simple terms.", "Write a short paragraph about {t}.", "Give me three facts about {t}.",
              "What are common misconceptions about {t}?", "Write a haiku about {t}.",
              "Summarize the history of {t} in a few sentences.", "How would you teach {t} to a child?",
              "List the pros and cons of {t}.", "Write a short story that involves {t}.",
              "What questions should a beginner ask about {t}?", "Compare {t} and {u}.",
              "Write an email to a friend recommending they learn about {t}."]
NAMES = ["Ana", "Ben", "Chloe", "David", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jack", "Kofi", "Lena"]
ITEMS = ["apples", "books", "marbles", "stickers", "pencils", "cookies", "coins", "cards", "shells", "stamps"]


def chat_prompt(rng):
    t, u = rng.sample(CHAT_TOPICS, 2)
    return rng.choice(CHAT_FORMS).format(t=t, u=u)


def math_prompt(rng):
    n, m = rng.sample(NAMES, 2)
    item = rng.choice(ITEMS)
    a, b, c = rng.randint(3, 60), rng.randint(2, 30), rng.randint(2, 9)
    forms = [
        f"{n} has {a} {item}. {m} gives {n} {b} more, then {n} shares them equally among {c} friends. How many does each friend get, and how many are left?",
        f"{n} buys {c} packs of {item} at ${b} each and pays with a ${a * 10} bill. How much change does {n} get?",
        f"A shop sells {item} for ${c} each. {n} has ${a + b}. How many {item} can {n} buy and how much money is left?",
        f"{n} walks {c} km every day for {b} days, and {m} walks {c + 2} km every day for {max(1, b - 3)} days. Who walks farther, and by how much?",
        f"A box holds {c * 6} {item}. {n} fills {b} boxes and has {a} {item} left over. How many {item} did {n} start with?",
        f"{n} is {a} years old. {m} is {c} years younger than twice {n}'s age. How old is {m}?",
        f"A rectangle has a length of {a} cm and a width of {b} cm. What are its area and its perimeter?",
        f"{n} saves ${c * 5} every week. How many weeks does {n} need to save ${c * 5 * b}?",
        f"A price of ${a * 4} is reduced by {rng.choice([10, 15, 20, 25, 30, 40])}%. What is the new price?",
        f"{n} reads {b} pages a day. How many days does {n} need to finish a book of {a * 10} pages?",
    ]
    return rng.choice(forms) + " Think step by step and give the final answer."


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def training_prompts(count, seed, eval_prompts):
    """Synthetic chat / math prompts and stdlib code prefixes (from files the fixed set does not use)."""
    rng = random.Random(seed)
    eval_texts = {p["prompt"] for p in eval_prompts}
    eval_files = {p["source"].split(":")[0] for p in eval_prompts if p.get("source")}
    code = code_prompts(count // 3, seed + 1, exclude_files=eval_files)
    prompts = []
    for i in range(count):
        kind = i % 3
        if kind == 0:
            prompts.append({"category": "chat", "chat": True, "prompt": chat_prompt(rng)})
        elif kind == 1:
            prompts.append({"category": "math", "chat": True, "prompt": math_prompt(rng)})
        elif code:
            prompts.append(code[(i // 3) % len(code)])
    return [p for p in prompts if p["prompt"] not in eval_texts]


# ----------------------------------------------------------------------------------------------
# Target


class Target:
    """The frozen target: HF model (+ tokenizer when it has one), embedding, lm_head, features."""

    def __init__(self, path, device, dtype):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        kwargs = {"dtype": dtype}
        if path.endswith(".gguf"):  # dequantized by transformers (needs the gguf package)
            kwargs["gguf_file"] = os.path.basename(path)
            directory = os.path.dirname(path) or "."
        else:
            directory = path
        self.model = AutoModelForCausalLM.from_pretrained(directory, **kwargs).to(device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(directory, **({"gguf_file": kwargs["gguf_file"]} if "gguf_file" in kwargs else {}))
        except Exception:  # tiny fixtures have none
            self.tokenizer = None
        self.config = self.model.config.to_dict()
        self.device = device
        self.embed = self.model.get_input_embeddings().weight
        self.lm_head = self.model.get_output_embeddings().weight
        self.eos = self.model.generation_config.eos_token_id if self.model.generation_config else None
        if isinstance(self.eos, int):
            self.eos = [self.eos]
        self.eos = list(self.eos or [])

    def encode_prompt(self, record):
        if record.get("ids") is not None:
            return list(record["ids"])
        if self.tokenizer is None:
            raise ValueError("this target has no tokenizer: give token prompts (--token-prompts) or --data")
        if record.get("chat", True) and self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template([{"role": "user", "content": record["prompt"]}],
                                                      add_generation_prompt=True, tokenize=True, return_dict=False)
        ids = self.tokenizer.encode(record["prompt"], add_special_tokens=False)
        bos = self.tokenizer.bos_token_id
        return ([bos] if bos is not None and getattr(self.tokenizer, "add_bos_token", False) else []) + ids

    @torch.no_grad()
    def generate(self, prompts, max_new_tokens, temperature, batch_size, seed):
        """Target-regenerated responses: [(prompt_ids, response_ids)], stopping at (and keeping) EOS."""
        torch.manual_seed(seed)
        out = []
        pad = self.eos[0] if self.eos else 0
        for i in range(0, len(prompts), batch_size):
            batch = prompts[i:i + batch_size]
            width = max(len(p) for p in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, p in enumerate(batch):  # left padding
                ids[r, width - len(p):] = torch.tensor(p)
                mask[r, width - len(p):] = 1
            generated = self.model.generate(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device), max_new_tokens=max_new_tokens,
                do_sample=temperature > 0, temperature=temperature if temperature > 0 else None, top_p=None,
                top_k=None, pad_token_id=pad, eos_token_id=self.eos or None)
            for r, p in enumerate(batch):
                response = generated[r, width:].tolist()
                for j, t in enumerate(response):
                    if t in self.eos:
                        response = response[:j + 1]
                        break
                out.append((p, response))
            log(f"  generated {min(i + batch_size, len(prompts))}/{len(prompts)}")
        return out

    @torch.no_grad()
    def features(self, ids, layer_ids):
        """[B, L, K * D]: hidden_states[l + 1] (HF; the last layer's entry is after the final norm)."""
        out = self.model(ids, output_hidden_states=True)
        return torch.cat([out.hidden_states[l + 1] for l in layer_ids], -1)


# ----------------------------------------------------------------------------------------------
# Data


def build_data(args, target, eval_prompts):
    if args.data:
        data = read_jsonl(args.data)
        log(f"data: {len(data)} sequences from {args.data}")
        return data
    rng = random.Random(args.seed)
    if args.token_prompts:
        vocab = target.config["vocab_size"]
        prompts = [{"category": "tokens", "ids": [rng.randrange(vocab) for _ in range(rng.randint(4, 24))]}
                   for _ in range(args.token_prompts)]
    else:
        prompts = training_prompts(args.train_prompts, args.seed, eval_prompts)
    log(f"data: regenerating {len(prompts)} responses with the target (T={args.data_temperature})")
    encoded = [target.encode_prompt(p) for p in prompts]
    pairs = target.generate(encoded, args.max_new_tokens, args.data_temperature, args.generate_batch, args.seed)
    data = [{"category": p.get("category", ""), "ids": prompt + response, "prompt_length": len(prompt)}
            for p, (prompt, response) in zip(prompts, pairs) if len(response) >= 2]
    with open(os.path.join(args.out, "data.jsonl"), "w") as f:
        for d in data:
            f.write(json.dumps(d) + "\n")
    return data


def eval_sequences(args, target, eval_prompts):
    """Held-out prompts with the target's GREEDY answers (what greedy speculative decoding must reproduce)."""
    if args.token_prompts:
        rng = random.Random(args.seed + 999)
        vocab = target.config["vocab_size"]
        eval_prompts = [{"category": "tokens", "ids": [rng.randrange(vocab) for _ in range(rng.randint(4, 24))]}
                        for _ in range(args.eval_prompts or 8)]
    elif args.eval_prompts:
        eval_prompts = eval_prompts[:args.eval_prompts]
    encoded = [target.encode_prompt(p) for p in eval_prompts]
    pairs = target.generate(encoded, args.eval_tokens, 0.0, args.generate_batch, args.seed)
    return [{"category": p.get("category", ""), "ids": prompt + response, "prompt_length": len(prompt)}
            for p, (prompt, response) in zip(eval_prompts, pairs) if len(response) >= 2]


# ----------------------------------------------------------------------------------------------
# Training


def make_batch(sequences, block, anchors, mask_token_id, rng, device):
    """Token ids [B, L], block tokens [B, N], labels [B, N] (-100 = none), block positions [B, N],
    visibility mask [B, N, L + N] (True = may attend), N = anchors * block."""
    B, L = len(sequences), max(len(s["ids"]) for s in sequences)
    N = anchors * block
    ids = torch.zeros((B, L), dtype=torch.long)
    tokens = torch.full((B, N), mask_token_id, dtype=torch.long)
    labels = torch.full((B, N), -100, dtype=torch.long)
    positions = torch.zeros((B, N), dtype=torch.long)
    visible = torch.zeros((B, N, L + N), dtype=torch.bool)
    for b, s in enumerate(sequences):
        seq = s["ids"]
        ids[b, :len(seq)] = torch.tensor(seq)
        candidates = list(range(s["prompt_length"], len(seq) - 1))  # at least one label after the anchor
        chosen = sorted(rng.sample(candidates, min(anchors, len(candidates))))
        for a, p in enumerate(chosen):
            rows = slice(a * block, (a + 1) * block)
            tokens[b, a * block] = seq[p]
            positions[b, rows] = torch.arange(p, p + block)
            for k in range(1, block):
                if p + k < len(seq):
                    labels[b, a * block + k] = seq[p + k]
            visible[b, rows, :p] = True                                # target features strictly before p
            visible[b, rows, L + a * block:L + (a + 1) * block] = True  # its own block, both directions
        for a in range(len(chosen), anchors):  # unused anchors: attend to themselves only, no labels
            visible[b, a * block:(a + 1) * block, L + a * block:L + (a + 1) * block] = True
    to = lambda t: t.to(device)  # noqa: E731
    return to(ids), to(tokens), to(labels), to(positions), to(visible)


def slot_weights(block, gamma, device):
    k = torch.arange(block, device=device, dtype=torch.float32)
    w = torch.exp(-(k - 1) / gamma)
    w[0] = 0  # slot 0 is the bonus: no prediction
    return w


def train(args):
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "command.txt"), "w") as f:
        f.write(" ".join(sys.argv) + "\n")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    target = Target(args.target, device, dtype)
    eval_prompts = [] if args.token_prompts else [p for path in args.prompts for p in read_jsonl(path)]

    layers = args.drafter_layers
    ids = args.target_layer_ids or default_target_layer_ids(target.config["num_hidden_layers"], layers)
    tc = target.config
    rope = tc.get("rope_parameters") or {}
    config = drafter_config_for(tc, layers=layers, block_size=args.block_size, mask_token_id=args.mask_token_id,
                                target_layer_ids=ids, intermediate_size=args.intermediate_size)
    config["rope_theta"] = float(rope.get("rope_theta", tc.get("rope_theta", 10000.0)))
    config["dflash_config"]["trained_by"] = "tachyon tools/train_dflash.py"
    drafter = Drafter(config)
    with torch.no_grad():
        for name, p in drafter.state_for_export().items():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02)
    if args.init_from_target:
        init_from_target(drafter, target)
    drafter.to(device).train()
    log(f"drafter: {layers} layers, target layers {drafter.layer_ids}, block {args.block_size}, "
        f"{sum(p.numel() for p in drafter.parameters()) / 1e6:.2f} M parameters")

    data = build_data(args, target, eval_prompts)
    held_out = eval_sequences(args, target, eval_prompts)
    with open(os.path.join(args.out, "held_out.jsonl"), "w") as f:
        for d in held_out:
            f.write(json.dumps(d) + "\n")
    log(f"data: {len(data)} training sequences, {sum(len(d['ids']) for d in data)} tokens; "
        f"{len(held_out)} held-out sequences")

    optimizer = torch.optim.AdamW(drafter.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=args.weight_decay)
    warmup = max(1, int(0.04 * args.steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, args.steps - warmup))))
    gamma = args.gamma or GAMMA.get(args.block_size, args.block_size / 2.3)
    weights = slot_weights(args.block_size, gamma, device)
    rng = random.Random(args.seed)
    log_file = open(os.path.join(args.out, "training_log.jsonl"), "w")
    embed, head = target.embed.detach(), target.lm_head.detach()
    started = time.time()
    for step in range(args.steps):
        batch = rng.sample(data, min(args.batch_size, len(data)))
        ids, tokens, labels, positions, visible = make_batch(batch, args.block_size, args.anchors,
                                                             args.mask_token_id, rng, device)
        features = target.features(ids, drafter.layer_ids)
        L = ids.shape[1]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            hidden = drafter(features, embed[tokens], torch.arange(L, device=device), positions, mask=visible)
            logits = drafter.logits(hidden, head).float()  # [B, N, vocab]
        slot = torch.arange(tokens.shape[1], device=device) % args.block_size
        w = weights[slot].expand_as(labels) * (labels != -100)
        loss_rows = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1).clamp_min(0),
                                    reduction="none").view_as(labels)
        loss = (loss_rows * w).sum() / w.sum().clamp_min(1e-9)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(drafter.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % args.log_every == 0 or step == args.steps - 1:
            with torch.no_grad():
                correct = (logits.argmax(-1) == labels) & (labels != -100)
                per_slot = [float(correct[:, slot == k].sum() / max(1, (labels[:, slot == k] != -100).sum()))
                            for k in range(1, args.block_size)]
            entry = {"step": step, "loss": loss.item(), "lr": schedule.get_last_lr()[0], "grad_norm": float(grad_norm),
                     "slot_accuracy": [round(a, 4) for a in per_slot], "seconds": round(time.time() - started, 1)}
            log(json.dumps(entry))
            log_file.write(json.dumps(entry) + "\n")
        if args.eval_every and step > 0 and step % args.eval_every == 0:
            result = evaluate(drafter, target, held_out, args.block_size, device)
            result["step"] = step
            log(json.dumps({"eval": result}))
            log_file.write(json.dumps({"eval": result}) + "\n")
            drafter.train()
        log_file.flush()
    result = evaluate(drafter, target, held_out, args.block_size, device)
    result["step"] = args.steps
    log(json.dumps({"eval": result}))
    log_file.write(json.dumps({"eval": result}) + "\n")
    log_file.close()
    save_drafter(drafter.float().cpu(), os.path.join(args.out, "drafter"))
    with open(os.path.join(args.out, "eval.json"), "w") as f:
        json.dump(result, f, indent=1)
    log(f"exported {os.path.join(args.out, 'drafter')}")


def init_from_target(drafter, target):
    """Copies the target's last layers into the drafter where the shapes agree (q/k norms stay 1)."""
    layers = target.model.model.layers
    with torch.no_grad():
        for i, layer in enumerate(drafter.layers):
            src = layers[len(layers) - len(drafter.layers) + i]
            pairs = [(layer.q_proj.weight, src.self_attn.q_proj.weight), (layer.k_proj.weight, src.self_attn.k_proj.weight),
                     (layer.v_proj.weight, src.self_attn.v_proj.weight), (layer.o_proj.weight, src.self_attn.o_proj.weight),
                     (layer.gate_proj.weight, src.mlp.gate_proj.weight), (layer.up_proj.weight, src.mlp.up_proj.weight),
                     (layer.down_proj.weight, src.mlp.down_proj.weight),
                     (layer.input_layernorm, src.input_layernorm.weight),
                     (layer.post_attention_layernorm, src.post_attention_layernorm.weight)]
            for dst, s in pairs:
                if dst.shape == s.shape:
                    dst.copy_(s.float())


# ----------------------------------------------------------------------------------------------
# Held-out acceptance


@torch.no_grad()
def evaluate(drafter, target, sequences, block, device):
    """Greedy DFlash rounds replayed on the target's greedy answers; tau per category and overall."""
    drafter.eval()
    embed, head = target.embed.detach().float(), target.lm_head.detach().float()
    per_category, histogram = {}, [0] * (block + 1)
    for s in sequences:
        seq = s["ids"]
        ids = torch.tensor([seq], device=device)
        features = target.features(ids, drafter.layer_ids).float()
        start, rounds = s["prompt_length"], []
        while start < len(seq) - 1:  # seq[start] is committed; rounds as tachyon's driver runs them
            b = min(block, len(seq) - 1 - start)
            accepted = 0
            if b >= 2:
                tokens = torch.tensor([seq[start]] + [drafter.mask_token_id] * (b - 1), device=device)
                hidden = drafter(features[:, :start], embed[tokens][None], torch.arange(start, device=device),
                                 torch.arange(start, start + b, device=device))
                draft = drafter.logits(hidden[0, 1:], head).argmax(-1).tolist()
                while accepted < b - 1 and draft[accepted] == seq[start + 1 + accepted]:
                    accepted += 1
            rounds.append(accepted + 1)
            histogram[accepted + 1] += 1
            start += accepted + 1
        per_category.setdefault(s.get("category", ""), []).extend(rounds)
    result = {"block_size": block, "tau": {}, "rounds": {}}
    everything = []
    for category, rounds in sorted(per_category.items()):
        result["tau"][category] = round(sum(rounds) / max(1, len(rounds)), 3)
        result["rounds"][category] = len(rounds)
        everything += rounds
    result["tau"]["all"] = round(sum(everything) / max(1, len(everything)), 3)
    result["histogram"] = histogram[1:]
    return result


@torch.no_grad()
def selftest(args):
    """The block-sparse training forward equals per-block inference forwards (context rows < anchor only)."""
    target = Target(args.target, torch.device("cpu"), torch.float32)
    tc = target.config
    config = drafter_config_for(tc, layers=2, block_size=6, mask_token_id=0,
                                target_layer_ids=[0, tc["num_hidden_layers"] - 1])
    drafter = Drafter(config).eval()
    for name, p in drafter.state_for_export().items():
        p.copy_(1 + 0.2 * torch.randn(p.shape) if name.endswith("norm.weight") else 0.15 * torch.randn(p.shape))
    rng = random.Random(1)
    vocab = tc["vocab_size"]
    sequences = [{"ids": [rng.randrange(vocab) for _ in range(n)], "prompt_length": 3} for n in (30, 22)]
    ids, tokens, labels, positions, visible = make_batch(sequences, 6, 5, 0, rng, torch.device("cpu"))
    features = target.features(ids, drafter.layer_ids)
    L = ids.shape[1]
    embed = target.embed.detach()
    trained = drafter(features, embed[tokens], torch.arange(L), positions, mask=visible)
    worst = 0.0
    for b, s in enumerate(sequences):
        for a in range(5):
            p = int(positions[b, a * 6])
            rows = slice(a * 6, (a + 1) * 6)
            alone = drafter(features[b:b + 1, :p], embed[tokens[b:b + 1, rows]], torch.arange(p), positions[b, rows])
            worst = max(worst, float((alone[0] - trained[b, rows]).abs().max()))
    log(f"selftest: max |training forward - inference forward| = {worst:.2e}")
    if worst > 1e-4:
        raise SystemExit("selftest FAILED: the training mask does not reproduce inference")
    log("selftest passed")


def run_eval(args):
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    target = Target(args.target, device, torch.bfloat16 if device.type == "cuda" else torch.float32)
    drafter = load_drafter(args.drafter).to(device)
    eval_prompts = [] if args.token_prompts else [p for path in args.prompts for p in read_jsonl(path)]
    held_out = eval_sequences(args, target, eval_prompts)
    for block in args.block_sizes or [drafter.block_size]:
        log(json.dumps(evaluate(drafter, target, held_out, block, device)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    code = sub.add_parser("code-prompts", help="write the fixed code-completion prompts")
    code.add_argument("--out", default="prompts/code.jsonl")
    code.add_argument("--count", type=int, default=24)
    code.add_argument("--seed", type=int, default=0)

    def common(p):
        p.add_argument("--target", required=True, help="HF directory or .gguf file of the target")
        p.add_argument("--prompts", nargs="+", default=PROMPT_FILES, help="held-out prompt files")
        p.add_argument("--eval-prompts", type=int, default=0, help="use only the first N held-out prompts")
        p.add_argument("--eval-tokens", type=int, default=128, help="greedy answer length of held-out prompts")
        p.add_argument("--token-prompts", type=int, default=0, help="random token prompts (targets without a tokenizer)")
        p.add_argument("--generate-batch", type=int, default=64)
        p.add_argument("--device", default=None)
        p.add_argument("--seed", type=int, default=0)

    t = sub.add_parser("train", help="regenerate data, train, evaluate, export")
    common(t)
    t.add_argument("--out", required=True)
    t.add_argument("--data", default=None, help="pre-made data.jsonl ({ids, prompt_length} per line)")
    t.add_argument("--train-prompts", type=int, default=6000)
    t.add_argument("--max-new-tokens", type=int, default=256)
    t.add_argument("--data-temperature", type=float, default=0.0)
    t.add_argument("--mask-token-id", type=int, required=True)
    t.add_argument("--drafter-layers", type=int, default=5)
    t.add_argument("--target-layer-ids", type=int, nargs="+", default=None)
    t.add_argument("--intermediate-size", type=int, default=None)
    t.add_argument("--init-from-target", action="store_true")
    t.add_argument("--block-size", type=int, default=16)
    t.add_argument("--gamma", type=float, default=None, help="loss decay; default 7/5/4 for b = 16/10/8")
    t.add_argument("--anchors", type=int, default=512)
    t.add_argument("--steps", type=int, default=4000)
    t.add_argument("--batch-size", type=int, default=4)
    t.add_argument("--lr", type=float, default=6e-4)
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--log-every", type=int, default=20)
    t.add_argument("--eval-every", type=int, default=1000)

    e = sub.add_parser("eval", help="held-out acceptance of an exported drafter")
    common(e)
    e.add_argument("--drafter", required=True)
    e.add_argument("--block-sizes", type=int, nargs="+", default=None)

    st = sub.add_parser("selftest", help="check the block-sparse training forward against inference (CPU)")
    st.add_argument("--target", default="tests/fixtures/tiny/qwen3")

    args = parser.parse_args()
    if args.command == "code-prompts":
        prompts = code_prompts(args.count, args.seed)
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            for i, p in enumerate(prompts):
                f.write(json.dumps({"id": f"code-{i:02d}", **p}) + "\n")
        log(f"wrote {len(prompts)} prompts to {args.out}")
    elif args.command == "train":
        train(args)
    elif args.command == "selftest":
        selftest(args)
    else:
        run_eval(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
