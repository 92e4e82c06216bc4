#!/usr/bin/python3
"""Write a PyTorch-initialized SeedCNN to a safetensors file.

`nnopt train --init FILE` can then start from exactly the weights PyTorch's
default initialization gives under torch.manual_seed(SEED), for comparing a
PyTorch training run with an nnopt one from the same starting point.

    /usr/bin/python3 scripts/torch_export_init.py OUT.safetensors [--seed S]
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pydeps import require  # noqa: E402  (says how to install a missing module)

require("numpy", "torch")
import torch  # noqa: E402

from seed_cnn import SeedCNN  # noqa: E402
from st_io import write_safetensors  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description="Write a PyTorch-initialized SeedCNN "
                                             "to a safetensors file.")
    ap.add_argument("output", help="safetensors file to write")
    ap.add_argument("--seed", type=int, default=0, help="torch.manual_seed (default 0)")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    model = SeedCNN()
    tensors = {name: p.detach().numpy() for name, p in model.state_dict().items()}
    # "format"/"format_version" as nnopt's own checkpoints (src/io/checkpoint.c) write them.
    metadata = {"format": "nnopt", "format_version": "1", "source": "torch_export_init.py",
                "torch": torch.__version__, "torch_seed": str(args.seed)}
    write_safetensors(args.output, tensors, metadata)
    total = sum(t.size for t in tensors.values())
    print(f"wrote {args.output}: {len(tensors)} tensors, {total} parameters, seed {args.seed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
