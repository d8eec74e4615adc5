"""`make demo` itself takes minutes (it trains); what it rests on is checked here: that the
digits it trains on are the pixels `convnext verify --images` reads back from the PNG files it
writes, so that the verification at its end is of the model and not of two resizes."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="make demo needs scikit-learn (the demo extra)")
pytest.importorskip("PIL", reason="make demo needs Pillow (the deploy extra)")

from converters.deploy.inputs import read_image
from examples import demo


def test_the_demo_trains_on_the_pixels_verify_reads(tmp_path):
    _, _, x_test, y_test, originals = demo.digits()
    assert x_test.shape == (360, demo.SIZE, demo.SIZE, 1) and len(originals) == 360
    demo.write_pictures(tmp_path, originals[:20], y_test[:20])
    files = sorted(tmp_path.glob("*.png"))
    assert [f.name for f in files[:2]] == [f"000-{y_test[0]}.png", f"001-{y_test[1]}.png"]
    for i, path in enumerate(files):
        read = read_image(path, (demo.SIZE, demo.SIZE), 1)
        np.testing.assert_array_equal(read, x_test[i])


def test_the_split_is_fixed_and_stratified():
    _, y_train, _, y_test, _ = demo.digits()
    again = demo.digits()
    np.testing.assert_array_equal(y_test, again[3])
    assert len(y_train) == 1437
    assert set(np.bincount(y_test)) <= {35, 36, 37}  # every class ~10% of the test set
