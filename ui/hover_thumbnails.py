"""Thumbnails on hover for plotly charts of image data.

Plotly's hover labels cannot show images, so a small `st.components.v2` component (its JavaScript
runs in the app page) finds the chart by its key, listens to plotly's hover events and shows the
hovered item's thumbnail from a sprite sheet next to the pointer. The chart itself stays an
`st.plotly_chart`, so its selection events keep working.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import streamlit as st

from cdm_core.report.figures import thumbnail_sprite

PIXEL_BUDGET = 2_000_000  # pixels in one sprite sheet (about 1-2 MB as PNG)
SCALE = 3  # on-screen magnification of a thumbnail

JS = """
export default function(component) {
  const { data } = component;
  const tip = document.createElement('div');
  tip.className = 'cdm-hover-thumb';
  Object.assign(tip.style, {position: 'fixed', display: 'none', zIndex: 100000, pointerEvents: 'none',
    width: data.tile + 'px', height: data.tile_h + 'px', backgroundImage: `url(${data.sprite})`,
    backgroundSize: `${data.cols * data.tile}px auto`, imageRendering: 'pixelated',
    border: '1px solid #333', boxShadow: '0 2px 6px rgba(0,0,0,0.3)', backgroundColor: 'white'});
  document.body.appendChild(tip);
  const slotOf = new Map(data.train_ids.map((id, k) => [id, k]));
  let attached = null;
  const attach = () => {
    const gd = document.querySelector(`.st-key-${data.chart_key} .js-plotly-plot`);
    if (!gd || gd === attached || typeof gd.on !== 'function') return;
    attached = gd;
    gd.on('plotly_hover', (ev) => {
      const p = ev.points[0];
      const cd = Array.isArray(p.customdata) ? p.customdata[0] : p.customdata;
      const slot = p.curveNumber === data.sample_curve ? data.train_ids.length + cd : slotOf.get(cd);
      if (slot === undefined || slot >= data.slots) { tip.style.display = 'none'; return; }
      const col = slot % data.cols, row = Math.floor(slot / data.cols);
      tip.style.backgroundPosition = `-${col * data.tile}px -${row * data.tile_h}px`;
      tip.style.left = (ev.event.clientX + 14) + 'px';
      tip.style.top = (ev.event.clientY + 14) + 'px';
      tip.dataset.slot = String(slot);
      tip.style.display = 'block';
    });
    gd.on('plotly_unhover', () => { tip.style.display = 'none'; });
  };
  attach();
  const timer = setInterval(attach, 300);
  return () => { clearInterval(timer); tip.remove(); };
}
"""

_component = st.components.v2.component("cfdm_hover_thumbnails", js=JS)


def hover_thumbnails(chart_key: str, train_ids: np.ndarray, train_vectors: np.ndarray, sample_vectors: np.ndarray,
                     image_shape: tuple, sample_curve: int) -> int:
    """Attach hover thumbnails to the chart with `chart_key`; returns how many items have one.
    Training points come first in the sprite (as many as the pixel budget allows), then samples."""
    per_tile = int(np.prod(image_shape[:2]))
    room = max(1, PIXEL_BUDGET // per_tile)
    n_samples = min(len(sample_vectors), room)
    n_train = min(len(train_ids), room - n_samples)
    vectors = (np.concatenate([train_vectors[:n_train], sample_vectors[:n_samples]]) if n_samples
               else train_vectors[:n_train])
    sheet, cols = thumbnail_sprite(vectors, image_shape)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", optimize=True)
    data = {"sprite": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode(), "cols": cols,
            "tile": image_shape[1] * SCALE, "tile_h": image_shape[0] * SCALE, "slots": n_train + n_samples,
            "train_ids": [int(i) for i in train_ids[:n_train]], "sample_curve": sample_curve, "chart_key": chart_key}
    _component(data=data, key=f"{chart_key}_thumbs")
    return n_train + n_samples
