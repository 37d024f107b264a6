"""Training prompt sources of tools/train_dflash.py (split off so that each file stays under 1,000 lines).

Every source gives prompt records {"category", "chat", "prompt"[, "source"]}: chat records go through the target's
chat template, code records (chat False) are raw completions. Nothing here imports torch: the sources that need the
target (Magpie) only call its tokenizer and its generate().

  code_prompts           the fixed held-out code prompts (prompts/code.jsonl): stdlib function prefixes, one per file
  training_code_prompts  training code prompts: stdlib and site-packages function prefixes cut at several lines,
                         never a held-out file or function
  chat_prompt / math_prompt  synthetic template chat requests and word problems
  MagpieSource           requests the target writes itself (chat template up to the user's message, sampled)
  parse_mix / PromptMix  the --mix shares and the fixed interleaved order of the sources
  training_prompts       the recipe from before --mix (--mix legacy)
"""

import ast
import json
import os
import random
import sys
import sysconfig
import time


def log(*args):
    """The trainer's log line (train_dflash.py imports it from here): flushed, so a piped log is never behind."""
    print(*args, flush=True)


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


def code_prompts(count, seed, exclude_files=(), per_file=1):
    """Function prefixes from the standard library; per_file = 1 (the fixed set) spreads them over files."""
    functions = stdlib_functions(exclude_files=exclude_files)
    rng = random.Random(seed)
    chosen, files = [], {}
    for relative, line, prefix in rng.sample(functions, len(functions)):
        if files.get(relative, 0) >= per_file:
            continue
        files[relative] = files.get(relative, 0) + 1
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
               "the Renaissance", "budgeting", "tides", "operating systems", "origami", "wolves", "compilers",
               "the water cycle", "ancient Egypt", "photography", "nutrition", "airplanes", "the periodic table",
               "volunteering", "rivers", "the violin", "electricity", "dinosaurs", "friendship", "spreadsheets",
               "deserts", "the human brain", "trains", "podcasts", "tea", "recursion", "mountains", "tennis",
               "the ocean floor", "3D printing", "libraries", "penguins", "the Great Wall of China", "poetry",
               "cloud computing", "job interviews", "composting", "satellites", "architecture", "fungi",
               "board games", "the scientific method", "cybersecurity", "weather forecasting", "camping",
               "the Industrial Revolution", "nuclear energy", "language learning", "octopuses"]
CHAT_FORMS = ["Explain {t} in simple terms.", "Write a short paragraph about {t}.", "Give me three facts about {t}.",
              "What are common misconceptions about {t}?", "Write a haiku about {t}.",
              "Summarize the history of {t} in a few sentences.", "How would you teach {t} to a child?",
              "List the pros and cons of {t}.", "Write a short story that involves {t}.",
              "What questions should a beginner ask about {t}?", "Compare {t} and {u}.",
              "Write an email to a friend recommending they learn about {t}.",
              "What is {t}?", "Why is {t} important?", "Describe {t} in five bullet points.",
              "Tell me a fun fact about {t}.", "Write a limerick about {t}.", "What is the future of {t}?",
              "Explain {t} to a high school student.", "What are the main ideas behind {t}?",
              "Give a one-sentence definition of {t}, then an example.", "How are {t} and {u} related?",
              "Write a dialogue between two people discussing {t}.", "Plan a one-day lesson about {t}."]
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


def training_prompts(count, seed, eval_prompts):
    """The previous data recipe (before --mix): synthetic chat / math prompts and stdlib code prefixes, one third
    each, without duplicates and never a held-out prompt. Kept for reference (`--mix legacy`)."""
    rng = random.Random(seed)
    eval_texts = {p["prompt"] for p in eval_prompts}
    eval_files = {p["source"].split(":")[0] for p in eval_prompts if p.get("source")}
    code = code_prompts(count // 3 + 1, seed + 1, exclude_files=eval_files, per_file=64)
    makers = {"chat": chat_prompt, "math": math_prompt}
    prompts, seen = [], set(eval_texts)
    for i in range(count):
        kind = ("chat", "math", "code")[i % 3]
        if kind == "code":
            if i // 3 < len(code):
                prompts.append(code[i // 3])
            continue
        for _ in range(20):  # a few retries for an unseen text; the generators have thousands of forms
            text = makers[kind](rng)
            if text not in seen:
                seen.add(text)
                prompts.append({"category": kind, "chat": True, "prompt": text})
                break
    return prompts


# Training code prompts: raw completions of function prefixes, cut at several lines per function, from the standard
# library and (if installed) a few site-packages; never from a held-out file or a held-out function.

CODE_SKIP_DIRS = {"test", "tests", "testing", "idlelib", "lib2to3", "tkinter", "turtledemo", "site-packages",
                  "dist-packages", "ensurepip", "pydoc_data", "__pycache__", "_vendor", "vendor", "vendored",
                  "third_party", "benchmarks", "examples"}


def code_key(prefix):
    """A function's identity whatever file it is in (3.12 moved datetime.py into _pydatetime.py, say): its first
    two non-decorator lines, stripped."""
    lines = [line.strip() for line in prefix.splitlines() if line.strip() and not line.strip().startswith("@")]
    return "\n".join(lines[:2])


def python_files(root, tops=None):
    """Sorted .py files under root (only under the top-level packages `tops`), skipping tests and vendored code."""
    out = []
    for top in ([os.path.join(root, t) for t in tops] if tops else [root]):
        if os.path.isfile(top + ".py"):
            out.append(top + ".py")
            continue
        for directory, dirs, files in os.walk(top):
            dirs[:] = sorted(d for d in dirs if d not in CODE_SKIP_DIRS and not d.startswith((".", "config-")))
            out += [os.path.join(directory, name) for name in sorted(files) if name.endswith(".py")]
    return out


def function_prefixes(path, cuts, per_file, rng, min_body_lines=6, max_chars=1500):
    """Up to per_file functions of one file, each cut where the held-out prefixes are cut (signature, docstring,
    two more lines) and at up to cuts - 1 later lines (each leaving at least two lines to complete):
    [(line, cut, prefix)]."""
    try:
        with open(path, encoding="utf-8") as f:
            source = f.read()
        tree = ast.parse(source)
    except (SyntaxError, UnicodeDecodeError, OSError, ValueError, RecursionError):
        return []
    lines = source.splitlines()
    functions = [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                 and node.body and getattr(node, "end_lineno", None)
                 and node.end_lineno - node.lineno + 1 >= min_body_lines + 1]
    out = []
    for node in sorted(rng.sample(functions, min(per_file, len(functions))), key=lambda n: n.lineno):
        end = node.end_lineno
        base = node.body[0].end_lineno if ast.get_docstring(node) is not None else node.body[0].lineno - 1
        base = min(end - 2, max(base, node.lineno) + 2)
        later = list(range(base + 1, end - 1))
        first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
        indent = len(lines[first - 1]) - len(lines[first - 1].lstrip())
        for cut in [base] + sorted(rng.sample(later, min(cuts - 1, len(later)))):
            prefix = "\n".join(line[indent:] if not line[:indent].strip() else line
                               for line in lines[first - 1:cut]) + "\n"
            if 80 <= len(prefix) <= max_chars:
                out.append((node.lineno, cut, prefix))
    return out


def site_package_roots(packages):
    """(site directory, package) for each installed package of `packages` (first site directory that has it)."""
    import site

    dirs = []
    for d in [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]] + list(site.getsitepackages()):
        if d not in dirs and os.path.isdir(d):
            dirs.append(d)
    found = []
    for package in packages:
        for d in dirs:
            if os.path.isdir(os.path.join(d, package)) or os.path.isfile(os.path.join(d, package + ".py")):
                found.append((d, package))
                break
    return found


def training_code_prompts(seed, eval_prompts, cuts=3, per_file=4, packages=(), site_share=0.3):
    """Endless (until the files run out) raw-completion code prompts, parsed file by file as they are needed:
    stdlib files and, for a `site_share` of the prompts, files of the installed `packages`; never a file named in a
    held-out prompt's source, a held-out function (code_key) or a held-out text."""
    rng = random.Random(seed)
    eval_files = {p["source"].split(":")[0] for p in eval_prompts if p.get("source")}
    keys = {code_key(p["prompt"]) for p in eval_prompts if p.get("chat") is False or p.get("category") == "code"}
    texts = {p["prompt"] for p in eval_prompts}
    stdlib_root = sysconfig.get_paths()["stdlib"]
    pools = {"stdlib": [(stdlib_root, f) for f in python_files(stdlib_root)
                        if os.path.relpath(f, stdlib_root) not in eval_files]}
    site_files = [(d, f) for d, package in site_package_roots(packages) for f in python_files(d, [package])]
    if site_files and site_share > 0:
        pools["site"] = site_files
    for files in pools.values():
        rng.shuffle(files)
    share = {"stdlib": 1 - site_share if "site" in pools else 1.0, "site": site_share}
    taken, position, dropped = {k: 0 for k in pools}, {k: 0 for k in pools}, 0
    log(f"code prompts: {len(pools['stdlib'])} stdlib files (Python {sys.version_info.major}.{sys.version_info.minor}, "
        f"held-out files excluded), {len(site_files)} files of " + (", ".join(sorted(set(
            p for _, p in site_package_roots(packages)))) or "no site-packages") + f"; {cuts} cuts per function")
    while pools:
        kind = max(pools, key=lambda k: share[k] * (sum(taken.values()) + 1) - taken[k])
        if position[kind] >= len(pools[kind]):
            del pools[kind]
            continue
        root, path = pools[kind][position[kind]]
        position[kind] += 1
        relative = os.path.relpath(path, root)
        for line, cut, prefix in function_prefixes(path, cuts, per_file, rng):
            if prefix in texts or code_key(prefix) in keys:
                dropped += 1
                continue
            taken[kind] += 1
            label = relative if kind == "stdlib" else f"site-packages/{relative}"
            yield {"category": "code", "chat": False, "prompt": prefix, "source": f"{label}:{line} cut {cut}"}
    log(f"code prompts: all files used ({taken}; {dropped} held-out functions dropped)")


# Magpie: the target writes the user prompts itself. It is given the chat template rendered up to the start of the
# user's message (as `tachyon generate --chat` renders it: the default system prompt included), optionally followed
# by a short steering seed, and samples until the end-of-turn token; the sampled text is the prompt.

MAGPIE_SEEDS = {
    "code": ["Write a Python function", "Write a Python script", "Write a function", "In Python, how do I",
             "How do I", "Write a program", "Fix this code:", "What does this Python code do?", "Implement",
             "Write a class", "Can you write a", "How can I use Python to", "Write a SQL query",
             "Write a JavaScript function", "Write a bash script", "Explain this code:", "Refactor",
             "Write a unit test", "What is the difference between a list and", "Create a Python program"],
    "math": ["Solve", "Calculate", "What is", "Find the", "If", "A store", "How many", "Prove that", "Simplify",
             "A train", "The sum of", "A rectangle", "What is the probability", "Convert", "Evaluate",
             "Sarah has", "A recipe", "Compute", "Factor", "How much"],
    "chat": ["Explain", "What are", "Why", "Can you", "Give me", "Tell me about", "Write a short story",
             "Write a poem", "Summarize", "Describe", "Compare", "List", "I need", "Help me", "What is the best way to",
             "Write an essay", "Suggest", "How does", "Write a letter", "Create a", "I am", "Please", "Imagine",
             "Rewrite", "Translate", "What would happen if", "Plan", "Is it true that", "My", "Act as"],
}
MAGPIE_WORDS = ["history", "science", "health", "travel", "music", "food", "sports", "art", "economics", "law",
                "biology", "physics", "chemistry", "philosophy", "psychology", "education", "business", "marketing",
                "writing", "movies", "animals", "plants", "space", "weather", "technology", "politics", "religion",
                "language", "fashion", "cooking", "fitness", "careers", "money", "family", "games", "cars", "houses",
                "cities", "oceans", "energy", "medicine", "robots", "software", "networks", "statistics", "geometry",
                "algebra", "literature", "poetry", "design"]


class MagpieSource:
    """User prompts sampled from the target (Magpie), made in batches as they are needed; light filtering: complete
    turns only (ended by the end-of-turn token), no special tokens, at least 4 words and 16 characters, no
    repetition loops, no duplicates, never a held-out prompt."""

    def __init__(self, target, args, seed, banned_texts):
        tok = target.tokenizer
        if tok is None or not tok.chat_template:
            raise SystemExit("--mix magpie needs a target with a tokenizer and a chat template")
        sentinel = "MAGPIESENTINEL"
        rendered = tok.apply_chat_template([{"role": "user", "content": sentinel}], add_generation_prompt=True,
                                           tokenize=False)
        self.prefix, suffix = rendered.split(sentinel)
        full = tok.apply_chat_template([{"role": "user", "content": sentinel}], add_generation_prompt=True,
                                       tokenize=True, return_dict=False)
        prefix_ids = tok.encode(self.prefix, add_special_tokens=False)
        if full[:len(prefix_ids)] != prefix_ids:
            raise SystemExit(f"magpie: the user-turn prefix {self.prefix!r} does not tokenize as in the template")
        self.end_of_turn = tok.encode(suffix, add_special_tokens=False)[0]
        self.stop = sorted(set(target.eos) | {self.end_of_turn})
        self.special = set(tok.all_special_ids) | {i for i, t in tok.added_tokens_decoder.items() if t.special}
        self.target, self.tok, self.args = target, tok, args
        self.rng = random.Random(seed)
        self.seed = seed
        self.seen = {self.normalize(t) for t in banned_texts}
        self.buffer, self.made, self.sampled, self.failures, self.samples_logged = [], 0, 0, 0, False
        log(f"magpie: user-turn prefix {self.prefix!r} ({len(prefix_ids)} tokens), stop at {self.stop}, "
            f"T={args.magpie_temperature} top_p={args.magpie_top_p}, {args.magpie_max_tokens} tokens at most, "
            f"{args.magpie_seeded:.0%} with a steering seed")

    @staticmethod
    def normalize(text):
        return " ".join(text.lower().split()).rstrip(".?!:")

    def draw_seed(self):
        if self.rng.random() >= self.args.magpie_seeded:
            return "free", ""
        group = self.rng.choices(["code", "math", "chat"], weights=[0.4, 0.25, 0.35])[0]
        if group == "chat" and self.rng.random() < 0.3:
            return group, self.rng.choice(MAGPIE_WORDS).capitalize()
        return group, self.rng.choice(MAGPIE_SEEDS[group])

    def accept(self, seed_text, response):
        if not response or response[-1] not in self.stop:
            return None  # cut at --magpie-max-tokens: not a complete request
        body = response[:-1]
        if any(t in self.special for t in body):
            return None
        text = (seed_text + self.tok.decode(body, skip_special_tokens=False, clean_up_tokenization_spaces=False)).strip()
        words = text.split()
        if len(text) < 16 or len(words) < 4 or "<|" in text or "|>" in text:
            return None
        if len(words) >= 12 and len(set(words)) < 0.4 * len(words):
            return None
        key = self.normalize(text)
        if key in self.seen:
            return None
        self.seen.add(key)
        return text

    def take(self, n):
        batch = self.args.magpie_batch or 2 * self.args.generate_batch
        while len(self.buffer) < n and self.failures < 3:
            started = time.time()
            seeds = [self.draw_seed() for _ in range(batch)]
            encoded = [self.tok.encode(self.prefix + s, add_special_tokens=False) for _, s in seeds]
            pairs = self.target.generate(encoded, self.args.magpie_max_tokens, self.args.magpie_temperature, batch,
                                         self.seed * 1000003 + self.sampled, top_p=self.args.magpie_top_p,
                                         stop=self.stop, quiet=True)
            self.sampled += batch
            accepted = 0
            for (group, s), (_, response) in zip(seeds, pairs):
                text = self.accept(s, response)
                if text is not None:
                    accepted += 1
                    self.buffer.append({"category": f"magpie-{group}", "chat": True, "prompt": text,
                                        "source": f"magpie seed {s!r}"})
            self.made += accepted
            log(f"  magpie: {accepted} of {batch} sampled prompts kept in {time.time() - started:.1f} s")
            if not self.samples_logged and self.buffer:
                self.samples_logged = True
                for r in self.buffer[:10]:
                    log("  magpie sample [" + r["category"] + "]: " + json.dumps(r["prompt"])[:300])
            self.failures = self.failures + 1 if accepted < 0.02 * batch else 0
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out


MIX_KINDS = ("magpie", "code", "math", "chat")


def parse_mix(text):
    """'magpie=0.5,code=0.3,math=0.15,chat=0.05' -> normalized shares (zero shares dropped)."""
    mix = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in MIX_KINDS or not value:
            raise SystemExit(f"--mix {text!r}: give name=share pairs, names from {', '.join(MIX_KINDS)}")
        mix[name] = float(value)
    total = sum(mix.values())
    if total <= 0:
        raise SystemExit(f"--mix {text!r}: the shares sum to zero")
    return {k: v / total for k, v in mix.items() if v > 0}


class PromptMix:
    """Training prompts in the --mix proportions, in a fixed interleaved order (a data deadline keeps the mix):
    magpie (target-written requests), code (function prefixes, raw), math (synthetic word problems), chat (the
    template requests: 100 topics x 24 forms). Without duplicates and never a held-out prompt."""

    def __init__(self, args, target, eval_prompts):
        self.mix = parse_mix(args.mix)
        self.rng = random.Random(args.seed)
        self.seen = {p["prompt"] for p in eval_prompts}
        self.taken = {k: 0 for k in self.mix}
        self.code = training_code_prompts(args.seed + 1, eval_prompts, cuts=args.code_cuts, per_file=args.code_per_file,
                                          packages=args.code_packages, site_share=args.code_site_share) \
            if "code" in self.mix else None
        self.magpie = MagpieSource(target, args, args.seed, self.seen) if "magpie" in self.mix else None
        log("data mix: " + ", ".join(f"{k} {v:.0%}" for k, v in self.mix.items()))

    def synthetic(self, kind):
        maker = chat_prompt if kind == "chat" else math_prompt
        for _ in range(20):  # a few retries for an unseen text; the generators have thousands of forms
            text = maker(self.rng)
            if text not in self.seen:
                self.seen.add(text)
                return {"category": kind, "chat": True, "prompt": text}
        return None

    def take(self, n):
        kinds = []
        for _ in range(n):
            total = sum(self.taken.values()) + len(kinds) + 1
            kind = max(self.mix, key=lambda k: self.mix[k] * total - self.taken[k] - kinds.count(k))
            kinds.append(kind)
        magpie = self.magpie.take(kinds.count("magpie")) if self.magpie else []
        out = []
        for kind in kinds:
            if kind == "magpie":
                record = magpie.pop(0) if magpie else None
            elif kind == "code":
                record = next(self.code, None)
            else:
                record = self.synthetic(kind)
            self.taken[kind] += 1
            if record is not None:
                out.append(record)
        return out
