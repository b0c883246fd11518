"""Profile loading: a key that no config field or profile section knows fails at load time, with the
key, the file and the closest valid name; free names (datasets, recipes, tables, models) pass."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from kgdistill.distile.config import DistilEConfig
from kgdistill.metasd.config import RunConfig
from kgdistill.study.profile import SCHEMA, check_keys, load_profile

ROOT = Path(__file__).resolve().parent.parent
SMOKE = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())


def write(tmp_path: Path, change) -> Path:
    raw = copy.deepcopy(SMOKE)
    change(raw)
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def put(*keys_and_value):
    """A change setting ``raw[k1][k2]...[kn] = value``."""
    *keys, last, value = keys_and_value

    def change(raw):
        node = raw
        for key in keys:
            node = node[key]
        node[last] = value

    return change


TYPOS = [
    # (where, change, the typo, the closest valid name)
    ("common", put("common", "max_epoch", 3), "max_epoch", "max_epochs"),
    ("a recipe", put("recipes", "CP", "rnak", 3), "rnak", "rank"),
    ("datasets.<D>.config", put("datasets", "WN18RR", "config", "reg_weigth", 0.1), "reg_weigth", "reg_weight"),
    ("datasets.<D>.recipes.<R>", put("datasets", "WN18RR", "recipes", "RP", "rp_wieght", 0.1), "rp_wieght",
     "rp_weight"),
    ("datasets.<D>", put("datasets", "WN18RR", "dat", "UMLS"), "dat", "data"),
    ("a top-level section", put("figure_1", {"dataset": "WN18RR"}), "figure_1", "figure1"),
    ("tables.<t>", put("tables", "table2", "bucket", [0, 10]), "bucket", "buckets"),
    ("a table row", put("tables", "table2", "rows", "MetaSD-T", {"recipe": "MetaSD", "modle": "teacher"}), "modle",
     "model"),
    ("figure1", put("figure1", "rank", [4]), "rank", "ranks"),
    ("footprint", put("footprint", "query", 10), "query", "queries"),
    ("dataset_stats.long_tail", put("dataset_stats", "long_tail", "treshold", 10), "treshold", "threshold"),
    ("distile", put("distile", "teacher_dm", 16), "teacher_dm", "teacher_dim"),
    ("distile.config", put("distile", "config", "lerning_rate", 0.1), "lerning_rate", "learning_rate"),
    ("distile.per_model.<M>", put("distile", "per_model", "RotatE", "learning_rat", 0.1), "learning_rat",
     "learning_rate"),
    ("distile.grid", put("distile", "grid", "alpah", [0.3]), "alpah", "alpha"),
    ("distile.figure3", put("distile", "figure3", "eval_evry", 2), "eval_evry", "eval_every"),
    ("distile.timing", put("distile", "timing", "repeat", 2), "repeat", "repeats"),
    ("distile_in_table1", put("distile_in_table1", "modle", "ComplEx"), "modle", "model"),
    ("distile_in_table1.config", put("distile_in_table1", "config", "stage_1_epochs", 3), "stage_1_epochs",
     "stage1_epochs"),
    ("distile_in_table1.per_dataset.<D>", put("distile_in_table1", "per_dataset", {"WN18RR": {"sed": 1}}), "sed",
     "seed"),
]


@pytest.mark.parametrize("where, change, typo, closest", TYPOS, ids=[t[0] for t in TYPOS])
def test_a_typo_fails_at_load_time_with_key_file_and_closest_name(tmp_path, where, change, typo, closest):
    path = write(tmp_path, change)
    with pytest.raises(ValueError) as err:
        load_profile(path)
    message = str(err.value)
    assert f"'{typo}'" in message and str(path) in message and f"'{closest}'" in message, message
    assert f"did you mean '{typo}' -> '{closest}'" in message


def test_the_message_names_the_place():
    with pytest.raises(ValueError, match=r"profile x.yaml: in datasets\.WN18RR\.recipes\.RP: unknown RunConfig field"):
        check_keys({"datasets": {"WN18RR": {"recipes": {"RP": {"rp_wieght": 1}}}}}, SCHEMA, "", "x.yaml")
    with pytest.raises(ValueError, match=r"profile x.yaml: at the top level: unknown key\(s\) \['tabels'\]"):
        check_keys({"tabels": {}}, SCHEMA, "", "x.yaml")
    with pytest.raises(ValueError, match=r"in distile\.grid: unknown DistilEConfig field"):
        check_keys({"distile": {"grid": {"alpah": [1]}}}, SCHEMA, "", "x.yaml")


def test_every_config_field_and_free_names_pass(tmp_path):
    """A profile may set any field of the config classes, and name its datasets, recipes, tables
    and DistilE models freely; values are checked where they are used."""
    run_fields = {name: getattr(RunConfig(), name) for name in RunConfig.field_names() if name != "teacher"}
    distile_fields = {name: getattr(DistilEConfig(), name) for name in DistilEConfig.field_names() if name != "teacher"}
    check_keys({"common": run_fields, "recipes": {"Anything at all": run_fields},
                "datasets": {"My graph": {"data": "UMLS", "config": run_fields, "recipes": {"X": run_fields}}},
                "tables": {"table9": {"rows": {"free label": "X", "other": {"recipe": "X", "model": "teacher"}}}},
                "distile": {"config": distile_fields, "per_model": {"NewModel": distile_fields}},
                "env": {"ANY_VARIABLE": "1"}}, SCHEMA, "", "x.yaml")
    path = write(tmp_path, put("recipes", "MetaSD", "meta_order", "simultaneous"))  # a field no profile sets yet
    assert load_profile(path)["recipes"]["MetaSD"]["meta_order"] == "simultaneous"


@pytest.mark.parametrize("name", ["smoke", "cpu", "paper"])
def test_the_committed_profiles_have_no_unknown_key(name):
    raw = yaml.safe_load((ROOT / "params" / f"{name}.yaml").read_text())
    check_keys(raw, SCHEMA, "", f"{name}.yaml")
    assert load_profile(name)["name"] == name


def test_a_missing_section_is_named(tmp_path):
    path = write(tmp_path, lambda raw: raw.pop("recipes"))
    with pytest.raises(ValueError, match=f"profile {path}: missing section 'recipes'"):
        load_profile(path)
