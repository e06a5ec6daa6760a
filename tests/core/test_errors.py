"""One line about an exception: every line that matters, at the user's own frame."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from search.core.errors import at_user, describe, message, user_frame


def _raised(path: Path, body: str) -> BaseException:
    """The exception ``run()`` in a user file holding ``body`` raises."""
    path.write_text(body)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    try:
        module.run()
    except Exception as e:  # noqa: BLE001 - the exception is what the test looks at
        return e
    raise AssertionError("run() did not raise")


def test_state_dict_mismatch_keeps_both_key_lists_on_one_line() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 3))
    with pytest.raises(RuntimeError) as info:
        model.load_state_dict({f"head.{i}.weight": torch.zeros(1) for i in range(8)})
    text = message(info.value)
    assert "\n" not in text
    assert 'Missing key(s) in state_dict: "0.weight", "0.bias", "1.weight", "1.bias"' in text
    assert '"head.4.weight" and 3 more' in text and "head.5" not in text
    assert text.startswith("Error(s) in loading state_dict for Sequential: Missing")


def test_message_is_bounded() -> None:
    text = message("\n".join(f"line {i}" for i in range(20)))
    assert text == "line 0; line 1; line 2; line 3; line 4; line 5; and 14 more line(s)"
    assert len(message("x" * 1000, limit=50)) == 50
    assert message("") == ""


def test_the_frame_named_is_the_users_not_the_librarys(tmp_path: Path) -> None:
    e = _raised(
        tmp_path / "user_np.py",
        "import numpy as np\n\n\ndef run():\n    return np.load('nowhere.npy')\n",
    )
    frame = user_frame(e)
    assert frame is not None and Path(frame.filename).name == "user_np.py" and frame.lineno == 5
    assert at_user(e).startswith("at user_np.py:5: FileNotFoundError: ")
    assert "(from user_np.py:5)" in describe(e)
    e = _raised(
        tmp_path / "user_torch.py",
        "from torch import nn\n\n\ndef run():\n    nn.Linear(2, 2).load_state_dict({'w': 1})\n",
    )
    assert at_user(e).startswith("at user_torch.py:5: RuntimeError: Error(s) in loading")


def test_without_user_code_the_innermost_frame_is_named() -> None:
    try:
        int("x")
    except ValueError as e:
        assert at_user(e).startswith("at test_errors.py:")
