#!/usr/bin/env python3
"""Trains a DFlash drafter for a target model and exports it in z-lab's layout (tachyon generate --draft DIR).

Recipe (shared/docs/dflash.md, the DFlash paper; tachyon's notes: docs/dflash.md):
  data      prompts answered by the TARGET itself (greedy by default, batched HF generate, batches sorted by
            prompt length), through the same chat template that `tachyon generate --chat` uses (code prompts are
            raw completions); the prompts mix (--mix) requests the target writes itself (Magpie: the template
            rendered up to the user's message, sampled at T 1, top-p 0.95, optionally after a steering seed),
            function prefixes cut at several lines (standard library and the installed torch / transformers /
            numpy), synthetic math and template chat requests; never a held-out prompt, file or function;
            stored as token ids in <out>/data.jsonl (the prompts in <out>/train_prompts.jsonl), or given with
            --data (any file of {"ids": [...], "prompt_length": P} lines, e.g. made with `tachyon generate
            --print-ids`); --data-seconds bounds it;
  features  target hidden states hidden_states[l + 1] (the output of decoder layer l) of the drafter's
            target_layer_ids (frozen target), computed once for all data (FeatureStore);
  anchors   per sequence up to --anchors positions p in the response; each starts a block [token p, MASK...] at
            positions p..p+b-1 whose slot k is trained to predict token p + k;
  mask      block-sparse: a block sees the target features of rows < p and its own block (bidirectionally),
            never another block (make_batch builds it on the device);
  loss      cross-entropy on slots 1..b-1 weighted exp(-(k - 1) / gamma), gamma 7 / 5 / 4 for b = 16 / 10 / 8;
  optimizer AdamW lr 6e-4, warm-up 4% then cosine, gradient clip 1.0 (bf16 autocast on CUDA); with --deadline the
            schedule follows elapsed time and training ends --reserve seconds before it;
  held-out  greedy acceptance on the fixed prompt set (prompts/*.jsonl, never trained on): for each prompt the
            target's greedy answer S, then DFlash rounds are replayed exactly: a block drafted at position s is
            accepted for its longest prefix equal to S, so tau (tokens per target pass, bonus included) is what
            greedy speculative decoding would get; per category, with the histogram;
  export    --export DIR (default <out>/drafter): config.json + bf16 safetensors, no "model." prefix, sharded
            (model.safetensors.index.json) above --max-shard-mb; <out>/training_log.jsonl, <out>/eval.json,
            <out>/command.txt.

The drafter module is tools/dflash_reference.py's Drafter, the implementation tachyon's C++ drafter is tested
against, so what is trained here is what tachyon runs. The training prompt sources (--mix: Magpie, code prefixes,
synthetic math, template chat) are in tools/dflash_data.py.

Subcommands:
  code-prompts  write the fixed code-completion prompts (function prefixes from this Python's standard library)
  train         regenerate data (or load --data), train, export, evaluate
  eval          held-out acceptance of an exported drafter
  selftest      make_batch's block-sparse training forward equals per-block inference forwards (CPU, tiny target)

Examples:
  # CPU smoke test on a tiny target without a tokenizer (random token prompts):
  train_dflash.py train --target tests/fixtures/tiny/qwen3 --out /tmp/dflash-tiny --token-prompts 64 \\
      --mask-token-id 383 --drafter-layers 2 --target-layer-ids 0 --block-size 8 --steps 20 --anchors 16
  # SmolLM2-135M-Instruct on a GPU host in a fixed time: scripts/gpu/train_dflash.sh (see its header)
"""

import argparse
import json
import math
import os
import random
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dflash_reference import Drafter, default_target_layer_ids, drafter_config_for, load_drafter, save_drafter  # noqa: E402
from dflash_data import PromptMix, code_prompts, log, training_prompts  # noqa: E402  (the training prompt sources)

GAMMA = {16: 7.0, 10: 5.0, 8: 4.0}
PROMPT_FILES = ["prompts/chat.jsonl", "prompts/code.jsonl", "prompts/math.jsonl"]


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
    def generate(self, prompts, max_new_tokens, temperature, batch_size, seed, top_p=None, stop=None, deadline=None,
                 sort=False, quiet=False):
        """Target-regenerated responses: [(prompt_ids, response_ids)], stopping at (and keeping) EOS (or a `stop`
        id). sort: batches of similar prompt lengths (less left padding), run in a seeded random order, so that a
        deadline (no batch is started after it, except the first) does not favour short prompts; the rows of
        batches not run are None. Results are in the order of `prompts` either way."""
        torch.manual_seed(seed)
        stop = list(stop or self.eos)
        out = [None] * len(prompts)
        pad = self.eos[0] if self.eos else 0
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i])) if sort else list(range(len(prompts)))
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        if sort:
            random.Random(seed).shuffle(batches)
        for n, rows in enumerate(batches):
            if deadline is not None and n > 0 and time.time() >= deadline:
                log(f"  data deadline reached: {n} of {len(batches)} batches of this chunk run")
                break
            started = time.time()
            batch = [prompts[i] for i in rows]
            width = max(len(p) for p in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, p in enumerate(batch):  # left padding
                ids[r, width - len(p):] = torch.tensor(p)
                mask[r, width - len(p):] = 1
            generated = self._generate_rows(ids, mask, max_new_tokens, temperature, pad, top_p, stop)
            tokens = 0
            for r, p in enumerate(batch):
                response = generated[r, width:].tolist()
                for j, t in enumerate(response):
                    if t in stop:
                        response = response[:j + 1]
                        break
                out[rows[r]] = (p, response)
                tokens += len(response)
            if not quiet:
                log(f"  generated {len(batch)} answers, {tokens} new tokens, prompts {min(map(len, batch))}.."
                    f"{width} tokens, in {time.time() - started:.1f} s")
        return out

    def _generate_rows(self, ids, mask, max_new_tokens, temperature, pad, top_p=None, stop=None):
        """HF generate of one left-padded batch; halves it on running out of GPU memory."""
        try:
            return self.model.generate(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device), max_new_tokens=max_new_tokens,
                do_sample=temperature > 0, temperature=temperature if temperature > 0 else None,
                top_p=top_p if temperature > 0 else None, top_k=None, pad_token_id=pad,
                eos_token_id=stop or self.eos or None).cpu()
        except torch.cuda.OutOfMemoryError:
            if len(ids) == 1:
                raise
            torch.cuda.empty_cache()
            log(f"  out of GPU memory generating {len(ids)} rows: halving")
        half = len(ids) // 2
        parts = [self._generate_rows(ids[:half], mask[:half], max_new_tokens, temperature, pad, top_p, stop),
                 self._generate_rows(ids[half:], mask[half:], max_new_tokens, temperature, pad, top_p, stop)]
        width = max(p.shape[1] for p in parts)
        return torch.cat([F.pad(p, (0, width - p.shape[1]), value=pad) for p in parts])

    @torch.no_grad()
    def features(self, ids, layer_ids):
        """[B, L, K * D]: HF hidden_states[l + 1] = the output of 0-based decoder layer l. Only the LAST entry of
        hidden_states is taken after the final norm, and the drafter's layers are never the last one."""
        if max(layer_ids) >= self.config["num_hidden_layers"] - 1:
            raise ValueError(f"target layer ids {layer_ids}: the last layer's hidden state is post-norm in HF")
        decoder = getattr(self.model, "model", None) or self.model.get_decoder()  # no lm_head: [B, L, vocab] is large
        out = decoder(input_ids=ids, output_hidden_states=True, use_cache=False)
        return torch.cat([out.hidden_states[l + 1] for l in layer_ids], -1)


# ----------------------------------------------------------------------------------------------
# Data


def read_jsonl(path):
    import gzip

    with (gzip.open(path, "rt") if path.endswith(".gz") else open(path)) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_data(path, data, max_bytes=None):
    """data.jsonl(.gz); with max_bytes, the sequences that fit (gzip: the device tool returns files < 16 MiB)."""
    import gzip

    with (gzip.open(path, "wt", compresslevel=6) if path.endswith(".gz") else open(path, "w")) as f:
        for i, d in enumerate(data):
            f.write(json.dumps(d, separators=(",", ":")) + "\n")
            if max_bytes and i % 256 == 255 and os.path.getsize(path) > max_bytes:
                log(f"{path}: stopped after {i + 1} of {len(data)} sequences (size limit)")
                break


def build_data(args, target, eval_prompts):
    """--data files, plus target-regenerated sequences unless --data is given without --generate-more."""
    loaded = []
    for path in args.data or []:
        loaded += read_jsonl(path)
        log(f"data: {len(loaded)} sequences after {path}")
    data = loaded if args.data and not args.generate_more else loaded + regenerate_data(args, target, eval_prompts)
    write_data(os.path.join(args.out, "data.jsonl"), data)  # everything trained on: --data of a later run
    if args.save_data:
        write_data(args.save_data, data, max_bytes=args.save_data_mb * 2**20)
    return data


def regenerate_data(args, target, eval_prompts):
    """Prompts from --mix (or random token prompts), answered by the target in chunks of --sort-chunk generation
    batches (sorted by prompt length within a chunk) until --train-prompts or --data-seconds."""
    rng = random.Random(args.seed)
    deadline = time.time() + args.data_seconds if args.data_seconds else None
    if args.token_prompts:
        vocab = target.config["vocab_size"]
        source = [{"category": "tokens", "ids": [rng.randrange(vocab) for _ in range(rng.randint(4, 24))]}
                  for _ in range(args.token_prompts)]
        take = lambda n: [source.pop(0) for _ in range(min(n, len(source)))]  # noqa: E731
    elif args.mix == "legacy":
        source = training_prompts(args.train_prompts, args.seed, eval_prompts)
        take = lambda n: [source.pop(0) for _ in range(min(n, len(source)))]  # noqa: E731
    else:
        take = PromptMix(args, target, eval_prompts).take
    count = args.token_prompts or args.train_prompts
    chunk = args.generate_batch * max(1, args.sort_chunk)
    log(f"data: regenerating up to {count} responses with the target (T={args.data_temperature}, "
        f"{args.max_new_tokens} new tokens, batches of {args.generate_batch}, sorted by length in chunks of {chunk}"
        + (f", {args.data_seconds:.0f} s at most)" if args.data_seconds else ")"))
    data, used, started = [], [], time.time()
    while len(used) < count:
        if deadline is not None and used and time.time() >= deadline:
            log(f"  data deadline reached after {len(used)} of {count} prompts")
            break
        records = take(min(chunk, count - len(used)))
        if not records:
            log(f"  prompt sources exhausted after {len(used)} prompts")
            break
        encoded = [target.encode_prompt(r) for r in records]
        pairs = target.generate(encoded, args.max_new_tokens, args.data_temperature, args.generate_batch,
                                args.seed + len(used), deadline=deadline, sort=args.sort_chunk > 1)
        for record, pair in zip(records, pairs):
            if pair is None:
                continue
            used.append(record)
            prompt, response = pair
            if len(response) >= 2:
                data.append({"category": record.get("category", ""), "ids": prompt + response,
                             "prompt_length": len(prompt)})
    new_tokens = sum(len(d["ids"]) - d["prompt_length"] for d in data)
    log(f"data: {len(data)} sequences, {new_tokens} new tokens in {time.time() - started:.1f} s "
        f"({new_tokens / max(1e-9, time.time() - started):.0f} tokens/s, prompt making included)")
    with open(os.path.join(args.out, "train_prompts.jsonl"), "w") as f:  # what was asked (the data has only ids)
        for record in used:
            f.write(json.dumps({k: v for k, v in record.items() if k != "ids"}) + "\n")
    return data


def eval_sequences(args, target, eval_prompts):
    """Held-out prompts with the target's GREEDY answers (what greedy speculative decoding must reproduce)."""
    if args.token_prompts:
        rng = random.Random(args.seed + 999)
        vocab = target.config["vocab_size"]
        eval_prompts = [{"category": "tokens", "ids": [rng.randrange(vocab) for _ in range(rng.randint(4, 24))]}
                        for _ in range(args.eval_prompts or 8)]
    elif args.eval_prompts:
        # The first N of each category (the files are ordered within a category).
        counts, chosen = {}, []
        for p in eval_prompts:
            category = p.get("category", "")
            if counts.get(category, 0) < args.eval_prompts:
                counts[category] = counts.get(category, 0) + 1
                chosen.append(p)
        eval_prompts = chosen
    encoded = [target.encode_prompt(p) for p in eval_prompts]
    pairs = target.generate(encoded, args.eval_tokens, 0.0, args.generate_batch, args.seed)
    return [{"category": p.get("category", ""), "ids": prompt + response, "prompt_length": len(prompt)}
            for p, (prompt, response) in zip(eval_prompts, pairs) if len(response) >= 2]


class FeatureStore:
    """Every training sequence's token ids and target features, computed once (the target is frozen):
    flat [tokens] and [tokens, K * D] tensors with per-sequence offsets, on the training device when they fit."""

    def __init__(self, target, data, layer_ids, device, dtype, tokens_per_pass=65536):
        lengths = [len(d["ids"]) for d in data]
        offsets = [0]
        for n in lengths[:-1]:
            offsets.append(offsets[-1] + n)
        total = sum(lengths)
        width = len(layer_ids) * target.config["hidden_size"]
        nbytes = total * width * torch.tensor([], dtype=dtype).element_size()
        store_device = device
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if nbytes > 0.45 * free:
                store_device = torch.device("cpu")
        log(f"features: {total} tokens x {width} ({nbytes / 2**30:.2f} GiB {dtype}) on {store_device}")
        self.device = device
        self.ids = torch.tensor([t for d in data for t in d["ids"]], dtype=torch.long, device=device)
        self.lengths = torch.tensor(lengths, dtype=torch.long, device=device)
        self.prompt_lengths = torch.tensor([d["prompt_length"] for d in data], dtype=torch.long, device=device)
        self.offsets = torch.tensor(offsets, dtype=torch.long, device=device)
        self.features = torch.empty((total, width), dtype=dtype, device=store_device)
        order = sorted(range(len(data)), key=lambda i: lengths[i])
        started, i = time.time(), 0
        while i < len(order):  # right-padded batches of similar length: padding never reaches earlier rows
            j = i + 1
            while j < len(order) and (j - i + 1) * lengths[order[j]] <= tokens_per_pass:
                j += 1
            chunk = order[i:j]
            L = max(lengths[k] for k in chunk)
            ids = torch.zeros((len(chunk), L), dtype=torch.long)
            for r, k in enumerate(chunk):
                ids[r, :lengths[k]] = torch.tensor(data[k]["ids"])
            try:
                f = target.features(ids.to(target.device), layer_ids).to(dtype)
            except torch.cuda.OutOfMemoryError:
                if len(chunk) == 1:
                    raise
                torch.cuda.empty_cache()
                tokens_per_pass //= 2
                log(f"features: out of GPU memory, {tokens_per_pass} tokens per pass")
                continue
            for r, k in enumerate(chunk):
                self.features[offsets[k]:offsets[k] + lengths[k]] = f[r, :lengths[k]].to(store_device)
            i = j
        log(f"features: computed in {time.time() - started:.1f} s")

    def __len__(self):
        return len(self.lengths)


def make_batch(store, rows, block, anchors, mask_token_id, generator):
    """The training batch of sequences `rows` (a long tensor of indices into the store), built on the device:
      features [B, L, K*D]   target features of each sequence (rows past its end: whatever, never visible)
      tokens   [B, N]        N = A * block: anchor block a is [token at p_a, MASK * (block - 1)]
      labels   [B, N]        slot k of block a: the token at p_a + k; -100 for slot 0, past the end, unused blocks
      positions[B, N]        p_a + k
      visible  [B, N, L + N] True = may attend: features of rows < p_a, and its own block in both directions.
    Up to A = `anchors` distinct anchors per sequence, drawn uniformly from the response rows p that have a label
    (prompt_length <= p < length - 1), sorted; unused blocks see only themselves and carry no labels."""
    device = store.device
    lengths, prompts, offsets = store.lengths[rows], store.prompt_lengths[rows], store.offsets[rows]
    B, L = len(rows), int(lengths.max())
    A = max(1, min(anchors, L))
    N = A * block
    pos = torch.arange(L, device=device)
    flat = (offsets[:, None] + pos[None]).clamp(max=len(store.ids) - 1)
    inside = pos[None] < lengths[:, None]
    ids = torch.where(inside, store.ids[flat], 0)
    features = store.features[flat.to(store.features.device)].to(device, non_blocking=True)
    candidate = (pos[None] >= prompts[:, None]) & (pos[None] < (lengths - 1)[:, None])
    scores = torch.rand((B, L), generator=generator, device=device).masked_fill(~candidate, -1.0)
    top = scores.topk(A, dim=1)
    used = top.values >= 0
    anchor = torch.where(used, top.indices, L + top.indices).sort(dim=1).values  # used anchors first, ascending
    used = anchor < L
    anchor = torch.where(used, anchor, 0)                                       # [B, A]
    k = torch.arange(block, device=device)
    target_pos = anchor[:, :, None] + k                                          # [B, A, block]
    labels = ids.gather(1, target_pos.clamp(max=L - 1).view(B, -1)).view(B, A, block)
    has_label = (k >= 1) & (target_pos < lengths[:, None, None]) & used[:, :, None]
    labels = torch.where(has_label, labels, -100)
    tokens = torch.full((B, A, block), mask_token_id, dtype=torch.long, device=device)
    tokens[:, :, 0] = ids.gather(1, anchor)
    ctx_visible = (pos[None, None, :] < anchor[:, :, None])[:, :, None, :].expand(B, A, block, L)  # [B, A, b, L]
    blocks = torch.arange(N, device=device) // block
    own_block = (blocks[:, None] == blocks[None, :]).expand(B, N, N)
    visible = torch.cat([ctx_visible.reshape(B, N, L), own_block], -1)
    return features, tokens.view(B, N), labels.view(B, N), target_pos.view(B, N), visible


# ----------------------------------------------------------------------------------------------
# Training


def slot_weights(block, gamma, device):
    k = torch.arange(block, device=device, dtype=torch.float32)
    w = torch.exp(-(k - 1) / gamma)
    w[0] = 0  # slot 0 is the bonus: no prediction
    return w


def versions():
    import transformers

    out = {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__}
    try:
        from importlib.metadata import version

        out["gguf"] = version("gguf")
    except Exception:
        out["gguf"] = None
    if torch.cuda.is_available():
        out["cuda"] = torch.version.cuda
        out["device"] = torch.cuda.get_device_name(0)
    return out


def learning_rate_factor(progress, warmup=0.04):
    """Linear warm-up over the first 4% of training, then cosine to zero; progress in [0, 1]."""
    if progress < warmup:
        return (progress + 1e-3) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - warmup) / (1 - warmup))))


def train_step(drafter, optimizer, store, rows, args, weights, embed, head, generator, want_stats):
    """One optimizer step on the sequences `rows`; loss, gradient norm and per-slot accuracy when want_stats."""
    device = store.device
    features, tokens, labels, positions, visible = make_batch(store, rows, args.block_size, args.anchors,
                                                              args.mask_token_id, generator)
    L = features.shape[1]
    labelled = labels != -100
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        hidden = drafter(features, embed[tokens], torch.arange(L, device=device), positions, mask=visible)
        logits = drafter.logits(hidden[labelled], head).float()  # [labelled rows, vocab]
    slot = (torch.arange(tokens.shape[1], device=device) % args.block_size).expand_as(labels)[labelled]
    w = weights[slot]
    loss_rows = F.cross_entropy(logits, labels[labelled], reduction="none")
    loss = (loss_rows * w).sum() / w.sum().clamp_min(1e-9)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(drafter.parameters(), 1.0)
    optimizer.step()
    if not want_stats:
        return None
    with torch.no_grad():
        correct = (logits.argmax(-1) == labels[labelled]).float()
        hits = torch.zeros(args.block_size, device=device).index_add_(0, slot, correct)
        counts = torch.zeros(args.block_size, device=device).index_add_(0, slot, torch.ones_like(correct))
        per_slot = (hits / counts.clamp_min(1))[1:].tolist()
    return {"loss": round(loss.item(), 4), "grad_norm": round(float(grad_norm), 3),
            "slot_accuracy": [round(x, 3) for x in per_slot], "labelled_rows": int(labelled.sum()),
            "anchors": args.anchors}


def train(args):
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    export_dir = args.export or os.path.join(args.out, "drafter")
    command = " ".join(sys.argv)
    with open(os.path.join(args.out, "command.txt"), "w") as f:
        f.write(command + "\n")
    log(json.dumps({"versions": versions()}))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # stored features; the drafter's autocast
    t0 = time.time()
    target = Target(args.target, device, getattr(torch, args.target_dtype))
    log(f"target: {args.target} loaded in {time.time() - t0:.1f} s ({target.config['num_hidden_layers']} layers, "
        f"hidden {target.config['hidden_size']}, vocab {target.config['vocab_size']}, EOS {target.eos})")
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
    if args.init_drafter:  # continued training (e.g. a second GPU call); the config must describe the same model
        previous = load_drafter(args.init_drafter)
        if (previous.layer_ids, previous.block_size, previous.mask_token_id) != \
                (drafter.layer_ids, drafter.block_size, drafter.mask_token_id):
            raise SystemExit(f"--init-drafter {args.init_drafter}: target layers {previous.layer_ids}, block "
                             f"{previous.block_size}, mask {previous.mask_token_id}; expected {drafter.layer_ids}, "
                             f"{drafter.block_size}, {drafter.mask_token_id}")
        drafter.load_export_state(previous.state_for_export())
        log(f"drafter: initialized from {args.init_drafter}")
    drafter.to(device).train()
    log(f"drafter: {layers} layers, target layers {drafter.layer_ids}, block {args.block_size}, mask token "
        f"{args.mask_token_id}, {sum(p.numel() for p in drafter.parameters()) / 1e6:.2f} M parameters")

    data = build_data(args, target, eval_prompts)
    held_out = eval_sequences(args, target, eval_prompts)
    with open(os.path.join(args.out, "held_out.jsonl"), "w") as f:
        for d in held_out:
            f.write(json.dumps(d) + "\n")
    categories = {}
    for d in data:
        categories[d["category"]] = categories.get(d["category"], 0) + 1
    data_summary = {"sequences": len(data), "tokens": sum(len(d["ids"]) for d in data),
                    "response_tokens": sum(len(d["ids"]) - d["prompt_length"] for d in data),
                    "per_category": categories, "held_out_sequences": len(held_out)}
    log(json.dumps({"data": data_summary}))
    store = FeatureStore(target, data, drafter.layer_ids, device, dtype)

    optimizer = torch.optim.AdamW(drafter.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=args.weight_decay)
    gamma = args.gamma or GAMMA.get(args.block_size, args.block_size / 2.3)
    weights = slot_weights(args.block_size, gamma, device)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    log_file = open(os.path.join(args.out, "training_log.jsonl"), "w")
    embed, head = target.embed.detach(), target.lm_head.detach()
    started = time.time()
    # Training ends after --steps or when only --reserve seconds are left before --deadline (export + final eval).
    stop_at = args.deadline - args.reserve if args.deadline else None
    if stop_at is not None:
        log(f"training for up to {args.steps} steps or {max(0.0, stop_at - started):.0f} s")
    next_eval = started + args.eval_every_seconds if args.eval_every_seconds else None
    step = 0
    while step < args.steps:
        now = time.time()
        if stop_at is not None and now >= stop_at and step > 0:
            break
        progress = step / args.steps
        if stop_at is not None:
            progress = max(progress, (now - started) / max(1e-9, stop_at - started))
        lr = args.lr * learning_rate_factor(progress)
        for group in optimizer.param_groups:
            group["lr"] = lr
        rows = torch.randperm(len(store), generator=generator, device=device)[:args.batch_size]
        try:
            stats = train_step(drafter, optimizer, store, rows, args, weights, embed, head, generator,
                               want_stats=step % args.log_every == 0)
        except torch.cuda.OutOfMemoryError:  # fewer anchors per sequence, same sequences per step
            optimizer.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            if args.anchors <= 8:
                raise
            args.anchors //= 2
            log(f"out of GPU memory: --anchors now {args.anchors}")
            continue
        if stats is not None:
            elapsed = time.time() - started
            entry = {"step": step, **stats, "lr": round(lr, 7), "seconds": round(elapsed, 1),
                     "steps_per_second": round(step / max(elapsed, 1e-9), 2)}
            log(json.dumps(entry))
            log_file.write(json.dumps(entry) + "\n")
            log_file.flush()
        step += 1
        if next_eval is not None and time.time() >= next_eval and (stop_at is None or time.time() < stop_at - 30):
            subset = held_out[::3]
            result = evaluate(drafter, target, subset, args.block_size, device)
            result.update(step=step, subset=f"every third held-out prompt ({len(subset)})",
                          seconds=round(time.time() - started, 1))
            log(json.dumps({"eval": result}))
            log_file.write(json.dumps({"eval": result}) + "\n")
            drafter.train()
            next_eval = time.time() + args.eval_every_seconds
    train_seconds = time.time() - started
    log(f"trained {step} steps in {train_seconds:.0f} s")
    # Export before the final evaluation, so that a run cut short still leaves the weights.
    drafter.eval()
    save_drafter(drafter.float().cpu(), export_dir, max_shard_bytes=args.max_shard_mb * 2**20)
    if os.path.abspath(export_dir) != os.path.abspath(os.path.join(args.out, "drafter")):
        save_drafter(drafter, os.path.join(args.out, "drafter"))  # <out> keeps a copy: --init-drafter of a later run
    drafter.to(device)
    log(f"exported {export_dir}: {sorted(os.listdir(export_dir))}")
    result = evaluate(drafter, target, held_out, args.block_size, device,
                      deadline=args.deadline - 3 if args.deadline else None)
    result["step"] = step
    log(json.dumps({"eval": result}))
    log_file.write(json.dumps({"eval": result}) + "\n")
    log_file.close()
    summary = {"eval": result, "steps": step, "train_seconds": round(train_seconds, 1), "data": data_summary,
               "drafter": {"layers": layers, "target_layer_ids": drafter.layer_ids, "block_size": args.block_size,
                           "mask_token_id": args.mask_token_id, "parameters": sum(p.numel() for p in drafter.parameters())},
               "versions": versions(), "command": command, "seconds_total": round(time.time() - t0, 1)}
    with open(os.path.join(args.out, "eval.json"), "w") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")
    log(f"held-out tau at b={args.block_size}: " + ", ".join(f"{k} {v}" for k, v in result["tau"].items()))


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
def evaluate(drafter, target, sequences, block, device, deadline=None):
    """Greedy DFlash rounds replayed on the target's greedy answers; tau per category and overall. With a
    deadline (time.time() value), sequences are taken round-robin over categories and the rest skipped once it
    passes (the result then says how many were evaluated)."""
    drafter.eval()
    embed, head = target.embed.detach().float(), target.lm_head.detach().float()
    per_category, histogram = {}, [0] * (block + 1)
    if deadline is not None:
        by_category = {}
        for s in sequences:
            by_category.setdefault(s.get("category", ""), []).append(s)
        queues = list(by_category.values())
        sequences = [q[i] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)]
    evaluated = 0
    for s in sequences:
        if deadline is not None and time.time() >= deadline:
            break
        evaluated += 1
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
    result["histogram"] = histogram[1:]  # [k - 1] = rounds that committed k tokens
    result["sequences"] = evaluated
    if evaluated < len(sequences):
        result["partial"] = f"deadline: {evaluated} of {len(sequences)} sequences"
    return result


@torch.no_grad()
def selftest(args):
    """The block-sparse training forward over make_batch's batch equals per-block inference forwards (context rows
    < anchor only, no mask), for every anchor block of every sequence."""
    target = Target(args.target, torch.device("cpu"), torch.float32)
    tc = target.config
    config = drafter_config_for(tc, layers=2, block_size=6, mask_token_id=0,
                                target_layer_ids=[0, tc["num_hidden_layers"] - 2])
    drafter = Drafter(config).eval()
    for name, p in drafter.state_for_export().items():
        p.copy_(1 + 0.2 * torch.randn(p.shape) if name.endswith("norm.weight") else 0.15 * torch.randn(p.shape))
    rng = random.Random(1)
    vocab = tc["vocab_size"]
    sequences = [{"ids": [rng.randrange(vocab) for _ in range(n)], "prompt_length": pl}
                 for n, pl in ((30, 3), (22, 5), (9, 6))]  # the last has fewer candidates than anchors
    store = FeatureStore(target, sequences, drafter.layer_ids, torch.device("cpu"), torch.float32, tokens_per_pass=40)
    generator = torch.Generator().manual_seed(3)
    features, tokens, labels, positions, visible = make_batch(store, torch.tensor([0, 1, 2]), 6, 5, 0, generator)
    L = features.shape[1]
    embed = target.embed.detach()
    trained = drafter(features, embed[tokens], torch.arange(L), positions, mask=visible)
    worst, blocks = 0.0, 0
    for b, s in enumerate(sequences):
        direct = target.features(torch.tensor([s["ids"]]), drafter.layer_ids)[0]
        if float((direct - features[b, :len(s["ids"])]).abs().max()) > 1e-5:
            raise SystemExit("selftest FAILED: stored features differ from a direct target pass")
        for a in range(5):
            rows = slice(a * 6, (a + 1) * 6)
            if not bool((labels[b, rows] != -100).any()):
                continue
            p = int(positions[b, a * 6])
            if not (s["prompt_length"] <= p < len(s["ids"]) - 1) or tokens[b, a * 6] != s["ids"][p]:
                raise SystemExit(f"selftest FAILED: anchor {p} of sequence {b}")
            for k in range(1, 6):
                expected = s["ids"][p + k] if p + k < len(s["ids"]) else -100
                if int(labels[b, a * 6 + k]) != expected:
                    raise SystemExit(f"selftest FAILED: label of slot {k} at anchor {p}")
            alone = drafter(features[b:b + 1, :p], embed[tokens[b:b + 1, rows]], torch.arange(p), positions[b, rows])
            worst = max(worst, float((alone[0] - trained[b, rows]).abs().max()))
            blocks += 1
    log(f"selftest: {blocks} blocks, max |training forward - inference forward| = {worst:.2e}")
    if worst > 1e-4 or blocks < 10:
        raise SystemExit("selftest FAILED: the training mask does not reproduce inference")
    log("selftest passed")


def run_eval(args):
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    target = Target(args.target, device, getattr(torch, args.target_dtype))
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
        p.add_argument("--eval-prompts", type=int, default=0, help="use only the first N held-out prompts per category")
        p.add_argument("--eval-tokens", type=int, default=128, help="greedy answer length of held-out prompts")
        p.add_argument("--token-prompts", type=int, default=0, help="random token prompts (targets without a tokenizer)")
        p.add_argument("--generate-batch", type=int, default=64)
        p.add_argument("--device", default=None)
        p.add_argument("--target-dtype", default="float32", choices=["float32", "bfloat16"],
                       help="the target's weights (float32: greedy answers and features as tachyon's CPU path "
                            "computes them; features are stored in bf16 on CUDA either way)")
        p.add_argument("--seed", type=int, default=0)

    t = sub.add_parser("train", help="regenerate data, train, evaluate, export")
    common(t)
    t.add_argument("--out", required=True)
    t.add_argument("--data", nargs="+", default=None,
                   help="pre-made data.jsonl(.gz) files ({ids, prompt_length} per line); no generation unless "
                        "--generate-more")
    t.add_argument("--generate-more", action="store_true", help="with --data: also regenerate new data")
    t.add_argument("--save-data", default=None, help="also write the regenerated data here (.gz: gzip)")
    t.add_argument("--save-data-mb", type=float, default=15, help="size cap of --save-data")
    t.add_argument("--init-drafter", default=None,
                   help="start from this exported drafter (its shapes must match the requested drafter)")
    t.add_argument("--train-prompts", type=int, default=6000)
    t.add_argument("--data-seconds", type=float, default=0, help="stop starting generation batches after this")
    t.add_argument("--max-new-tokens", type=int, default=256)
    t.add_argument("--data-temperature", type=float, default=0.0)
    t.add_argument("--mix", default="magpie=0.5,code=0.3,math=0.15,chat=0.05",
                   help="shares of the training prompt sources: magpie (requests the target writes itself), code "
                        "(function prefixes, raw completion), math (synthetic word problems), chat (template "
                        "requests, 100 topics x 24 forms); 'legacy': the old thirds of chat / math / code")
    t.add_argument("--sort-chunk", type=int, default=4,
                   help="generation batches per chunk sorted by prompt length (less padding); 1: no sorting")
    t.add_argument("--magpie-temperature", type=float, default=1.0)
    t.add_argument("--magpie-top-p", type=float, default=0.95)
    t.add_argument("--magpie-max-tokens", type=int, default=64, help="longer samples are dropped (incomplete)")
    t.add_argument("--magpie-batch", type=int, default=0, help="prompts sampled per batch (default 2 x --generate-batch)")
    t.add_argument("--magpie-seeded", type=float, default=0.5,
                   help="share of magpie prompts whose user turn starts with a steering seed (code / math / chat)")
    t.add_argument("--code-cuts", type=int, default=3, help="prefixes per function (cut at different lines)")
    t.add_argument("--code-per-file", type=int, default=4, help="functions per file")
    t.add_argument("--code-packages", nargs="*", default=["torch", "transformers", "numpy"],
                   help="installed packages whose files also give code prompts (besides the standard library)")
    t.add_argument("--code-site-share", type=float, default=0.3, help="share of code prompts from --code-packages")
    t.add_argument("--mask-token-id", type=int, required=True)
    t.add_argument("--drafter-layers", type=int, default=5)
    t.add_argument("--target-layer-ids", type=int, nargs="+", default=None)
    t.add_argument("--intermediate-size", type=int, default=None)
    t.add_argument("--init-from-target", action="store_true")
    t.add_argument("--block-size", type=int, default=16)
    t.add_argument("--gamma", type=float, default=None, help="loss decay; default 7/5/4 for b = 16/10/8")
    t.add_argument("--anchors", type=int, default=512, help="anchor blocks per sequence (at most)")
    t.add_argument("--steps", type=int, default=4000, help="at most; --deadline may end training earlier")
    t.add_argument("--batch-size", type=int, default=4, help="sequences per step")
    t.add_argument("--lr", type=float, default=6e-4)
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--log-every", type=int, default=20)
    t.add_argument("--eval-every-seconds", type=float, default=0, help="evaluate a third of the held-out set")
    t.add_argument("--deadline", type=float, default=0, help="time.time() by which everything must be done")
    t.add_argument("--reserve", type=float, default=60, help="seconds kept before --deadline for export + eval")
    t.add_argument("--export", default=None, help="drafter directory (default OUT/drafter)")
    t.add_argument("--max-shard-mb", type=float, default=12, help="split model.safetensors above this size")

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
