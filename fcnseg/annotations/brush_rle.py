"""Label Studio's brush RLE: a mask as the run-length code its brush tool stores (``value.rle``, ``format: rle``).

The code packs the mask's RGBA bytes (row by row, 4 bytes a pixel; a brush pixel is 255 in all four)
into a bit stream, most significant bit first: a 32-bit count of values, a 5-bit word size less one
(8), four 4-bit run-length widths less one (3, 4, 8, 16), then blocks to the end: a 1-bit flag, a
2-bit index into the widths, a run length less one in that many bits, then either one word repeated
(flag 1) or that many words one after the other (flag 0). The last byte is padded with zero bits. The
encoder writes what Label Studio's own converter writes (every run a flag-1 block except runs of one
value, which are flag-0 blocks of one word); the decoder reads both kinds of block.
"""

from __future__ import annotations

import numpy as np

WORD_BITS = 8
RUN_BITS = (3, 4, 8, 16)  # the widths of run lengths the header declares, as Label Studio writes them
CHANNELS = 4  # RGBA


class BrushRleError(ValueError):
    """The bytes are not a brush RLE of the size they are read as."""


def _runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lengths and values of the runs of equal values in the 1-D ``values``."""
    change = np.flatnonzero(values[1:] != values[:-1]) + 1
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.concatenate([starts, [len(values)]]))
    return lengths, values[starts]


def encode_values(values: np.ndarray) -> list[int]:
    """The brush RLE (a list of byte values) of the uint8 1-D ``values`` (RGBA bytes, row by row)."""
    values = np.asarray(values, dtype=np.uint8).ravel()
    header = (len(values) << 21) | ((WORD_BITS - 1) << 16)  # 32 + 5 bits, then the four widths
    for i, width in enumerate(RUN_BITS):
        header |= (width - 1) << (12 - 4 * i)
    codes, widths = [np.array([header >> 21, header & ((1 << 21) - 1)], dtype=np.int64)], [np.array([32, 21])]
    if len(values):
        lengths, run_values = _runs(values)
        longest = 1 << RUN_BITS[-1]
        pieces = np.maximum(1, -(-lengths // longest))  # runs longer than the widest field: several blocks
        lengths_split = np.repeat(lengths, pieces)
        first = np.cumsum(pieces) - pieces
        within = np.arange(len(lengths_split)) - np.repeat(first, pieces)
        last = within == np.repeat(pieces, pieces) - 1
        lengths_split = np.where(last, lengths_split - within * longest, longest)
        value = np.repeat(run_values, pieces).astype(np.int64)
        # the narrowest field that holds the whole run (every piece of a long run takes the widest), as Label Studio does
        index = np.repeat(np.minimum(np.searchsorted(np.array([1 << w for w in RUN_BITS]), lengths), len(RUN_BITS) - 1), pieces)
        single = np.repeat(lengths == 1, pieces)
        run_width = np.array(RUN_BITS)[index]
        flag = (~single).astype(np.int64)
        code = (((flag << 2 | index) << run_width) | (lengths_split - 1)) << WORD_BITS | value
        codes.append(code)
        widths.append(3 + run_width + WORD_BITS)
    return _pack(np.concatenate(codes), np.concatenate(widths))


def _pack(codes: np.ndarray, widths: np.ndarray) -> list[int]:
    """Concatenate ``codes`` (each ``widths`` bits, at most 32) into bytes, most significant bit first, zero-padded."""
    aligned = (codes.astype(np.uint64) << (32 - widths).astype(np.uint64)).astype(">u4")  # left-aligned in 32 bits
    bits = np.unpackbits(aligned.view(np.uint8)).reshape(-1, 32)
    bits = bits[np.arange(32)[None, :] < widths[:, None]]
    padding = (-len(bits)) % 8 or 8  # Label Studio's converter pads a full byte when already aligned
    return np.packbits(np.concatenate([bits, np.zeros(padding, dtype=np.uint8)])).tolist()


def decode_values(rle) -> np.ndarray:
    """The uint8 values (RGBA bytes, row by row) of a brush RLE (a list of byte values).

    Raises:
        BrushRleError: not bytes 0..255, a word size other than 8, or a stream that ends inside a block.
    """
    data = np.asarray(rle)
    if data.ndim != 1 or data.size < 8 or not np.issubdtype(data.dtype, np.integer) or data.min() < 0 or data.max() > 255:
        raise BrushRleError("a brush RLE is a list of at least 8 byte values (0..255)")
    bits = np.unpackbits(data.astype(np.uint8))
    stream = _Bits(bits)
    count = stream.read(32)
    word = stream.read(5) + 1
    if word != WORD_BITS:
        raise BrushRleError(f"word size {word} bits; expected {WORD_BITS} (RGBA bytes)")
    run_bits = [stream.read(4) + 1 for _ in range(4)]
    out = np.zeros(count, dtype=np.uint8)
    i = 0
    while i < count:
        repeated = stream.read(1)
        j = i + 1 + stream.read(run_bits[stream.read(2)])
        if j > count:
            raise BrushRleError(f"a run reaches value {j}; the header declares {count}")
        if repeated:
            out[i:j] = stream.read(word)
        else:
            out[i:j] = [stream.read(word) for _ in range(j - i)]
        i = j
    return out


class _Bits:
    """Reads unsigned numbers, most significant bit first, from an array of bits."""

    def __init__(self, bits: np.ndarray):
        self.bits, self.at = bits, 0

    def read(self, n: int) -> int:
        if self.at + n > len(self.bits):
            raise BrushRleError("the brush RLE ends inside a block")
        value = 0
        for bit in self.bits[self.at : self.at + n].tolist():
            value = value << 1 | bit
        self.at += n
        return value


def encode_mask(mask: np.ndarray) -> list[int]:
    """Brush RLE of a bool ``[H, W]`` mask: its pixels 255 in all four RGBA bytes, the rest 0."""
    return encode_values(np.repeat(np.asarray(mask, dtype=bool).ravel().astype(np.uint8) * 255, CHANNELS))


def decode_mask(rle, height: int, width: int) -> np.ndarray:
    """bool ``[height, width]``: the pixels whose alpha is at least half (Label Studio's brush paints 255).

    Raises:
        BrushRleError: the code is broken or does not hold ``height * width`` RGBA pixels.
    """
    values = decode_values(rle)
    if values.size != height * width * CHANNELS:
        raise BrushRleError(f"the brush RLE holds {values.size} values; expected {height} x {width} x {CHANNELS} "
                            f"= {height * width * CHANNELS} for the image's RGBA pixels")
    return values.reshape(height, width, CHANNELS)[..., 3] >= 128
