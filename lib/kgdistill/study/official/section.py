"""Notebook 07's profile section ``official_code``: its keys, defaults, load-time check and runs
(registered with :mod:`kgdistill.study.profile`)."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from ...metasd.evalmodes import EVAL_MODES
from ..profile import RunSpec, dataset_block, register_section
from .selection import OFFICIAL_TEST_MRR_THRESHOLD, RULES

OFFICIAL_SECTION = "official_code"
#: the section's keys for :data:`kgdistill.study.profile.SCHEMA` (``None``: any value; ``"RunConfig"``:
#: RunConfig fields)
SCHEMA_NODE: dict = {
    "datasets": None, "seeds": None, "recipes": {"*": None}, "eval_modes": None, "eval_rates": None,
    "test_rule": None, "threshold": None, "rule_model": None, "train_missing": None,
    "small_graphs": {"*": {"data": None, "base": None, "seeds": None, "config": "RunConfig"}},
}
DEFAULTS: dict = {"eval_modes": list(EVAL_MODES), "eval_rates": [0.9, 0.8], "test_rule": "official_last",
                  "threshold": OFFICIAL_TEST_MRR_THRESHOLD, "rule_model": "teacher", "small_graphs": {}}
#: rules that select on the test set (``validation`` is the other selection)
TEST_RULES = tuple(r for r in RULES if r != "validation")
RULE_MODELS = ("student", "teacher")
SELECTIONS = ("validation", "test")


def section(profile: Mapping[str, Any]) -> dict:
    """The profile's ``official_code`` section with :data:`DEFAULTS` filled in."""
    block = profile.get(OFFICIAL_SECTION)
    if not block:
        raise KeyError(f"profile {profile.get('name')} has no section {OFFICIAL_SECTION!r}")
    return {**DEFAULTS, **block}


def check_official_section(profile_name: str, block: Mapping[str, Any], specs: Sequence) -> None:
    """Fail before any training when the section asks for something its runs cannot give.

    ``block``: :func:`section`; ``specs``: its runs (objects with ``.config``, ``.recipe``,
    ``.paper_dataset``). Raises ``ValueError`` naming ``official_code.<key>`` (or the config field)
    and the fix: a mode outside :data:`~kgdistill.metasd.evalmodes.EVAL_MODES` or not in a recipe's
    ``student_eval_modes``, a rate that is neither a recipe's training ``gamma`` nor one of its
    ``student_eval_gammas``, a recipe without a pruned student or without ``test_history``, an
    unknown test rule / rule model, a non-numeric threshold.
    """
    where = f"profile {profile_name}: {OFFICIAL_SECTION}"
    if not block.get("recipes"):
        raise ValueError(f"{where}.recipes: give at least one 'label: recipe' pair")
    for mode in block["eval_modes"]:
        if mode not in EVAL_MODES:
            raise ValueError(f"{where}.eval_modes: unknown student evaluation mode {mode!r}; "
                             f"choose from {list(EVAL_MODES)}")
    rates = [_rate(r, f"{where}.eval_rates") for r in block["eval_rates"]]
    if not rates or not block["eval_modes"]:
        raise ValueError(f"{where}: eval_modes and eval_rates need at least one entry each")
    if block["test_rule"] not in TEST_RULES:
        raise ValueError(f"{where}.test_rule: {block['test_rule']!r} is not a test-set rule; "
                         f"choose from {list(TEST_RULES)}")
    if block["rule_model"] not in RULE_MODELS:
        raise ValueError(f"{where}.rule_model: {block['rule_model']!r}; choose 'teacher' (the dense source, as the "
                         f"official code) or 'student'")
    threshold = block["threshold"]
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise ValueError(f"{where}.threshold: a test MRR is needed (the official code: {OFFICIAL_TEST_MRR_THRESHOLD}), "
                         f"got {threshold!r}")
    for spec in specs:
        config = spec.config  # builds and validates the RunConfig
        run = f"recipe {spec.recipe!r} on {spec.paper_dataset}"
        if config.switches["student"] != "pruned":
            raise ValueError(f"{where}.recipes: {run} has method {config.method!r}; the table evaluates a pruned "
                             f"student (metasd, metasd_wo_m)")
        if not config.test_history:
            raise ValueError(f"{where}: {run} needs config field 'test_history': true (test metrics at every "
                             f"evaluation, for the test-selected rows)")
        for mode in block["eval_modes"]:
            if mode not in config.student_eval_modes:
                raise ValueError(f"{where}.eval_modes: {run} does not evaluate mode {mode!r} (config field "
                                 f"'student_eval_modes' is {list(config.student_eval_modes)}); "
                                 "add it there or drop it here")
        available = [config.gamma, *config.student_eval_gammas]
        for rate in rates:
            if not any(math.isclose(rate, g) for g in available):
                raise ValueError(f"{where}.eval_rates: rate {rate} does not apply to {run}: it is neither its training "
                                 f"'gamma' ({config.gamma}) nor one of its 'student_eval_gammas' "
                                 f"{list(config.student_eval_gammas)}; add it to student_eval_gammas or drop it here")


def official_specs(profile: dict) -> list[RunSpec]:
    """The runs of notebook 07 (section ``official_code``, :mod:`kgdistill.study.official`): each of its
    ``recipes`` (row = the section's label) on each of its ``datasets`` for the section's ``seeds``
    (default: the profile's), then on each ``small_graphs`` entry: trained on its ``data``, with
    the ``base`` dataset block's settings (default: the profile's first dataset) and its ``config``
    overriding everything else (recipe included). Empty without the section."""
    if not profile.get(OFFICIAL_SECTION):
        return []
    block = section(profile)
    seeds = block.get("seeds") or profile["seeds"]
    recipes = block["recipes"].items()
    specs = [RunSpec(label, ds, recipe, int(seed), profile=profile)
             for ds in block.get("datasets") or [] for label, recipe in recipes for seed in seeds]
    for name, graph in block["small_graphs"].items():
        if name in profile["datasets"] or "data" not in graph:
            raise ValueError(f"profile {profile['name']}: {OFFICIAL_SECTION}.small_graphs.{name} needs 'data' and a "
                             f"name that is not a datasets entry ({sorted(profile['datasets'])})")
        base = dataset_block(profile, graph.get("base") or next(iter(profile["datasets"])))
        extended = {**profile, "datasets": {**profile["datasets"], name: {**base, "data": graph["data"]}}}
        overrides = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in (graph.get("config") or {}).items())
        specs += [RunSpec(label, name, recipe, int(seed), None, overrides, profile=extended)
                  for label, recipe in recipes for seed in graph.get("seeds") or seeds]
    return specs


def _check(profile: dict) -> None:
    check_official_section(profile["name"], section(profile), official_specs(profile))


register_section(OFFICIAL_SECTION, SCHEMA_NODE, _check)


def _rate(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
        raise ValueError(f"{where}: pruning rate {value!r} is outside (0, 1); give the fraction pruned, e.g. 0.8")
    return float(value)


# --- one run's cells ------------------------------------------------------------------------------
#: ``status`` of a cell: its numbers exist, or why not
