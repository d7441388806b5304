"""Why ``torch.load(weights_only=True)`` refused a file: not a PyTorch checkpoint at all, or a pickle that names code.

Consulted only after a load failed. Nothing is unpickled: the pickle's opcodes are walked with ``pickletools``
and the callables it references are compared with torch's weights-only allowlist.
"""

from __future__ import annotations

import _compat_pickle
import pickletools
import struct
import zipfile
from pathlib import Path
from typing import BinaryIO

from fcnseg.errors import CheckpointError

ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format is a zip archive holding data.pkl and the tensors
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


def _describe_bytes(head: bytes) -> str:
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html")) or b"<html" in text[:512]:
        return "it is an HTML page, as a failed download saves in place of the file"
    if head.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer, not the file it stands for (run 'git lfs pull')"
    if head and all(32 <= b < 127 or b in b"\t\r\n" for b in head[:64]):
        return f"it is text, starting {head[:40].decode('ascii').strip()!r}"
    return f"it starts with the bytes {head[:8].hex(' ')}"


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
    if not head:
        return _not_a_checkpoint(path, "the file is empty (0 bytes)")
    if head.startswith(ZIP_MAGIC):
        return _explain_zip(path, error)
    with open(path, "rb") as f:
        names = pickle_globals(f, path.stat().st_size)
    if names is None:
        return _not_a_checkpoint(path, _describe_bytes(head))
    unsafe = unsafe_globals(names)
    if unsafe:
        return _refused(path, unsafe)
    return _not_a_checkpoint(path, "a Python pickle that torch.save did not write, or a damaged one")
