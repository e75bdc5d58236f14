"""Time series for forecasting: the bundled data sets and user CSV files.

Every loader returns a ``Series``: float64 values in time order, a label for
each time point, and how many missing values were filled. Missing values are
filled by linear interpolation between the nearest observed neighbours (the
first or last observed value at the ends) and always reported, never dropped:
dropping a point would silently glue two distant times together.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ._optional import require

# Cells read as missing in a CSV (case-insensitive), besides the empty cell.
MISSING_MARKERS = {"", "na", "nan", "n/a", "null", "none", "?", "."}

DATASETS = ("sunspots", "co2", "nile", "airpassengers")


@dataclass
class Series:
    name: str
    values: np.ndarray          # (T,) float64, missing values already interpolated
    labels: list                # (T,) a printable time label per point
    season: int | None          # period of the seasonal naive baseline, None if there is no season
    missing: int = 0            # how many values were interpolated
    missing_at: list = field(default_factory=list)   # labels of the interpolated points (first 20)

    def __len__(self):
        return len(self.values)


def interpolate_missing(values):
    """Fill NaNs linearly between observed neighbours; returns (filled copy, boolean mask of filled)."""
    y = np.asarray(values, dtype=np.float64).copy()
    gap = np.isnan(y)
    if gap.all():
        raise ValueError("values: every value is missing; nothing to interpolate from")
    if gap.any():
        t = np.arange(len(y))
        y[gap] = np.interp(t[gap], t[~gap], y[~gap])    # np.interp holds the end values flat
    return y, gap


def _series(name, raw, labels, season):
    y, gap = interpolate_missing(raw)
    return Series(name, y, [str(s) for s in labels], season, int(gap.sum()),
                  [str(labels[i]) for i in np.flatnonzero(gap)[:20]])


def load_dataset(name):
    """One of ``DATASETS``, loaded offline from the package that ships it."""
    if name == "airpassengers":
        pm = require("pmdarima.datasets", "the airpassengers data set")
        y = pm.load_airpassengers()
        labels = [f"{1949 + i // 12}-{i % 12 + 1:02d}" for i in range(len(y))]
        return _series(name, y, labels, 12)
    if name not in DATASETS:
        raise UsageError(f"dataset: expected one of {', '.join(DATASETS)}, got {name!r}")
    ds = require(f"statsmodels.datasets.{name}", f"the {name} data set")
    df = ds.load_pandas().data
    if name == "sunspots":
        # Yearly; the ~11-year solar cycle is the nearest thing to a season (it varies 9-14 years).
        return _series(name, df["SUNACTIVITY"].to_numpy(), df["YEAR"].astype(int).tolist(), 11)
    if name == "nile":
        return _series(name, df["volume"].to_numpy(), df["year"].astype(int).tolist(), None)
    # co2: weekly from 1958, 59 missing weeks; the yearly cycle is 52 weeks.
    return _series(name, df["co2"].to_numpy(), [d.date().isoformat() for d in df.index], 52)


def _number(cell):
    """A CSV cell as a float, NaN for a missing marker, None if it is not a number."""
    text = cell.strip()
    if text.lower() in MISSING_MARKERS:
        return math.nan
    try:
        return float(text)
    except ValueError:
        return None


def read_csv(path, column=None, time_column=None, season=None):
    """Read one numeric column of a CSV with a header row.

    ``column`` may be omitted when exactly one column is numeric. Missing cells
    are interpolated and counted; a cell that is neither a number nor a missing
    marker is an error naming its row.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--csv: no such file {str(path)!r}")
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.reader(f) if any(c.strip() for c in r)]
    if not rows:
        raise UsageError(f"--csv: {path} is empty; expected a header row and then one row per time point")
    header, body = [h.strip() for h in rows[0]], rows[1:]
    if not body:
        raise UsageError(f"--csv: {path} has a header but no data rows")
    cols = {h: [r[j] if j < len(r) else "" for r in body] for j, h in enumerate(header)}
    numeric = [h for h, cells in cols.items()
               if h != time_column and all(_number(c) is not None for c in cells)
               and not all(math.isnan(_number(c)) for c in cells)]
    if column is None:
        if len(numeric) != 1:
            found = "no numeric column" if not numeric else f"several numeric columns {numeric}"
            raise UsageError(f"--csv: {path} has {found}; name the one to forecast with --column "
                             f"(columns: {header})")
        column = numeric[0]
    if column not in cols:
        raise UsageError(f"--column: {path} has no column {column!r}; its columns are {header}")
    if time_column is not None and time_column not in cols:
        raise UsageError(f"--time-column: {path} has no column {time_column!r}; its columns are {header}")
    values = []
    for i, cell in enumerate(cols[column]):
        v = _number(cell)
        if v is None:
            kind = "has no numeric column" if not numeric else f"column {column!r} is not numeric"
            raise UsageError(f"--csv: {path} {kind}: row {i + 2} holds {cell.strip()!r}")
        values.append(v)
    values = np.array(values, dtype=np.float64)
    if np.isnan(values).all():
        raise UsageError(f"--column: every value of {column!r} in {path} is missing")
    if not np.isfinite(values[~np.isnan(values)]).all():
        raise UsageError(f"--column: {column!r} in {path} holds an infinite value")
    labels = cols[time_column] if time_column else [str(i) for i in range(len(values))]
    return _series(f"{path.stem}:{column}", values, [s.strip() for s in labels], season)
