"""DistilE: score functions, scorers, losses, negatives, two-stage training, ablations, resumption."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kgdistill.core.evaluation import evaluate
from kgdistill.distile import (
    DistilEConfig,
    build_kge,
    corrupt,
    hard_loss,
    inference_table,
    soft_loss,
)
from kgdistill.distile.trainer import DistilETrainer as _Trainer
from kgdistill.protocol.runner import BEST, run_dir_for
from kgdistill.protocol.runner import run as run_distile

MODELS = ("TransE", "TransH", "ComplEx", "RotatE")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread is much faster than two on a busy 2-core machine (and restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(name, n=13, r=3, dim=4, seed=0):
    torch.manual_seed(seed)
    model = build_kge(name, n, r, dim, margin=6.0, epsilon=2.0)
    with torch.no_grad():  # move away from the initial scale so the formulas are exercised
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def _formula(model, h, r, t) -> float:
    """Per-triple score written out from Table 1 with Python floats/complex numbers."""
    name, d = model.name, model.dim
    if name == "TransE":
        hv, tv = F.normalize(model.entity[h], dim=0), F.normalize(model.entity[t], dim=0)
        return -sum(abs(float(hv[i] + model.relation[r][i] - tv[i])) for i in range(d))
    if name == "TransH":
        w = model.normal[r] / model.normal[r].norm()
        hp = model.entity[h] - torch.dot(w, model.entity[h]) * w
        tp = model.entity[t] - torch.dot(w, model.entity[t]) * w
        return -sum(abs(float(hp[i] + model.relation[r][i] - tp[i])) for i in range(d))
    e, rel = model.entity.tolist(), model.relation.tolist()
    hc = [complex(e[h][i], e[h][d + i]) for i in range(d)]
    tc = [complex(e[t][i], e[t][d + i]) for i in range(d)]
    if name == "ComplEx":
        rc = [complex(rel[r][i], rel[r][d + i]) for i in range(d)]
        return sum(hc[i] * rc[i] * tc[i].conjugate() for i in range(d)).real
    rc = [complex(math.cos(th * math.pi / model.embedding_range), math.sin(th * math.pi / model.embedding_range))
          for th in rel[r]]
    return model.gamma - sum(abs(hc[i] * rc[i] - tc[i]) for i in range(d))


@pytest.mark.parametrize("name", MODELS)
def test_score_matches_table1_formula(name):
    model = _model(name)
    triples = torch.tensor([[0, 0, 1], [5, 2, 5], [12, 1, 3], [7, 2, 0]])
    got = model.score(triples[:, 0], triples[:, 1], triples[:, 2])
    with torch.no_grad():
        want = torch.tensor([_formula(model, *map(int, row)) for row in triples])
    assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_score_tails_tail_and_head_queries_equal_scoring_corrupted_triples(name):
    model = _model(name)
    n, r = model.n_entities, model.n_relations
    queries = torch.tensor([[2, 0, 1], [4, 1 + r, 9], [11, 2, 0], [6, 2 + r, 3], [0, r, 0]])
    scores = model.score_tails(queries)
    assert scores.shape == (len(queries), n)
    every = torch.arange(n)
    with torch.no_grad():
        for row, (anchor, rel, _) in enumerate(queries.tolist()):
            anchors = torch.full((n,), anchor)
            if rel < r:  # (anchor, rel, ?)
                want = model.score(anchors, torch.full((n,), rel), every)
            else:  # (?, rel - R, anchor): corrupted heads
                want = model.score(every, torch.full((n,), rel - r), anchors)
            assert torch.allclose(scores[row], want, atol=1e-4), (name, rel)


def test_rotate_gradient_is_finite_where_a_triple_fits_exactly():
    # A self-loop (h, r, h) under a zero phase has h∘r − h = 0 exactly: the run that diverged on
    # WN18RR (RotatE d16, epoch 176) met this through a phase small enough to round to it.
    model = _model("RotatE")
    with torch.no_grad():
        model.relation[1].zero_()
    h, r = torch.tensor([4, 4]), torch.tensor([1, 2])
    score = model.score(h, r, h)
    assert float(score[0]) == model.gamma
    score.sum().backward()
    assert torch.isfinite(model.entity.grad).all() and torch.isfinite(model.relation.grad).all()
    assert float(model.relation.grad[1].abs().sum()) == 0.0  # the subgradient at the optimum is 0


def test_rotate_gradient_elsewhere_is_torch_sqrt_bit_for_bit():
    # committed RotatE records were trained with torch.sqrt: the safe modulus must not change them
    model = _model("RotatE")
    h, r, t = torch.tensor([0, 5, 12, 7]), torch.tensor([0, 2, 1, 2]), torch.tensor([1, 6, 3, 0])
    model.score(h, r, t).sum().backward()
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    (hr, hi), (tr, ti) = model._split(model.entity[h]), model._split(model.entity[t])
    cr, ci = model._rotation(r)
    (model.gamma - torch.sqrt((hr * cr - hi * ci - tr) ** 2 + (hr * ci + hi * cr - ti) ** 2).sum(-1)).sum().backward()
    for mine, reference in zip(got, (p.grad for p in model.parameters()), strict=True):
        assert torch.equal(mine, reference)


def test_parameter_counts_reproduce_table5():
    n, r = 40943, 11  # WN18RR
    expected = {"TransE": 2621056, "TransH": 2621760, "ComplEx": 5242112, "RotatE": 5241408}
    for name, count in expected.items():
        assert build_kge(name, n, r, 64).parameter_counts()["dense"] == count
    assert build_kge("RotatE", n, r, 8).parameter_counts()["dense"] == 655176


def test_hard_and_soft_losses_by_hand():
    pos, neg = torch.tensor([-1.0, -2.0]), torch.tensor([[-1.5, -3.0], [-0.5, -4.0]])
    t_pos, t_neg = torch.tensor([-1.2, -1.0]), torch.tensor([[-2.0, -3.0], [-1.0, -2.0]])
    # margin γ=1: [1 + neg − pos]₊ over 4 pairs: 0.5, 0, 2.5, 0
    assert float(hard_loss("margin", pos, neg, 1.0, "balanced")) == pytest.approx(3.0 / 4)
    # |T − S| over 6 triples: 0.2, 0.5, 0, | 1.0, 0.5, 2.0
    assert float(soft_loss("margin", pos, neg, t_pos, t_neg, "balanced")) == pytest.approx(4.2 / 6)

    def sig(x):
        return 1 / (1 + math.exp(-x))

    def ce(p_target, s):
        return -(p_target * math.log(sig(s)) + (1 - p_target) * math.log(1 - sig(s)))

    pos_terms = [ce(1, -1.0), ce(1, -2.0)]
    neg_terms = [[ce(0, -1.5), ce(0, -3.0)], [ce(0, -0.5), ce(0, -4.0)]]
    balanced = 0.5 * (sum(pos_terms) / 2 + sum(map(sum, neg_terms)) / 4)
    summed = sum(p + sum(n) for p, n in zip(pos_terms, neg_terms)) / 2
    assert float(hard_loss("logistic", pos, neg, 0.0, "balanced")) == pytest.approx(balanced, rel=1e-5)
    assert float(hard_loss("logistic", pos, neg, 0.0, "sum")) == pytest.approx(summed, rel=1e-5)
    soft_pos = [ce(sig(-1.2), -1.0), ce(sig(-1.0), -2.0)]
    soft_neg = [[ce(sig(-2.0), -1.5), ce(sig(-3.0), -3.0)], [ce(sig(-1.0), -0.5), ce(sig(-2.0), -4.0)]]
    want = 0.5 * (sum(soft_pos) / 2 + sum(map(sum, soft_neg)) / 4)
    assert float(soft_loss("logistic", pos, neg, t_pos, t_neg, "balanced")) == pytest.approx(want, rel=1e-5)


def test_negatives_never_equal_positive_and_change_one_side():
    g = torch.Generator().manual_seed(0)
    pos = torch.tensor([[0, 0, 1], [1, 1, 1], [2, 0, 0]]).repeat(400, 1)
    neg = corrupt(pos, 7, 3, g)  # 3 entities: every draw has only two choices
    assert neg.shape == (1200, 7, 3)
    same = (neg == pos.unsqueeze(1))
    assert not same.all(-1).any()
    assert same[..., 1].all()  # the relation is kept
    assert (same[..., 0] ^ same[..., 2]).all()  # exactly one of head/tail replaced
    replaced_head = ~same[..., 0]
    assert 0.45 < float(replaced_head.float().mean()) < 0.55
    again = corrupt(pos, 7, 3, torch.Generator().manual_seed(0))
    assert torch.equal(neg, again)


def _cfgs(dataset="Kinship", model="TransE", stage1_epochs=2, **kw):
    base = dict(dataset=dataset, model=model, max_epochs=4, eval_every=2, batch_size=2048, learning_rate=0.01)
    base.update(kw)
    teacher = DistilEConfig(dim=16, **base)
    student = DistilEConfig(dim=4, method="ds", teacher=teacher.to_dict(), stage1_epochs=stage1_epochs, **base)
    return teacher, student


@pytest.mark.parametrize("model", ["TransE", "RotatE"])
def test_stage1_freezes_teacher_and_stage2_trains_it(kinship, model):
    teacher_cfg, cfg = _cfgs(model=model)
    torch.manual_seed(1)
    trained = build_kge(model, kinship.n_entities, kinship.n_relations, 16, margin=cfg.margin)
    trainer = _Trainer(cfg, kinship, torch.device("cpu"), trained.state_dict())
    teacher = trainer.modules["teacher"]
    assert all(torch.equal(trained.state_dict()[k], v) for k, v in teacher.state_dict().items())
    pos = kinship.train[:256]
    neg = corrupt(pos, cfg.negatives, kinship.n_entities, torch.Generator().manual_seed(0))
    before_t = {k: v.clone() for k, v in teacher.state_dict().items()}
    before_s = {k: v.clone() for k, v in trainer.modules["student"].state_dict().items()}
    teacher.requires_grad_(False)
    trainer.step(pos, neg, stage=1)
    assert all(torch.equal(before_t[k], v) for k, v in teacher.state_dict().items())
    assert not all(torch.equal(before_s[k], v) for k, v in trainer.modules["student"].state_dict().items())
    teacher.requires_grad_(True)
    losses = trainer.step(pos, neg, stage=2)
    assert {"teacher", "teacher_soft", "teacher_hard"} <= set(losses)
    assert not all(torch.equal(before_t[k], v) for k, v in teacher.state_dict().items())


def test_foreach_adam_steps_bit_for_bit_as_the_default_and_survives_an_old_checkpoint(kinship):
    """foreach Adam (speed) must not change a single bit: committed records were trained with the default."""
    _, cfg = _cfgs(model="RotatE")
    torch.manual_seed(1)
    trained = build_kge("RotatE", kinship.n_entities, kinship.n_relations, 16, margin=cfg.margin).state_dict()
    pos = kinship.train[:256]
    neg = corrupt(pos, cfg.negatives, kinship.n_entities, torch.Generator().manual_seed(0))
    trainers = [_Trainer(cfg, kinship, torch.device("cpu"), trained) for _ in range(2)]
    old_style = trainers[0].state_dict()  # as checkpoints written before foreach stored it
    for opt_state in old_style["optimizers"].values():
        for group in opt_state["param_groups"]:
            group["foreach"] = None
    trainers[1].use_foreach(False)  # torch's CPU default: one tensor at a time
    trainers[0].load_state_dict(old_style)
    assert all(g["foreach"] is True for o in trainers[0].optimizers.values() for g in o.param_groups)
    for trainer in trainers:
        trainer.modules["teacher"].requires_grad_(True)
        for _ in range(3):
            trainer.step(pos, neg, stage=2)
    fast, default = ([p for m in t.modules.values() for p in m.parameters()] for t in trainers)
    assert all(torch.equal(a, b) for a, b in zip(fast, default))


def test_ablations_switch_exactly_the_stages(kinship, runs_dir):
    teacher_cfg, ds = _cfgs()
    assert [ds.stage(e) for e in range(1, 5)] == [1, 1, 2, 2]
    minus_s1, minus_s2 = ds.ablation("-S1"), ds.ablation("-S2")
    assert [minus_s1.stage(e) for e in range(1, 5)] == [2, 2, 2, 2]
    assert [minus_s2.stage(e) for e in range(1, 5)] == [1, 1, 1, 1]
    assert minus_s1.replace(stage1_epochs=ds.stage1_epochs) == ds  # nothing else differs
    assert len({ds.config_hash(), minus_s1.config_hash(), minus_s2.config_hash()}) == 3
    teacher_state = None
    for cfg in (minus_s2, minus_s1):
        record = run_distile(cfg, runs_dir, dataset=kinship)
        if teacher_state is None:
            teacher_state = torch.load(run_dir_for(teacher_cfg, runs_dir) / BEST)["models"]["model"]
        stages = {h["stage"] for h in record["history"]}
        final = torch.load(run_dir_for(cfg, runs_dir) / BEST)["models"]["teacher"]
        unchanged = all(torch.equal(teacher_state[k], final[k]) for k in final)
        if cfg is minus_s2:
            assert stages == {1} and unchanged and "teacher" not in record["history"][-1]["loss"]
        else:
            assert stages == {2} and not unchanged and "teacher" in record["history"][0]["loss"]
        assert record["teacher_run"] == teacher_cfg.run_name()
        assert set(record["test"]) == {"student", "teacher"}


@pytest.mark.parametrize("method", ["plain", "ds"])
def test_resume_equals_uninterrupted(nations, tmp_path, method):
    teacher_cfg, ds = _cfgs(dataset="Nations", model="ComplEx", max_epochs=6, stage1_epochs=3, batch_size=512)
    cfg = teacher_cfg if method == "plain" else ds
    full = run_distile(cfg, tmp_path / "a", dataset=nations)
    part = run_distile(cfg, tmp_path / "b", dataset=nations, stop_after_epoch=2)
    assert part["status"] == "interrupted"
    resumed = run_distile(cfg, tmp_path / "b", dataset=nations)
    assert resumed["selected_epoch"] == full["selected_epoch"]
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in full["history"]]
    assert resumed["test"] == full["test"]
    again = run_distile(cfg, tmp_path / "b", dataset=nations)  # reused, not retrained
    assert again["provenance"] == resumed["provenance"] and again["history"] == resumed["history"]


def test_record_selects_on_validation_and_uses_the_shared_evaluation(kinship, runs_dir):
    cfg, _ = _cfgs(model="TransH")
    record = run_distile(cfg, runs_dir, dataset=kinship)
    valid = {h["epoch"]: h["valid"]["model"]["MRR"] for h in record["history"] if "valid" in h}
    assert record["selected_epoch"] == max(valid, key=valid.get)
    assert record["parameter_counts"]["model"]["dense"] == (kinship.n_entities + 2 * kinship.n_relations) * 16
    model = build_kge("TransH", kinship.n_entities, kinship.n_relations, 16)
    model.load_state_dict(torch.load(run_dir_for(cfg, runs_dir) / BEST)["models"]["model"])
    assert evaluate(model.score_tails, kinship, "test")["MRR"] == pytest.approx(record["test"]["model"]["all"]["MRR"])


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"model": "DistMult"}, "model"),
        ({"dim": 0}, "dim"),
        ({"alpha": 1.5}, "alpha"),
        ({"stage1_epochs": 20, "max_epochs": 10}, "stage1_epochs"),
        ({"lr_decay": 0.0}, "lr_decay"),
        ({"weighting": "mean"}, "weighting"),
        ({"method": "ds"}, "teacher"),
        ({"method": "ds", "teacher": {"model": "RotatE"}}, "teacher"),
        ({"negatives": -1}, "negatives"),
    ],
)
def test_bad_config_names_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        DistilEConfig(**changes)
    with pytest.raises(ValueError, match="bogus"):
        DistilEConfig.from_dict({"bogus": 1})


def test_paper_defaults_per_backbone():
    assert (DistilEConfig(model="TransE").negatives, DistilEConfig(model="TransE").margin) == (5, 1.0)
    assert (DistilEConfig(model="TransH").negatives, DistilEConfig(model="TransH").margin) == (5, 0.5)
    assert (DistilEConfig(model="RotatE").negatives, DistilEConfig(model="RotatE").margin) == (25, 6.0)
    assert DistilEConfig(model="ComplEx").negatives == 25
    assert DistilEConfig(max_epochs=10).stage1_epochs == 5


def test_inference_table_rows(nations):
    rows = inference_table(nations, "RotatE", [8, 4], repeats=1)
    assert [r["dim"] for r in rows] == [8, 4]
    assert rows[0]["speedup"] == 1.0 and all(r["seconds"] > 0 for r in rows)
    assert rows[1]["params"] == nations.n_entities * 8 + nations.n_relations * 4


def test_study_grid_selects_on_validation_and_compare_maps_dims(nations, runs_dir):
    from kgdistill.study.distile.grid import DistilEStudy, compare

    section = {
        "datasets": {"WN18RR": "Nations"}, "models": ["ComplEx"], "teacher_dim": 8, "student_dims": [4],
        "config": {"max_epochs": 2, "stage1_epochs": 1, "eval_every": 1},
        "grid": {"learning_rate": [0.01, 0.05], "alpha": [0.3, 0.7]},
    }
    study = DistilEStudy(section, runs_dir, device="cpu")
    study._datasets["Nations"] = nations
    teacher, record = study.plain("WN18RR", "ComplEx", 8)
    candidates = [study._run(c) for c in study._candidates("WN18RR", "ComplEx", 8, "plain")]
    assert len(candidates) == 2  # plain runs ignore the distillation part of the grid
    assert record["best_valid_mrr"] == max(r["best_valid_mrr"] for r in candidates)
    ds_configs = study._candidates("WN18RR", "ComplEx", 4, "ds", teacher=teacher.to_dict())
    assert len(ds_configs) == 4 and all(c.alpha == c.beta for c in ds_configs)
    rows = study.link_prediction("WN18RR")
    assert [(r["dim"], r["method"]) for r in rows] == [(8, "Tea."), (4, "no-DS"), (4, "DS")]
    paper = {"64/Tea.": {"ComplEx": {"MRR": 0.3}}, "32/DS": {"ComplEx": {"MRR": 0.2}}}
    frame = compare(rows, paper, metrics=("MRR",), student_dims=[4], teacher_dim=8)
    assert list(frame["paper dim"]) == [64, 32, 32]
    assert frame["MRR paper"].tolist()[0] == 0.3 and math.isnan(frame["MRR paper"].tolist()[1])


def test_planned_runs_are_the_runs_the_experiments_train(nations, runs_dir):
    # scripts/train_runs.py trains planned_runs ahead of notebook 06: they must be exactly its runs
    from kgdistill.study.distile.grid import DistilEStudy
    from kgdistill.study.distile.planning import distile_planned_runs as planned_runs

    section = {
        "datasets": {"WN18RR": "Nations", "FB15k-237": "Nations"}, "models": ["TransE"], "teacher_dim": 8,
        "student_dims": [4], "teacher_dims": [8, 16], "config": {"max_epochs": 2, "stage1_epochs": 1, "eval_every": 1},
        "per_model": {"TransE": {"learning_rate": 0.05}}, "grid": {},
        "ablation": {"dataset": "WN18RR"}, "figure2": {"dataset": "WN18RR", "model": "TransE"},
        "figure3": {"dataset": "FB15k-237", "model": "TransE", "dim": 4, "eval_every": 2},
    }
    planned = [config for config, _ in planned_runs(section)]
    methods = [c.method for c in planned]
    assert methods == sorted(methods, key=lambda m: m != "plain")  # teachers before their students
    study = DistilEStudy(section, runs_dir, device="cpu")
    study._datasets["Nations"] = nations
    for paper_dataset in section["datasets"]:
        study.link_prediction(paper_dataset)
    study.ablation(), study.teacher_dimensions(), study.curves()
    assert sorted(c.run_name() for c in planned) == sorted(study.records)
    # teacher 8, no-DS 4, DS 4, -S1, -S2, teacher 16 and its DS 4, Figure 3's no-DS and DS at eval_every 2
    assert len(planned) == 9
    users = {config.run_name(): used for config, used in planned_runs(section)}
    assert users[planned[0].run_name()] == ["Table 3", "Table 4", "Table 6", "Figure 2", "Figure 3"]  # dim-8 teacher
    assert sum(used == ["Figure 2"] for used in users.values()) == 2  # the dim-16 teacher and its student
    assert planned_runs({**section, "grid": {"alpha": [0.3, 0.7]}}) == []  # a grid decides by training

    # the smallest students' curves: one panel per backbone with both records, read from their histories
    from kgdistill.study.distile.curves import curves_figure, curves_summary

    panels = study.pair_curves("WN18RR")
    assert list(panels) == ["TransE"]
    frame, switch = panels["TransE"]
    _, plain = study.plain("WN18RR", "TransE", 4)
    assert switch == 1 and list(frame.index) == [1, 2]
    assert frame["no-DS"].tolist() == [h["valid"]["model"]["MRR"] for h in plain["history"]]
    summary = curves_summary(panels).loc["TransE"]
    assert summary["DS best"] == frame["DS"].max() and summary["no-DS at epoch"] == frame["no-DS"].idxmax()
    assert summary["DS − no-DS"] == summary["DS best"] - summary["no-DS best"] and summary["DS last epoch"] == 2
    import matplotlib

    matplotlib.use("Agg")
    fig = curves_figure(panels)
    (ax,) = fig.axes
    assert ax.get_title() == "TransE" and [line.get_label() for line in ax.get_lines()[:2]] == ["no-DS", "DS"]
    assert ax.get_lines()[2].get_xdata()[0] == 1.5  # the stage switch after epoch 1
    with pytest.raises(ValueError, match="no panel"):
        curves_figure({})


def test_notebook_06_tables_put_the_rows_beside_the_paper_by_dimension():
    """link_prediction_table / ablation_table / timing_table map the profile's dims to the paper's
    (teacher -> 64, students -> 32/16/8 by position) and read the published numbers of that cell."""
    from kgdistill.study.distile.grid import LINK_TABLES, DistilEStudy, paper_dims
    from kgdistill.study.profile import published

    assert paper_dims(16, [8, 4, 2]) == {16: 64, 8: 32, 4: 16, 2: 8} and paper_dims(None, [5]) == {5: 32}
    assert list(LINK_TABLES.items()) == [("WN18RR", 3), ("FB15k-237", 4)]

    def row(model, dim, method, mrr):
        return {"model": model, "dim": dim, "method": method, "MRR": mrr, "H@10": mrr, "H@3": mrr, "H@1": mrr,
                "run": "r"}

    class Canned(DistilEStudy):  # the experiments' rows without training
        def link_prediction(self, paper_dataset):
            return [row("TransE", 16, "Tea.", 0.5), row("TransE", 2, "DS", 0.1)]

        def ablation(self):
            return [row("RotatE", 4, "-S1", 0.2)]

        def timing(self):
            return [{"model": "ComplEx", "dim": d, "params": d * 10, "seconds": 1.0, "speedup": 1.0} for d in (16, 8)]

    D = Canned({"datasets": {"WN18RR": "UMLS"}, "teacher_dim": 16, "student_dims": [8, 4, 2], "teacher_dims": [16],
                "config": {}},
               runs_dir=".", name="smoke")
    table = D.link_prediction_table("WN18RR")
    table3 = published("distile", "table3", "rows")
    assert table["paper dim"].tolist() == [64, 8]
    assert table.loc[("TransE", 16, "Tea."), "MRR paper"] == table3["64/Tea."]["TransE"]["MRR"]
    assert table.loc[("TransE", 2, "DS"), "H@1 paper"] == table3["8/DS"]["TransE"]["H@1"]
    ablation = D.ablation_table()
    assert list(ablation.columns) == ["paper dim", "MRR", "MRR paper", "MRR Δ", "H@10", "H@10 paper", "H@10 Δ"]
    assert ablation["MRR paper"].iloc[0] == published("distile", "table6", "rows")["16/-S1"]["RotatE"]["MRR"]
    timing = D.timing_table()
    table5 = published("distile", "table5", "rows")
    assert timing["paper dim"].tolist() == ["64", "32"]
    assert timing.loc[("ComplEx", 8), "params paper"] == round(table5["32"]["ComplEx"]["params_k"] * 1000)
    assert timing.loc[("ComplEx", 16), "speedup paper"] == table5["64"]["ComplEx"]["speedup"]
    assert D.describe().splitlines()[:2] == ["profile: smoke", "  WN18RR: trained on UMLS"]


def test_per_dataset_overrides_change_only_that_datasets_configs():
    # the cpu profile runs WN18RR to convergence while FB15k-237 keeps its committed configs (run names)
    from kgdistill.study.distile.planning import distile_planned_runs as planned_runs

    section = {
        "datasets": {"WN18RR": "Nations", "FB15k-237": "Kinship"}, "models": ["TransE", "RotatE"], "teacher_dim": 8,
        "student_dims": [4], "teacher_dims": [8], "config": {"max_epochs": 2, "stage1_epochs": 1, "eval_every": 1},
        "per_model": {"RotatE": {"learning_rate": 0.05}}, "grid": {},
        "ablation": {"dataset": "WN18RR"}, "figure2": {"dataset": "WN18RR", "model": "TransE"},
        "figure3": {"dataset": "FB15k-237", "model": "TransE", "dim": 4, "eval_every": 2},
    }
    overridden = {**section,
                  "per_dataset": {"WN18RR": {"max_epochs": 6, "stage1_epochs": 3, "patience": 2,
                                             "learning_rate": 0.02}},
                  "per_dataset_model": {"WN18RR": {"TransE": {"learning_rate": 0.001}}}}
    before = {c.run_name(): c for c, _ in planned_runs(section)}
    after = {c.run_name(): c for c, _ in planned_runs(overridden)}
    kinship = lambda runs: {n for n, c in runs.items() if c.dataset == "Kinship"}  # noqa: E731
    assert kinship(before) and kinship(after) == kinship(before)  # FB15k-237: same runs, same names
    nations = [c for c in after.values() if c.dataset == "Nations"]
    assert nations and not {c.run_name() for c in nations} & set(before)
    for c in nations:
        assert (c.max_epochs, c.patience) == (6, 2) and (c.method == "plain" or c.stage1_epochs in (0, 3, 6))
        # later wins: per_dataset < per_model < per_dataset_model; a DS run's teacher gets the same
        assert c.learning_rate == {"TransE": 0.001, "RotatE": 0.05}[c.model]
        assert c.teacher is None or DistilEConfig.from_dict(c.teacher).learning_rate == c.learning_rate
    with pytest.raises(ValueError, match="WN18R"):
        planned_runs({**section, "per_dataset": {"WN18R": {"max_epochs": 6}}})


def test_train_missing_false_reads_records_and_marks_the_rest_not_trained(nations, runs_dir):
    # the cpu profile's notebook 06 must rebuild from committed records without training for hours
    from kgdistill.protocol.runner import run
    from kgdistill.study.distile.grid import NOT_TRAINED, DistilEStudy
    from kgdistill.study.distile.planning import distile_planned_runs as planned_runs

    section = {
        "datasets": {"WN18RR": "Nations"}, "models": ["TransE"], "teacher_dim": 8, "student_dims": [4],
        "teacher_dims": [8, 16], "config": {"max_epochs": 2, "stage1_epochs": 1, "eval_every": 1}, "grid": {},
        "ablation": {"dataset": "WN18RR"}, "figure2": {"dataset": "WN18RR", "model": "TransE"},
        "figure3": {"dataset": "WN18RR", "model": "TransE", "dim": 4, "eval_every": 2}, "train_missing": False,
    }
    planned = [config for config, _ in planned_runs(section)]
    teacher = planned[0]
    assert (teacher.method, teacher.dim) == ("plain", 8)
    trained = run(teacher, runs_dir, device="cpu", dataset=nations)
    before = sorted(p.name for p in runs_dir.iterdir())
    study = DistilEStudy(section, runs_dir, device="cpu")
    study._datasets["Nations"] = nations
    rows = study.link_prediction("WN18RR")
    assert sorted(p.name for p in runs_dir.iterdir()) == before  # nothing trained
    assert rows[0]["MRR"] == trained["test"]["model"]["all"]["MRR"] and rows[0]["converged"] != NOT_TRAINED
    assert all(math.isnan(r["MRR"]) and r["converged"] == NOT_TRAINED and r["run"] == "" for r in rows[1:])
    study.ablation(), study.teacher_dimensions()
    frame, switch = study.curves_frame()
    assert frame.empty and switch == 1  # the DS config is known (its teacher is), its record is not
    assert study.pair_curves("WN18RR") == {}  # no backbone has both students
    assert sorted(study.not_trained) == sorted(c.run_name() for c in planned[1:])
    assert str(len(planned) - 1) in study.missing_runs() and study.records == {teacher.run_name(): trained}
    grid = study.teacher_dimension_grid()
    assert grid.isna().all().all()
    assert grid.attrs == {"model": "TransE", "dataset": "WN18RR", "trained_on": "Nations"}  # Figure 2's title
    table = study.link_prediction_table("WN18RR")
    assert (table["converged"] == NOT_TRAINED).sum() == 2


def test_timing_ranks_the_profiles_first_triples(nations):
    from kgdistill.distile.timing import all_triples
    from kgdistill.study.distile.grid import DistilEStudy

    section = {"datasets": {"WN18RR": "Nations"}, "models": ["TransE"], "teacher_dim": 8, "student_dims": [4],
               "timing": {"dataset": "WN18RR", "repeats": 1, "triples": 50}}
    study = DistilEStudy(section, ".", device="cpu")
    study._datasets["Nations"] = nations
    assert torch.equal(study.timed_triples(), all_triples(nations)[:50])
    assert len(study.timing()) == 2
    study.section = {**section, "timing": {"dataset": "WN18RR"}}
    assert len(study.timed_triples()) == len(all_triples(nations))
    study.section = {**section, "timing": {"dataset": "WN18RR", "triples": "10k"}}
    with pytest.raises(ValueError, match="timing.triples"):
        study.timed_triples()


def test_ds_gains_subtract_no_ds_from_ds_and_keep_the_marks():
    from kgdistill.study.distile.claims import ds_gains, ds_verdict
    from kgdistill.study.distile.grid import NOT_TRAINED, compare

    rows = [{"model": "TransE", "dim": 8, "method": "no-DS", "MRR": 0.10, "H@10": 0, "H@3": 0, "H@1": 0,
             "converged": "yes"},
            {"model": "TransE", "dim": 8, "method": "DS", "MRR": 0.04, "H@10": 0, "H@3": 0, "H@1": 0,
             "converged": "yes"},
            {"model": "TransE", "dim": 16, "method": "no-DS", "MRR": 0.2, "H@10": 0, "H@3": 0, "H@1": 0,
             "converged": "no †"},
            {"model": "TransE", "dim": 16, "method": "DS", "MRR": float("nan"), "H@10": 0, "H@3": 0, "H@1": 0,
             "converged": NOT_TRAINED}]
    paper = {"8/no-DS": {"TransE": {"MRR": 0.076}}, "8/DS": {"TransE": {"MRR": 0.125}}}
    gains = ds_gains(compare(rows, paper, student_dims=[32, 16, 8]))
    assert gains.loc[("TransE", 8), "DS − no-DS"] == pytest.approx(-0.06)
    assert gains.loc[("TransE", 8), "paper"] == pytest.approx(0.049) and gains.loc[("TransE", 8), "converged"] == "yes"
    assert math.isnan(gains.loc[("TransE", 16), "DS − no-DS"]) and NOT_TRAINED in gains.loc[("TransE", 16), "converged"]
    assert gains.loc[("TransE", 8), "reading"] == "single" and gains.loc[("TransE", 8), "seeds"] == 1
    assert "95% low" not in gains  # no pair has several seeds: no interval columns
    assert ds_verdict(gains) == ("1 single observation (one seed, no interval: not counted as gains or losses): "
                                 "DS − no-DS > 0 in 0, < 0 in 1 (TransE 8). The paper: above in 1 of these 1. "
                                 "Every measured pair converged. 1 pair is not trained yet.")
    teacher_row = {"model": "TransE", "dim": 64, "method": "Tea.", "MRR": 0.16, "H@10": 0, "H@3": 0, "H@1": 0,
                   "converged": "yes"}
    table = compare([teacher_row] + rows, paper, student_dims=[32, 16, 8], teacher_dim=64)

    def ds_record(stage, teacher_mrr):  # selected at epoch 2, in the given stage
        return {"selected_epoch": 2, "history": [{"epoch": 1, "stage": 1}, {"epoch": 2, "stage": stage}],
                "test": {"teacher": {"all": {"MRR": teacher_mrr}}}}

    staged = ds_gains(table, ds_records={("TransE", 8): ds_record(1, 0.16), ("TransE", 16): None})
    assert staged["DS best in"].tolist() == ["S1", "-"]  # TransE 16's DS run has no record
    assert staged["Tea."].tolist() == [0.16, 0.16] and staged.loc[("TransE", 8), "Tea. after"] == 0.16
    assert math.isnan(staged.loc[("TransE", 16), "Tea. after"])
    assert ds_verdict(staged).endswith("converged. In 1 (TransE 8) the DS student's best validation epoch lies in "
                                       "stage 1: co-training the teacher (stage 2) never improved on it. "
                                       "1 pair is not trained yet.")
    collapsed = ds_gains(table, ds_records={("TransE", 8): ds_record(2, 0.05)})
    assert ds_verdict(collapsed).endswith("converged. Stage 2 pulled the teacher below half its own score in 1 "
                                          "(TransE 8). 1 pair is not trained yet.")
    assert ds_verdict(ds_gains(table, ds_records={("TransE", 8): ds_record(2, 0.15)})) == ds_verdict(gains)


def test_selected_stage_reads_the_stage_of_the_selected_epoch():
    from kgdistill.study.distile.claims import selected_stage

    history = [{"epoch": 1, "stage": 1}, {"epoch": 2, "stage": 1}, {"epoch": 3, "stage": 2}]
    assert selected_stage({"selected_epoch": 2, "history": history}) == 1
    assert selected_stage({"selected_epoch": 3, "history": history}) == 2
    assert selected_stage(None) is None


def test_ds_verdict_names_the_pairs_above_and_counts_the_unconverged():
    import pandas as pd

    from kgdistill.study.distile.claims import ds_verdict

    gains = pd.DataFrame(
        {"model": ["TransE", "ComplEx", "ComplEx"], "dim": [8, 8, 16], "DS − no-DS": [-0.05, 0.02, 0.01],
         "paper": [0.05, 0.09, -0.01], "converged": ["yes", "yes", "no †"]}).set_index(["model", "dim"])
    assert ds_verdict(gains) == ("3 single observations (one seed, no interval: not counted as gains or losses): "
                                 "DS − no-DS > 0 in 2 (ComplEx 8, ComplEx 16), < 0 in 1 (TransE 8). The paper: above "
                                 "in 2 of these 3. 1 of them is unconverged (†: a run stopped at its epoch budget): "
                                 "not results.")
    assert (ds_verdict(gains.assign(**{"DS − no-DS": float("nan")}))
            == "No pair has both runs trained yet (3 pairs planned). The runs trained so far in 1 of them are "
               "unconverged (†: stopped at their epoch budget).")
