"""Reading TFRecord files of serialised ``tf.train.Example`` messages, without TensorFlow.

Two readers, neither of which needs TensorFlow or protobuf:

- the TFRecord framing: each record is a little-endian uint64 data length, the masked CRC32C
  of those 8 bytes, the data, and the masked CRC32C of the data; every CRC is checked;
- the few protobuf wire-format rules a ``tf.train.Example`` uses: a ``Features`` map of
  names to a ``bytes_list``, ``float_list`` (packed or not) or ``int64_list``.

Damage raises ``CorruptRecordError`` (framing, CRC) or ValueError (protobuf), naming the file,
the record or the field at fault.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import crc32c
import numpy as np

_HEADER = struct.Struct("<QI")  # data length, masked CRC32C of the 8 length bytes
_CRC = struct.Struct("<I")  # masked CRC32C of the data
_MASK_DELTA = 0xA282EAD8

PathLike = str | os.PathLike


class CorruptRecordError(ValueError):
    """A TFRecord record that fails its CRC checks, is truncated, or does not decode.

    The message names the file, the record index (0-based) and what was wrong; the same
    are in the attributes ``path``, ``record`` and ``reason``.
    """

    def __init__(self, path: PathLike, record: int, reason: str) -> None:
        self.path, self.record, self.reason = str(path), int(record), reason
        super().__init__(f"{self.path}: record {self.record}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuild from the three fields so the error survives a trip out of a worker process.
        return type(self), (self.path, self.record, self.reason)


# --------------------------------------------------------------------------------------------
# TFRecord framing


def masked_crc32c(data: bytes | memoryview) -> int:
    """TFRecord's masked CRC32C: ``((crc >> 15) | (crc << 17)) + 0xa282ead8`` mod 2**32."""
    crc = crc32c.crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def _frames(f: BinaryIO, path: PathLike) -> Iterator[tuple[int, int]]:
    """Walk the record framing of an open file, checking each length header.

    Yields ``(record index, data length)`` with ``f`` positioned at the record's data; the
    caller may read from there (the walk seeks to the next header itself). Raises
    CorruptRecordError when a header is truncated, fails its CRC or announces more bytes
    than the file holds: nothing after it can be found.
    """
    size = os.fstat(f.fileno()).st_size
    offset, index = 0, 0
    while offset < size:
        f.seek(offset)
        header = f.read(_HEADER.size)
        if len(header) < _HEADER.size:
            raise CorruptRecordError(
                path, index, f"truncated: the file ends {len(header)} bytes into the "
                f"{_HEADER.size}-byte record header"
            )
        length, stored = _HEADER.unpack(header)
        computed = masked_crc32c(header[:8])
        if computed != stored:
            raise CorruptRecordError(
                path, index, f"the length header fails its CRC32C check "
                f"(stored 0x{stored:08x}, computed 0x{computed:08x})"
            )
        left = size - offset - _HEADER.size
        if length + _CRC.size > left:
            raise CorruptRecordError(
                path, index, f"truncated: the header announces {length} data bytes and a "
                f"{_CRC.size}-byte CRC, the file has {left} bytes left"
            )
        yield index, length
        offset += _HEADER.size + length + _CRC.size
        index += 1


def _records(
    f: BinaryIO, path: PathLike, start: int = 0, stop: int | None = None
) -> Iterator[tuple[int, bytes | None, str | None]]:
    """Records ``start <= index < stop`` of an open TFRecord file.

    Yields ``(index, data, None)`` for a record whose data passes its CRC and
    ``(index, None, reason)`` for one that does not (the framing is intact, so reading goes
    on). Framing damage raises CorruptRecordError (see ``_frames``). Records before ``start``
    are skipped by seeking, their data unchecked.
    """
    for index, length in _frames(f, path):
        if stop is not None and index >= stop:
            return
        if index < start:
            continue
        data = f.read(length)
        (stored,) = _CRC.unpack(f.read(_CRC.size))
        computed = masked_crc32c(data)
        if computed == stored:
            yield index, data, None
        else:
            yield index, None, (
                f"the data ({length} bytes) fails its CRC32C check "
                f"(stored 0x{stored:08x}, computed 0x{computed:08x})"
            )


def read_tfrecord(path: PathLike) -> Iterator[bytes]:
    """The records of one TFRecord file, in order, each checked against both of its CRCs.

    Raises CorruptRecordError (naming the file and the record index) at the first record that
    is truncated or fails a check; the records before it have been yielded.
    """
    with open(path, "rb") as f:
        for index, data, reason in _records(f, path):
            if data is None:
                raise CorruptRecordError(path, index, str(reason))
            yield data


def _count_records(path: Path) -> int:
    """Records in a file by its framing alone (data unchecked); a damaged header counts as one."""
    count = 0
    with open(path, "rb") as f:
        try:
            for _ in _frames(f, path):
                count += 1
        except CorruptRecordError:
            count += 1  # the record where reading stops; importing it reports the damage
    return count


# --------------------------------------------------------------------------------------------
# Protobuf wire format: just enough for tf.train.Example


def _varint(buf: memoryview, pos: int, end: int, where: str) -> tuple[int, int]:
    """Decode one base-128 varint at ``pos``; return (value, next position)."""
    result = shift = 0
    while True:
        if pos >= end:
            raise ValueError(f"{where}: truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ValueError(f"{where}: varint longer than 10 bytes")


def _fields(buf: memoryview, start: int, end: int, where: str) -> Iterator[tuple[int, int, Any]]:
    """The fields of one message in ``buf[start:end]`` as ``(number, wire type, value)``.

    value: the integer for a varint (wire type 0), else ``(begin, end)`` of the payload in
    ``buf`` (1: 8 bytes, 2: length-delimited, 5: 4 bytes). Groups (3, 4) are refused.
    """
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end, where)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError(f"{where}: field number 0 is not valid protobuf")
        if wire == 0:
            value, pos = _varint(buf, pos, end, f"{where}: field {number}")
            yield number, wire, value
            continue
        if wire == 2:
            size, pos = _varint(buf, pos, end, f"{where}: field {number} length")
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
        else:
            raise ValueError(f"{where}: field {number} has wire type {wire}, not readable here")
        if pos + size > end:
            raise ValueError(
                f"{where}: field {number} is truncated ({size} bytes announced, "
                f"{end - pos} left)"
            )
        yield number, wire, (pos, pos + size)
        pos += size


def _expect(wire: int, want: int, where: str, number: int) -> None:
    if wire != want:
        raise ValueError(f"{where}: field {number} has wire type {wire}, expected {want}")


def _signed64(value: int) -> int:
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >> 63 else value


def _parse_list(buf: memoryview, kind: int, span: tuple[int, int], where: str) -> list:
    """Values of a BytesList (kind 1), FloatList (2) or Int64List (3) message."""
    values: list = []
    for number, wire, value in _fields(buf, *span, where):
        if number != 1:
            continue  # unknown field
        if kind == 1:
            _expect(wire, 2, where, number)
            values.append(bytes(buf[value[0]:value[1]]))
        elif kind == 2 and wire == 2:  # packed floats
            begin, stop = value
            if (stop - begin) % 4:
                raise ValueError(f"{where}: packed floats take {stop - begin} bytes, "
                                 "not a multiple of 4")
            values.extend(np.frombuffer(buf[begin:stop], dtype="<f4").tolist())
        elif kind == 2:
            _expect(wire, 5, where, number)
            values.append(struct.unpack_from("<f", buf, value[0])[0])
        elif wire == 2:  # packed int64s
            pos, stop = value
            while pos < stop:
                item, pos = _varint(buf, pos, stop, where)
                values.append(_signed64(item))
        else:
            _expect(wire, 0, where, number)
            values.append(_signed64(value))
    return values


_KINDS = {1: "bytes_list", 2: "float_list", 3: "int64_list"}


def _parse_feature(
    buf: memoryview, span: tuple[int, int], where: str, merged: tuple[int, list] | None
) -> tuple[int, list] | None:
    """A Feature message as ``(kind, values)`` merged into ``merged`` (protobuf semantics:
    a repeated occurrence of the same list extends it, another list of the oneof replaces it)."""
    for number, wire, value in _fields(buf, *span, where):
        if number not in _KINDS:
            continue
        _expect(wire, 2, where, number)
        values = _parse_list(buf, number, value, f"{where}.{_KINDS[number]}")
        if merged is not None and merged[0] == number:
            merged[1].extend(values)
        else:
            merged = (number, values)
    return merged


def _parse_features(
    buf: memoryview, span: tuple[int, int], features: dict[str, tuple[int, list] | None]
) -> None:
    """Add the map entries of a Features message to ``features``."""
    where = "Example.features"
    for number, wire, value in _fields(buf, *span, where):
        if number != 1:
            continue
        _expect(wire, 2, where, number)
        key, feature = "", None
        for entry_number, entry_wire, entry_value in _fields(buf, *value, f"{where}.feature"):
            if entry_number == 1:
                _expect(entry_wire, 2, f"{where}.feature", entry_number)
                raw = bytes(buf[entry_value[0]:entry_value[1]])
                try:
                    key = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise ValueError(f"{where}: feature name {raw!r} is not UTF-8") from err
            elif entry_number == 2:
                _expect(entry_wire, 2, f"{where}.feature", entry_number)
                feature = _parse_feature(
                    buf, entry_value, f"{where}.feature[{key!r}]", feature
                )
        features[key] = feature  # a later entry with the same key wins, as in a protobuf map


def parse_example(data: bytes) -> dict[str, list]:
    """Decode a serialised ``tf.train.Example`` into ``{feature name: values}``.

    A bytes_list gives ``bytes`` values, a float_list ``float`` (packed or not), an int64_list
    ``int``; a feature with no list set gives ``[]``. Unknown fields are skipped. Malformed
    input raises ValueError naming the message and field at fault.
    """
    buf = memoryview(data).cast("B")
    features: dict[str, tuple[int, list] | None] = {}
    for number, wire, value in _fields(buf, 0, len(buf), "Example"):
        if number == 1:
            _expect(wire, 2, "Example", number)
            _parse_features(buf, value, features)
    return {name: ([] if f is None else f[1]) for name, f in features.items()}
