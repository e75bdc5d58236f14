"""Commands for the real tasks: ``train forecast|classify|sentiment``, ``forecast`` and ``predict``.

Every check that can fail on user input (the --out folder, the data file, the
options) runs before anything is written, so a bad call leaves the disk as it was.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields

import numpy as np

from ..errors import UsageError

_FMT = argparse.ArgumentDefaultsHelpFormatter


def _common(p, cfg, out_default):
    """Options every task shares, defaults from its config dataclass."""
    p.add_argument("--cell", default=cfg.cell, choices=["rnn", "lstm", "gru"], help="recurrent cell")
    p.add_argument("--hidden", type=int, default=cfg.hidden, help="hidden units per direction")
    p.add_argument("--layers", type=int, default=cfg.layers, help="stacked recurrent layers")
    p.add_argument("--epochs", type=int, default=cfg.epochs, help="maximum passes over the training data")
    p.add_argument("--batch", type=int, default=cfg.batch, help="sequences per minibatch")
    p.add_argument("--lr", type=float, default=cfg.lr, help="Adam learning rate")
    p.add_argument("--clip", type=float, default=cfg.clip, help="maximum global gradient norm (0: no clipping)")
    p.add_argument("--seed", type=int, default=cfg.seed, help="seed of the initialisation, split and batch order")
    p.add_argument("--out", default=out_default, help="run folder RUN for results.json, model.safetensors, figures")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _config(cls, a):
    """The task's config dataclass from the parsed options, with every number checked."""
    values = {f.name: getattr(a, f.name) for f in fields(cls) if hasattr(a, f.name)}
    for name, v in values.items():
        flag = "--" + name.replace("_", "-")
        if name in ("hidden", "layers", "epochs", "batch", "window", "horizon", "embed", "max_len",
                    "min_count", "patience") and v < 1:
            raise UsageError(f"{flag}: expected a positive integer, got {v}")
        if name in ("lr",) and not v > 0:
            raise UsageError(f"{flag}: expected a positive number, got {v}")
        if name in ("clip", "weight_decay", "limit") and v < 0:
            raise UsageError(f"{flag}: expected a non-negative number, got {v}")
        if name == "dropout" and not 0 <= v < 1:
            raise UsageError(f"{flag}: expected a probability in [0, 1), got {v}")
    return cls(**values)


def _print_table(rows, header):
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    for r in [header] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))


def _f(v, digits=4):
    return "-" if v is None else f"{v:.{digits}g}"


# ---- forecast ---------------------------------------------------------------------------
def _add_train_forecast(train_sub):
    from ..tasks.forecast import ForecastConfig
    from ..tasks.series_data import DATASETS
    d = ForecastConfig()
    p = train_sub.add_parser(
        "forecast", formatter_class=_FMT, help="forecast a time series; compared with naive, seasonal naive, ARIMA",
        description=(
            "Train a recurrent network to predict the next value of a series from the last --window values. "
            "The last --test-fraction of the series is held out (chronological, never shuffled); the scaler "
            "and every baseline see only the part before it. Missing values are interpolated and reported. "
            "Writes RUN/results.json (rmse, mae, mase of the network and of the baselines naive, "
            "seasonal_naive, arima), RUN/forecast.png and RUN/model.safetensors."))
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", choices=DATASETS, help="a bundled series (sunspots: yearly 1700-2008)")
    src.add_argument("--csv", metavar="FILE", help="a CSV file with a header row")
    p.add_argument("--column", help="the CSV column to forecast (may be omitted if only one is numeric)")
    p.add_argument("--time-column", help="a CSV column of time labels, for tables and plots")
    p.add_argument("--season", type=int, help="season length for the seasonal naive baseline "
                                              "(CSV only; bundled series know theirs; none by default)")
    p.add_argument("--window", type=int, default=d.window, help="past values the network reads")
    p.add_argument("--horizon", type=int, default=d.horizon,
                   help="also report H-step-ahead errors (recursive forecasts) when H > 1")
    p.add_argument("--patience", type=int, default=d.patience,
                   help="stop after this many epochs without a better validation RMSE")
    p.add_argument("--test-fraction", type=float, default=d.test_fraction, help="held-out last part")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help="validation part (for early stopping): the last fraction of what precedes the test part")
    p.add_argument("--arima-grid", default=d.arima_grid, choices=["full", "small"],
                   help="full: p 0..5, d 0..1, q 0..2 (36 fits); small: p 0..2, d 0..1, q 0..1 (12 fits)")
    _common(p, d, None)
    p.set_defaults(func=run_train_forecast)


def run_train_forecast(a):
    from ..tasks import plots, series_data
    from ..tasks.forecast import ForecastConfig, train_forecast
    from ..tasks.run_folder import check_out, write_run
    out = check_out(a.out or f"runs/forecast-{a.dataset or 'csv'}")
    plots.check_available()
    cfg = _config(ForecastConfig, a)
    if a.season is not None and a.season < 1:
        raise UsageError(f"--season: expected a positive integer, got {a.season}")
    if a.dataset:
        if a.column or a.time_column or a.season:
            raise UsageError("--column, --time-column and --season go with --csv, not --dataset")
        series = series_data.load_dataset(a.dataset)
    else:
        series = series_data.read_csv(a.csv, a.column, a.time_column, a.season)
    if len(series) < cfg.window + 1:
        raise UsageError(f"--window: the series has {len(series)} values, fewer than one window of "
                         f"{cfg.window} plus a target; use a shorter --window")
    if series.missing:
        print(f"{series.name}: {series.missing} missing values interpolated linearly "
              f"(first at {', '.join(series.missing_at[:3])})")
    model, meta, results, curves = train_forecast(series, cfg, quiet=a.quiet)
    write_run(out, "forecast", model, meta, results)
    plots.forecast_figure(curves, results, out / "forecast.png")
    s = results["split"]
    print(f"{series.name}: {len(series)} values; held out {s['test_points']} ({s['test'][0]} .. {s['test'][1]}); "
          f"ARIMA order {tuple(results['baselines_notes']['arima']['order'])} by AIC")
    rows = [["rnn (" + cfg.cell + ")", _f(results["rmse"]), _f(results["mae"]), _f(results["mase"])]]
    for name, r in results["baselines"].items():
        rows.append([name] + (["-"] * 3 if r is None else [_f(r["rmse"]), _f(r["mae"]), _f(r["mase"])]))
    _print_table(rows, ["one-step", "RMSE", "MAE", "MASE"])
    if "multi_step" in results:
        m = results["multi_step"]
        rows = [["rnn (" + cfg.cell + ")", _f(m["rmse"]), _f(m["mae"]), _f(m["mase"])]]
        rows += [[k, _f(v["rmse"]), _f(v["mae"]), _f(v["mase"])] for k, v in m["baselines"].items()]
        _print_table(rows, [f"1..{m['horizon']} steps", "RMSE", "MAE", "MASE"])
    print(f"wall time {results['wall_seconds']:.1f} s; wrote {out}/results.json, {out}/forecast.png")
    return 0


def _add_forecast(sub):
    p = sub.add_parser("forecast", formatter_class=_FMT, help="forecast beyond the end of a trained forecast run",
                       description="Forecast the next --steps values after the last observation of the series a "
                                   "'train forecast' run was trained on; each forecast is fed back as input.")
    p.add_argument("run", metavar="RUN", help="run folder written by 'rnnlab train forecast --out RUN'")
    p.add_argument("--steps", type=int, default=10, help="how many steps ahead")
    p.add_argument("--plot", metavar="FILE", help="also draw the forecast after the series' tail into FILE (PNG)")
    p.set_defaults(func=run_forecast)


def run_forecast(a):
    from ..tasks.forecast import recursive_forecast
    from ..tasks.run_folder import load_run
    from ..tasks.windows import Scaler
    if a.steps < 1:
        raise UsageError(f"--steps: expected a positive integer, got {a.steps}")
    if a.plot and not a.plot.lower().endswith(".png"):
        raise UsageError(f"--plot: expected a .png file name, got {a.plot!r}")
    model, meta = load_run(a.run, ["forecast"])
    s = meta["series"]
    y = np.asarray(s["values"], dtype=np.float64)
    scaler = Scaler(**meta["scaler"])
    W = meta["config"]["window"]
    f = scaler.inverse(recursive_forecast(model, scaler.transform(y), [len(y)], W, a.steps))[0]
    print(f"{s['name']}: last observation {s['labels'][-1]} = {y[-1]:.6g}; forecast (recursive):")
    for h, v in enumerate(f, 1):
        print(f"  +{h}\t{v:.6g}")
    if a.plot:
        from ..tasks.plots import future_figure
        future_figure(s["labels"], y, f, a.plot, s["name"])
        print(f"wrote {a.plot}")
    return 0


# ---- classify ---------------------------------------------------------------------------
def _add_train_classify(train_sub):
    from ..tasks.classify import ClassifyConfig
    from ..tasks.sequence_data import DATASETS
    d = ClassifyConfig()
    p = train_sub.add_parser(
        "classify", formatter_class=_FMT, help="classify whole sequences (JapaneseVowels speakers, digits)",
        description=(
            "Train a many-to-one recurrent classifier on variable-length sequences (padding through lengths), "
            "features standardised on the training split. Uses the official train/test split where the data set "
            "has one (JapaneseVowels: 270/370; digits and mnist: stratified 75/25 and 80/20 with --seed). "
            "Writes RUN/results.json (test_accuracy, per-class precision and recall, confusion matrix, "
            "baselines), RUN/confusion.png and RUN/model.safetensors."))
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", choices=DATASETS, help="a bundled data set")
    src.add_argument("--ts", metavar="FILE", help="a UCR/UEA NAME_TRAIN.ts file; NAME_TEST.ts beside it is the test split")
    src.add_argument("--npz", metavar="FILE", help="an .npz with X_train, y_train, X_test, y_test (or X, y)")
    p.add_argument("--bidirectional", action=argparse.BooleanOptionalAction, default=d.bidirectional,
                   help="read each sequence both ways")
    p.add_argument("--dropout", type=float, default=d.dropout, help="dropout on the final state")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="L2 penalty in Adam")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help="if > 0, a stratified part of the training split picks the epoch; 0 keeps the last epoch")
    p.add_argument("--limit", type=int, default=d.limit, help="if > 0, use only this many train and test sequences")
    _common(p, d, None)
    p.set_defaults(func=run_train_classify)


def _class_rows(report):
    return [[k, _f(v["precision"], 3), _f(v["recall"], 3), v["support"]] for k, v in report["per_class"].items()]


def run_train_classify(a):
    from ..tasks import plots, sequence_data
    from ..tasks.classify import ClassifyConfig, train_classify
    from ..tasks.run_folder import check_out, write_run
    out = check_out(a.out or f"runs/classify-{a.dataset or 'file'}")
    plots.check_available()
    cfg = _config(ClassifyConfig, a)
    if not 0 <= cfg.val_fraction < 1:
        raise UsageError(f"--val-fraction: expected a number in [0, 1), got {cfg.val_fraction}")
    if a.dataset:
        data = sequence_data.load_dataset(a.dataset, seed=cfg.seed)
    elif a.ts:
        data = sequence_data.load_ts(a.ts)
    else:
        data = sequence_data.load_npz(a.npz, seed=cfg.seed)
    model, meta, results, report = train_classify(data, cfg, quiet=a.quiet)
    write_run(out, "classify", model, meta, results)
    plots.confusion_figure(report["confusion_matrix"], data.classes,
                           f"{data.name}: test accuracy {report['test_accuracy']:.2%}", out / "confusion.png")
    print(f"{data.name}: {results['n_train']} training and {results['n_test']} test sequences "
          f"({data.split}), lengths {results['lengths']['min']}..{results['lengths']['max']}")
    _print_table(_class_rows(report), ["class", "precision", "recall", "support"])
    rows = [[f"rnn ({cfg.cell})", f"{results['test_accuracy']:.4f}"]]
    rows += [[k, f"{v['test_accuracy']:.4f}"] for k, v in results["baselines"].items()]
    _print_table(rows, ["model", "test accuracy"])
    print(f"wall time {results['wall_seconds']:.1f} s; wrote {out}/results.json, {out}/confusion.png")
    return 0


# ---- sentiment --------------------------------------------------------------------------
def _add_train_sentiment(train_sub):
    from ..tasks.sentiment import SentimentConfig
    d = SentimentConfig()
    p = train_sub.add_parser(
        "sentiment", formatter_class=_FMT, help="positive/negative sentences, word level; compared with VADER",
        description=(
            "Train a word-level recurrent classifier of sentences (padding through lengths) on a stratified "
            "80/10/10 split; the validation part picks the epoch. The VADER analyzer is scored on the same test "
            "part. The movie-review snippets are fetched once with pip (the vaderSentiment 3.3.2 sdist) into "
            "$RNNLAB_CACHE or ~/.cache/rnnlab. Writes RUN/results.json, RUN/confusion.png, RUN/model.safetensors; "
            "then 'rnnlab predict RUN \"text\"'."))
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", choices=["movie-snippets"], help="10,072 movie-review sentences with |score| >= 0.5")
    src.add_argument("--tsv", metavar="FILE", help="a TSV with a header row text<TAB>label and two label strings")
    p.add_argument("--embed", type=int, default=d.embed, help="word vector size")
    p.add_argument("--bidirectional", action=argparse.BooleanOptionalAction, default=d.bidirectional,
                   help="read each sentence both ways")
    p.add_argument("--dropout", type=float, default=d.dropout, help="dropout on the final state")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="L2 penalty in Adam")
    p.add_argument("--patience", type=int, default=d.patience, help="epochs without a better validation loss")
    p.add_argument("--max-len", type=int, default=d.max_len, help="words kept per sentence")
    p.add_argument("--min-count", type=int, default=d.min_count, help="rarer training words become <unk>")
    p.add_argument("--limit", type=int, default=d.limit, help="if > 0, use only this many sentences")
    _common(p, d, None)
    p.set_defaults(func=run_train_sentiment)


def run_train_sentiment(a):
    from ..tasks import plots, text_data
    from ..tasks.run_folder import check_out, write_run
    from ..tasks.sentiment import SentimentConfig, train_sentiment
    out = check_out(a.out or f"runs/sentiment-{a.dataset or 'tsv'}")
    plots.check_available()
    cfg = _config(SentimentConfig, a)
    data = text_data.load_movie_snippets(a.quiet) if a.dataset else text_data.read_tsv(a.tsv)
    model, meta, results = train_sentiment(data, cfg, quiet=a.quiet)
    write_run(out, "sentiment", model, meta, results)
    plots.confusion_figure(results["confusion_matrix"], data.label_names,
                           f"{data.name}: test accuracy {results['test_accuracy']:.2%}", out / "confusion.png")
    print(f"{data.name}: {results['n_train']} train, {results['n_validation']} validation, "
          f"{results['n_test']} test sentences; vocabulary {results['vocab_size']} words")
    _print_table(_class_rows(results), ["class", "precision", "recall", "support"])
    rows = [[f"rnn ({cfg.cell}, word level)", f"{results['test_accuracy']:.4f}"]]
    v = results["baselines"]["vader"]
    rows.append(["vader", "-" if v is None else f"{v['test_accuracy']:.4f}"])
    _print_table(rows, ["model", "test accuracy"])
    print(f"wall time {results['wall_seconds']:.1f} s; wrote {out}/results.json; "
          f"try: rnnlab predict {out} \"a gorgeous, witty film\"")
    return 0


def _add_predict(sub):
    p = sub.add_parser("predict", formatter_class=_FMT, help="label a sentence with a trained sentiment run",
                       description="Print the predicted label of TEXT and its probability, using a run folder "
                                   "written by 'rnnlab train sentiment --out RUN'.")
    p.add_argument("run", metavar="RUN", help="run folder of a sentiment run")
    p.add_argument("text", nargs="+", help="the text to label (several words may be given unquoted)")
    p.set_defaults(func=run_predict)


def run_predict(a):
    from ..tasks.run_folder import load_run
    from ..tasks.sentiment import predict_proba
    from ..tasks.text_data import Vocab
    text = " ".join(a.text).strip()
    if not text:
        raise UsageError("TEXT: expected some text to label, got an empty string")
    model, meta = load_run(a.run, ["sentiment"])
    p = float(predict_proba(model, Vocab(meta["vocab"][2:]), [text], meta["config"]["max_len"])[0])
    neg, pos = meta["labels"]
    label, prob = (pos, p) if p >= 0.5 else (neg, 1 - p)
    print(f"{label}\t{prob:.3f}")
    return 0


def register(sub, train_sub):
    _add_train_forecast(train_sub)
    _add_train_classify(train_sub)
    _add_train_sentiment(train_sub)
    _add_forecast(sub)
    _add_predict(sub)
