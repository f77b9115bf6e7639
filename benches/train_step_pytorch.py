#!/usr/bin/env python3
"""PyTorch twin of benches/train_step.rs: one Adam training step of the reference 1-D CNN on a
batch of 64 windows [6, 128], and one full epoch over 7,400 random windows, on the CPU.

    python3 benches/train_step_pytorch.py [--threads N] [--repeats R]

The model, loss (cross-entropy), optimiser (Adam, lr 2e-3) and batch size are those of
benches/train_step.rs and examples/train_hapt.rs, so the printed figures can be set beside
`cargo bench --bench train_step` and `cargo run --release --example train_hapt`. Data are random
(the time of a step does not depend on the values); the epoch shuffles with a seeded permutation
as the Rust trainer does. Prints the median and the best of the repeats.
"""

import argparse
import statistics
import time

import torch
from torch import nn

BATCH = 64
TRAIN_WINDOWS = 7400


def har_cnn():
    return nn.Sequential(
        nn.Conv1d(6, 32, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(64, 64, 5, padding=2), nn.ReLU(),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(),
        nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 6),
    )


def step(model, opt, x, y):
    opt.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = har_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    weights = sum(p.numel() for p in model.parameters() if p.dim() > 1)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {weights} weights")

    x = torch.randn(BATCH, 6, 128)
    y = torch.randint(0, 6, (BATCH,))
    for _ in range(20):  # warm-up
        step(model, opt, x, y)
    steps = []
    for _ in range(args.repeats):
        n = 50
        t = time.perf_counter()
        for _ in range(n):
            step(model, opt, x, y)
        steps.append((time.perf_counter() - t) / n)
    print(f"train step, batch {BATCH}: median {statistics.median(steps) * 1e3:.2f} ms, "
          f"best {min(steps) * 1e3:.2f} ms")

    xs = torch.randn(TRAIN_WINDOWS, 6, 128)
    ys = torch.randint(0, 6, (TRAIN_WINDOWS,))
    g = torch.Generator().manual_seed(0)
    epochs = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        model.train()
        perm = torch.randperm(TRAIN_WINDOWS, generator=g)
        for i in range(0, TRAIN_WINDOWS, BATCH):
            idx = perm[i:i + BATCH]
            step(model, opt, xs[idx], ys[idx])
        epochs.append(time.perf_counter() - t)
    print(f"epoch of {TRAIN_WINDOWS} windows: median {statistics.median(epochs):.3f} s, "
          f"best {min(epochs):.3f} s")


if __name__ == "__main__":
    main()
