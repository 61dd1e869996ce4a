"""Train the bundled example: a small CNN on scikit-learn's handwritten digits, exported to ONNX.

Real data (1,797 8x8 images shipped inside scikit-learn), trained on the CPU in a few seconds, so the main job
compiles a model that actually classifies something. Writes, next to this file:
  digits_cnn.onnx      the model: input "image" float32[1, 1, 8, 8] -> "logits" float32[1, 10]
  digits_samples.npz   one held-out image as "image" (for --inputs)
  digits_test.npz      the held-out test set ("images", "labels") for accuracy checks
  digits_cnn.pt        the trained weights (state_dict), for the benchmark's PyTorch baseline
"""

from __future__ import annotations

import argparse
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

HERE = Path(__file__).resolve().parent


class DigitsCNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.BatchNorm2d(64), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = torch.nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def load_data(seed: int = 0):
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]  # N x 1 x 8 x 8, in [0, 1]
    return train_test_split(images, digits.target.astype(np.int64), test_size=0.25, random_state=seed,
                            stratify=digits.target)


def train(epochs: int = 15, seed: int = 0) -> tuple[DigitsCNN, float, np.ndarray, np.ndarray]:
    torch.manual_seed(seed)
    x_train, x_test, y_train, y_test = load_data(seed)
    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(xt)).split(64):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean())
    return model, accuracy, x_test, y_test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    model, accuracy, x_test, y_test = train(args.epochs)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        onnx_tmp = Path(tmp) / "model.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (torch.from_numpy(x_test[:1]),), str(onnx_tmp), input_names=["image"],
                              output_names=["logits"], opset_version=17, dynamo=False)
        np.savez(Path(tmp) / "samples.npz", image=x_test[:1])
        np.savez(Path(tmp) / "test.npz", images=x_test, labels=y_test)
        os.replace(Path(tmp) / "samples.npz", args.out / "digits_samples.npz")
        os.replace(Path(tmp) / "test.npz", args.out / "digits_test.npz")
        torch.save(model.state_dict(), Path(tmp) / "weights.pt")
        os.replace(Path(tmp) / "weights.pt", args.out / "digits_cnn.pt")
        os.replace(onnx_tmp, args.out / "digits_cnn.onnx")
    print(f"trained DigitsCNN on sklearn digits: test accuracy {accuracy:.3f} "
          f"({len(y_test)} held-out images) -> {args.out / 'digits_cnn.onnx'}")


if __name__ == "__main__":
    main()
