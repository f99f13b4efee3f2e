import gzip
import zlib

import brotli
import pytest
import zstandard

from app.proxy.decoding import UnsupportedEncoding, decoder_for

DATA = b'{"type":"message","content":[{"type":"text","text":"' + b"abc " * 5000 + b'"}]}'


def _feed(decoder, payload: bytes, size: int = 7) -> bytes:
    out = b"".join(decoder.decompress(payload[i:i + size]) for i in range(0, len(payload), size))
    return out + decoder.flush()


@pytest.mark.parametrize("encoding, encode", [
    ("gzip", lambda d: gzip.compress(d)),
    ("x-gzip", lambda d: gzip.compress(d)),
    ("deflate", lambda d: zlib.compress(d)),
    ("deflate", lambda d: zlib.compress(d)[2:-4]),  # raw deflate, as some servers send
    ("br", brotli.compress),
    ("zstd", lambda d: zstandard.ZstdCompressor().compress(d)),
    ("identity", lambda d: d),
    ("", lambda d: d),
    ("gzip, br", lambda d: brotli.compress(gzip.compress(d))),
])
def test_streaming_decoders(encoding, encode):
    assert _feed(decoder_for(encoding), encode(DATA)) == DATA


def test_unknown_encoding_is_refused():
    with pytest.raises(UnsupportedEncoding):
        decoder_for("compress")
