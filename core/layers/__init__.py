"""Building blocks shared by the networks and the pipeline: warping, softmax splatting, padding and frame conversion.

Nothing here knows a model: this package imports no network, adapter or pipeline module.
"""
