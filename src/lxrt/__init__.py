"""LXMERT-S: the model library (config, modeling, tokenization, optimization, loading).

This package does no argument parsing and owns no device: the training application in
`tasks` decides where tensors live and in which precision they run.
"""
from lxrt.config import LXRTConfig

__all__ = ["LXRTConfig"]
