"""Registers the built-in predictors through the same hook third-party plugins use."""

from wsbench.hookspecs import hookimpl
from wsbench.predictors import CNN3DPredictor, MedSAMPredictor, RadImageNetPredictor


@hookimpl
def register_predictors(register):
    register(CNN3DPredictor)
    register(RadImageNetPredictor)
    register(MedSAMPredictor)
