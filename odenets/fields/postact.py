"""He et al.'s original (post-activation) basic block as a vector field: conv-norm-act ordering."""

from __future__ import annotations

from odenets.fields.conv import ConvField


class PostActConvField(ConvField):
    """F(t, x) = GN(conv2(t, relu(GN(conv1(t, x))))): the conv-norm-act ordering of He et al. (2016a).

    The ReLU that follows the addition in the original block is not part of the branch F (an
    ODE step adds F to x and nothing else), so F ends with a norm. `ConvField` is the other
    ordering (norm-act-conv, He et al. 2016b / Chen et al.). GroupNorm with min(32, channels)
    groups, SAME padding, channels-last, `ndim` spatial axes; `time=True` makes both convolutions
    ConcatConvs (t as one extra input channel).
    """

    def __init__(self, channels: int, **options):
        super().__init__(channels, preact=False, **options)
