"""Undo `Content-Encoding` on the side, for the record: the client still gets the bytes as sent."""

from __future__ import annotations

import zlib

import brotli
import zstandard


class _Identity:
    def decompress(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


class _Zlib:
    def __init__(self, wbits: int):
        self._wbits = wbits
        self._obj = zlib.decompressobj(wbits)
        self._first = True

    def decompress(self, data: bytes) -> bytes:
        try:
            return self._obj.decompress(data)
        except zlib.error:
            if self._first and self._wbits == zlib.MAX_WBITS:
                # "deflate" is sent both zlib-wrapped and raw in the wild.
                self._wbits = -zlib.MAX_WBITS
                self._obj = zlib.decompressobj(self._wbits)
                return self._obj.decompress(data)
            raise
        finally:
            self._first = False

    def flush(self) -> bytes:
        return self._obj.flush()


class _Brotli:
    def __init__(self) -> None:
        self._obj = brotli.Decompressor()

    def decompress(self, data: bytes) -> bytes:
        return self._obj.process(data)

    def flush(self) -> bytes:
        return b""


class _Zstd:
    def __init__(self) -> None:
        self._obj = zstandard.ZstdDecompressor().decompressobj()

    def decompress(self, data: bytes) -> bytes:
        return self._obj.decompress(data)

    def flush(self) -> bytes:
        return b""


class UnsupportedEncoding(ValueError):
    pass


def decoder_for(content_encoding: str | None):
    """A streaming decoder (`decompress(data)`, `flush()`) for a Content-Encoding value.

    Stacked encodings ("gzip, br") are undone right to left.
    """
    names = [e.strip().lower() for e in (content_encoding or "").split(",") if e.strip()]
    names = [n for n in names if n != "identity"]
    if not names:
        return _Identity()
    decoders = [_single(name) for name in reversed(names)]
    return decoders[0] if len(decoders) == 1 else _Chain(decoders)


def _single(name: str):
    if name in ("gzip", "x-gzip"):
        return _Zlib(16 + zlib.MAX_WBITS)
    if name == "deflate":
        return _Zlib(zlib.MAX_WBITS)
    if name == "br":
        return _Brotli()
    if name == "zstd":
        return _Zstd()
    raise UnsupportedEncoding(name)


class _Chain:
    def __init__(self, decoders: list) -> None:
        self._decoders = decoders

    def decompress(self, data: bytes) -> bytes:
        for decoder in self._decoders:
            data = decoder.decompress(data)
        return data

    def flush(self) -> bytes:
        data = b""
        for decoder in self._decoders:
            data = decoder.decompress(data) + decoder.flush() if data else decoder.flush()
        return data
