"""Training tools: truncated BPTT over stateful streams, the trainer, safetensors checkpoints, metrics.

    Streams, tbptt_step         tbptt.py       N parallel streams, TBPTT(k1, k2), resets at document starts
    Trainer, TrainConfig        trainer.py     the loop, evaluation, early stopping, resume
    evaluate                    trainer.py     loss / perplexity / bits per char / accuracy over streams
    save_checkpoint, load_checkpoint   checkpoint.py   atomic safetensors files, no pickle
    Tally, MetricsLog           metrics.py     metric sums and the metrics.jsonl log
"""
from .checkpoint import load_checkpoint, save_checkpoint
from .metrics import MetricsLog, Tally
from .tbptt import IGNORE, Streams, tbptt_step
from .trainer import Diverged, TrainConfig, Trainer, evaluate, load_run

__all__ = ["Streams", "tbptt_step", "IGNORE", "Trainer", "TrainConfig", "Diverged", "evaluate", "load_run",
           "save_checkpoint", "load_checkpoint", "Tally", "MetricsLog"]
