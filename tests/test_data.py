from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from beyondbp.data import available_datasets, load_dataset
from beyondbp.data.cifar import read_cifar10
from beyondbp.data.idx import IdxSource, read_idx_dataset
from beyondbp.errors import BeyondBPError, DataError, UnknownNameError

from .conftest import Planted


def test_registry_lists_builtin_datasets():
    assert {"digits", "mnist", "fashion-mnist", "cifar10"} <= set(available_datasets())


def test_unknown_dataset_lists_valid_ones():
    with pytest.raises(UnknownNameError, match="valid datasets: cifar10, delay-synth, digits"):
        load_dataset("imagenet")


def test_digits_splits_and_normalisation():
    ds = load_dataset("digits")
    n = ds.meta.sizes
    assert n["train"] + n["val"] + n["test"] == 1797
    assert n["test"] == 360 and n["val"] == round(0.1 * 1437)
    assert ds.meta.input_shape == (1, 8, 8) and ds.meta.classes == 10
    assert abs(float(ds.train.x.mean())) < 0.02 and abs(float(ds.train.x.std()) - 1) < 0.02
    assert set(ds.test.y.tolist()) == set(range(10))


def test_class_subset_keeps_and_relabels_the_listed_classes():
    full = load_dataset("digits")
    pair = load_dataset("digits:8,3")  # order given: 8 -> 0, 3 -> 1
    assert pair.meta.classes == 2 and pair.meta.class_names == ("8", "3")
    n_test = int(((full.test.y == 3) | (full.test.y == 8)).sum())
    assert len(pair.test) == n_test
    assert set(pair.train.y.tolist()) == {0, 1}
    # the test 8s of the subset are the full set's test 8s, up to the normalisation
    eights = full.test.x[full.test.y == 8] * full.meta.std[0] + full.meta.mean[0]
    mine = pair.test.x[pair.test.y == 0] * pair.meta.std[0] + pair.meta.mean[0]
    torch.testing.assert_close(mine, eights, rtol=0, atol=1e-5)
    for bad, msg in (("digits:3,x", "no class 'x'"), ("digits:3", "at least two"),
                     ("digits:3,3", "at least two"), ("nope:1,2", "nope")):  # fmt: skip
        with pytest.raises(BeyondBPError, match=msg):
            load_dataset(bad)


def test_validation_split_depends_on_data_seed_only():
    a = load_dataset("digits", data_seed=0)
    b = load_dataset("digits", data_seed=0)
    c = load_dataset("digits", data_seed=1)
    assert torch.equal(a.val.x, b.val.x)
    assert not torch.equal(a.val.x, c.val.x)
    assert torch.equal(a.test.x, c.test.x)  # the test set never moves


def _idx(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def _write_idx_set(
    folder: Path, n_train=20, n_test=10, compress=True, labels_train=None
) -> IdxSource:
    rng = np.random.default_rng(0)
    files = {
        "train-images-idx3-ubyte": _idx(rng.integers(0, 256, (n_train, 28, 28))),
        "train-labels-idx1-ubyte": _idx(
            labels_train if labels_train is not None else rng.integers(0, 10, n_train)
        ),
        "t10k-images-idx3-ubyte": _idx(rng.integers(0, 256, (n_test, 28, 28))),
        "t10k-labels-idx1-ubyte": _idx(rng.integers(0, 10, n_test)),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for stem, blob in files.items():
        if compress:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(blob))
        else:
            (folder / stem).write_bytes(blob)
    return IdxSource(
        name="toy",
        mirrors=(),
        sha256={s: hashlib.sha256(b).hexdigest() for s, b in files.items()},
        class_names=tuple(str(i) for i in range(10)),
        mean=0.5,
        std=0.25,
        how_to_get="make it",
    )


@pytest.mark.parametrize("compress", [True, False])
def test_idx_reads_gz_and_raw(tmp_path, compress):
    src = _write_idx_set(tmp_path, compress=compress)
    raw = read_idx_dataset(src, [tmp_path / "nothing", tmp_path], download=False)
    assert raw.x_train.shape == (20, 1, 28, 28) and raw.x_test.shape == (10, 1, 28, 28)
    assert raw.x_train.dtype == np.uint8


def test_idx_missing_files_say_where_they_were_looked_for(tmp_path):
    src = _write_idx_set(tmp_path / "elsewhere")
    with pytest.raises(DataError) as e:
        read_idx_dataset(src, [tmp_path / "a", tmp_path / "b"], download=False)
    msg = str(e.value)
    assert str(tmp_path / "a") in msg and str(tmp_path / "b") in msg and "make it" in msg


def test_idx_wrong_magic(tmp_path):
    src = _write_idx_set(tmp_path, compress=False)
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(b"\x12\x34" + p.read_bytes()[2:])
    with pytest.raises(DataError, match="magic"):
        read_idx_dataset(src, [tmp_path], download=False)


def test_idx_truncated_file(tmp_path):
    src = _write_idx_set(tmp_path, compress=False)
    p = tmp_path / "t10k-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated"):
        read_idx_dataset(src, [tmp_path], download=False)


def test_idx_truncated_gzip(tmp_path):
    src = _write_idx_set(tmp_path)
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(DataError, match="corrupt"):
        read_idx_dataset(src, [tmp_path], download=False)


def test_idx_label_count_mismatch(tmp_path):
    src = _write_idx_set(tmp_path, labels_train=np.zeros(19))
    with pytest.raises(DataError, match="20 images but .* 19 labels"):
        read_idx_dataset(src, [tmp_path], download=False)


def test_idx_checksum_mismatch(tmp_path):
    src = _write_idx_set(tmp_path, compress=False)
    p = tmp_path / "t10k-labels-idx1-ubyte"
    blob = bytearray(p.read_bytes())
    blob[-1] = (blob[-1] + 1) % 10
    p.write_bytes(bytes(blob))
    with pytest.raises(DataError, match="checksum"):
        read_idx_dataset(src, [tmp_path], download=False)


def test_mnist_and_fashion_mnist_from_shared_data(shared_data):
    mnist = load_dataset("mnist", shared_data)
    assert mnist.meta.sizes == {"train": 50_000, "val": 10_000, "test": 10_000}
    assert mnist.meta.mean == (0.1307,) and mnist.meta.std == (0.3081,)
    fm = load_dataset("fashion-mnist", shared_data)
    assert fm.meta.sizes == {"train": 54_000, "val": 6_000, "test": 10_000}
    assert fm.meta.mean == (0.2860,) and fm.meta.std == (0.3530,)
    # the standard constants are the real statistics: normalised pixels have mean 0, std 1
    assert abs(float(fm.train.x.mean())) < 0.01 and abs(float(fm.train.x.std()) - 1) < 0.01


def _cifar_batch(n: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return pickle.dumps(
        {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": list(rng.integers(0, 10, n)),
        }
    )


def test_cifar_python_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(_cifar_batch(4, i))
    (folder / "test_batch").write_bytes(_cifar_batch(3, 9))
    raw = read_cifar10([tmp_path], download=False)
    assert raw.x_train.shape == (20, 3, 32, 32) and raw.x_test.shape == (3, 3, 32, 32)
    assert raw.class_names[0] == "airplane" and raw.notes == ""


def test_cifar_corrupt_batch(tmp_path):
    for i in range(1, 6):
        (tmp_path / f"data_batch_{i}").write_bytes(_cifar_batch(4, i))
    (tmp_path / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="test_batch"):
        read_cifar10([tmp_path], download=False)


def test_a_cifar_batch_carrying_code_is_refused_and_runs_nothing(tmp_path):
    for i in range(1, 6):
        (tmp_path / f"data_batch_{i}").write_bytes(_cifar_batch(4, i))
    marker = tmp_path / "ran"
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": Planted(marker), b"labels": []}))
    with pytest.raises(DataError, match="test_batch.*refused: the file names pathlib"):
        read_cifar10([tmp_path], download=False)
    assert not marker.exists()


def _png(color: int, size=(32, 32), fmt="PNG") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, (color, 0, 255 - color)).save(buf, format=fmt)
    return buf.getvalue()


def test_cifar_image_folder_in_tar_gz_is_decoded_once_and_cached(tmp_path):
    archive = tmp_path / "toy-cifar.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for split, n in (("train", 3), ("test", 2)):
            for cls in ("cat", "dog"):
                for i in range(n):
                    blob = _png(40 * i, fmt="JPEG")
                    info = tarfile.TarInfo(f"toy/{split}/{cls}/{i:04d}.jpg")
                    info.size = len(blob)
                    tar.addfile(info, io.BytesIO(blob))
    raw = read_cifar10([tmp_path], download=False)
    assert raw.x_train.shape == (6, 3, 32, 32) and raw.class_names == ("cat", "dog")
    assert list(raw.y_test) == [0, 0, 1, 1]
    assert "JPEG" in raw.notes
    cached = list(
        (Path(__import__("os").environ["BEYONDBP_CACHE"]) / "decoded").glob("cifar10-*.npz")
    )
    assert cached
    again = read_cifar10([tmp_path], download=False)  # from the cache
    assert np.array_equal(again.x_train, raw.x_train)


def test_cifar_image_folder_wrong_size(tmp_path):
    for split in ("train", "test"):
        (tmp_path / "imgs" / split / "cat").mkdir(parents=True)
        (tmp_path / "imgs" / split / "cat" / "0.png").write_bytes(_png(1, size=(28, 28)))
    with pytest.raises(DataError, match="32x32"):
        read_cifar10([tmp_path], download=False)


def test_cifar_is_found_in_the_shared_data_layout(tmp_path):
    from beyondbp.data import data_search_dirs

    # ../shared/data keeps CIFAR-10 as cifar10-jpeg/cifar10-jpeg.tar.gz
    assert tmp_path / "cifar10-jpeg" in data_search_dirs("cifar10", tmp_path)
    assert tmp_path / "cifar10-jpeg" not in data_search_dirs("mnist", tmp_path)


def test_cifar_not_found(tmp_path):
    with pytest.raises(DataError, match="Looked in"):
        read_cifar10([tmp_path / "x"], download=False)


def _serve(folder: Path):
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_idx_download_is_verified_and_cached(tmp_path):
    """A mirror on loopback stands in for the canonical source."""
    src = _write_idx_set(tmp_path / "mirror")
    server = _serve(tmp_path / "mirror")
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        src = IdxSource(**{**src.__dict__, "mirrors": ("http://127.0.0.1:9/", url)})
        cache = tmp_path / "cache"
        raw = read_idx_dataset(src, [tmp_path / "none", cache], download=True)
        assert raw.x_train.shape == (20, 1, 28, 28)
        assert sorted(p.name for p in cache.iterdir()) == sorted(f"{s}.gz" for s in src.sha256)
        # a mirror serving different bytes is rejected by the checksum
        bad = IdxSource(
            **{
                **src.__dict__,
                "mirrors": (url,),
                "sha256": {**src.sha256, "t10k-labels-idx1-ubyte": "0" * 64},
            }
        )
        with pytest.raises(DataError, match="checksum mismatch"):
            read_idx_dataset(bad, [tmp_path / "none", tmp_path / "cache2"], download=True)
    finally:
        server.shutdown()


def test_idx_offline_error_says_the_download_failed(tmp_path):
    src = _write_idx_set(tmp_path / "x")
    src = IdxSource(**{**src.__dict__, "mirrors": ("http://127.0.0.1:9/",)})
    with pytest.raises(DataError, match="download failed") as e:
        read_idx_dataset(src, [tmp_path / "a"], download=True)
    assert "make it" in str(e.value)


def test_crop_flip_is_a_shifted_window_of_the_reflect_padded_image_or_its_mirror():
    from beyondbp.data.augment import batch_generator, random_crop_flip

    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    out = random_crop_flip(x, batch_generator(0, 0, 0))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4), mode="reflect")
    for i in range(2):
        windows = [padded[i, :, dy : dy + 8, dx : dx + 8] for dy in range(9) for dx in range(9)]
        windows += [w.flip(-1) for w in windows]
        assert any(torch.equal(out[i], w) for w in windows)
    # the same (seed, epoch, batch) gives the same batch: resume sees what it would have seen
    assert torch.equal(out, random_crop_flip(x, batch_generator(0, 0, 0)))
    assert not torch.equal(out, random_crop_flip(x, batch_generator(0, 0, 1)))


def test_crop_flip_refuses_flat_inputs():
    from beyondbp.data.augment import batch_generator, random_crop_flip

    with pytest.raises(BeyondBPError, match="image batches"):
        random_crop_flip(torch.zeros(4, 64), batch_generator(0, 0, 0))
