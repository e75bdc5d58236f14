"""Real sequence tasks, each measured against the baseline a practitioner tries first.

    forecast     next value of a time series (sunspots, co2, nile, airpassengers, a CSV)
                 vs naive, seasonal naive and ARIMA by AIC           forecast.py, baselines.py
    classify     a whole sequence's class (JapaneseVowels, digits, MNIST rows, .ts, .npz)
                 many-to-one with variable lengths                   classify.py
    sentiment    a sentence's polarity, word level (movie-review snippets, a TSV)
                 vs the VADER analyzer                               sentiment.py

Data loading: series_data.py, sequence_data.py, text_data.py. Preprocessing for
forecasting: windows.py. The shared model and training loop: model.py, fit.py.
Results and checkpoints: run_folder.py; figures: plots.py; figures of merit: metrics.py.
The command line is ``rnnlab.commands.tasks``.
"""
from .classify import ClassifyConfig, train_classify
from .forecast import ForecastConfig, train_forecast
from .model import SequenceModel
from .sentiment import SentimentConfig, train_sentiment

__all__ = ["SequenceModel", "ForecastConfig", "train_forecast", "ClassifyConfig", "train_classify",
           "SentimentConfig", "train_sentiment"]
