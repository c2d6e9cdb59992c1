"""Abstract plugin interfaces: the four roles a plugin can fill."""

from wsbench.interfaces.plugin import Plugin, Trainable
from wsbench.interfaces.predictor import Predictor
from wsbench.interfaces.generator import Generator
from wsbench.interfaces.segmenter import Segmenter
from wsbench.interfaces.dataset import Dataset

ROLES = {
    "predictor": Predictor,
    "generator": Generator,
    "segmenter": Segmenter,
    "dataset": Dataset,
}

__all__ = ["Plugin", "Trainable", "Predictor", "Generator", "Segmenter", "Dataset", "ROLES"]
