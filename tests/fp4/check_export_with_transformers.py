#!/usr/bin/env python3
"""Cross-check of a Hugging Face directory written by `tachyon quantize` (unquantized or split into experts,
float32/bf16 tensors) against Hugging Face transformers: loads it with AutoModelForCausalLM / AutoTokenizer and
prints the perplexity over the first chunks of `tachyon eval`'s default text, tokenized and chunked the same way
(each file encoded on its own, concatenated, chunks of 512 tokens as independent sequences).
`tachyon eval -m DIR --candidate DIR --positions N` prints the reference perplexity of the same positions.

    /work/venv/py/bin/python tests/fp4/check_export_with_transformers.py DIR [--chunks 2]
"""
import argparse
import math

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

FILES = ["textwrap.py", "heapq.py", "shlex.py", "fractions.py", "queue.py", "csv.py"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--chunks", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=512)
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model.eval()
    ids = []
    for name in FILES:
        with open("/usr/lib/python3.11/" + name, encoding="utf-8") as f:
            ids += tokenizer(f.read(), add_special_tokens=False).input_ids
        if len(ids) >= args.chunks * args.chunk:
            break
    nll, count = 0.0, 0
    with torch.no_grad():
        for c in range(args.chunks):
            chunk = torch.tensor([ids[c * args.chunk:(c + 1) * args.chunk]])
            logits = model(chunk).logits[0, :-1].double()
            nll += torch.nn.functional.cross_entropy(logits, chunk[0, 1:], reduction="sum").item()
            count += args.chunk - 1
    print(f"{args.model}: {type(model).__name__}, {count} positions, perplexity {math.exp(nll / count):.4f}")


if __name__ == "__main__":
    main()
