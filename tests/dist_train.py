"""tools/train_net.py under torchrun with a recorder (and, when asked, a deterministic kill),
for tests/test_distributed.py:

    python -m torch.distributed.run ... tests/dist_train.py RECORD_DIR [KILL_RANK KILL_ITER] \
        [--before TOOL.py ARGS --then TOOL.py ARGS ...] -- ARGS

runs train_net.py's command line ARGS in every process, after the tool runs given with
--before (tests/dist_tools.py: in the same process group, not recorded), which share the
job's start-up. Each process appends, to
RECORD_DIR/rank<R>.jsonl, its training sampler's seed, one line per training step
(iteration, image paths, pids of its batch, sum of the weights after the step) and one per
file it writes atomically (checkpoints, model_best, results.json). The process of rank
KILL_RANK sends itself SIGKILL when it starts training step KILL_ITER, once every rank has
recorded step KILL_ITER - 1 (a barrier there).
"""

import json
import os
import runpy
import signal
import sys

import lastreid  # noqa: F401  (patches fastreid; must come first)
from lastreid import atomic, engine, resume
from lastreid.fastreid_internals import batch_iterator, set_batch_iterator, step_runner

import dist_tools
import torch

TRAIN_NET = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "train_net.py"
)


def main(argv):
    split = argv.index("--")
    own, args = argv[:split], argv[split + 1 :]
    before = own.index("--before") if "--before" in own else len(own)
    own, before = own[:before], own[before + 1 :]
    record_dir, kill = own[0], tuple(int(x) for x in own[1:3])
    if before:
        code = dist_tools.run_all(dist_tools.split(before), leave=False)
        if code:
            sys.exit(code)
    rank = int(os.environ["RANK"])
    record_path = os.path.join(record_dir, f"rank{rank}.jsonl")

    def record(**entry):
        with open(record_path, "a") as f:
            f.write(json.dumps(entry) + "\n")

    write_atomic = atomic.write_atomic

    def recorded_write(path, write):
        record(wrote=os.path.basename(path))
        return write_atomic(path, write)

    atomic.write_atomic = resume.write_atomic = recorded_write
    run_step = engine.Trainer.run_step

    def recorded_step(self):
        if kill == (rank, self.iter):
            os.kill(os.getpid(), signal.SIGKILL)
        step = step_runner(self)
        if not hasattr(step, "last_batch"):
            record(seed=self.data_loader.batch_sampler.stream_seed)  # fastreid sampler's
            batches = batch_iterator(step)

            def keep_last():
                for batch in batches:
                    step.last_batch = batch  # the spy's own attribute
                    yield batch

            set_batch_iterator(step, keep_last())
        run_step(self)
        batch = step.last_batch
        # DDP keeps the processes' weights equal: their sums say so after every step.
        weights = float(sum(p.detach().double().sum() for p in self.model.parameters()))
        record(
            iteration=self.iter,
            paths=list(batch["img_paths"]),
            pids=[int(p) for p in batch["targets"]],
            weights=weights,
        )
        if kill and self.iter == kill[1] - 1:
            # Every rank has recorded the last step before the kill when the killing rank
            # goes on to kill itself: torchrun's stop of the others cannot overtake a record.
            torch.distributed.barrier()

    engine.Trainer.run_step = recorded_step
    sys.argv = [TRAIN_NET] + args
    runpy.run_path(TRAIN_NET, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
