from __future__ import annotations

from pathlib import Path

import pytest

from voxflow.config import CallbackSettings, ConfigError, load
from voxflow.domain.limits import Limits


def config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "voxflow.toml"
    path.write_text(text)
    return str(path)


def test_limits_and_callbacks_default_and_from_toml(tmp_path: Path) -> None:
    assert load(config(tmp_path, "")).limits == Limits(7, 9, 15, 0, 0)
    settings = load(
        config(
            tmp_path,
            "[limits]\nper_destination_15m = 0\nmax_concurrent_link = 3\n"
            "[callbacks]\nmax_attempts = 2\ntimeout_s = 1.5\n",
        )
    )
    assert settings.limits == Limits(per_destination_15m=0, max_concurrent_link=3)
    assert settings.callbacks == CallbackSettings(max_attempts=2, timeout_s=1.5)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[limits]\nper_destination_1h = -1\n", "per_destination_1h must be a number"),
        ("[limits]\nper_destination_1h = 'x'\n", "per_destination_1h must be a number"),
        ("[limits]\nmax_concurrent_link = 1.5\n", "max_concurrent_link must be a whole number"),
        ("[limits]\nper_day = 3\n", "[limits] has no setting 'per_day'"),
        ("limits = 3\n", "[limits] must be a table"),
        ("[callbacks]\ntimeout_s = 0\n", "timeout_s must be a number"),
    ],
)
def test_bad_limits_or_callbacks_are_one_line_errors(
    tmp_path: Path, text: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load(config(tmp_path, text))
    assert fragment in str(err.value)
