#!/usr/bin/env bash
# Measures a DFlash drafter with tachyon itself (CPU path): for every prompt of prompts/*.jsonl, greedy decoding
# (T = 0) of up to N new tokens, once without and once with the drafter, back to back in the same run.
# Reports per category: tau (tokens committed per target pass, bonus included), the acceptance histogram
# (tokens per round), tokens/s with and without the drafter and their ratio, and whether the outputs were
# token-identical (they must be: greedy speculative decoding is lossless).
#
#   scripts/measure_tau.sh DRAFTER_DIR [--model GGUF] [--block-size 16] [--max-tokens 64] [--tachyon BIN]
#                          [--prompts prompts/chat.jsonl ...] [--limit N] [--threads T] [--adaptive] [--json FILE]
# Defaults: models/SmolLM2-135M-Instruct.Q4_1.gguf, b = 16, 64 tokens, the first 12 prompts of each file
# (--limit 0: all 24), the first of build/tachyon, build-dflash/tachyon, build*/tachyon that has
# generate --stats-json. Needs only python3's standard library.
# Time on the 2-core development machine: a prompt costs about 5 s of plain decoding plus 64 / tau rounds of
# about 0.3 s (a 16-row CPU verify costs about 4 decode steps), so the default 36 prompts take about 7 minutes
# with a drafter at tau 3 and about 15 with an untrained one (tau 1); the whole set doubles that.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 - "$@" <<'PY'
import argparse, glob, json, os, subprocess, sys, tempfile, time

p = argparse.ArgumentParser(prog="scripts/measure_tau.sh")
p.add_argument("drafter")
p.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
p.add_argument("--block-size", type=int, default=16)
p.add_argument("--max-tokens", type=int, default=64)
p.add_argument("--tachyon", default=None)
p.add_argument("--prompts", nargs="+", default=sorted(glob.glob("prompts/*.jsonl")))
p.add_argument("--limit", type=int, default=12, help="first N prompts of each file (0 = all)")
p.add_argument("--threads", type=int, default=0)
p.add_argument("--adaptive", action="store_true", help="--adaptive-block-size (b <= --block-size)")
p.add_argument("--json", default=None, help="write the summary here")
a = p.parse_args()

def supports_stats_json(path):
    if not os.access(path, os.X_OK):
        return False
    done = subprocess.run([path, "generate", "--help"], capture_output=True, text=True)
    return "--stats-json" in done.stdout + done.stderr


candidates = [a.tachyon] if a.tachyon else ["build/tachyon", "build-dflash/tachyon"] + sorted(glob.glob("build*/tachyon"))
binary = next((b for b in candidates if supports_stats_json(b)), None)
if not binary:
    sys.exit(f"no tachyon binary with generate --stats-json among {candidates}: build one "
             "(cmake -S . -B build -G Ninja -DTACHYON_CUDA=OFF && ninja -C build tachyon) or pass --tachyon")

def run(prompt, draft):
    with tempfile.NamedTemporaryFile("r", suffix=".json") as stats:
        cmd = [binary, "generate", "-m", a.model, "-p", prompt["prompt"], "-n", str(a.max_tokens), "--temperature", "0",
               "--print-ids", "--stats-json", stats.name]
        if prompt.get("chat", True):
            cmd.append("--chat")
        if a.threads:
            cmd += ["-t", str(a.threads)]
        if draft:
            cmd += ["--draft", a.drafter, "--block-size", str(a.block_size)] + (["--adaptive-block-size"] if a.adaptive else [])
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-2000:]}")
        return json.loads(stats.read().strip().splitlines()[-1])

print(f"tachyon {binary}, model {a.model}, drafter {a.drafter}, b={a.block_size}{' adaptive' if a.adaptive else ''}, "
      f"T=0, {a.max_tokens} new tokens", flush=True)
started = time.time()
per = {}
for path in a.prompts:
    with open(path) as f:
        prompts = [json.loads(line) for line in f if line.strip()]
    if a.limit:
        prompts = prompts[:a.limit]
    for prompt in prompts:
        category = prompt.get("category") or os.path.basename(path).split(".")[0]
        plain = run(prompt, False)
        spec = run(prompt, True)
        c = per.setdefault(category, {"prompts": 0, "identical": 0, "plain_tokens": 0, "plain_seconds": 0.0,
                                      "spec_tokens": 0, "spec_seconds": 0.0, "rounds": 0, "committed": 0,
                                      "draft_seconds": 0.0, "verify_seconds": 0.0, "histogram": [], "taus": []})
        s = spec["spec"]
        c["prompts"] += 1
        c["identical"] += plain["tokens"] == spec["tokens"]
        c["plain_tokens"] += plain["generated"]
        c["plain_seconds"] += plain["decode_seconds"]
        c["spec_tokens"] += spec["generated"]
        c["spec_seconds"] += spec["decode_seconds"]
        c["rounds"] += s["rounds"]
        c["committed"] += s["committed"]
        c["draft_seconds"] += s["draft_seconds"]
        c["verify_seconds"] += s["verify_seconds"]
        c["taus"].append(s["tau"])
        h = c["histogram"]
        h += [0] * (len(s["histogram"]) - len(h))
        for k, n in enumerate(s["histogram"]):
            h[k] += n
        print(f"  {prompt.get('id', category)}: tau {s['tau']:.2f} ({s['rounds']} rounds), "
              f"{plain['generated'] / max(plain['decode_seconds'], 1e-9):.1f} -> "
              f"{spec['generated'] / max(spec['decode_seconds'], 1e-9):.1f} tok/s"
              f"{'' if plain['tokens'] == spec['tokens'] else '  OUTPUT DIFFERS'}", flush=True)

def summary(c):
    plain_tps = c["plain_tokens"] / max(c["plain_seconds"], 1e-9)
    spec_tps = c["spec_tokens"] / max(c["spec_seconds"], 1e-9)
    return {"prompts": c["prompts"], "identical_outputs": c["identical"],
            "tau": round(c["committed"] / max(c["rounds"], 1), 3),
            "tau_mean_of_prompts": round(sum(c["taus"]) / max(len(c["taus"]), 1), 3),
            "histogram": {str(k): n for k, n in enumerate(c["histogram"]) if k and n},
            "plain_tokens_per_second": round(plain_tps, 2), "spec_tokens_per_second": round(spec_tps, 2),
            "speedup": round(spec_tps / max(plain_tps, 1e-9), 3),
            "draft_seconds": round(c["draft_seconds"], 2), "verify_seconds": round(c["verify_seconds"], 2)}

total = {"prompts": 0, "identical": 0, "plain_tokens": 0, "plain_seconds": 0.0, "spec_tokens": 0, "spec_seconds": 0.0,
         "rounds": 0, "committed": 0, "draft_seconds": 0.0, "verify_seconds": 0.0, "histogram": [], "taus": []}
for c in per.values():
    for k, v in c.items():
        if k == "histogram":
            total[k] += [0] * (len(v) - len(total[k]))
            for i, n in enumerate(v):
                total[k][i] += n
        else:
            total[k] += v
result = {"model": a.model, "drafter": a.drafter, "block_size": a.block_size, "adaptive": a.adaptive,
          "max_tokens": a.max_tokens, "temperature": 0, "tachyon": binary, "seconds": round(time.time() - started, 1),
          "categories": {k: summary(v) for k, v in sorted(per.items())}, "all": summary(total)}
print()
print(f"{'category':10} {'prompts':>7} {'tau':>6} {'plain tok/s':>12} {'dflash tok/s':>13} {'speedup':>8} {'identical':>10}  tokens per round")
for name, s in list(result["categories"].items()) + [("all", result["all"])]:
    hist = " ".join(f"{k}:{n}" for k, n in s["histogram"].items())
    print(f"{name:10} {s['prompts']:>7} {s['tau']:>6.2f} {s['plain_tokens_per_second']:>12.1f} "
          f"{s['spec_tokens_per_second']:>13.1f} {s['speedup']:>7.2f}x {s['identical_outputs']:>5}/{s['prompts']:<4}  {hist}")
print(f"({result['seconds']:.0f} s)")
if a.json:
    with open(a.json, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
if result["all"]["identical_outputs"] != result["all"]["prompts"]:
    sys.exit("greedy outputs with and without the drafter differ")
PY
