"""Read the shape of an image file from its header, and its pixels when asked.

Header readers parse the bytes that describe the image and nothing more: the FITS header cards
(2,880-byte blocks), the PNG ``IHDR`` chunk, the JPEG start-of-frame marker, the ``.npy`` header,
and Pillow's lazy ``Image.open`` for TIFF. Parsing FITS cards directly is ~30x faster than
``astropy.io.fits.getheader``; astropy still decodes the pixels (:func:`read_pixels`).

Every reader returns an :class:`ImageInfo`; problems with the file become a ``status`` and a
``detail`` instead of an exception, so that one bad file never stops a scan.
"""

from __future__ import annotations

import functools
import gzip
import io
import math
import os
import re
import struct
import zlib
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

FITS_BLOCK = 2880
_CARD = 80
_MAX_HEADER_BLOCKS = 1000  # 2.9 MB of header cards: anything larger is not a real header

_FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fz")
_SUFFIX_FORMAT = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".jpe": "jpeg",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".npy": "npy",
    **dict.fromkeys(_FITS_SUFFIXES, "fits"),
}
#: File suffixes that a scan picks up by default (compressed FITS as ``.fits.gz`` too).
IMAGE_SUFFIXES = tuple(_SUFFIX_FORMAT)


class _Readable(Protocol):
    def read(self, count: int, /) -> bytes: ...

    def seek(self, pos: int, /) -> int: ...


_BITPIX_DTYPE = {8: "uint8", 16: "int16", 32: "int32", 64: "int64", -32: "float32", -64: "float64"}
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # colour type -> channels as loaded
_NPY_MAGIC = b"\x93NUMPY"


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What a header says about one image file; shape is (channels, height, width)."""

    format: str | None
    channels: int | None = None
    height: int | None = None
    width: int | None = None
    dtype: str | None = None
    hdu: int | None = None
    status: str = "ok"
    detail: str = ""

    @property
    def shape(self) -> tuple[int, int, int] | None:
        if self.channels is None or self.height is None or self.width is None:
            return None
        return (self.channels, self.height, self.width)


def format_from_name(name: str) -> str | None:
    """Return the image format a file name suggests, or None (``.fits.gz`` -> ``fits``)."""
    lower = name.lower()
    if lower.endswith(".gz"):
        return "fits" if lower[:-3].endswith(_FITS_SUFFIXES) else None
    dot = lower.rfind(".")
    return _SUFFIX_FORMAT.get(lower[dot:]) if dot > lower.rfind("/") else None


#: Compression suffixes, then an image suffix, as stripped from a file name to make its stem.
STEM_SUFFIXES = re.compile(r"(\.(fits|fit|fts|png|jpg|jpeg|jpe|tif|tiff|npy))?(\.(gz|fz))*$", re.I)


def stem_of(name: str) -> str:
    """File name without its image suffixes: ``gal.fits.gz`` and ``gal.fits.fz`` -> ``gal``."""
    return STEM_SUFFIXES.sub("", name, count=1) or name


def sniff_format(head: bytes) -> str | None:
    """Return the format of a file from its first bytes, or None if none is recognised."""
    if head.startswith(b"SIMPLE  ="):
        return "fits"
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    if head.startswith(_NPY_MAGIC):
        return "npy"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    return None


class _FdReader:
    """Sequential ``read``/``seek`` over a raw file descriptor with ``os.pread``.

    Cheaper than a buffered file object for the few small reads a header needs.
    """

    __slots__ = ("fd", "pos")

    def __init__(self, fd: int, pos: int = 0) -> None:
        self.fd = fd
        self.pos = pos

    def read(self, count: int) -> bytes:
        data = os.pread(self.fd, count, self.pos)
        self.pos += len(data)
        return data

    def seek(self, pos: int) -> int:
        self.pos = pos
        return pos


def inspect_file(
    path: str, size: int | None = None, *, verify: bool = False, hinted: str | None = None
) -> ImageInfo:
    """Read the header of one image file (and decode its pixels if ``verify``).

    Parameters
    ----------
    path : str
        Path of the file.
    size : int, optional
        File size in bytes if already known from ``os.stat`` (used to detect truncation).
    verify : bool, default False
        Also decode every pixel and reject truncated, corrupt, blank and non-finite images.
    hinted : str, optional
        ``format_from_name(path)``, if the caller already has it.

    Returns
    -------
    ImageInfo
        Shape as (C, H, W), dtype, the FITS HDU, and ``status``/``detail``.
    """
    if hinted is None:
        hinted = format_from_name(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except PermissionError:
        return ImageInfo(hinted, status="unreadable", detail="permission denied; check chmod")
    except OSError as exc:
        return ImageInfo(hinted, status="unreadable", detail=_os_detail(exc))
    try:
        if size is None:
            size = os.fstat(fd).st_size
        if size == 0:
            return ImageInfo(hinted, status="empty_file", detail="file is 0 bytes long")
        head = os.pread(fd, FITS_BLOCK, 0)
        kind = sniff_format(head)
        reader = _FdReader(fd, len(head))
        if kind == "gzip":
            info = _fits_gzip(path, hinted)
        elif kind == "fits":
            info = _walk_fits(reader, head, size)
        elif kind == "png":
            info = _png_header(reader, head, size)
        elif kind == "jpeg":
            info = _jpeg_header(reader, head)
        elif kind == "npy":
            info = _npy_header(head, size)
        elif kind == "tiff":
            info = _tiff_header(path)
        else:
            expected = hinted or "image"
            return ImageInfo(
                hinted,
                status="corrupt",
                detail=f"not a {expected.upper()} file: starts with {head[:12]!r}",
            )
    except OSError as exc:
        return ImageInfo(hinted, status="unreadable", detail=_os_detail(exc))
    finally:
        os.close(fd)
    if hinted is not None and info.format is not None and hinted != info.format:
        info = replace(info, detail=_join(info.detail, f"content is {info.format.upper()}"))
    if verify and info.status == "ok":
        info = _verify(path, info)
    return info


def _os_detail(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


# --- FITS --------------------------------------------------------------------------------------


def _card_value(raw: str) -> str | int | float | bool:
    """Parse the value field of a FITS card (columns 11-80), dropping any comment."""
    text = raw.strip()
    if text.startswith("'"):
        end = text.find("'", 1)
        return text[1:end].rstrip() if end > 0 else text[1:]
    text = text.split("/", 1)[0].strip()
    if text == "T":
        return True
    if text == "F":
        return False
    try:
        return int(text)
    except ValueError:
        try:
            return float(text.replace("D", "E"))
        except ValueError:
            return text


_WANTED_CARDS = frozenset(
    name.ljust(8).encode()
    for name in (
        *("SIMPLE", "XTENSION", "BITPIX", "NAXIS", "PCOUNT", "GCOUNT", "BZERO", "BSCALE"),
        *("ZIMAGE", "ZBITPIX", "ZNAXIS"),
        *(f"NAXIS{i}" for i in range(1, 1000)),
        *(f"ZNAXIS{i}" for i in range(1, 100)),
    )
)
_END = b"END".ljust(8)
_CARD_STARTS = range(0, FITS_BLOCK, _CARD)


def _read_fits_header(read: _Readable, first: bytes) -> tuple[dict[str, object], int] | None:
    """Parse the cards galclust needs from one header; return them and the header length.

    ``first`` is the header's first block (already read). Returns None when no END card comes
    before the file ends.
    """
    cards: dict[str, object] = {}
    block = first
    nblocks = 0
    while True:
        if len(block) < FITS_BLOCK:
            return None
        nblocks += 1
        for start in _CARD_STARTS:
            key = block[start : start + 8]
            if key in _WANTED_CARDS:
                if block[start + 8 : start + 10] == b"= ":
                    value = block[start + 10 : start + _CARD].decode("ascii", "replace")
                    cards[key.rstrip().decode()] = _card_value(value)
            elif key == _END:
                return cards, nblocks * FITS_BLOCK
        if nblocks >= _MAX_HEADER_BLOCKS:
            return None
        block = read.read(FITS_BLOCK)


def _int_card(cards: dict[str, object], key: str, default: int = 0) -> int:
    value = cards.get(key, default)
    return value if type(value) is int else default  # not bool, not a malformed string


def _fits_dtype(bitpix: int, cards: dict[str, object]) -> str:
    dtype = _BITPIX_DTYPE.get(bitpix, f"bitpix{bitpix}")
    bzero, bscale = cards.get("BZERO", 0), cards.get("BSCALE", 1)
    if bscale not in (1, 1.0):
        return "float32" if bitpix in (8, 16) else "float64"
    if bitpix == 16 and bzero == 32768:
        return "uint16"
    if bitpix == 32 and bzero == 2147483648:
        return "uint32"
    if bitpix == 8 and bzero == -128:
        return "int8"
    return dtype


def _squeeze_axes(axes: list[int]) -> list[int]:
    """Drop degenerate FITS axes beyond the second (NAXIS3 = NAXIS4 = 1 in radio-style cubes)."""
    kept = list(axes)
    while len(kept) > 2 and kept[-1] == 1:
        kept.pop()
    return kept


def _walk_fits(read: _Readable, first: bytes, size: int | None) -> ImageInfo:
    """Walk the HDUs from the current header to the first one holding a 2-D or 3-D image."""
    if not first.startswith(b"SIMPLE  ="):
        return ImageInfo(
            "fits", status="corrupt", detail=f"not a FITS file: starts with {first[:12]!r}"
        )
    offset = 0
    index = 0
    block = first
    too_many_dims = ""
    while True:
        parsed = _read_fits_header(read, block)
        if parsed is None:
            if index == 0:
                return ImageInfo("fits", status="truncated", detail="header has no END card")
            break
        cards, header_len = parsed
        compressed = cards.get("ZIMAGE") is True
        prefix = "Z" if compressed else ""
        ndim = _int_card(cards, f"{prefix}NAXIS")
        axes = [_int_card(cards, f"{prefix}NAXIS{i}") for i in range(1, ndim + 1)]
        is_image = index == 0 or cards.get("XTENSION") == "IMAGE" or compressed
        bitpix = _int_card(cards, "BITPIX", 8)
        raw_axes = (
            [_int_card(cards, f"NAXIS{i}") for i in range(1, _int_card(cards, "NAXIS") + 1)]
            if compressed
            else axes
        )
        data_len = 0
        if raw_axes:
            data_len = (
                abs(bitpix)
                // 8
                * _int_card(cards, "GCOUNT", 1)
                * (_int_card(cards, "PCOUNT") + math.prod(raw_axes))
            )
        data_end = offset + header_len + data_len
        if is_image and len(axes) >= 2:
            kept = _squeeze_axes(axes)
            if len(kept) <= 3 and min(kept) > 0:
                if size is not None and data_end > size:
                    return ImageInfo(
                        "fits",
                        status="truncated",
                        detail=f"HDU {index} needs {data_end} bytes, file has {size}",
                    )
                channels = kept[2] if len(kept) == 3 else 1
                zbitpix = _int_card(cards, "ZBITPIX", bitpix) if compressed else bitpix
                return ImageInfo(
                    "fits",
                    channels=channels,
                    height=kept[1],
                    width=kept[0],
                    dtype=_fits_dtype(zbitpix, cards),
                    hdu=index,
                    detail="tile-compressed" if compressed else "",
                )
            if len(kept) > 3 and not too_many_dims:
                shape = "x".join(str(a) for a in reversed(axes))
                too_many_dims = (
                    f"HDU {index} is {len(axes)}-D ({shape}); galclust reads 2-D or 3-D images"
                )
        padded = data_end + (-data_end) % FITS_BLOCK
        if size is not None and padded >= size:
            break
        skip = padded - (offset + header_len)
        if skip:
            if size is not None:
                read.seek(padded)
            else:
                _skip(read, skip)
        offset = padded
        index += 1
        block = read.read(FITS_BLOCK)
        if len(block) < FITS_BLOCK or not block.startswith(b"XTENSION"):
            break
    if too_many_dims:
        return ImageInfo("fits", status="unsupported_ndim", detail=too_many_dims)
    return ImageInfo(
        "fits", status="no_image_hdu", detail=f"none of {index + 1} HDU(s) holds a 2-D or 3-D image"
    )


def _skip(read: _Readable, count: int) -> None:
    while count > 0:
        chunk = read.read(min(count, 1 << 20))
        if not chunk:
            return
        count -= len(chunk)


def _fits_gzip(path: str, hinted: str | None) -> ImageInfo:
    try:
        with gzip.open(path, "rb") as gz:
            head = gz.read(FITS_BLOCK)
            if sniff_format(head) != "fits":
                return ImageInfo(hinted, status="corrupt", detail="gzip file does not hold FITS")
            info = _walk_fits(gz, head, None)
    except EOFError:
        return ImageInfo("fits", status="truncated", detail="gzip stream ends early")
    except (gzip.BadGzipFile, zlib.error) as exc:
        return ImageInfo("fits", status="corrupt", detail=f"bad gzip data ({exc})")
    return replace(info, detail=_join("gzip", info.detail))


# --- PNG, JPEG, TIFF, NumPy --------------------------------------------------------------------


def _png_header(fh: _Readable, head: bytes, size: int) -> ImageInfo:
    if len(head) < 33 or head[12:16] != b"IHDR":
        return ImageInfo(
            "png", status="truncated" if len(head) < 33 else "corrupt", detail="no IHDR chunk"
        )
    width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
    if colour not in _PNG_CHANNELS or width == 0 or height == 0:
        return ImageInfo("png", status="corrupt", detail=f"bad IHDR (colour type {colour})")
    info = ImageInfo(
        "png",
        channels=_PNG_CHANNELS[colour],
        height=height,
        width=width,
        dtype="uint16" if depth == 16 else "uint8",
        detail="palette, loaded as RGB" if colour == 3 else "",
    )
    fh.seek(size - 12)
    if fh.read(12)[4:8] != b"IEND":
        return replace(info, status="truncated", detail="no IEND chunk at the end of the file")
    return info


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_header(fh: _Readable, head: bytes) -> ImageInfo:
    data = head
    pos = 2
    while True:
        if pos + 4 > len(data):
            more = fh.read(max(4096, pos + 4 - len(data)))
            if not more:
                return ImageInfo("jpeg", status="truncated", detail="no start-of-frame marker")
            data += more
            continue
        if data[pos] != 0xFF:
            return ImageInfo("jpeg", status="corrupt", detail=f"bad marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _SOF_MARKERS:
            while pos + 10 > len(data):
                more = fh.read(4096)
                if not more:
                    return ImageInfo("jpeg", status="truncated", detail="start-of-frame cut off")
                data += more
            precision, height, width, components = struct.unpack(">BHHB", data[pos + 4 : pos + 10])
            if components == 4:
                return ImageInfo(
                    "jpeg", 3, height, width, "uint8", detail="CMYK JPEG, converted to RGB on load"
                )
            if components not in (1, 3) or width == 0 or height == 0:
                return ImageInfo("jpeg", status="corrupt", detail=f"{components} colour components")
            return ImageInfo(
                "jpeg", components, height, width, "uint16" if precision > 8 else "uint8"
            )
        pos += 2 + length


# The header dict exactly as numpy writes it; anything else goes through numpy's own parser.
_NPY_DICT = re.compile(
    rb"\{'descr': '([^']+)', 'fortran_order': (?:True|False), 'shape': \(([0-9, ]*)\), \}"
)


@functools.cache
def _npy_dtype(descr: bytes) -> np.dtype[Any]:
    return np.dtype(descr.decode("ascii"))


def _parse_npy_header(head: bytes) -> tuple[tuple[int, ...], np.dtype[Any], int]:
    """Shape, dtype and data offset of a .npy file from its first bytes."""
    if head[6:7] == b"\x01":
        (length,) = struct.unpack("<H", head[8:10])
        start = 10
    else:
        (length,) = struct.unpack("<I", head[8:12])
        start = 12
    match = _NPY_DICT.match(head, start, start + length)
    if match is not None:
        shape = tuple(int(v) for v in match.group(2).split(b",") if v.strip())
        return shape, _npy_dtype(match.group(1)), start + length
    stream = io.BytesIO(head)
    version = np.lib.format.read_magic(stream)
    reader = (
        np.lib.format.read_array_header_1_0
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0
    )
    shape, _, dtype = reader(stream)
    return tuple(shape), dtype, stream.tell()


def _npy_header(head: bytes, size: int) -> ImageInfo:
    try:
        shape, dtype, offset = _parse_npy_header(head)
    except (ValueError, SyntaxError, EOFError, TypeError, struct.error) as exc:
        return ImageInfo("npy", status="corrupt", detail=f"bad .npy header ({exc})")
    needed = offset + math.prod(shape) * dtype.itemsize
    dims = len(shape)
    chw: tuple[int, ...]
    if dims == 2:
        chw = (1, shape[0], shape[1])
    elif dims == 3:
        # (C, H, W) when the first axis looks like bands, (H, W, C) when the last one does.
        chw = (shape[2], shape[0], shape[1]) if shape[2] <= 4 < shape[0] else tuple(shape)
    else:
        return ImageInfo(
            "npy",
            dtype=str(dtype),
            status="unsupported_ndim",
            detail=f"array of shape {tuple(shape)}; galclust reads 2-D or 3-D arrays",
        )
    detail = "stored (H, W, C)" if dims == 3 and chw != tuple(shape) else ""
    info = ImageInfo("npy", chw[0], chw[1], chw[2], str(dtype), detail=detail)
    if dtype.hasobject:
        return replace(info, status="corrupt", detail="object array; save numeric pixels")
    if size < needed:
        return replace(info, status="truncated", detail=f"needs {needed} bytes, file has {size}")
    if min(chw) == 0:
        return replace(info, status="empty_image", detail=f"array of shape {tuple(shape)}")
    return info


_PIL_MODE = {
    "1": (1, "bool"),
    "L": (1, "uint8"),
    "P": (3, "uint8"),
    "LA": (2, "uint8"),
    "RGB": (3, "uint8"),
    "RGBA": (4, "uint8"),
    "CMYK": (3, "uint8"),
    "YCbCr": (3, "uint8"),
    "I": (1, "int32"),
    "F": (1, "float32"),
    "I;16": (1, "uint16"),
    "I;16B": (1, "uint16"),
}


def _tiff_header(path: str) -> ImageInfo:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            mode, (width, height) = im.mode, im.size
    except UnidentifiedImageError:
        return ImageInfo("tiff", status="corrupt", detail="Pillow cannot identify it as TIFF")
    except (SyntaxError, ValueError, struct.error) as exc:
        return ImageInfo("tiff", status="corrupt", detail=f"bad TIFF header ({exc})")
    channels, dtype = _PIL_MODE.get(mode, (None, None))
    if channels is None:
        return ImageInfo("tiff", status="corrupt", detail=f"unsupported Pillow mode {mode!r}")
    return ImageInfo("tiff", channels, height, width, dtype)


# --- pixels ------------------------------------------------------------------------------------


def read_pixels(path: str, fmt: str, hdu: int | None = None) -> np.ndarray:
    """Decode an image file into an array of shape (C, H, W).

    Parameters
    ----------
    path : str
        Image file.
    fmt : str
        ``fits``, ``png``, ``jpeg``, ``tiff`` or ``npy`` (the catalog's ``format`` column).
    hdu : int, optional
        FITS HDU holding the image (the catalog's ``hdu`` column); the first image HDU if None.

    Returns
    -------
    ndarray of shape (C, H, W)
        Pixels in their stored type (scaled by BSCALE/BZERO for FITS); palette and CMYK images
        are converted to RGB.

    Raises
    ------
    OSError, ValueError
        The file cannot be decoded; ``EOFError`` or an "truncated" message if it is cut short.
    """
    if fmt == "fits":
        from astropy.io import fits

        with fits.open(path, memmap=False) as hdul:
            index = (
                hdu
                if hdu is not None
                else next(
                    i
                    for i, h in enumerate(hdul)
                    if h.is_image and h.data is not None and h.data.ndim >= 2
                )
            )
            data = np.asarray(hdul[index].data)
        data = np.squeeze(data, axis=tuple(range(data.ndim - 3)) if data.ndim > 3 else ())
        return data[None] if data.ndim == 2 else data
    if fmt == "npy":
        array = np.load(path, allow_pickle=False)
        if array.ndim == 2:
            return np.asarray(array[None])
        if array.shape[2] <= 4 < array.shape[0]:
            return np.moveaxis(array, 2, 0)
        return np.asarray(array)
    from PIL import Image

    with Image.open(path) as opened:
        im: Image.Image = opened
        if im.mode in ("P", "CMYK", "YCbCr"):
            im = im.convert("RGBA" if im.mode == "P" and "transparency" in im.info else "RGB")
        array = np.asarray(im)
    return array[None] if array.ndim == 2 else np.moveaxis(array, 2, 0)


def _verify(path: str, info: ImageInfo) -> ImageInfo:
    assert info.format is not None
    try:
        pixels = read_pixels(path, info.format, info.hdu)
    except (
        EOFError,
        OSError,
        ValueError,
        SyntaxError,
        StopIteration,
        struct.error,
        zlib.error,
    ) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        truncated = isinstance(exc, EOFError) or "truncat" in message.lower()
        return replace(
            info,
            status="truncated" if truncated else "corrupt",
            detail=f"pixels cannot be decoded ({message[:120]})",
        )
    if pixels.dtype.kind == "f" and not np.isfinite(pixels).all():
        bad = int((~np.isfinite(pixels)).sum())
        return replace(
            info, status="non_finite", detail=f"{bad} of {pixels.size} pixels are NaN or inf"
        )
    if pixels.size == 0 or pixels.min() == pixels.max():
        value = pixels.flat[0] if pixels.size else "nothing"
        return replace(info, status="empty_image", detail=f"every pixel is {value}")
    return info
