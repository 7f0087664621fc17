"""Experiment configs (`get_config()` in each module), installed with the package.

Every command takes `--config=NAME` (a module here, e.g. `quick_start`, optionally
`NAME:arg`) or `--config=PATH` to any config file; in a checkout `configs/` at the top of the
repository is this folder.
"""
import os

FOLDER = os.path.dirname(os.path.abspath(__file__))
