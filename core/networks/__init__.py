"""The networks (``torch.nn.Module``s), state-dict compatible with the published weights.

They import only ``core.layers``; loading weights and running them on frames is ``core.models``' job.
"""
