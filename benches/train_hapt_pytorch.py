#!/usr/bin/env python3
"""PyTorch twin of examples/train_hapt.rs: the same data, model and schedule, timed per epoch.

    python3 benches/train_hapt_pytorch.py [--epochs 15] [--seed 7] [--threads N]

Data: data/hapt-activities.safetensors cut as shears' data::hapt does it (windows of 128 with
stride 64 inside each segment, channel-first; split by the file's test subjects; per-channel
standardisation with the mean and population standard deviation of every training-subject
sample, counted once), which gives the same 7,415 training and 2,996 test windows. Model: the
reference 1-D CNN (36,160 weights) with PyTorch's default initialisation. Schedule: Adam (lr
2e-3), batches of 64 shuffled each epoch, cross-entropy, the given number of epochs. Prints, per
epoch, the training loss and accuracy (training mode, as the batches went), the test loss and
accuracy, and the epoch's training time (evaluation excluded), as the Rust example does.
"""

import argparse
import json
import pathlib
import time

import numpy as np
import torch
from safetensors import safe_open
from torch import nn

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_TEST_SUBJECTS = [2, 4, 9, 10, 12, 13, 18, 20, 24]


def load(path, window=128, stride=64):
    with safe_open(str(path), "np") as f:
        signals = f.get_tensor("signals").astype(np.float32)
        segments = f.get_tensor("segments")
        meta = f.metadata() or {}
    test_subjects = json.loads(meta["test_subjects"]) if "test_subjects" in meta \
        else DEFAULT_TEST_SUBJECTS
    is_test = np.isin(segments[:, 3], test_subjects)
    train_rows = np.concatenate([np.arange(o, o + n) for o, n, _, _ in segments[~is_test]])
    # Statistics in float64 from the f16 values widened to f32, as the Rust loader does.
    mean = signals[train_rows].astype(np.float64).mean(axis=0)
    std = signals[train_rows].astype(np.float64).std(axis=0)
    mean, std = mean.astype(np.float32), std.astype(np.float32)

    def cut(test):
        xs, ys = [], []
        for (offset, length, label, _), t in zip(segments, is_test):
            if t != test or length < window:
                continue
            for start in range(offset, offset + length - window + 1, stride):
                xs.append(((signals[start:start + window] - mean) / std).T)
                ys.append(label)
        return torch.from_numpy(np.stack(xs)), torch.tensor(ys, dtype=torch.long)

    return cut(False), cut(True)


def har_cnn():
    return nn.Sequential(
        nn.Conv1d(6, 32, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(64, 64, 5, padding=2), nn.ReLU(),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(),
        nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 6),
    )


@torch.no_grad()
def evaluate(model, x, y, batch=256):
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(x), batch):
        logits = model(x[i:i + batch])
        loss += nn.functional.cross_entropy(logits, y[i:i + batch], reduction="sum").item()
        correct += (logits.argmax(1) == y[i:i + batch]).sum().item()
    return loss / len(x), correct / len(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    start = time.perf_counter()
    (xtr, ytr), (xte, yte) = load(ROOT / "data/hapt-activities.safetensors")
    print(f"HAPT: {len(xtr)} training and {len(xte)} test windows of {list(xtr.shape[1:])}, "
          f"loaded in {time.perf_counter() - start:.2f} s; torch {torch.__version__}, "
          f"{args.threads} thread(s)")

    model = har_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(args.seed)
    print("epoch  train loss  train acc  test loss  test acc  seconds")
    total = 0.0
    for epoch in range(1, args.epochs + 1):
        t = time.perf_counter()
        model.train()
        perm = torch.randperm(len(xtr), generator=g)
        loss_sum, correct = 0.0, 0
        for i in range(0, len(xtr), 64):
            idx = perm[i:i + 64]
            x, y = xtr[idx], ytr[idx]
            opt.zero_grad(set_to_none=True)
            logits = model(x)
            loss = nn.functional.cross_entropy(logits, y)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(1) == y).sum().item()
        seconds = time.perf_counter() - t
        total += seconds
        test_loss, test_acc = evaluate(model, xte, yte)
        print(f"{epoch:>5}  {loss_sum / len(xtr):>10.4f}  {100 * correct / len(xtr):>8.2f}%  "
              f"{test_loss:>9.4f}  {100 * test_acc:>7.2f}%  {seconds:>7.2f}")
    print(f"training: {total:.1f} s for {args.epochs} epochs ({total / args.epochs:.2f} s per "
          f"epoch); test accuracy {100 * test_acc:.2f}%")


if __name__ == "__main__":
    main()
