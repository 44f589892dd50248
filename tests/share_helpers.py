"""Helpers for the export-html tests: the sample's reconstruction and a reader of viser recordings
(``.viser`` bytes, or the copy embedded in an exported HTML) written against viser's file format:
``[u64 inner size][zstd([u64 msgpack len][msgpack][8-byte aligned binary buffers])]``."""
from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np

from conftest import REPO
from vggt_mv.cli import main as cli_main

SAMPLE = REPO / "assets" / "sample"


def sample_result(out: Path, resolution: int = 56) -> Path:
    """The bundled sample reconstructed with the tiny preset (demo weights) into ``out``."""
    rc = cli_main(["reconstruct", "--scene", str(SAMPLE), "--preset", "tiny", "--resolution", str(resolution),
                   "--window", "10", "--overlap", "0", "--out", str(out), "--no-progress"])
    assert rc == 0
    return out


def embedded_recording(html: str) -> bytes:
    """The ``.viser`` bytes that viser's ``as_html`` embeds in the page."""
    m = re.search(r'window\.__VISER_EMBED_DATA__="([A-Za-z0-9+/=]+)"', html)
    assert m, "no embedded viser recording in the page"
    return base64.b64decode(m.group(1))


def decode_recording(data: bytes) -> dict:
    """``{"duration", "messages": [(time, dict)], "buffers": [bytes]}``; binary placeholders in
    messages are replaced by numpy arrays."""
    import msgspec
    import zstandard

    inner = int.from_bytes(data[:8], "little")
    raw = zstandard.ZstdDecompressor().decompress(data[8:], max_output_size=inner)
    n = int.from_bytes(raw[:8], "little")
    obj = msgspec.msgpack.decode(raw[8:8 + n])
    buffers, off = [], 8 + n
    for length in obj["binaryBufferLengths"]:
        off += (8 - off % 8) % 8
        buffers.append(raw[off:off + length])
        off += length

    def fill(x):
        if isinstance(x, dict):
            if "__binary_index" in x:
                return np.frombuffer(buffers[x["__binary_index"]], dtype=np.dtype(x["dtype"]))
            return {k: fill(v) for k, v in x.items()}
        if isinstance(x, list):
            return [fill(v) for v in x]
        return x

    return {"duration": obj["durationSeconds"], "messages": [(t, fill(m)) for t, m in obj["messages"]],
            "buffers": buffers}


def by_type(rec: dict, kind: str) -> list[tuple[float, dict]]:
    return [(t, m) for t, m in rec["messages"] if m["type"] == kind]
