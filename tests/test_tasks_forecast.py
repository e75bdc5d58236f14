"""Forecasting: split and scaling without leakage, baselines checked by hand, a small run end to end,
and bad input rejected in one line with nothing written."""
import itertools
import json

import numpy as np
import pytest

from rnnlab.cli import main
from rnnlab.tasks import baselines as B
from rnnlab.tasks.metrics import forecast_errors
from rnnlab.tasks.series_data import interpolate_missing, load_dataset, read_csv
from rnnlab.tasks.windows import Scaler, chronological_split, windows

pytest.importorskip("statsmodels")


def cli(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_split_is_chronological_and_windows_stay_in_their_part():
    rng = np.random.default_rng(1)
    y = rng.normal(size=100).cumsum()
    s = chronological_split(100, 10, test_fraction=0.2, val_fraction=0.25)
    assert (s.val_start, s.test_start, s.end) == (60, 80, 100)
    z = Scaler.fit(y[:60]).transform(y)
    assert abs(z[:60].mean()) < 1e-12 and abs(z[:60].std() - 1) < 1e-12
    X, t, idx = windows(z, 10, 10, 60)
    assert idx[0] == 10 and idx[-1] == 59               # no training target beyond the training part
    np.testing.assert_array_equal(X[5, :, 0], z[5:15])  # inputs are the 10 values before target 15
    assert t[5] == z[15]
    _, _, idx_test = windows(z, 10, 80, 100)
    assert idx_test.tolist() == list(range(80, 100))


def test_saved_scaler_and_network_never_see_the_held_out_part(tmp_path, capsys):
    """End to end: the same training on a series, on a copy whose held-out part is moved by +1000,
    and on one whose validation and held-out parts are. The scaler saved with the run must be the
    mean and std of the training part in all three; with only the held-out part changed, the
    trained network must be bit-identical too (the validation part picks the epoch, so it may not be)."""
    rng = np.random.default_rng(2)
    T, W = 120, 8
    y = 10 + np.sin(np.arange(T) * 2 * np.pi / 11) + 0.3 * rng.normal(size=T)
    s = chronological_split(T, W)                        # the defaults the CLI uses
    a, b = s.val_start, s.test_start
    moved_test, moved_val_test = y.copy(), y.copy()
    moved_test[b:] += 1000.0
    moved_val_test[a:] += 1000.0
    runs = {}
    for name, series in (("base", y), ("test", moved_test), ("val_test", moved_val_test)):
        f = tmp_path / f"{name}.csv"
        f.write_text("v\n" + "".join(f"{float(v)!r}\n" for v in series))
        run = tmp_path / name
        code, out, err = cli(["train", "forecast", "--csv", str(f), "--window", str(W), "--epochs", "3",
                              "--hidden", "4", "--arima-grid", "small", "--quiet", "--out", str(run)], capsys)
        assert code == 0, err
        from rnnlab.tasks.run_folder import load_run
        runs[name] = load_run(run, ["forecast"])
    train_part = y[:a]
    for name, (_, meta) in runs.items():
        assert meta["scaler"] == {"mean": float(train_part.mean()), "std": float(train_part.std())}, name
    assert runs["base"][1]["series"]["values"][b] != runs["test"][1]["series"]["values"][b]   # the change arrived
    base_model, test_model = runs["base"][0], runs["test"][0]
    for k, p in base_model.params.items():
        assert np.array_equal(p, test_model.params[k]), k


def test_interpolation_fills_and_counts():
    y, filled = interpolate_missing([1.0, np.nan, 3.0, np.nan, np.nan, 9.0, np.nan])
    np.testing.assert_allclose(y, [1, 2, 3, 5, 7, 9, 9])
    assert filled.sum() == 4
    co2 = load_dataset("co2")
    assert co2.missing == 59 and np.isfinite(co2.values).all() and len(co2) == 2284


def test_naive_and_seasonal_naive_by_hand():
    y = np.arange(20.0) ** 2
    np.testing.assert_array_equal(B.naive(y, [10, 12], 3), [[81, 81, 81], [121, 121, 121]])
    # season 4, origin 10: y_10, y_11, y_12, y_13, y_14 -> y_6, y_7, y_8, y_9, y_6 (one more season back)
    np.testing.assert_array_equal(B.seasonal_naive(y, [10], 5, 4)[0], y[[6, 7, 8, 9, 6]])


def test_arima_forecasts_match_the_ar1_formula():
    rng = np.random.default_rng(0)
    y = np.empty(300)
    y[0] = 5.0
    for t in range(1, 300):
        y[t] = 5.0 + 0.7 * (y[t - 1] - 5.0) + rng.normal()
    order, res, table = B.fit_arima(y[:250], {"p": [1], "d": [0], "q": [0]})
    assert order == (1, 0, 0) and len(table) == 1
    mu, phi = res.params[0], res.params[1]
    origins = np.arange(250, 297)
    one = B.arima_forecasts(res, y, origins, 1)[:, 0]
    np.testing.assert_allclose(one, mu + phi * (y[origins - 1] - mu), rtol=1e-6)
    three = B.arima_forecasts(res, y, origins, 3)
    expect = mu + phi ** np.arange(1, 4)[None, :] * (y[origins - 1] - mu)[:, None]
    np.testing.assert_allclose(three, expect, rtol=1e-6)
    assert 0.55 < phi < 0.85 and 4.0 < mu < 6.0


def test_arima_order_is_the_lowest_aic_over_the_grid():
    """On an AR(2) series, fit_arima tries every order of a 16-order grid and keeps the one with the
    lowest AIC; the AICs it reports are those of statsmodels fitting each order alone."""
    rng = np.random.default_rng(0)
    y = np.zeros(300)
    for t in range(2, 300):
        y[t] = 0.6 * y[t - 1] - 0.35 * y[t - 2] + rng.normal()
    y = y[50:]                                           # past the start-up from zeros
    grid = {"p": range(0, 4), "d": range(0, 2), "q": range(0, 2)}
    order, res, table = B.fit_arima(y, grid)
    assert len(table) == 16                              # every order fitted, none skipped
    best_order, best_aic = min(table, key=lambda row: row[1])
    assert list(order) == best_order and res.aic == best_aic
    assert order == (2, 0, 0)                            # and on this series AIC finds the true order
    from statsmodels.tsa.arima.model import ARIMA
    aic = dict((tuple(o), a) for o, a in table)
    for o in [(1, 0, 0), (2, 0, 0), (3, 0, 1)]:         # the table's AICs, checked by separate fits
        assert ARIMA(y, order=o).fit().aic == pytest.approx(aic[o], rel=1e-9)
    assert len(list(itertools.product(*B.ARIMA_GRID.values()))) == 36      # the grid the docs state


def test_mase_is_mae_over_in_sample_naive_error():
    train = np.array([1.0, 3.0, 2.0, 6.0])              # naive in-sample errors 2, 1, 4: mean 7/3
    r = forecast_errors([5.0, 7.0], [4.0, 9.0], train)
    assert r["mae"] == pytest.approx(1.5) and r["rmse"] == pytest.approx(np.sqrt(2.5))
    assert r["mase"] == pytest.approx(1.5 / (7 / 3))


def test_small_sunspots_run_end_to_end(tmp_path, capsys):
    run = tmp_path / "run"
    code, out, err = cli(["train", "forecast", "--dataset", "sunspots", "--epochs", "8", "--hidden", "8",
                          "--window", "12", "--arima-grid", "small", "--horizon", "2", "--quiet",
                          "--out", str(run)], capsys)
    assert code == 0, err
    res = json.loads((run / "results.json").read_text())
    for fig in ("rmse", "mae", "mase"):
        assert np.isfinite(res[fig])
        for name in ("naive", "seasonal_naive", "arima"):
            assert np.isfinite(res["baselines"][name][fig])
    assert res["split"]["test"] == ["1947", "2008"] and res["split"]["test_points"] == 62
    assert res["multi_step"]["horizon"] == 2
    assert res["baselines_notes"]["arima"]["orders_fitted"] > 1           # chosen by AIC over a grid
    assert (run / "forecast.png").stat().st_size > 10_000
    # the reported RMSE is what the saved model gives on the held-out windows
    from rnnlab.tasks.run_folder import load_run
    model, meta = load_run(run, ["forecast"])
    y = np.array(meta["series"]["values"])
    sc = Scaler(**meta["scaler"])
    X, _, idx = windows(sc.transform(y), 12, 247, len(y))
    pred = sc.inverse(model.predict(X)[:, 0])
    assert np.sqrt(np.mean((pred - y[idx]) ** 2)) == pytest.approx(res["rmse"], rel=1e-9)
    code, out, err = cli(["forecast", str(run), "--steps", "4", "--plot", str(tmp_path / "f.png")], capsys)
    assert code == 0, err
    assert out.count("\n  +") == 4 and (tmp_path / "f.png").exists()
    # a second run into the same folder is refused, and the first run's results survive
    before = (run / "results.json").read_bytes()
    code, _, err = cli(["train", "forecast", "--dataset", "nile", "--out", str(run), "--quiet"], capsys)
    assert code == 2 and "already exists" in err and (run / "results.json").read_bytes() == before


def test_csv_with_missing_values_is_interpolated_and_reported(tmp_path):
    f = tmp_path / "s.csv"
    f.write_text("when,value\n" + "\n".join(f"{i},{'' if i in (3, 7) else i * 2}" for i in range(30)) + "\n")
    s = read_csv(f, "value", "when")
    assert s.missing == 2 and s.missing_at == ["3", "7"] and s.values[3] == 6.0


@pytest.mark.parametrize("content, extra, needle", [
    ("name,city\nann,paris\nbob,rome\n", [], "no numeric column"),
    ("t,v\n1,2\n2,3\n3,4\n", ["--column", "w"], "no column 'w'"),
    ("t,v\n" + "".join(f"{i},{i}\n" for i in range(8)), ["--column", "v", "--window", "5"], "too few"),
    ("t,v\n" + "".join(f"{i},{i}\n" for i in range(5)), ["--column", "v", "--window", "10"], "fewer than one window"),
    ("", [], "is empty"),
    ("t,v\n1,2\n2,x\n", ["--column", "v"], "row 3"),
])
def test_bad_csv_one_line_exit_2_nothing_written(tmp_path, capsys, content, extra, needle):
    f = tmp_path / "in.csv"
    f.write_text(content)
    run = tmp_path / "run"
    code, out, err = cli(["train", "forecast", "--csv", str(f), "--out", str(run), "--quiet", *extra], capsys)
    assert code == 2
    assert err.count("\n") == 1 and needle in err, err
    assert not run.exists()


def test_missing_optional_package_names_the_extra(tmp_path, capsys, monkeypatch):
    import sys
    for mod in [m for m in sys.modules if m.startswith("statsmodels")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "statsmodels", None)      # import statsmodels now fails
    code, out, err = cli(["train", "forecast", "--dataset", "nile", "--out", str(tmp_path / "r"), "--quiet"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "pip install rnnlab[data]" in err and "statsmodels" in err
