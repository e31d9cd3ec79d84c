"""Test harness: runs a tool in this process with the disk full at one exact write.

    python tests/fail_write.py NAME HOW tools/train_net.py ARGS...

The first atomic write of a file named NAME (lastreid.atomic) fails as a full disk does:
HOW `enospc` points its temporary file's descriptor at /dev/full (every write to it fails
with errno 28, as the kernel says it); HOW `torch` makes torch.save, having written part
of the file, raise the RuntimeError PyTorch's zip writer raises when the disk fills inside
it. Later writes of NAME (a resumed run) go through. The patch lives in this process only,
so the product has no test switches.
"""

import os
import runpy
import sys

import lastreid  # noqa: F401  (patches fastreid first, as the tools do)
import torch
from lastreid import atomic

TORCH_SHORT_WRITE = (
    "[enforce fail at inline_container.cc:672] . unexpected pos 50196864 vs 50196760"
)


def install(name, how):
    original_temporary, original_save = atomic._temporary, torch.save
    state = {"armed": True, "target_fd": None}

    def temporary(path):
        folder, tmp, fd = original_temporary(path)
        if state["armed"] and os.path.basename(path) == name:
            state["armed"] = False
            if how == "enospc":
                os.close(fd)
                fd = os.open("/dev/full", os.O_WRONLY)
            else:
                state["target_fd"] = fd
        return folder, tmp, fd

    def save(obj, f, *args, **kwargs):
        target = state["target_fd"]
        if target is not None and hasattr(f, "fileno") and f.fileno() == target:
            state["target_fd"] = None
            f.write(b"PK\x03\x04" + bytes(1024))  # a start, as torch's writer leaves it
            raise RuntimeError(TORCH_SHORT_WRITE)
        return original_save(obj, f, *args, **kwargs)

    atomic._temporary = temporary
    torch.save = save


if __name__ == "__main__":
    install(sys.argv[1], sys.argv[2])
    sys.argv = sys.argv[3:]
    runpy.run_path(sys.argv[0], run_name="__main__")
