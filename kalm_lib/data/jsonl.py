"""Read JSON Lines (plain or .gz) line by line, so every problem can name its file and line.

``datasets``' JSON builder (pyarrow) reads in blocks: it cannot say which line is broken and it coerces
mixed types, so the local mirror is parsed here and the validated records become a ``datasets.Dataset``
afterwards (``loader.to_hf_dataset``).
"""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Callable, Iterator

from .errors import DataFileError, RecordError


def _open_bytes(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _field_with_bad_bytes(raw: bytes) -> str:
    """Name the JSON field holding undecodable bytes (``<bytes>`` if the line does not parse)."""
    try:
        obj = json.loads(raw.decode("utf-8", errors="replace"))
    except (json.JSONDecodeError, RecursionError):
        return "<bytes>"
    if isinstance(obj, dict):
        for k, v in obj.items():
            if "\ufffd" in json.dumps(v, ensure_ascii=False) or "\ufffd" in k:
                return k
    return "<bytes>"


def iter_jsonl(path: str | os.PathLike, on_error: Callable[[RecordError], None] | None = None,
               allow_blank: bool = False) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)`` (1-based). A line that is not UTF-8, not one complete JSON object,
    or blank raises :class:`RecordError` (field: the JSON key holding bad bytes, else ``<bytes>``;
    ``<json>``; ``<line>``), or, when
    ``on_error`` is given, is passed to it and skipped. ``allow_blank``: skip blank lines silently (the
    evaluation files' readers do, as MTEB's do). A missing file is a :class:`DataFileError`."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(path, "file not found" if not path.exists() else "not a regular file")

    def fail(err: RecordError) -> None:
        if on_error is None:
            raise err
        on_error(err)

    line_no = 0
    with _open_bytes(path) as f:
        while True:
            try:
                raw = f.readline()
            except (EOFError, OSError) as e:  # a cut-off .gz stream
                raise RecordError(path, line_no + 1, "<gzip>", f"compressed stream is damaged: {e}") from e
            if not raw:
                return
            line_no += 1
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                fail(RecordError(path, line_no, _field_with_bad_bytes(raw),
                                 f"not valid UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1})"))
                continue
            if not text.strip():
                if not allow_blank:
                    fail(RecordError(path, line_no, "<line>", "blank line (one JSON object per line expected)"))
                continue
            text = text.rstrip("\r\n")  # so a JSON error's column is on this line, not on "line 2"
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                cut = e.pos >= len(text.rstrip()) or e.msg.startswith("Unterminated string")
                what = "truncated JSON" if cut else "malformed JSON"
                fail(RecordError(path, line_no, "<json>", f"{what}: {e.msg} (column {e.pos + 1})"))
                continue
            except RecursionError:  # e.g. 100,000 nested brackets
                fail(RecordError(path, line_no, "<json>", "malformed JSON: nested too deeply"))
                continue
            if not isinstance(obj, dict):
                fail(RecordError(path, line_no, "<record>", f"expected a JSON object, got {type(obj).__name__}"))
                continue
            yield line_no, obj


def iter_tsv(path: str | os.PathLike, header: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line_number, {column: value})`` of a tab-separated file whose first line is ``header``
    (e.g. BEIR qrels: ``query-id corpus-id score``). Blank lines are skipped. A missing or empty file is a
    :class:`DataFileError`; a wrong header, a row with the wrong number of fields or bytes that are not
    UTF-8 a :class:`RecordError` naming the line and the column."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(path, "file not found" if not path.exists() else "not a regular file")
    want = "<TAB>".join(header)
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                col = raw[:e.start].count(b"\t")
                name = header[col] if line_no > 1 and col < len(header) else "<bytes>"
                raise RecordError(path, line_no, name,
                                  f"not valid UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1})") from None
            cols = text.rstrip("\r\n").split("\t")
            if line_no == 1:
                if [c.strip().lstrip("\ufeff") for c in cols[:len(header)]] != list(header):
                    raise RecordError(path, 1, "<header>", f"expected the header '{want}', got {text.rstrip()!r:.80}")
                continue
            if not text.strip():
                continue
            if len(cols) != len(header):
                raise RecordError(path, line_no, "<row>",
                                  f"expected {len(header)} tab-separated fields ({want}), got {len(cols)}")
            yield line_no, dict(zip(header, cols))
        if f.tell() == 0:
            raise DataFileError(path, f"empty file (expected the header '{want}' and rows)")


def write_jsonl(records, path: str | os.PathLike) -> Path:
    """Write records as UTF-8 JSON Lines atomically (temp file in the same folder, then ``os.replace``)."""
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
