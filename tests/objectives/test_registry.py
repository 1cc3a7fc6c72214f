"""The objective registry (meddiff.objectives.registry): the training data of a run."""

import pytest


def test_acquisition_augmentation_is_refused_for_volumes_naming_what_is_supported(tmp_path):
    from meddiff import config as config_mod
    from meddiff.errors import ConfigError
    from meddiff.objectives import training_data

    cfg = config_mod.from_dict({"data": {"mode": "volume", "prepared": str(tmp_path)}, "task": {"context_slices": 1},
                                "augment": {"blur": [0.0, 0.3]}})
    with pytest.raises(ConfigError, match="not built for data.mode volume"):
        training_data(cfg)
