"""lastreid.gather.gather_rows over two gloo processes: uneven shares (one empty), several
rounds of small chunks, into the main process's own buffer (tensor) or a new array (numpy),
in rank order; the other process gets None."""

import lastreid  # noqa: F401  (patches fastreid first)

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2


def _worker(rank, init_file, result_file, counts):
    from lastreid.gather import gather_rows

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        dim, start = 3, sum(counts[:rank])
        rows = torch.arange(start * dim, (start + counts[rank]) * dim, dtype=torch.float32)
        rows = rows.reshape(-1, dim)
        # Tensor path: the main process's share sits at the top of a buffer of all the rows.
        buf = torch.full((sum(counts) + 2, dim), -1.0) if rank == 0 else None
        if rank == 0:
            buf[: counts[0]] = rows
        local = buf[: counts[0]] if rank == 0 else rows
        tensors = gather_rows(local, out=buf, chunk_rows=2)
        arrays = gather_rows(rows.numpy(), chunk_rows=3)  # numpy, allocated by gather_rows
        if rank == 0:
            np.savez(result_file, tensors=tensors.numpy(), arrays=arrays, buffer=buf.numpy())
        else:
            assert tensors is None and arrays is None
    finally:
        dist.destroy_process_group()


def test_gather_rows_fills_the_main_buffer_in_rank_order(tmp_path):
    for counts in ((5, 3), (0, 4)):
        init, out = tmp_path / f"init{counts}", tmp_path / f"out{counts}.npz"
        # Forked: the children start with this process's imports (no CUDA here to fork).
        mp.start_processes(
            _worker, args=(str(init), str(out), counts), nprocs=WORLD, start_method="fork"
        )
        total = sum(counts)
        expected = np.arange(total * 3, dtype=np.float32).reshape(total, 3)
        with np.load(out) as got:
            np.testing.assert_array_equal(got["tensors"], expected)
            np.testing.assert_array_equal(got["arrays"], expected)
            np.testing.assert_array_equal(got["buffer"][:total], expected)  # in place
            assert (got["buffer"][total:] == -1).all()
