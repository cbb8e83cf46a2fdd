"""plot_heatmap: a PNG of the grid's shape and colours, blank cells for nan, shape errors in one line."""

from __future__ import annotations

import math

import pytest

from agentrm_jax.evaluate.plots import plot_heatmap


def test_heatmap_writes_a_png_whose_cells_follow_the_values(tmp_path):
    import matplotlib.image

    path = plot_heatmap([[0.0, 1.0], [math.nan, 0.5]], ["shop", "twx"], ["shop", "maze"], tmp_path / "h.png",
                        title="policy FT", value_label="mean progress", notes=[["a", "b"], ["", "c"]])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    # a value of 0 and one of 1 get different colours: the map is not blank
    assert image[..., :3].std() > 0.05


def test_heatmap_refuses_values_and_labels_of_other_shapes(tmp_path):
    with pytest.raises(ValueError, match=r"values are 1 x \[3\], labels 1 x 2"):
        plot_heatmap([[0.1, 0.2, 0.3]], ["shop"], ["a", "b"], tmp_path / "x.png", title="t", value_label="v")
    with pytest.raises(ValueError, match="notes must have the shape"):
        plot_heatmap([[0.1]], ["shop"], ["a"], tmp_path / "x.png", title="t", value_label="v", notes=[["a", "b"]])
    assert not (tmp_path / "x.png").exists()
