"""Colour anchoring (vace_core.colour) on real photos: a clip panning/zooming over skimage's chelsea, later
"windows" given a known progressive tint + exposure drift, corrected against the first window as the anchor."""

import numpy as np
import PIL.Image
import pytest
import torch

from vace_core.colour import ColourAnchor, delta_e, match_colours
from vace_core.errors import VaceError

WINDOW = 12


def zoom_pan(frames: int = 4 * WINDOW, size: int = 64) -> torch.Tensor:
    """(T, size, size, 3) in 0..1: a slow zoom-in while panning right over a real photo."""
    from skimage import data

    image = PIL.Image.fromarray(data.chelsea())
    w, h = image.size
    out = []
    for t in range(frames):
        zoom = 1 + 0.002 * t
        cw, ch, cx = w * 0.7 / zoom, h * 0.7 / zoom, w * (0.45 + 0.0015 * t)
        box = (cx - cw / 2, h / 2 - ch / 2, cx + cw / 2, h / 2 + ch / 2)
        out.append(np.asarray(image.resize((size, size), PIL.Image.BILINEAR, box=box)))
    return torch.from_numpy(np.stack(out)).float() / 255


def drift(frames: torch.Tensor, window: int) -> torch.Tensor:
    """The drift autoregressive windows show: a warm tint and brighter exposure growing frame by frame."""
    t = torch.linspace(window - 1, window, len(frames))[:, None, None, None]
    gain = torch.tensor([1.04, 1.0, 0.92]) ** t * (1 + 0.05 * t)
    return (frames * gain).clamp(0, 1)


@pytest.fixture(scope="module")
def footage():
    return zoom_pan()


@pytest.mark.parametrize("method", ["reinhard", "mkl"])
def test_drift_falls_at_least_threefold_and_a_clean_window_stays(footage, method):
    anchor = ColourAnchor.from_images(footage[:WINDOW])
    for window in (1, 2, 3):
        truth = footage[window * WINDOW:(window + 1) * WINDOW]
        drifted = drift(truth, window)
        before = delta_e(drifted, truth)
        after = delta_e(match_colours(drifted, anchor, method), truth)
        assert before > 3 * window  # the drift is real and grows
        assert after * 3 <= before, f"window {window}: mean dE {before:.2f} -> {after:.2f}"
        clean = delta_e(match_colours(truth, anchor, method), truth)
        assert clean < 1.0, f"window {window} without drift changed by dE {clean:.2f}"  # 2.3 is just noticeable


def test_strength_blends_and_masks_keep_the_kept_pixels(footage):
    anchor = ColourAnchor.from_images(footage[:WINDOW])
    drifted = drift(footage[WINDOW:2 * WINDOW], 2)
    assert torch.equal(match_colours(drifted, anchor, strength=0.0), drifted)
    full, half = match_colours(drifted, anchor), match_colours(drifted, anchor, strength=0.5)
    assert torch.allclose(half, (full + drifted) / 2, atol=1e-5)
    masks = torch.zeros(WINDOW, 64, 64)
    masks[:, :, 32:] = 1  # only the right half was generated
    out = match_colours(drifted, anchor, masks=masks)
    assert torch.equal(out[:, :, :32], drifted[:, :, :32])
    assert delta_e(out[:, :, 32:], drifted[:, :, 32:]) > 3


def test_bad_input_is_a_clear_error(footage):
    anchor = ColourAnchor.from_images(footage[:2])
    with pytest.raises(VaceError, match="choose one of reinhard, mkl"):
        match_colours(footage[:2], anchor, "hist")
    with pytest.raises(VaceError, match="strength"):
        match_colours(footage[:2], anchor, strength=2)
    with pytest.raises(VaceError, match="\\(T, H, W, 3\\)"):
        match_colours(footage[0], anchor)
    with pytest.raises(VaceError, match="3 masks for 2 frames"):
        match_colours(footage[:2], anchor, masks=torch.ones(3, 64, 64))
    with pytest.raises(VaceError, match="mask is empty"):
        ColourAnchor.from_images(footage[:2], torch.zeros(1, 64, 64))


def test_mkl_map_gives_the_anchor_covariance_with_a_symmetric_map():
    """The Monge-Kantorovich linear map (Pitie and Kokaram 2007): symmetric, and T S T = R."""
    from vace_core.colour import mkl_map

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 3)), rng.normal(size=(3, 3))
    source, target = a @ a.T + 0.1 * np.eye(3), b @ b.T + 0.1 * np.eye(3)
    t = mkl_map(source, target)
    assert np.allclose(t, t.T, atol=1e-10) and (np.linalg.eigvalsh(t) > 0).all()
    assert np.allclose(t @ source @ t, target, atol=1e-8)


def color_matcher_mkl(source: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The color-matcher package's 'mkl' (0.6.0, mvgd_matcher.py: init_vars, mkl_solver, multivar_transfer),
    written out: eigen-decompositions where ours takes matrix square roots. (The package itself is not a test
    dependency: it installs a top-level `tests` package that shadows this project's.)"""
    r, z = source.reshape(-1, 3).T, reference.reshape(-1, 3).T
    cov_r, cov_z = np.cov(r), np.cov(z)
    mu_r, mu_z = r.mean(axis=1)[:, None], z.mean(axis=1)[:, None]
    eig_val_r, eig_vec_r = np.linalg.eig(cov_r)
    eig_val_r[eig_val_r < 0] = 0
    val_r = np.diag(np.sqrt(eig_val_r[::-1]))
    vec_r = np.array(eig_vec_r[:, ::-1])
    inv_r = np.diag(1.0 / (np.diag(val_r + np.spacing(1))))
    mat_c = val_r @ vec_r.T @ cov_z @ vec_r @ val_r
    eig_val_c, eig_vec_c = np.linalg.eig(mat_c)
    eig_val_c[eig_val_c < 0] = 0
    val_c = np.diag(np.sqrt(eig_val_c))
    transfer = vec_r @ inv_r @ eig_vec_c @ val_c @ eig_vec_c.T @ inv_r @ vec_r.T
    return (transfer @ (r - mu_r) + mu_z).T.reshape(source.shape)


def test_mkl_equals_the_color_matcher_package():
    """Our 'mkl' on a frame equals color-matcher's (written out above), clipped to 0..1 as ours is: float32
    images, so to 1e-6."""
    rng = np.random.default_rng(3)
    source = rng.uniform(0.3, 0.6, (32, 32, 3)).astype(np.float32)
    anchor = (rng.uniform(0.2, 0.9, (24, 24, 3)) * [1.0, 0.8, 0.6]).astype(np.float32)
    theirs = np.clip(color_matcher_mkl(source.astype(np.float64), anchor.astype(np.float64)), 0, 1)
    ours = match_colours(torch.from_numpy(source)[None], ColourAnchor.from_images(torch.from_numpy(anchor)[None]),
                         "mkl", 1.0)[0].numpy()
    assert 0.05 < np.abs(ours - source).mean()  # a real change of colours
    np.testing.assert_allclose(ours, theirs, atol=1e-6, rtol=0)
