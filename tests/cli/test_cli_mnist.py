"""`crossentropy demo --dataset mnist`: the IDX reader and training on small IDX files.

The files are written here in the MNIST format (magic number, big-endian
sizes, uint8 data), raw and gzipped, from a synthetic ten-class set that a
small network learns; no download.
"""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from crossentropy.cli import main
from crossentropy.cli.demo import MNIST_FILES, find_mnist_file, load_mnist, read_idx


def idx_bytes(array: np.ndarray) -> bytes:
    codes = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}
    header = struct.pack(">BBBB", 0, 0, codes[array.dtype], array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def synthetic(n: int, side: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images: class k lights up row k, plus noise."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 10).astype(np.uint8)
    rng.shuffle(labels)
    images = rng.integers(0, 60, size=(n, side, side), dtype=np.uint8)
    images[np.arange(n), labels % side, :] = 255
    images[np.arange(n), :, labels // side] = 200
    return images, labels


def write_mnist(folder, *, n_train=400, n_test=100, side=8, gz=(False, True, False, True)):
    folder.mkdir(parents=True, exist_ok=True)
    train = synthetic(n_train, side, 0)
    test = synthetic(n_test, side, 1)
    arrays = (train[0], train[1], test[0], test[1])
    for name, array, zipped in zip(MNIST_FILES, arrays, gz, strict=True):
        data = idx_bytes(array)
        if zipped:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return arrays


def test_read_idx_round_trips_raw_and_gzipped(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(idx_bytes(images))
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(images)))
    for path in (tmp_path / "a", tmp_path / "a.gz"):
        got = read_idx(path)
        assert got.shape == (2, 3, 4) and got.dtype == np.uint8
        assert np.array_equal(got, images)
    ints = np.array([1, -2, 70000], dtype=">i4")
    (tmp_path / "b").write_bytes(idx_bytes(ints))
    assert read_idx(tmp_path / "b").tolist() == [1, -2, 70000]


def test_load_mnist_scales_pixels_and_keeps_labels(tmp_path):
    train_x, train_y, test_x, test_y = write_mnist(tmp_path)
    x_train, x_test, y_train, y_test = load_mnist(tmp_path)
    assert x_train.shape == (400, 64) and x_test.shape == (100, 64)
    np.testing.assert_array_equal(x_train, train_x.reshape(400, 64) / 255.0)
    np.testing.assert_array_equal(x_test, test_x.reshape(100, 64) / 255.0)
    assert y_train.dtype == np.int64 and y_train.tolist() == train_y.tolist()
    assert y_test.tolist() == test_y.tolist()


def test_find_mnist_file_accepts_the_dotted_spelling(tmp_path):
    (tmp_path / "train-images.idx3-ubyte.gz").write_bytes(b"")
    assert find_mnist_file(tmp_path, "train-images-idx3-ubyte").name == (
        "train-images.idx3-ubyte.gz")


def test_demo_trains_on_mnist_files(tmp_path, capsys):
    write_mnist(tmp_path / "mnist")
    out = tmp_path / "out"
    assert main(["demo", "--dataset", "mnist", "--data-dir", str(tmp_path / "mnist"),
                 "--epochs", "8", "--hidden", "32", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "MNIST: 400 training and 100 test images of 8x8 pixels" in printed
    assert "MLP 64-32-10" in printed and "8 epochs" in printed
    accuracy = float(printed.split("Test accuracy: ")[1].split("%")[0]) / 100
    assert accuracy >= 0.9  # the classes are separable: a learning network gets them
    assert (out / "mnist_training.png").is_file()


@pytest.mark.parametrize("missing", MNIST_FILES)
def test_demo_names_the_missing_mnist_file(tmp_path, capsys, missing):
    write_mnist(tmp_path, gz=(False,) * 4)
    (tmp_path / missing).unlink()
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--dataset", "mnist", "--data-dir", str(tmp_path), "--epochs", "1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if "error:" in line]
    assert "--data-dir" in line and f"no {missing} (or {missing}.gz)" in line


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda d: d.replace(b"\x00\x00\x08\x03", b"\x00\x00\x07\x03", 1), "magic number"),
        (lambda d: d[:-5], "the file holds"),
        (lambda d: d[:6], "truncated IDX header"),
    ],
)
def test_demo_names_a_malformed_mnist_file(tmp_path, capsys, corrupt, message):
    write_mnist(tmp_path, gz=(False,) * 4)
    path = tmp_path / MNIST_FILES[0]
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--dataset", "mnist", "--data-dir", str(tmp_path), "--epochs", "1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert MNIST_FILES[0] in err and message in err and "Traceback" not in err


def test_demo_mnist_labels_that_do_not_match_the_images(tmp_path, capsys):
    write_mnist(tmp_path, gz=(False,) * 4)
    (tmp_path / MNIST_FILES[1]).write_bytes(idx_bytes(np.zeros(3, dtype=np.uint8)))
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--dataset", "mnist", "--data-dir", str(tmp_path)])
    assert exc.value.code == 2
    assert "expected 400 labels" in capsys.readouterr().err


def test_demo_gzip_that_is_not_gzip_is_named(tmp_path, capsys):
    write_mnist(tmp_path)
    (tmp_path / f"{MNIST_FILES[1]}.gz").write_bytes(b"not gzip at all")
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--dataset", "mnist", "--data-dir", str(tmp_path)])
    assert exc.value.code == 2
    assert f"{MNIST_FILES[1]}.gz: cannot read it" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["--dataset", "mnist"],
        ["--dataset", "mnist", "--data-dir", "/nonexistent-mnist-dir"],
        ["--data-dir", "."],
    ],
)
def test_demo_data_dir_misuse_is_a_usage_error(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(["demo", *argv])
    assert exc.value.code == 2
    assert "--data-dir" in capsys.readouterr().err
