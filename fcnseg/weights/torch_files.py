"""Why a weights file could not be loaded: empty, text, truncated, damaged, or a pickle that names code.

Consulted only after a load failed (``torch.load(weights_only=True)`` or ``onnx.load``). Nothing is unpickled:
the pickle's opcodes are walked with ``pickletools`` and the callables it references are compared with torch's
weights-only allowlist; an ONNX file's top-level protobuf fields are walked to see whether one runs past the end.
"""

from __future__ import annotations

import _compat_pickle
import pickletools
import re
import struct
import zipfile
from pathlib import Path
from typing import BinaryIO

from fcnseg.errors import CheckpointError

ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format is a zip archive holding data.pkl and the tensors
ZIP_END = b"PK\x05\x06"  # the end-of-central-directory record, the last thing written; a cut file lacks it
ZIP_END_SEARCH = 22 + 65535  # the record (22 bytes) and the longest zip comment it may be followed by
# The first pickle of a legacy (non-zip) torch.save file: its magic number 0x1950a86a20f9469cfc6c, protocol 2.
LEGACY_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."
LEGACY_PICKLES = 5  # magic number, protocol version, sys info, the object, the storage keys; then raw tensor bytes
PROTO = b"\x80"  # the first opcode of every pickle of protocol 2 and above
NOT_A_CHECKPOINT = "not a PyTorch checkpoint (corrupt, or another kind of file)"

# Opcodes that push a string; STACK_GLOBAL takes its module and name from the two last pushed.
_STRING_OPCODES = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING",
                   "STRING"}
_NO_STACK_EFFECT = {"PROTO", "FRAME", "STOP"}
_RUN_TIME_NAME = "<a callable named at run time>"


class _Capped:
    """``file`` limited to the ``size`` bytes it holds: a damaged length field must not allocate gigabytes."""

    def __init__(self, file: BinaryIO, size: int):
        self._file, self._left = file, size

    def read(self, n: int = -1) -> bytes:
        data = self._file.read(self._left if n < 0 else min(n, self._left))
        self._left -= len(data)
        return data

    def readline(self) -> bytes:
        line = self._file.readline(self._left)
        self._left -= len(line)
        return line

    def peek(self, n: int) -> bytes:
        return self._file.peek(n)[: min(n, self._left)]


def _qualified(module: str, name: str) -> str:
    """``module.name`` as the unpickler resolves it: protocol-2 pickles name Python 2 modules (``__builtin__``)."""
    return f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}"


def _one_pickle_globals(file: BinaryIO) -> list[str]:
    """The ``module.name`` of every class or callable one pickle references; raises ValueError if it is not one."""
    names: list[str] = []
    pushed: list[str | None] = []  # what the opcodes pushed, None for anything but a string
    memo: dict[int, str | None] = {}
    for opcode, arg, _ in pickletools.genops(file):
        op = opcode.name
        if op in ("GLOBAL", "INST"):
            names.append(_qualified(*arg.split(" ", 1)))  # pickletools gives "module name"
            pushed.append(None)
        elif op == "STACK_GLOBAL":
            module, name = pushed[-2:] if len(pushed) >= 2 else (None, None)
            named = isinstance(module, str) and isinstance(name, str)
            names.append(_qualified(module, name) if named else _RUN_TIME_NAME)
            pushed.append(None)
        elif op in ("EXT1", "EXT2", "EXT4"):
            names.append(f"<copyreg extension {arg}>")
            pushed.append(None)
        elif op in _STRING_OPCODES:
            pushed.append(arg)
        elif op == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif op in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = pushed[-1] if pushed else None
        elif op in ("GET", "BINGET", "LONG_BINGET"):
            pushed.append(memo.get(arg))
        elif op not in _NO_STACK_EFFECT:
            pushed.append(None)
    return names


def pickle_globals(file: BinaryIO, size: int) -> list[str] | None:
    """Classes and callables referenced by the pickles at the start of ``file``, or None if it holds no pickle.

    A legacy (non-zip) ``torch.save`` file is several pickles in a row, then raw tensor bytes; each complete
    pickle counts. ``file`` (``size`` bytes long) must have ``peek``: an ``open(..., "rb")`` or ``ZipFile.open`` file.
    """
    file = _Capped(file, size)
    names: list[str] = []
    complete = 0
    while complete == 0 or file.peek(1)[:1] == PROTO:
        try:
            names += _one_pickle_globals(file)
        except (ValueError, EOFError, struct.error):  # not (or no longer) a pickle: raw bytes, or damaged
            break
        complete += 1
    return names if complete else None


def unsafe_globals(names: list[str]) -> list[str]:
    """The names torch's weights-only unpickler does not allow (it would refuse them, as fcnseg does)."""
    try:
        from torch import _weights_only_unpickler as unpickler  # the list torch.serialization itself consults

        allowed = set(unpickler._get_allowed_globals()) | set(unpickler._get_user_allowed_globals())
    except (ImportError, AttributeError):  # a torch without it: tensors rebuild through torch.* callables
        allowed = {n for n in names if n.startswith("torch.") or n == "collections.OrderedDict"}
    return sorted(set(names) - allowed)


def _refused(path: Path, names: list[str]) -> CheckpointError:
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    hint = ""
    if any(n.startswith("torch.nn.") for n in names):
        hint = " (a whole pickled model? save its state_dict() instead)"
    return CheckpointError(f"{path}: refused to load: its pickle references {shown}, code that loading would run; "
                           f"fcnseg loads only tensors and plain values{hint}")


def _not_a_checkpoint(path: Path, detail: str) -> CheckpointError:
    return CheckpointError(f"{path}: {NOT_A_CHECKPOINT}: {detail}")


def looks_like_text(head: bytes) -> bool:
    """True when ``head`` (a file's first bytes) is UTF-8 text: no control bytes but tab, CR and LF."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:  # only a character cut at the end of ``head`` is forgiven
            return False
        text = head[: e.start].decode("utf-8")
    return bool(text) and all(c >= " " or c in "\t\r\n" for c in text)


def describe_start(head: bytes) -> str | None:
    """What a file that starts with ``head`` is, when its start gives it away (a page, a pointer, text); else None."""
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html")) or b"<html" in text[:512]:
        return "it is an HTML page, as a failed download saves in place of the file"
    if head.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer, not the file it stands for (run 'git lfs pull')"
    if looks_like_text(head):
        shown = head[:40].decode("utf-8", errors="replace").strip()
        return f"it starts like a text file: {shown!r}"
    return None


def _describe_bytes(head: bytes) -> str:
    return describe_start(head) or f"it starts with the bytes {head[:8].hex(' ')}"


def truncated(path: Path, size: int, detail: str) -> CheckpointError:
    """``path: truncated: N bytes, <detail>``, with the remedy: the file ends before its format says it does."""
    return CheckpointError(f"{path}: truncated: {size:,} bytes, {detail}; an interrupted download or copy? "
                           "fetch or copy the file again")


def _zip_is_cut(path: Path, size: int) -> bool:
    """True when the zip archive at ``path`` lacks a whole end-of-central-directory record: it was cut short."""
    with open(path, "rb") as f:
        f.seek(max(0, size - ZIP_END_SEARCH))
        tail = f.read()
    end = tail.rfind(ZIP_END)
    if end < 0 or end + 22 > len(tail):
        return True
    comment_length = struct.unpack("<H", tail[end + 20:end + 22])[0]
    return end + 22 + comment_length > len(tail)


def _legacy_pickles_complete(path: Path, size: int) -> int:
    """How many of a legacy torch.save file's leading pickles are whole (up to :data:`LEGACY_PICKLES`)."""
    with open(path, "rb") as f:
        capped = _Capped(f, size)
        for complete in range(LEGACY_PICKLES):
            try:
                for _ in pickletools.genops(capped):
                    pass
            except (ValueError, EOFError, struct.error):
                return complete
        return LEGACY_PICKLES


def _explain_zip(path: Path, error: Exception) -> CheckpointError:
    try:
        with zipfile.ZipFile(path) as archive:
            record = next((n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")), None)
            if record is None:
                return _not_a_checkpoint(path, "a zip archive without the data.pkl that torch.save writes")
            with archive.open(record) as f:
                names = pickle_globals(f, archive.getinfo(record).file_size)
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as e:  # zlib and CRC failures included
        return _not_a_checkpoint(path, f"a zip archive that cannot be read, truncated or damaged ({e})")
    if names is None:
        return _not_a_checkpoint(path, "its data.pkl is not a pickle")
    unsafe = unsafe_globals(names)
    if unsafe:
        return _refused(path, unsafe)
    reason = str(error).splitlines()[0] if isinstance(error, RuntimeError) else "its tensors cannot be read"
    return _not_a_checkpoint(path, f"a damaged zip archive ({reason})")


def explain_load_failure(path: str | Path, error: Exception) -> CheckpointError:
    """The error to report for a file ``torch.load(path, weights_only=True)`` failed on with ``error``.

    ``refused ...`` naming the callables when the file's pickle really references code outside torch's
    allowlist; otherwise ``not a PyTorch checkpoint (corrupt, or another kind of file): ...`` saying what
    the file looks like (empty, an HTML page, text, a damaged zip archive, a pickle not from torch.save).
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(512)
    size = path.stat().st_size
    if not head:
        return _not_a_checkpoint(path, "the file is empty (0 bytes); an interrupted download or copy? "
                                       "fetch or copy it again")
    if head.startswith(ZIP_MAGIC):
        if _zip_is_cut(path, size):
            return truncated(path, size, "a zip archive (as torch.save writes) without the directory that ends one")
        return _explain_zip(path, error)
    if head.startswith(LEGACY_MAGIC):
        whole = _legacy_pickles_complete(path, size)
        if whole < LEGACY_PICKLES:
            return truncated(path, size, f"a legacy torch.save file that ends inside pickle {whole + 1} "
                                         f"of its {LEGACY_PICKLES}")
        short = re.search(r"unexpected EOF, expected (\d+) more bytes", str(error))
        if short:  # torch's legacy loader reading the raw tensor bytes after the pickles
            return truncated(path, size, f"a legacy torch.save file whose tensors lack "
                                         f"{int(short.group(1)):,} more bytes")
    with open(path, "rb") as f:
        names = pickle_globals(f, size)  # before the text test: a protocol-0 pickle is text too
    if names is None:
        described = _describe_bytes(head)
        if described.startswith("it starts like a text file"):
            return CheckpointError(f"{path}: not a PyTorch checkpoint ({described})")
        return _not_a_checkpoint(path, described)
    unsafe = unsafe_globals(names)
    if unsafe:
        return _refused(path, unsafe)
    return _not_a_checkpoint(path, "a Python pickle that torch.save did not write, or a damaged one")


# --- ONNX files ------------------------------------------------------------------------------------------

_WIRE_WIDTH = {1: 8, 5: 4}  # protobuf fixed64 and fixed32 fields
ONNX_FIRST_BYTE = b"\x08"  # a ModelProto starts with its ir_version: field 1, a varint


def _read_varint(f: BinaryIO) -> int | None:
    """One protobuf varint read from ``f``; None where the file ends inside it."""
    value = shift = 0
    while True:
        byte = f.read(1)
        if not byte:
            return None
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80 or shift > 63:
            return value
        shift += 7


def _onnx_cut_at(path: Path, size: int) -> str | None:
    """Where the top-level fields of the protobuf at ``path`` run past its end, or None if they fit it.

    Only the top level is walked (tags and lengths, seeking over payloads), so a several-hundred-MB graph
    costs a few reads; the nested messages are onnx's to parse.
    """
    with open(path, "rb") as f:
        if f.read(1) != ONNX_FIRST_BYTE:
            return None  # not an ONNX file's start: damaged or foreign, which onnx's own message reports
        f.seek(0)
        while f.tell() < size:
            start = f.tell()
            key = _read_varint(f)
            if key is None:
                return f"last field tag at byte {start:,} is cut"
            if key >> 3 == 0:
                return None  # field number 0 exists in no protobuf: damaged, not cut
            wire = key & 7
            if wire == 0:
                if _read_varint(f) is None:
                    return f"last number at byte {start:,} is cut"
                continue
            if wire == 2:
                length = _read_varint(f)
                if length is None:
                    return f"the length of field {key >> 3} at byte {start:,} is cut"
                needed = length
            elif wire in _WIRE_WIDTH:
                needed = _WIRE_WIDTH[wire]
            else:
                return None  # not a field layout ModelProto uses: damaged, which onnx reports itself
            if f.tell() + needed > size:
                return (f"field {key >> 3} at byte {start:,} holds {needed:,} bytes but only "
                        f"{size - f.tell():,} follow")
            f.seek(needed, 1)
    return None


def check_onnx_file(path: str | Path) -> None:
    """Raise a CheckpointError naming ``path`` if it is empty, text, an HTML page or truncated, before onnx parses it.

    An empty file is a valid empty ModelProto to protobuf, and a cut or text one a bare ``DecodeError``;
    this says which it is and what to do.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path}: the file is empty (0 bytes), expected an ONNX model; an interrupted "
                              "download or copy? fetch or copy it again, or write it with 'fcnseg export'")
    with open(path, "rb") as f:
        head = f.read(512)
    described = describe_start(head)
    if described:
        raise CheckpointError(f"{path}: not an ONNX file ({described}); write one with 'fcnseg export'")
    cut = _onnx_cut_at(path, size)
    if cut:
        raise truncated(path, size, f"an ONNX protobuf whose {cut}")
