"""check_loss rejects every bug of the gallery with a readable message and accepts every fix."""

from __future__ import annotations

import pytest

from maskloss.testing import LossCheckError, check_loss
from tests.bug_gallery import GALLERY, Entry

IDS = [entry.name.split(".")[0] for entry in GALLERY]


@pytest.mark.parametrize("entry", GALLERY, ids=IDS)
def test_check_loss_rejects_the_bug(entry: Entry) -> None:
    with pytest.raises(LossCheckError) as info:
        check_loss(entry.bug, entry.like, **entry.options)
    err = info.value
    message = str(err)
    assert err.property in entry.properties, message
    # Readable: names the candidate, the property, both numbers and the failing batch.
    assert message.startswith(f"check_loss: {entry.bug.__name__} is not maskloss.")
    assert f"property broken: {err.property}" in message
    assert "candidate value:" in message and "expected value:" in message
    assert "mask (1 = valid):" in message and "y_pred:" in message
    # The reported batch is small (shrunk) and really fails.
    assert err.batch.mask.size <= 8, message


@pytest.mark.parametrize("entry", GALLERY, ids=IDS)
def test_check_loss_accepts_the_fix(entry: Entry) -> None:
    check_loss(entry.fixed, entry.like, **(entry.fixed_options or entry.options))
