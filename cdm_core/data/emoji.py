"""Render 32x32 colour emoji from Noto Color Emoji (a CBDT bitmap font) with Pillow.

CBDT fonts have bitmaps at one size only, so glyphs are drawn at size 109 and resized. The
rendered set is cached as `.npy` (plain arrays, no pickle) keyed by the font file's size/mtime.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# Emoji blocks rendered; single code points only (no ZWJ sequences or skin tones).
RANGES = ((0x1F300, 0x1F5FF), (0x1F600, 0x1F64F), (0x1F680, 0x1F6FF), (0x1F900, 0x1F9FF))
SIZE = 32


def render_emoji(font_path: Path, cache_dir: Path) -> tuple[np.ndarray, list[int]]:
    st = font_path.stat()
    key = f"emoji-{st.st_size}-{int(st.st_mtime)}-{SIZE}"
    cache_pts, cache_codes = cache_dir / f"{key}.npy", cache_dir / f"{key}-codes.npy"
    if cache_pts.exists() and cache_codes.exists():
        return np.load(cache_pts, allow_pickle=False), np.load(cache_codes, allow_pickle=False).tolist()

    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(font_path), 109)
    cmap_codes = _font_codepoints(font_path)
    images, codes = [], []
    for lo, hi in RANGES:
        for code in range(lo, hi + 1):
            if cmap_codes is not None and code not in cmap_codes:
                continue
            canvas = Image.new("RGBA", (136, 128), (255, 255, 255, 0))
            ImageDraw.Draw(canvas).text((0, 0), chr(code), font=font, embedded_color=True)
            if canvas.getbbox() is None:
                continue
            white = Image.new("RGBA", canvas.size, (255, 255, 255, 255))
            rgb = Image.alpha_composite(white, canvas).convert("RGB").resize((SIZE, SIZE), Image.LANCZOS)
            images.append(np.asarray(rgb, dtype=np.float32).reshape(-1) / 255.0)
            codes.append(code)
    pts = np.stack(images).astype(np.float32)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        np.save(cache_pts, pts)
        np.save(cache_codes, np.asarray(codes, dtype=np.int64))
    except OSError as e:  # a read-only home is fine: we just render again next time
        log.warning("could not cache emoji in %s: %s", cache_dir, e)
    return pts, codes


def _font_codepoints(font_path: Path) -> set[int] | None:
    try:
        from fontTools.ttLib import TTFont
    except ImportError:
        return None
    return set(TTFont(str(font_path), lazy=True).getBestCmap())
