#!/usr/bin/python3
"""Evaluate an nnopt safetensors checkpoint in PyTorch on the Fashion-MNIST test set.

Loads the checkpoint's parameters into SeedCNN (scripts/seed_cnn.py) with
load_state_dict(strict=True), so every name and shape must match; optimizer
state tensors ("optimizer.*"), early stopping's best copy ("__best__.*"),
weight averaging's average ("__ema__.*") and metadata are ignored. Then evaluates the
10,000 t10k images, normalized as nnopt does: (x/255 - 0.2860) / 0.3530.

    /usr/bin/python3 scripts/torch_eval_checkpoint.py CKPT [--data DIR] [--json]

Prints "test_accuracy <pct> test_loss <mean CE>", or a JSON object with --json.
"""

import argparse
import gzip
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pydeps import require  # noqa: E402  (says how to install a missing module)

require("numpy", "torch")
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from seed_cnn import FASHION_MNIST_MEAN, FASHION_MNIST_STD, SeedCNN  # noqa: E402
from st_io import model_state, read_safetensors  # noqa: E402
from nnopt_model import NnoptModel  # noqa: E402

DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"  # NN_DEFAULT_DATA_DIR
IDX_IMAGES_MAGIC = 0x00000803  # u8 data, 3 dims
IDX_LABELS_MAGIC = 0x00000801  # u8 data, 1 dim


def read_idx(path, magic):
    """Read a gzip-compressed (or raw) IDX file; returns a uint8 array of its dims."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        blob = f.read()
    if len(blob) < 4:
        raise ValueError(f"{path}: too short for an IDX header")
    got = int.from_bytes(blob[:4], "big")
    if got != magic:
        raise ValueError(f"{path}: magic 0x{got:08x}, expected 0x{magic:08x}")
    ndim = magic & 0xFF
    head = 4 + 4 * ndim
    if len(blob) < head:
        raise ValueError(f"{path}: too short for {ndim} dimensions")
    dims = [int.from_bytes(blob[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    count = int(np.prod(dims))
    if len(blob) - head != count:
        raise ValueError(f"{path}: {len(blob) - head} data bytes, dims {dims} need {count}")
    return np.frombuffer(blob, dtype=np.uint8, offset=head).reshape(dims)


def find_file(data_dir, name):
    """data_dir/name.gz, or the uncompressed data_dir/name."""
    for candidate in (os.path.join(data_dir, name + ".gz"), os.path.join(data_dir, name)):
        if os.path.exists(candidate):
            return candidate
    raise FileNotFoundError(f"{os.path.join(data_dir, name)}[.gz]: not found")


def load_test_set(data_dir):
    """Returns x (N, 1, 28, 28) float32 normalized and y (N,) int64."""
    images = read_idx(find_file(data_dir, "t10k-images-idx3-ubyte"), IDX_IMAGES_MAGIC)
    labels = read_idx(find_file(data_dir, "t10k-labels-idx1-ubyte"), IDX_LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{data_dir}: {images.shape[0]} images but {labels.shape[0]} labels")
    # Same float32 operations, in the same order, as nnopt and torchvision.
    x = images.astype(np.float32) / np.float32(255.0)
    x = (x - np.float32(FASHION_MNIST_MEAN)) / np.float32(FASHION_MNIST_STD)
    return (torch.from_numpy(x.reshape(-1, 1, images.shape[1], images.shape[2])),
            torch.from_numpy(labels.astype(np.int64)))


def load_checkpoint(model, path):
    """Load an nnopt checkpoint into model (strict); returns the file's metadata."""
    tensors, metadata = read_safetensors(path)
    state = {k: torch.from_numpy(v) for k, v in model_state(tensors).items()}
    model.load_state_dict(state, strict=True)
    return metadata


@torch.no_grad()
def evaluate(model, x, y, batch_size):
    """Mean cross-entropy loss and accuracy (fraction) over x, y."""
    model.eval()
    loss_sum, correct = 0.0, 0
    for i in range(0, x.shape[0], batch_size):
        logits = model(x[i:i + batch_size])
        target = y[i:i + batch_size]
        loss_sum += F.cross_entropy(logits, target, reduction="sum").item()
        correct += (logits.argmax(dim=1) == target).sum().item()
    return loss_sum / x.shape[0], correct / x.shape[0]


def main():
    ap = argparse.ArgumentParser(description="Evaluate an nnopt checkpoint in PyTorch "
                                             "on the Fashion-MNIST test set.")
    ap.add_argument("checkpoint", help="nnopt safetensors checkpoint")
    ap.add_argument("--data", default=DEFAULT_DATA_DIR,
                    help=f"Fashion-MNIST directory (default {DEFAULT_DATA_DIR})")
    ap.add_argument("--batch", type=int, default=1000, help="evaluation batch size")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--model", default=None,
                    help="nnopt model file to build the torch module from (default: the seed CNN)")
    args = ap.parse_args()

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        model = NnoptModel(args.model) if args.model else SeedCNN()
        metadata = load_checkpoint(model, args.checkpoint)
        x, y = load_test_set(args.data)
    except (OSError, ValueError, RuntimeError) as e:
        print(f"torch_eval_checkpoint: {e}", file=sys.stderr)
        return 1
    loss, acc = evaluate(model, x, y, args.batch)

    if args.json:
        print(json.dumps({"checkpoint": args.checkpoint, "samples": int(x.shape[0]),
                          "test_accuracy": round(100.0 * acc, 4), "test_loss": loss,
                          "metadata": metadata, "torch": torch.__version__}))
    else:
        print("test_accuracy %.2f test_loss %.6f" % (100.0 * acc, loss))
    return 0


if __name__ == "__main__":
    sys.exit(main())
