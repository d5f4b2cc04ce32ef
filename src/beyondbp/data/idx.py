"""IDX files (MNIST, Fashion-MNIST): find, verify, download and parse."""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from beyondbp.data.core import RawData
from beyondbp.errors import DataError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
TEST_FILES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@dataclass(frozen=True)
class IdxSource:
    name: str
    mirrors: tuple[str, ...]
    sha256: dict[str, str]  # of the decompressed content
    class_names: tuple[str, ...]
    mean: float
    std: float
    how_to_get: str


def parse_idx(data: bytes, path: Path | str, expected_ndim: int) -> np.ndarray:
    """Parse an IDX blob, checking the magic number and the size against the header."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path}: not an IDX file (wrong magic number); replace the file")
    dtype_code, ndim = data[2], data[3]
    if dtype_code not in _DTYPES or ndim != expected_ndim:
        raise DataError(
            f"{path}: IDX header says type 0x{dtype_code:02x} with {ndim} dimensions, expected "
            f"{expected_ndim} dimensions; wrong or corrupt file: replace it"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header; replace the file")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[dtype_code])
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(
            f"{path}: {len(data)} bytes but the header {dims} implies {expected}; the file is "
            "truncated or corrupt: replace it (or download it again)"
        )
    # a writable copy: torch refuses to wrap read-only memory without a warning
    return np.frombuffer(bytearray(data), dtype=dtype, offset=header).reshape(dims)


def read_bytes(path: Path) -> bytes:
    """Read a raw or gzip-compressed file, turning decompression failures into DataError."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot be read ({e}); the file is corrupt: replace it") from e


def _find(stem: str, dirs: list[Path]) -> Path | None:
    for d in dirs:
        for candidate in (d / stem, d / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _download(src: IdxSource, stem: str, dest_dir: Path) -> Path:
    errors = []
    for mirror in src.mirrors:
        url = f"{mirror}{stem}.gz"
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                blob = r.read()
            content = gzip.decompress(blob)
        except Exception as e:  # network down, HTTP error, bad gzip: try the next mirror
            errors.append(f"{url}: {e}")
            continue
        if hashlib.sha256(content).hexdigest() != src.sha256[stem]:
            errors.append(f"{url}: checksum mismatch")
            continue
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest = dest_dir / f"{stem}.gz"
        fd, tmp = tempfile.mkstemp(dir=dest_dir, suffix=".part")
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        os.replace(tmp, dest)
        return dest
    raise DataError("; ".join(errors))


def read_idx_dataset(src: IdxSource, dirs: list[Path], download: bool) -> RawData:
    """Find the four IDX files (downloading them into the cache if allowed) and parse them."""
    arrays: dict[str, np.ndarray] = {}
    paths: dict[str, Path] = {}
    digests: dict[str, str] = {}
    for stem in FILES + TEST_FILES:
        path = _find(stem, dirs)
        if path is None:
            failure = "downloads disabled"
            if download:
                try:
                    path = _download(src, stem, dirs[-1])
                except DataError as e:
                    failure = f"download failed: {e}"
            if path is None:
                where = "\n  ".join(str(d) for d in dirs)
                raise DataError(
                    f"{src.name}: {stem}[.gz] not found. Looked in:\n  {where}\n({failure}). "
                    f"To get it: {src.how_to_get}, then pass --data-dir DIR or set BEYONDBP_DATA "
                    f"to the folder that holds the files (or a {src.name}/ folder inside it)."
                )
        content = read_bytes(path)
        arrays[stem] = parse_idx(content, path, 3 if "images" in stem else 1)
        paths[stem] = path
        digests[stem] = hashlib.sha256(content).hexdigest()

    for images_stem, labels_stem in (FILES, TEST_FILES):
        if len(arrays[images_stem]) != len(arrays[labels_stem]):
            raise DataError(
                f"{paths[images_stem]} holds {len(arrays[images_stem])} images but "
                f"{paths[labels_stem]} holds {len(arrays[labels_stem])} labels; the files do "
                "not belong together: replace them with a matching set"
            )
    for stem, digest in digests.items():
        if digest != src.sha256[stem]:
            raise DataError(
                f"{paths[stem]}: checksum of the decompressed content does not match the "
                f"canonical {src.name} file; it is corrupt or another dataset: delete it and "
                "fetch it again"
            )

    def images(stem: str) -> np.ndarray:
        return arrays[stem][:, None]  # uint8; scaled to [0, 1] when normalised

    return RawData(
        images(FILES[0]),
        arrays[FILES[1]].astype(np.int64),
        images(TEST_FILES[0]),
        arrays[TEST_FILES[1]].astype(np.int64),
        class_names=src.class_names,
        source=str(paths[FILES[0]].parent),
        mean=(src.mean,),
        std=(src.std,),
    )
