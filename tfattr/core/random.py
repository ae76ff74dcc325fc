"""The seeded random streams every random draw of tfattr comes from.

One user seed feeds several independent streams, one per purpose (uniform and Gaussian
baselines, NoiseTunnel's noise, SmoothTaylor's roots), so that changing how many draws one
purpose takes never shifts the draws of another. A stream's draws depend on the seed, the
stream and the block index only, never on the batch: every example of a batch gets the same
draws, and an example's result is the same alone or in a batch.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["STREAM_UNIFORM", "STREAM_GAUSSIAN", "STREAM_NOISE_TUNNEL", "STREAM_SMOOTH_TAYLOR", "rng"]

# Independent random streams per purpose, all derived from the user's seed.
STREAM_UNIFORM = 1
STREAM_GAUSSIAN = 2
STREAM_NOISE_TUNNEL = 3
STREAM_SMOOTH_TAYLOR = 4


def rng(seed: Optional[int], stream: int, block: int = 0) -> np.random.Generator:
    """The NumPy generator of one random stream for a user seed (``None`` = fresh entropy).

    ``block`` > 0 gives further independent blocks of the same stream (the extra draws of a
    Monte-Carlo tolerance); block 0 is ``default_rng([seed, stream])``.

    Example:
        >>> rng(0, STREAM_UNIFORM).uniform(size=2).shape
        (2,)
    """
    if seed is None:
        return np.random.default_rng()
    if block == 0:
        return np.random.default_rng([int(seed), int(stream)])
    return np.random.default_rng([int(seed), int(stream), int(block)])
