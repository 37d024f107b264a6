#!/usr/bin/env python3
"""Hugging Face transformers generate() decode speed on SmolLM2, for the side-by-side table of BENCHMARKS.md.

Runs on the GPU host next to `tachyon bench -m SmolLM2.gguf --json-file tachyon.json` (same card, same run):
the prompt has the same length as tachyon bench's (--context random ids; the ids themselves differ, which
does not change the work of a decode step), and the decode steps are timed the same way (time of
generate(1 + steps new tokens) minus generate(1 new token), divided by steps: the prefill cancels out).
The model is read from the same GGUF (transformers dequantizes it; we run it in bf16, like tachyon).

Modes: eager (dynamic cache), static cache + torch.compile(mode="reduce-overhead") (CUDA graphs), and static
cache + torch.compile default mode (no CUDA graphs). A mode that fails is reported with its error, and the others still run.
Roofline efficiency uses the bytes per token and the read bandwidth that tachyon bench measured in the same
run (--tachyon-json), so both engines are held to the same floor.

  python3 scripts/gpu/peers_smollm2.py --gguf models/smollm2.gguf --tachyon-json tachyon.json --out peers.json
"""
import argparse
import json
import statistics
import sys
import time
import traceback


def decode_seconds_per_token(model, input_ids, steps, repeats, torch):
    sync = torch.cuda.synchronize if input_ids.is_cuda else (lambda: None)
    """Median over repeats of (t(1 + steps new tokens) - t(1 new token)) / steps, greedy, EOS ignored."""
    def timed(new_tokens):
        sync()
        start = time.perf_counter()
        out = model.generate(input_ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        sync()
        assert out.shape[1] == input_ids.shape[1] + new_tokens, out.shape
        return time.perf_counter() - start

    samples = []
    for _ in range(repeats):
        full = timed(1 + steps)
        first = timed(1)
        samples.append((full - first) / steps)
    return statistics.median(samples), samples


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", required=True, help="the SmolLM2 GGUF that tachyon bench read")
    ap.add_argument("--context", type=int, default=1024, help="prompt length (tachyon bench --context)")
    ap.add_argument("--steps", type=int, default=64, help="decode steps timed (tachyon bench --steps)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--modes", default="eager,static_compile_default,static_compile",
                    help="comma-separated; static_compile (CUDA graphs) last: on torch 2.11 it can kill the process")
    ap.add_argument("--tachyon-json", help="tachyon bench --json-file output of the same run (floor, bandwidth)")
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument("--device", default="cuda", help="cuda; cpu only to try the script")
    args = ap.parse_args()

    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {device_name}", flush=True)
    import os
    directory, name = os.path.split(os.path.abspath(args.gguf))
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.bfloat16).to(args.device).eval()
    print(f"loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    gen = torch.Generator().manual_seed(args.seed)
    input_ids = torch.randint(0, model.config.vocab_size, (1, args.context), generator=gen).to(args.device)
    model.generation_config.pad_token_id = model.generation_config.eos_token_id

    floor_us = None
    tachyon = None
    if args.tachyon_json:
        with open(args.tachyon_json) as f:
            tachyon = json.load(f)
        floor_us = tachyon["floor_us"]

    results = {"device": device_name, "torch": torch.__version__, "transformers": transformers.__version__,
               "context": args.context, "steps": args.steps, "modes": {}}
    for mode in args.modes.split(","):
        entry = {}
        try:
            t0 = time.perf_counter()
            if mode == "eager":
                model.generation_config.cache_implementation = None
                model.forward = model.__class__.forward.__get__(model)
                decode_seconds_per_token(model, input_ids, 2, 1, torch)  # warm-up
            elif mode == "static_compile":
                model.generation_config.cache_implementation = "static"
                compiled = torch.compile(model.__class__.forward.__get__(model), mode="reduce-overhead",
                                         fullgraph=True)

                def forward(*a, **k):
                    # generate() keeps the cache tensors between calls: tell torch a new CUDA-graph step
                    # begins, else it refuses to reuse the graph's overwritten outputs.
                    torch.compiler.cudagraph_mark_step_begin()
                    return compiled(*a, **k)
                model.forward = forward
                for _ in range(2):  # compile, then the CUDA graphs' own warm-up
                    decode_seconds_per_token(model, input_ids, args.steps, 1, torch)
            elif mode == "static_compile_default":  # torch.compile without CUDA graphs (fallback)
                model.generation_config.cache_implementation = "static"
                model.forward = torch.compile(model.__class__.forward.__get__(model), fullgraph=True)
                for _ in range(2):
                    decode_seconds_per_token(model, input_ids, args.steps, 1, torch)
            else:
                raise ValueError(f"unknown mode {mode}")
            entry["warmup_seconds"] = time.perf_counter() - t0
            seconds, samples = decode_seconds_per_token(model, input_ids, args.steps, args.repeats, torch)
            entry.update({"step_us": seconds * 1e6, "tokens_per_second": 1.0 / seconds,
                          "step_us_samples": [s * 1e6 for s in samples]})
            if floor_us:
                entry["roofline_efficiency"] = floor_us / (seconds * 1e6)
            print(f"{mode}: {entry['tokens_per_second']:.1f} tok/s, {entry['step_us']:.1f} us/step"
                  + (f", {100 * entry['roofline_efficiency']:.1f}% of roofline" if floor_us else ""), flush=True)
        except Exception as e:  # a failing mode is a result too: say so and go on
            entry["error"] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
            print(f"{mode}: FAILED: {entry['error']}", flush=True)
        results["modes"][mode] = entry

    if tachyon:
        results["tachyon"] = {"graph_step_us": tachyon["graph_step_us"],
                              "tokens_per_second": tachyon["decode_tokens_per_second"],
                              "roofline_efficiency": tachyon["roofline_efficiency"], "floor_us": floor_us,
                              "read_bandwidth_gb_per_s": tachyon["read_bandwidth_gb_per_s"]}
        for mode, entry in results["modes"].items():
            if "tokens_per_second" in entry:
                print(f"tachyon / {mode}: {tachyon['decode_tokens_per_second'] / entry['tokens_per_second']:.1f}x")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
