"""The built-in datasets: digits, MNIST, Fashion-MNIST, CIFAR-10."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from beyondbp.data.cifar import read_cifar10
from beyondbp.data.core import RawData, cache_dir, register_dataset, save_npz_atomic
from beyondbp.data.idx import IdxSource, read_idx_dataset


@register_dataset("digits", "scikit-learn's bundled 8x8 digits (1,797 images), always available")
def digits(search_dirs: list[Path], download: bool) -> RawData:
    # digits has no official test set: a fixed stratified 20 % (seed 0, independent of the data
    # seed) is the test set, so test numbers are comparable across every run. Decoded and split
    # once, then read from the cache: importing scikit-learn costs ~2 s of every start-up.
    cached = cache_dir() / "data" / "digits-split-v1.npz"
    if cached.is_file():
        with np.load(cached) as f:
            x_train, y_train, x_test, y_test = (
                f[k] for k in ("x_train", "y_train", "x_test", "y_test")
            )
    else:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        bunch = load_digits()
        x = (bunch.images.astype(np.float32) / 16.0)[:, None]  # (N, 1, 8, 8) in [0, 1]
        y = bunch.target.astype(np.int64)
        idx_train, idx_test = train_test_split(
            np.arange(len(y)), test_size=0.2, random_state=0, stratify=y
        )
        x_train, y_train, x_test, y_test = x[idx_train], y[idx_train], x[idx_test], y[idx_test]
        save_npz_atomic(cached, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return RawData(
        x_train,
        y_train,
        x_test,
        y_test,
        class_names=tuple(str(i) for i in range(10)),
        source="sklearn.datasets.load_digits",
        notes="fixed stratified 20% test split (seed 0)",
    )


MNIST = IdxSource(
    name="mnist",
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    # SHA-256 of the decompressed files (identical for every correct copy, however compressed).
    sha256={
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    class_names=tuple(str(i) for i in range(10)),
    mean=0.1307,
    std=0.3081,
    how_to_get="download the four IDX files from http://yann.lecun.com/exdb/mnist/",
)

FASHION_MNIST = IdxSource(
    name="fashion-mnist",
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    sha256={
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
    class_names=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    mean=0.2860,
    std=0.3530,
    how_to_get="on Debian/Ubuntu: apt-get install dataset-fashion-mnist; or download the four "
    "IDX files from https://github.com/zalandoresearch/fashion-mnist",
)

# Spyra 2025 used a fixed 50k/10k split on MNIST and 10 % of train on Fashion-MNIST.
register_dataset("mnist", "MNIST handwritten digits, 60k/10k, IDX files", val_size=10_000)(
    lambda dirs, download: read_idx_dataset(MNIST, dirs, download)
)
register_dataset("fashion-mnist", "Fashion-MNIST clothing, 60k/10k, IDX files", val_size=0.1)(
    lambda dirs, download: read_idx_dataset(FASHION_MNIST, dirs, download)
)
register_dataset(
    "cifar10",
    "CIFAR-10, 50k/10k 32x32 RGB: python batches or image folders",
    val_size=0.1,
    folders=("cifar10-jpeg",),  # ../shared/data's JPEG copy
)(read_cifar10)
