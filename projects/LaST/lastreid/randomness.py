"""Random streams that survive a kill: a resumed run draws exactly what the uninterrupted run
would have drawn (docs/training.md: Resuming).

- Each process seeds Python, NumPy and torch with SEED + rank (`process_seed`), as detectron2
  does; fastreid's identity sampler keeps one stream shared by all processes.
- Every training image's augmentation draws from its own seed, a function of the sampler's
  seed, the batch number and the image's place in the global batch (`TrainBatches`,
  `seeded`): the same whichever loader worker (or the main process) decodes it, and whatever
  DATALOADER.NUM_WORKERS is.
- A checkpoint keeps each process's generator states and the sampler's seed
  (`capture_states`, `restore_states`); on resume the sampler skips the batches already
  trained on.
"""

import contextlib
import itertools
import random

import numpy as np
import torch

from .fastreid_internals import sampler_seed, set_sampler_seed

__all__ = [
    "TrainBatches",
    "capture_states",
    "process_seed",
    "restore_states",
    "sample_seed",
    "seeded",
]


def process_seed(seed, rank):
    """The seed of a process's generators: SEED + rank (None for a fresh one)."""
    return None if seed < 0 else int(seed) + int(rank)


def sample_seed(stream_seed, batch, position):
    """The seed of the image at `position` of global batch `batch` of a sampler stream."""
    return int(np.random.SeedSequence((stream_seed, batch, position)).generate_state(1)[0])


@contextlib.contextmanager
def seeded(seed):
    """Python's, NumPy's and torch's (CPU) global generators seeded with `seed` inside the
    block. In the main process (DATALOADER.NUM_WORKERS 0) their states are given back after
    it, so the caller's streams do not move; a loader worker has no other use for them."""
    main = torch.utils.data.get_worker_info() is None
    if main:
        saved = random.getstate(), np.random.get_state(), torch.default_generator.get_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        if main:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.default_generator.set_state(saved[2])


class TrainBatches(torch.utils.data.Sampler):
    """The training batches of one process: lists of (index, augmentation seed), drawn from
    fastreid's training `sampler` (an endless index stream, this process's share of every
    global batch) `batch_size` at a time.

    The sampler runs on its own copy of NumPy's global state, swapped in for each batch:
    fastreid's samplers seed that global generator once and draw from it, and anything else
    drawing from it in between (a transform in the main process) would move every later
    batch, and make the processes' shares of one global batch disagree. `offset` is this
    process's first place in the global batch; `start` batches are skipped (those a resumed
    run trained on before the kill)."""

    def __init__(self, sampler, batch_size, offset=0):
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.offset = int(offset)
        self.start = 0

    @property
    def stream_seed(self):
        """The seed of the sampler's stream: fastreid's shared seed, or a resumed run's."""
        return sampler_seed(self.sampler)

    @stream_seed.setter
    def stream_seed(self, seed):
        set_sampler_seed(self.sampler, seed)

    def __iter__(self):
        seed, stream = self.stream_seed, iter(self.sampler)
        own = np.random.get_state()  # replaced at once: the sampler seeds it itself

        def draw(count):
            nonlocal own
            outer = np.random.get_state()
            np.random.set_state(own)
            try:
                return [next(stream) for _ in range(count)]
            finally:
                own = np.random.get_state()
                np.random.set_state(outer)

        draw(self.start * self.batch_size)
        for number in itertools.count(self.start):
            batch = draw(self.batch_size)
            yield [(i, sample_seed(seed, number, self.offset + j)) for j, i in enumerate(batch)]


def _python_state(state):
    version, keys, gauss = state
    return [version, list(keys), gauss]


def capture_states():
    """This process's generator states, in a form a weights-only checkpoint holds."""
    keys, pos, has_gauss, cached = np.random.get_state()[1:]
    states = {
        "python": _python_state(random.getstate()),
        "numpy": [torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_states(states):
    """Puts back what `capture_states` returned."""
    version, keys, gauss = states["python"]
    random.setstate((version, tuple(keys), gauss))
    keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
