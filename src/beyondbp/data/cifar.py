"""CIFAR-10: the canonical python-pickle batches, or an image-folder layout (also in a .tar.gz).

Image folders (``{train,test}/<class>/*.png|jpg``) are decoded once and cached as ``.npz``.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from beyondbp.data.core import RawData, cache_dir
from beyondbp.errors import DataError

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
HOW_TO_GET = (
    "download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html (or use an "
    "image folder {train,test}/<class>/*.png), then pass --data-dir DIR or set BEYONDBP_DATA"
)


def read_cifar10(search_dirs: list[Path], download: bool) -> RawData:
    for d in search_dirs:
        if not d.is_dir():
            continue
        for sub in (d, d / "cifar-10-batches-py"):
            if all((sub / b).is_file() for b in (*BATCHES, "test_batch")):
                return _from_batches(
                    {b: (sub / b).read_bytes() for b in (*BATCHES, "test_batch")}, sub
                )
        for sub in (d, *sorted(p for p in d.iterdir() if p.is_dir())):
            if (sub / "train").is_dir() and (sub / "test").is_dir():
                return _cached(sub, lambda s=sub: _from_folder(s))
        for archive in sorted(d.glob("*.tar.gz")) + sorted(d.glob("*.tgz")):
            batches = _batches_in_tar(archive)
            if batches is not None:
                return _from_batches(batches, archive)
            return _cached(archive, lambda a=archive: _from_tar(a))
    where = "\n  ".join(str(d) for d in search_dirs)
    raise DataError(
        f"cifar10: no CIFAR-10 files found. Looked in:\n  {where}\nTo get it: {HOW_TO_GET}."
    )


class _ArraysOnly(pickle.Unpickler):
    """Unpickles NumPy arrays, lists, dicts, numbers and bytes, nothing else: a batch file from
    elsewhere cannot make loading it run code."""

    ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    })  # fmt: skip

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused: the file names {module}.{name}")
        return super().find_class(module, name)


def _unpickle(blob: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        d = _ArraysOnly(io.BytesIO(blob), encoding="bytes").load()
        x = np.asarray(d[b"data"], dtype=np.uint8)
        y = np.asarray(d[b"labels"], dtype=np.int64)
    except Exception as e:
        raise DataError(f"{name}: not a CIFAR-10 python batch ({e}); replace the file") from e
    if x.ndim != 2 or x.shape[1] != 3072:
        raise DataError(f"{name}: data has shape {x.shape}, expected (N, 3072); replace the file")
    if len(x) != len(y):
        raise DataError(f"{name}: {len(x)} images but {len(y)} labels; replace the file")
    return x.reshape(-1, 3, 32, 32), y


def _from_batches(blobs: dict[str, bytes], where: Path | str) -> RawData:
    parts = [_unpickle(blobs[b], f"{where}/{b}") for b in BATCHES]
    x_test, y_test = _unpickle(blobs["test_batch"], f"{where}/test_batch")
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    return RawData(
        x_train,
        y_train,
        x_test,
        y_test,
        class_names=CLASSES,
        source=str(where),
        mean=MEAN,
        std=STD,
    )


def _decode(blob: bytes, name: str) -> np.ndarray:
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(blob)).convert("RGB")
    except Exception as e:
        raise DataError(f"{name}: cannot decode image ({e}); replace or delete it") from e
    if img.size != (32, 32):
        raise DataError(f"{name}: image is {img.size[0]}x{img.size[1]}, CIFAR-10 needs 32x32")
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


def _assemble(items: Iterator[tuple[str, str, str, bytes]], source: str) -> dict[str, np.ndarray]:
    """items: (split, class, file name, bytes) -> uint8 arrays and labels per split."""
    per_split: dict[str, list[tuple[str, str, bytes]]] = {"train": [], "test": []}
    for split, cls, fname, blob in items:
        per_split[split].append((cls, fname, blob))
    classes = sorted({c for rows in per_split.values() for c, _, _ in rows})
    if not per_split["train"] or not per_split["test"]:
        raise DataError(f"{source}: image folder needs both train/ and test/ with images in it")
    jpeg = any(f.lower().endswith((".jpg", ".jpeg")) for r in per_split.values() for _, f, _ in r)
    out: dict[str, np.ndarray] = {"classes": np.array(classes), "jpeg": np.array(jpeg)}
    for split, rows in per_split.items():
        rows.sort(key=lambda r: (r[0], r[1]))
        out[f"x_{split}"] = np.stack([_decode(b, f"{source}:{split}/{c}/{f}") for c, f, b in rows])
        out[f"y_{split}"] = np.array([classes.index(c) for c, _, _ in rows], dtype=np.int64)
    return out


def _batches_in_tar(archive: Path) -> dict[str, bytes] | None:
    """The python batches inside a canonical cifar-10-python.tar.gz, or None if it has none."""
    wanted = {*BATCHES, "test_batch"}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for m in tar:
                name = Path(m.name).name
                if m.isfile() and name in wanted:
                    f = tar.extractfile(m)
                    assert f is not None
                    found[name] = f.read()
                elif m.isfile() and Path(m.name).suffix.lower() in IMAGE_SUFFIXES:
                    return None  # an image-folder archive
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"{archive}: corrupt archive ({e}); replace it") from e
    return found if set(found) == wanted else None


def _from_folder(root: Path) -> dict[str, np.ndarray]:
    def items() -> Iterator[tuple[str, str, str, bytes]]:
        for split in ("train", "test"):
            for path in sorted((root / split).glob("*/*")):
                if path.suffix.lower() in IMAGE_SUFFIXES:
                    yield split, path.parent.name, path.name, path.read_bytes()

    return _assemble(items(), str(root))


def _from_tar(archive: Path) -> dict[str, np.ndarray]:
    def items() -> Iterator[tuple[str, str, str, bytes]]:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                for m in tar:
                    parts = Path(m.name).parts
                    image = Path(m.name).suffix.lower() in IMAGE_SUFFIXES
                    if m.isfile() and image and len(parts) >= 3 and parts[-3] in ("train", "test"):
                        f = tar.extractfile(m)
                        assert f is not None
                        yield parts[-3], parts[-2], parts[-1], f.read()
        except (tarfile.TarError, EOFError, OSError) as e:
            raise DataError(f"{archive}: corrupt archive ({e}); replace it") from e

    return _assemble(items(), str(archive))


def _cached(source: Path, decode) -> RawData:  # type: ignore[no-untyped-def]
    """Decode an image folder or archive once; later loads read the cached .npz."""
    st = source.stat()
    key = hashlib.sha256(f"{source.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
    cache = cache_dir() / "decoded" / f"cifar10-{key[:16]}.npz"
    if cache.is_file():
        arrays = dict(np.load(cache))
    else:
        arrays = decode()
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, suffix=".npz")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, cache)
    classes = tuple(str(c) for c in arrays["classes"])
    jpeg = bool(arrays["jpeg"])
    return RawData(
        arrays["x_train"],
        arrays["y_train"],
        arrays["x_test"],
        arrays["y_test"],
        class_names=classes,
        source=str(source),
        mean=MEAN if classes == CLASSES else None,
        std=STD if classes == CLASSES else None,
        notes="JPEG re-encoded images: not the original CIFAR-10 pixels" if jpeg else "",
    )
