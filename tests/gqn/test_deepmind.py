"""Tests for gqn.data.tfrecord and gqn.data.deepmind: TFRecord framing, Example decoding and the
resumable importer.

The TFRecord files are written here, in the official layout, by a small independent encoder
(protobuf wire format + TFRecord framing), with tiny JPEGs made by imageio.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import crc32c
import imageio.v3 as iio
import numpy as np
import pytest

import gqn.data.deepmind as deepmind
from gqn.data import SceneDataset
from gqn.data.deepmind import ImportReport, decode_scene, import_deepmind
from gqn.data.tfrecord import CorruptRecordError, masked_crc32c, parse_example, read_tfrecord

SIZE = 16
VIEWS = 2
RECORDS = 3
NAME = "shepard_metzler_5_parts"
Scene = tuple[list[bytes], np.ndarray]  # JPEGs, cameras float32 [5 * V]

# --------------------------------------------------------------------------------------------
# An independent writer of the official format


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int64s are ten-byte two's complement varints
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _ld(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _varint(len(payload)) + payload


def encode_feature(kind: str, values: list, packed: bool = True) -> bytes:
    """A Feature message holding a bytes_list, float_list or int64_list."""
    if kind == "bytes":
        return _ld(1, b"".join(_ld(1, v) for v in values))
    if kind == "float":
        if packed:
            inner = _ld(1, struct.pack(f"<{len(values)}f", *values))
        else:
            inner = b"".join(_key(1, 5) + struct.pack("<f", v) for v in values)
        return _ld(2, inner)
    if packed:
        return _ld(3, _ld(1, b"".join(_varint(v) for v in values)))
    return _ld(3, b"".join(_key(1, 0) + _varint(v) for v in values))


def encode_example(features: dict[str, bytes], unknown: bool = False) -> bytes:
    """An Example from encoded Feature messages; ``unknown`` sprinkles fields a reader skips."""
    extra = _key(15, 0) + _varint(300) + _key(14, 1) + b"\x01" * 8 if unknown else b""
    entries = b"".join(_ld(1, _ld(1, name.encode()) + extra + _ld(2, feature))
                       for name, feature in features.items())
    return extra + _ld(1, entries + (_key(9, 5) + b"\x02" * 4 if unknown else b"")) + extra


def scene_example(jpegs: list[bytes], cameras: np.ndarray, packed: bool = True,
                  unknown: bool = False) -> bytes:
    return encode_example({"frames": encode_feature("bytes", jpegs),
                           "cameras": encode_feature("float", cameras.tolist(), packed)},
                          unknown=unknown)


def _mask(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return (length + struct.pack("<I", _mask(crc32c.crc32c(length))) + data
            + struct.pack("<I", _mask(crc32c.crc32c(data))))


def write_tfrecord(path: Path, records: list[bytes]) -> list[int]:
    """Write records framed as TFRecord; return each record's byte offset."""
    offsets, blob = [], b""
    for data in records:
        offsets.append(len(blob))
        blob += frame_record(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    return offsets


def make_scene(rng: np.random.Generator, views: int = VIEWS, size: int = SIZE
               ) -> Scene:
    """JPEGs of ``views`` random images and their 5 * views float32 cameras."""
    images = rng.integers(0, 256, size=(views, size, size, 3), dtype=np.uint8)
    jpegs = [iio.imwrite("<bytes>", im, extension=".jpg") for im in images]
    cameras = rng.uniform(-3.0, 3.0, size=views * 5).astype(np.float32)
    return jpegs, cameras


def make_source(root: Path, files: dict[str, int] | None = None, packed: bool = True,
                seed: int = 0) -> dict[str, list[tuple[Path, list[Scene]]]]:
    """An official-layout dataset folder; returns, per split, (file, its scenes) in sorted order."""
    rng = np.random.default_rng(seed)
    files = {"train": 2, "test": 1} if files is None else files
    written = {}
    for split, count in files.items():
        written[split] = []
        for i in range(count):
            path = root / NAME / split / f"{i + 1:03d}-of-{count:03d}.tfrecord"
            scenes = [make_scene(rng) for _ in range(RECORDS)]
            write_tfrecord(path, [scene_example(j, c, packed) for j, c in scenes])
            written[split].append((path, scenes))
    return written


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


# --------------------------------------------------------------------------------------------
# Framing and decoding


def test_masked_crc_matches_known_values() -> None:
    assert crc32c.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert masked_crc32c(b"") == 0xA282EAD8
    assert masked_crc32c(b"123456789") == _mask(0xE3069283)


def test_read_tfrecord_round_trip(tmp_path: Path) -> None:
    records = [b"", b"a", bytes(range(256)) * 5]
    write_tfrecord(tmp_path / "x.tfrecord", records)
    assert list(read_tfrecord(tmp_path / "x.tfrecord")) == records


@pytest.mark.parametrize("packed", [True, False])
def test_parse_example_reads_every_list_kind(packed: bool) -> None:
    floats = np.array([0.1, -2.5, 3e-38, 1e30], dtype=np.float32)
    ints = [0, 1, 300, -1, -(2**63), 2**63 - 1]
    data = encode_example({
        "b": encode_feature("bytes", [b"", b"\x00\xff", "é".encode()]),
        "f": encode_feature("float", floats.tolist(), packed),
        "i": encode_feature("int64", ints, packed),
        "empty": b"",
    }, unknown=True)
    parsed = parse_example(data)
    assert parsed == {"b": [b"", b"\x00\xff", "é".encode()], "f": floats.tolist(), "i": ints,
                      "empty": []}
    np.testing.assert_array_equal(np.asarray(parsed["f"], np.float32), floats)


def test_parse_example_merges_repeated_fields_like_protobuf() -> None:
    # Two occurrences of the same list extend it; a later entry with the same key wins.
    feature = encode_feature("float", [1.0]) + encode_feature("float", [2.0], packed=False)
    data = (encode_example({"x": feature, "z": encode_feature("bytes", [b"old"])})
            + encode_example({"y": encode_feature("int64", [7]),
                              "z": encode_feature("int64", [8])}))
    assert parse_example(data) == {"x": [1.0, 2.0], "y": [7], "z": [8]}
    # Another list of the Feature's oneof replaces the first.
    switch = encode_feature("bytes", [b"a"]) + encode_feature("int64", [3])
    assert parse_example(encode_example({"w": switch})) == {"w": [3]}


@pytest.mark.parametrize("data, match", [
    (_ld(1, _ld(1, _ld(1, b"k") + _ld(2, b"\x12\x05"))), "truncated"),
    (b"\x0a\x80", "truncated varint"),
    (_key(1, 3), "wire type 3"),
    (_ld(1, _ld(1, _ld(1, b"k") + _ld(2, _ld(2, _ld(1, b"abc"))))), "multiple of 4"),
    (_key(1, 0) + _varint(5), "wire type 0, expected 2"),
])
def test_parse_example_rejects_malformed_input(data: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_example(data)


def test_decode_scene_is_exact() -> None:
    jpegs, cameras = make_scene(np.random.default_rng(1), views=3)
    images, poses = decode_scene(parse_example(scene_example(jpegs, cameras)))
    assert images.dtype == np.uint8 and images.shape == (3, SIZE, SIZE, 3)
    assert poses.dtype == np.float32 and poses.shape == (3, 5)
    np.testing.assert_array_equal(poses, cameras.reshape(3, 5))
    for image, jpeg in zip(images, jpegs, strict=True):
        np.testing.assert_array_equal(image, iio.imread(jpeg))


def test_decode_scene_errors_name_the_field() -> None:
    rng = np.random.default_rng(2)
    jpegs, cameras = make_scene(rng, views=3)
    with pytest.raises(ValueError, match=r"field 'cameras' holds 10 floats.*'frames' holds 3"):
        decode_scene({"frames": jpegs, "cameras": cameras[:10].tolist()})
    big = make_scene(rng, views=1, size=2 * SIZE)[0]
    with pytest.raises(ValueError, match=r"field 'frames'\[1\] is 32x32 .* 'frames'\[0\] is 16x16"):
        decode_scene({"frames": [jpegs[0], big[0]], "cameras": cameras[:10].tolist()})
    with pytest.raises(ValueError, match=r"field 'frames'\[2\] is not a decodable JPEG"):
        decode_scene({"frames": jpegs[:2] + [b"not a jpeg"], "cameras": cameras.tolist()})
    with pytest.raises(ValueError, match="no field 'cameras'"):
        decode_scene({"frames": jpegs})
    with pytest.raises(ValueError, match="'cameras' must be a float_list"):
        decode_scene({"frames": jpegs, "cameras": list(range(15))})
    with pytest.raises(ValueError, match="'cameras' holds NaN"):
        decode_scene({"frames": jpegs, "cameras": [float("nan")] * 15})


# --------------------------------------------------------------------------------------------
# Corruption


def _flip(path: Path, offset: int) -> None:
    blob = bytearray(path.read_bytes())
    blob[offset] ^= 0x20
    path.write_bytes(bytes(blob))


def _bad_file(tmp_path: Path) -> tuple[Path, list[int], list[bytes]]:
    rng = np.random.default_rng(3)
    records = [scene_example(*make_scene(rng)) for _ in range(RECORDS)]
    path = tmp_path / "bad.tfrecord"
    return path, write_tfrecord(path, records), records


def test_flipped_data_byte_names_file_and_record(tmp_path: Path) -> None:
    path, offsets, records = _bad_file(tmp_path)
    _flip(path, offsets[1] + 12 + 40)
    reader = read_tfrecord(path)
    assert next(reader) == records[0]
    with pytest.raises(CorruptRecordError, match=r"bad\.tfrecord: record 1: the data .* CRC32C"):
        next(reader)


def test_flipped_length_byte_names_file_and_record(tmp_path: Path) -> None:
    path, offsets, _ = _bad_file(tmp_path)
    _flip(path, offsets[2] + 1)
    with pytest.raises(CorruptRecordError, match=r"bad\.tfrecord: record 2: the length header"):
        list(read_tfrecord(path))


@pytest.mark.parametrize("cut", [5, 12 + 30, -2])
def test_truncated_file_names_file_and_record(tmp_path: Path, cut: int) -> None:
    path, offsets, _ = _bad_file(tmp_path)
    blob = path.read_bytes()
    path.write_bytes(blob[: offsets[2] + cut] if cut > 0 else blob[:cut])
    with pytest.raises(CorruptRecordError, match=r"bad\.tfrecord: record 2: truncated") as info:
        list(read_tfrecord(path))
    assert (Path(info.value.path), info.value.record) == (path, 2)


def test_corrupt_error_survives_pickling() -> None:
    import pickle

    err = pickle.loads(pickle.dumps(CorruptRecordError("f.tfrecord", 4, "bad")))
    assert (err.path, err.record, err.reason, str(err)) == ("f.tfrecord", 4, "bad",
                                                            "f.tfrecord: record 4: bad")


# --------------------------------------------------------------------------------------------
# Importing


@pytest.mark.parametrize("packed", [True, False])
def test_import_is_exact(tmp_path: Path, packed: bool) -> None:
    written = make_source(tmp_path / "src", packed=packed)
    report = import_deepmind(tmp_path / "src" / NAME, tmp_path / "out", progress=False)
    assert report == ImportReport(files=3, scenes=9, skipped=[], shards_written=3,
                                  shards_kept=0)
    for split, files in written.items():
        ds = SceneDataset(tmp_path / "out", split, verify=True)
        assert (ds.image_size, ds.views, len(ds)) == (SIZE, VIEWS, RECORDS * len(files))
        assert ds.meta == {"source": "deepmind-gqn-datasets", "dataset": NAME,
                           "scene": f"deepmind/{NAME}"}
        scene = 0
        for _, scenes in files:  # shard order = sorted file order
            for jpegs, cameras in scenes:
                images, poses = ds.scene(scene)
                np.testing.assert_array_equal(poses, cameras.reshape(VIEWS, 5))
                for view, jpeg in enumerate(jpegs):
                    np.testing.assert_array_equal(images[view], iio.imread(jpeg))
                scene += 1
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [r["index"] for r in manifest["splits"]["train"]["shards"]] == [0, 1]


def test_import_of_a_flat_folder_is_the_train_split(tmp_path: Path) -> None:
    make_source(tmp_path, files={"test": 2})
    flat = tmp_path / NAME / "test"
    import_deepmind(flat, tmp_path / "out", progress=False)
    assert len(SceneDataset(tmp_path / "out", "train")) == 2 * RECORDS
    assert len(SceneDataset(tmp_path / "out", "test")) == 0
    with pytest.raises(FileNotFoundError, match="no \\*.tfrecord files"):
        import_deepmind(tmp_path / "out", tmp_path / "out2", progress=False)


def test_import_raises_on_a_corrupt_record_and_keeps_finished_shards(tmp_path: Path) -> None:
    written = make_source(tmp_path / "src", files={"train": 2})
    path = written["train"][1][0]
    _flip(path, 12 + 50)
    with pytest.raises(CorruptRecordError, match=rf"{path.name}: record 0: the data"):
        import_deepmind(tmp_path / "src" / NAME, tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="unfinished: 1 of the 2 shards of the train split"):
        SceneDataset(tmp_path / "out", "train")  # a stopped import does not pass for whole
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["splits"]["train"]["scenes"] == RECORDS  # file 0 was written and kept


def test_skip_corrupt_skips_and_counts(tmp_path: Path) -> None:
    written = make_source(tmp_path / "src", files={"train": 3})
    (f0, _), (f1, scenes1), (f2, scenes2) = written["train"]
    size = len(frame_record(b"")) + len(scene_example(*scenes1[0]))
    _flip(f1, size + 12 + 30)  # record 1: data CRC
    f2.write_bytes(f2.read_bytes()[:-5])  # record 2: truncated
    with pytest.raises(CorruptRecordError):
        import_deepmind(tmp_path / "src" / NAME, tmp_path / "strict", progress=False)
    report = import_deepmind(tmp_path / "src" / NAME, tmp_path / "out", skip_corrupt=True,
                             progress=False)
    assert report.scenes == 3 * RECORDS - 2 and report.shards_written == 3
    assert [(Path(f), i) for f, i, _ in report.skipped] == [(f1, 1), (f2, 2)]
    assert "CRC32C" in report.skipped[0][2] and "truncated" in report.skipped[1][2]
    assert report.skipped_per_file == {str(f1): 1, str(f2): 1}
    ds = SceneDataset(tmp_path / "out", "train")
    kept = written["train"][0][1] + [scenes1[0], scenes1[2]] + scenes2[:2]
    assert len(ds) == len(kept)
    for i, (_, cameras) in enumerate(kept):
        np.testing.assert_array_equal(ds.scene(i)[1], cameras.reshape(VIEWS, 5))


def test_undecodable_record_is_corrupt(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    jpegs, cameras = make_scene(rng)
    good = scene_example(jpegs, cameras)
    bad = scene_example(jpegs, cameras[:7])  # 7 cameras for 2 frames
    write_tfrecord(tmp_path / "src" / "001.tfrecord", [good, bad, good])
    with pytest.raises(CorruptRecordError, match=r"001\.tfrecord: record 1: cannot decode.*"
                                                 r"'cameras' holds 7 floats"):
        import_deepmind(tmp_path / "src", tmp_path / "out", progress=False)
    report = import_deepmind(tmp_path / "src", tmp_path / "out2", skip_corrupt=True,
                             progress=False)
    assert report.scenes == 2 and [i for _, i, _ in report.skipped] == [1]


@pytest.mark.parametrize("views, size, match", [
    (3, SIZE, r"record 1: 3 views of 16x16 frames, but the dataset has 2 views of 16x16"),
    (VIEWS, 8, r"record 1: 2 views of 8x8 frames, but the dataset has 2 views of 16x16"),
])
def test_records_that_disagree_name_file_and_record(tmp_path: Path, views: int, size: int,
                                                   match: str) -> None:
    rng = np.random.default_rng(5)
    records = [scene_example(*make_scene(rng)), scene_example(*make_scene(rng, views, size))]
    write_tfrecord(tmp_path / "src" / "002.tfrecord", records)
    with pytest.raises(ValueError, match=r"002\.tfrecord: " + match):
        import_deepmind(tmp_path / "src", tmp_path / "out", skip_corrupt=True, progress=False)


def test_non_square_frames_are_refused(tmp_path: Path) -> None:
    image = np.zeros((8, 16, 3), np.uint8)
    jpeg = iio.imwrite("<bytes>", image, extension=".jpg")
    write_tfrecord(tmp_path / "src" / "a.tfrecord",
                   [scene_example([jpeg], np.zeros(5, np.float32))])
    with pytest.raises(ValueError, match=r"a\.tfrecord: record 0: frames are 8x16"):
        import_deepmind(tmp_path / "src", tmp_path / "out", progress=False)


def test_resume_writes_only_the_missing_shard(tmp_path: Path) -> None:
    make_source(tmp_path / "src")
    src, out = tmp_path / "src" / NAME, tmp_path / "out"
    import_deepmind(src, out, progress=False)
    complete = snapshot(out)
    # Forget shard 1 of train as if the run had been killed before registering it, and leave
    # a half-written file under its final name.
    manifest = json.loads((out / "manifest.json").read_text())
    train = manifest["splits"]["train"]
    train["shards"] = [r for r in train["shards"] if r["index"] != 1]
    train["scenes"] = sum(r["scenes"] for r in train["shards"])
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "train" / "00001.images.npy").write_bytes(b"junk")
    (out / "train" / "00001.poses.npy").unlink()
    others = {p: p.stat().st_mtime_ns for p in (out / "train").glob("00000.*")}
    others |= {p: p.stat().st_mtime_ns for p in (out / "test").glob("*")}

    report = import_deepmind(src, out, progress=False)
    assert (report.files, report.scenes, report.shards_written, report.shards_kept) == (
        1, RECORDS, 1, 2)
    assert {p: p.stat().st_mtime_ns for p in others} == others
    assert snapshot(out) == complete


def test_a_killed_import_resumes_to_the_same_bytes(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    make_source(tmp_path / "src", files={"train": 3})
    src = tmp_path / "src" / NAME
    import_deepmind(src, tmp_path / "clean", progress=False)
    real, calls = deepmind.write_shard_files, []

    def dies_on_third_shard(*args, **kwargs):
        calls.append(args[2])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(deepmind, "write_shard_files", dies_on_third_shard)
    with pytest.raises(KeyboardInterrupt):
        import_deepmind(src, tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="unfinished: 2 of the 3 shards"):
        SceneDataset(tmp_path / "out", "train")  # read once whole, not before
    monkeypatch.setattr(deepmind, "write_shard_files", real)
    report = import_deepmind(src, tmp_path / "out", progress=False)
    assert (report.shards_written, report.shards_kept) == (1, 2)
    assert snapshot(tmp_path / "out") == snapshot(tmp_path / "clean")


def test_scenes_per_shard_cuts_files_into_numbered_shards(tmp_path: Path) -> None:
    written = make_source(tmp_path / "src", files={"train": 2})
    src, out = tmp_path / "src" / NAME, tmp_path / "out"
    report = import_deepmind(src, out, scenes_per_shard=2, progress=False)
    assert report.shards_written == 4  # each file of 3 records: shards of 2 and 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert [r["scenes"] for r in manifest["splits"]["train"]["shards"]] == [2, 1, 2, 1]
    ds = SceneDataset(out, "train")
    assert ds.meta["scenes_per_shard"] == 2
    cameras = [c for _, scenes in written["train"] for _, c in scenes]
    for i, c in enumerate(cameras):
        np.testing.assert_array_equal(ds.scene(i)[1], c.reshape(VIEWS, 5))
    with pytest.raises(ValueError, match="meta"):  # another layout cannot resume this one
        import_deepmind(src, out, progress=False)


@pytest.mark.slow  # starts worker processes
def test_two_workers_write_the_same_bytes_as_one(tmp_path: Path) -> None:
    make_source(tmp_path / "src", files={"train": 3, "test": 1})
    src = tmp_path / "src" / NAME
    one = import_deepmind(src, tmp_path / "one", workers=1, progress=False)
    two = import_deepmind(src, tmp_path / "two", workers=2, progress=False)
    assert one == two
    assert snapshot(tmp_path / "one") == snapshot(tmp_path / "two")


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="workers"):
        import_deepmind(tmp_path, tmp_path / "out", workers=0)
    with pytest.raises(ValueError, match="scenes_per_shard"):
        import_deepmind(tmp_path, tmp_path / "out", scenes_per_shard=0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        import_deepmind(tmp_path / "missing", tmp_path / "out")


def test_an_empty_file_is_corrupt(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    write_tfrecord(tmp_path / "src" / "a.tfrecord", [scene_example(*make_scene(rng))])
    (tmp_path / "src" / "b.tfrecord").write_bytes(b"")
    with pytest.raises(CorruptRecordError, match=r"b\.tfrecord: record 0: the file holds no"):
        import_deepmind(tmp_path / "src", tmp_path / "out", progress=False)
    report = import_deepmind(tmp_path / "src", tmp_path / "out", skip_corrupt=True,
                             progress=False)
    assert (report.scenes, report.shards_written, len(report.skipped)) == (0, 0, 1)
    assert len(SceneDataset(tmp_path / "out", "train")) == 1  # a.tfrecord, from the first run
