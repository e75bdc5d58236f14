"""rnnlab: recurrent networks from first principles in NumPy.

Public API (everything else is private by name or lives in a documented submodule):

    RNN, LSTM, GRU          multi-layer recurrent layers with backprop through time
    cells                   the pure one-step functions behind them
    nn                      Embedding, Linear, Dropout, Sequential (forward/backward modules)
    losses                  softmax cross-entropy, sigmoid BCE, MSE: (loss, gradient)
    optim                   SGD, Adagrad, RMSprop, Adam, AdamW, schedules, gradient clipping
    gradcheck               float64 central-difference gradient checks of a layer
    parity                  compare a layer with torch.nn.RNN/LSTM/GRU (imports torch only when called)
    CharLM, CharLMConfig    the character language model (Embedding -> LSTM/GRU/RNN -> Linear)
    data                    text files, vocabulary, the Shakespeare corpus
    train                   truncated BPTT streams, Trainer, safetensors checkpoints, metrics
    tasks                   forecasting, sequence classification, sentiment, with their baselines
    lab                     gradient horizon, gate statistics, NaN forensics, memory tasks and reports
"""
from . import cells, gradcheck, losses, nn, optim, parity
from . import data, train
from .charlm import CharLM, CharLMConfig
from .recurrent import GRU, LSTM, RNN
from . import tasks  # after the layers: tasks builds its model from them
from . import lab

__version__ = "0.1.0"

__all__ = ["RNN", "LSTM", "GRU", "cells", "nn", "losses", "optim", "gradcheck", "parity",
           "CharLM", "CharLMConfig", "data", "train", "tasks", "lab", "__version__"]
