"""The training application: configuration, trainer, evaluation and their bookkeeping.

``config`` (``TrainConfig`` and the builders of data, network and weighting),
``sampling`` (resumable data order and seeded augmentation), ``objective``
(network + loss as one module), ``trainer``, ``evaluation`` (paper metrics in
``metrics``, official Cityscapes scores in ``cityscapes_eval``, instance grouping
in ``postprocess``), ``checkpoint``, ``distributed`` and ``plots``. It builds on
the loss library (``fastmtl``), ``fastmtl.models`` and ``fastmtl.data``; nothing
there imports from here.
"""
from fastmtl.engine.config import TrainConfig
from fastmtl.engine.evaluation import evaluate, evaluate_official, load_model
from fastmtl.engine.trainer import Trainer, train

__all__ = ["TrainConfig", "Trainer", "evaluate", "evaluate_official", "load_model", "train"]
