"""Datasets: statistics, ids, reciprocal queries, filter index, long-tail split, fetching errors."""
from __future__ import annotations

import functools
import hashlib
import http.server
import io
import socket
import tarfile
import threading
from pathlib import Path

import pytest
import torch

import kgdistill.core.datasets as datasets
from kgdistill.core.datasets import (
    ARCHIVES,
    CACHE_DIR_ENV,
    DATA_DIR_ENV,
    DatasetError,
    FilterIndex,
    fetch_archive,
    load_dataset,
    long_tail_split,
)

# /work/shared/README.md: entities (all splits), entities in train, relations, train, valid, test,
# valid / test triples with an entity unseen in train.
EXPECTED_STATS = {
    "FB15k-237": (14541, 14505, 237, 272115, 17535, 20466, 9, 28),
    "WN18RR": (40943, 40559, 11, 86835, 3034, 3134, 210, 210),
    "UMLS": (135, 135, 46, 5216, 652, 661, 0, 0),
    "Kinship": (104, 104, 25, 8544, 1068, 1074, 0, 0),
    "Nations": (14, 14, 55, 1592, 199, 201, 0, 0),
}
STAT_KEYS = (
    "entities", "entities_in_train", "relations", "train", "valid", "test",
    "valid_unseen_entity", "test_unseen_entity",
)


@functools.lru_cache(maxsize=None)
def _large(name: str):
    """FB15k-237 / WN18RR loaded once per test session (a few seconds each)."""
    return load_dataset(name)


def _raw_triples(archive: Path, split: str) -> list[tuple[str, str, str]]:
    with tarfile.open(archive, "r:gz") as tar:
        member = next(m for m in tar.getmembers() if Path(m.name).name == f"{split}.txt")
        text = tar.extractfile(member).read().decode("utf-8")
    return [tuple(p.strip() for p in line.split("\t")) for line in text.splitlines() if line.strip()]


# --- statistics and ids -----------------------------------------------------------------------


@pytest.mark.parametrize("name", list(EXPECTED_STATS))
def test_statistics_match_the_published_table(name, request):
    small = {"UMLS": "umls", "Kinship": "kinship", "Nations": "nations"}
    ds = request.getfixturevalue(small[name]) if name in small else _large(name)
    assert ds.name == name
    stats = ds.stats()
    assert tuple(stats[k] for k in STAT_KEYS) == EXPECTED_STATS[name]
    for split in ("train", "valid", "test"):
        t = ds.split(split)
        assert t.dtype == torch.int64 and t.shape[1] == 3
        assert int(t[:, [0, 2]].min()) >= 0 and int(t[:, [0, 2]].max()) < ds.n_entities
        assert int(t[:, 1].min()) >= 0 and int(t[:, 1].max()) < ds.n_relations


@pytest.mark.parametrize("fixture", ["umls", "nations"])
def test_ids_are_sorted_names_and_triples_match_the_files(fixture, request, data_dir):
    ds = request.getfixturevalue(fixture)
    raw = {s: _raw_triples(data_dir / ARCHIVES[ds.name][0], s) for s in ("train", "valid", "test")}
    entities = sorted({e for rows in raw.values() for h, _, t in rows for e in (h, t)})
    relations = sorted({r for rows in raw.values() for _, r, _ in rows})
    assert ds.entities == entities
    assert ds.relations == relations
    for split, rows in raw.items():
        decoded = [(ds.entities[h], ds.relations[r], ds.entities[t]) for h, r, t in ds.split(split).tolist()]
        assert decoded == rows  # same order, same content


def test_dataset_names_are_case_insensitive(data_dir):
    assert load_dataset("nations", data_dir).name == "Nations"
    assert load_dataset("uMlS", data_dir).name == "UMLS"


def test_reciprocal_relations_are_offset_by_R(umls):
    R = umls.n_relations
    triples = umls.train[:5]
    rec = umls.reciprocal(triples)
    assert rec.shape == (10, 3)
    assert torch.equal(rec[:5], triples)
    for (h, r, t), (a, q, b) in zip(triples.tolist(), rec[5:].tolist()):
        assert (a, q, b) == (t, r + R, h)
    assert torch.equal(umls.queries("test"), umls.reciprocal(umls.test))
    with pytest.raises(ValueError, match="split"):
        umls.split("dev")


def test_relation_counts_and_entity_weights(nations):
    counts = nations.relation_counts()
    assert counts.shape == (nations.n_relations,)
    for r in range(nations.n_relations):
        assert int(counts[r]) == int((nations.train[:, 1] == r).sum())
    occ = [0] * nations.n_entities
    for h, _, t in nations.train.tolist():
        occ[h] += 1
        occ[t] += 1
    w = nations.entity_frequency_weights()
    expected = torch.tensor([0.1 + 0.9 * c / max(occ) for c in occ])
    assert torch.allclose(w, expected, atol=1e-6)
    assert float(w.max()) == pytest.approx(1.0)


# --- filter index -------------------------------------------------------------------------------


def _brute_force_answers(ds) -> dict[tuple[int, int], set[int]]:
    known: dict[tuple[int, int], set[int]] = {}
    R = ds.n_relations
    for split in ("train", "valid", "test"):
        for h, r, t in ds.split(split).tolist():
            known.setdefault((h, r), set()).add(t)
            known.setdefault((t, r + R), set()).add(h)
    return known


def _as_sets(rows: torch.Tensor, cols: torch.Tensor, n: int) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in range(n)]
    for row, col in zip(rows.tolist(), cols.tolist()):
        out[row].append(col)
    return out


@pytest.mark.parametrize("fixture", ["nations", "kinship"])
def test_filter_index_answers_equal_brute_force_in_both_directions(fixture, request):
    ds = request.getfixturevalue(fixture)
    known = _brute_force_answers(ds)
    # every (anchor, relation) pair, including ones without any answer and the largest ids
    anchors = torch.arange(ds.n_entities).repeat_interleave(2 * ds.n_relations)
    rels = torch.arange(2 * ds.n_relations).repeat(ds.n_entities)
    queries = torch.stack([anchors, rels, torch.zeros_like(anchors)], 1)
    # shuffled so that the batch is not in key order
    queries = queries[torch.randperm(len(queries), generator=torch.Generator().manual_seed(0))]
    rows, cols = ds.filters.answers(queries)
    got = _as_sets(rows, cols, len(queries))
    n_empty = 0
    for (a, r, _), answers in zip(queries.tolist(), got):
        assert len(answers) == len(set(answers)), "duplicate answers"
        assert set(answers) == known.get((a, r), set()), (a, r)
        n_empty += not answers
    assert n_empty > 0  # the test did cover queries without answers
    # a query's own triple is always among its answers (both directions)
    q = ds.queries("test")
    rows, cols = ds.filters.answers(q)
    hit = torch.zeros(len(q), dtype=torch.bool)
    hit[rows[cols == q[rows, 2]]] = True
    assert bool(hit.all())


def test_filter_index_on_hand_built_queries():
    # anchors/relations: (0,0)->{2,1}, (0,1)->{2}, (3,1)->{0}; duplicate (0,0,2) dropped
    rows = torch.tensor([[0, 0, 2], [0, 0, 1], [0, 1, 2], [3, 1, 0], [0, 0, 2]])
    index = FilterIndex.from_queries(rows, n_query_relations=2)
    q = torch.tensor([[3, 1], [0, 0], [1, 0], [0, 1], [3, 0], [9, 1]])
    r, c = index.answers(q)
    assert [sorted(a) for a in _as_sets(r, c, len(q))] == [[0], [1, 2], [], [2], [], []]
    r, c = index.answers(torch.zeros(0, 3, dtype=torch.long))
    assert r.numel() == 0 and c.numel() == 0


# --- long-tail split ------------------------------------------------------------------------------


def test_long_tail_split_on_fb15k237_measured_numbers():
    ds = _large("FB15k-237")
    split = long_tail_split(ds, threshold=1000)
    summary = split.summary()
    # what the data says (the paper reports 187 relations / 79% of types / 24% of train)
    assert summary["long_tail_relations"] == 181
    assert summary["share_of_relation_types"] == pytest.approx(181 / 237)
    assert summary["share_of_relation_types"] == pytest.approx(0.7637, abs=1e-4)
    assert summary["share_of_train"] == pytest.approx(0.2244, abs=1e-4)
    assert summary["test_triples"] == int(split.test_mask.sum()) == 4547
    assert split.test_mask.shape == (len(ds.test),)


def test_long_tail_split_equals_brute_force(kinship):
    threshold = 300
    split = long_tail_split(kinship, threshold)
    counts = {}
    for _, r, _ in kinship.train.tolist():
        counts[r] = counts.get(r, 0) + 1
    tail = sorted(r for r in range(kinship.n_relations) if counts.get(r, 0) < threshold)
    assert 0 < len(tail) < kinship.n_relations
    assert split.relations.tolist() == tail
    assert split.test_mask.tolist() == [r in tail for r in kinship.test[:, 1].tolist()]
    assert split.share_of_train == pytest.approx(sum(counts.get(r, 0) for r in tail) / len(kinship.train))
    assert split.share_of_relation_types == pytest.approx(len(tail) / kinship.n_relations)


# --- fetching and parsing errors ----------------------------------------------------------------


def test_unknown_dataset_name_is_rejected():
    with pytest.raises(DatasetError, match="unknown dataset 'FB15k'.*FB15k-237"):
        load_dataset("FB15k")
    with pytest.raises(DatasetError, match="unknown dataset"):
        fetch_archive("YAGO3-10")


def test_missing_archive_in_data_dir_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(DatasetError) as err:
        load_dataset("WN18RR")
    msg = str(err.value)
    assert "WN18RR" in msg
    assert str(tmp_path / "WN18RR.tar.gz") in msg
    assert DATA_DIR_ENV in msg
    assert "https://github.com/TimDettmers/ConvE/raw/master/WN18RR.tar.gz" in msg


def test_checksum_mismatch_in_local_folder(tmp_path):
    (tmp_path / "nations.tar.gz").write_bytes(b"definitely not the nations archive")
    with pytest.raises(DatasetError, match="checksum mismatch") as err:
        load_dataset("Nations", tmp_path)
    assert "Nations" in str(err.value) and ARCHIVES["Nations"][1] in str(err.value)


def _archive_bytes(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"toy/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _install_toy_archive(tmp_path, monkeypatch, files: dict[str, str]) -> Path:
    blob = _archive_bytes(files)
    (tmp_path / "nations.tar.gz").write_bytes(blob)
    monkeypatch.setitem(ARCHIVES, "Nations", ("nations.tar.gz", hashlib.sha256(blob).hexdigest()))
    return tmp_path


def test_toy_archive_parses(tmp_path, monkeypatch):
    good = "b\tlikes\ta\na\tlikes\tc\n"
    folder = _install_toy_archive(tmp_path, monkeypatch,
                                  {"train.txt": good, "valid.txt": "c\tr2\ta\n", "test.txt": "a\tlikes\tb\n\n"})
    ds = load_dataset("Nations", folder)
    assert ds.entities == ["a", "b", "c"] and ds.relations == ["likes", "r2"]
    assert ds.train.tolist() == [[1, 0, 0], [0, 0, 2]]
    assert ds.valid.tolist() == [[2, 1, 0]] and ds.test.tolist() == [[0, 0, 1]]


@pytest.mark.parametrize("bad_line", ["a\tlikes", "a\t\tb", "a\tlikes\tb\tc"])
def test_malformed_line_names_file_and_line(tmp_path, monkeypatch, bad_line):
    good = "a\tlikes\tb\nb\tlikes\tc\n"
    folder = _install_toy_archive(
        tmp_path, monkeypatch, {"train.txt": good, "valid.txt": f"a\tlikes\tc\n\n{bad_line}\n", "test.txt": good}
    )
    with pytest.raises(DatasetError) as err:
        load_dataset("Nations", folder)
    msg = str(err.value)
    assert "valid.txt" in msg and "line 3" in msg and "Nations" in msg


def test_archive_without_a_split_file(tmp_path, monkeypatch):
    good = "a\tlikes\tb\n"
    folder = _install_toy_archive(tmp_path, monkeypatch, {"train.txt": good, "valid.txt": good})
    with pytest.raises(DatasetError, match="test.txt"):
        load_dataset("Nations", folder)


# --- download path (a local HTTP server stands in for GitHub) -----------------------------------


class _Server:
    """Serves ``files`` (name -> bytes) on 127.0.0.1 from a background thread."""

    def __init__(self, files: dict[str, bytes]):
        served = files

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                name = self.path.rsplit("/", 1)[-1]
                if name not in served:
                    self.send_error(404)
                    return
                body = served[name]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/{{file}}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def download_env(tmp_path, monkeypatch):
    """No data dir (KGC_DATA_DIR set but empty: download even where ../shared/data exists),
    cache in tmp; yields the cache folder."""
    monkeypatch.setenv(DATA_DIR_ENV, "")
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_DIR_ENV, str(cache))
    return cache


def _files_in(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def test_download_success_then_offline_cache(download_env, data_dir, monkeypatch):
    server = _Server({"umls.tar.gz": (data_dir / "umls.tar.gz").read_bytes()})
    try:
        monkeypatch.setattr(datasets, "ORIGIN_URL", server.url)
        ds = load_dataset("UMLS")
    finally:
        server.close()
    assert ds.stats()["train"] == 5216
    assert [p.name for p in _files_in(download_env)] == ["umls.tar.gz"]
    # the server is gone: the verified cached copy is used without network
    monkeypatch.setattr(datasets, "ORIGIN_URL", f"http://127.0.0.1:{_closed_port()}/{{file}}")
    assert fetch_archive("UMLS") == download_env / "umls.tar.gz"


def test_download_of_corrupted_archive_leaves_nothing_in_cache(download_env, monkeypatch):
    server = _Server({"umls.tar.gz": b"\x1f\x8b corrupted bytes"})
    try:
        monkeypatch.setattr(datasets, "ORIGIN_URL", server.url)
        with pytest.raises(DatasetError) as err:
            load_dataset("UMLS")
    finally:
        server.close()
    msg = str(err.value)
    assert "UMLS" in msg and "umls.tar.gz" in msg
    assert _files_in(download_env) == []


def test_download_http_404_is_a_dataset_error(download_env, monkeypatch):
    server = _Server({})
    try:
        monkeypatch.setattr(datasets, "ORIGIN_URL", server.url)
        with pytest.raises(DatasetError, match="Kinship.*kinship.tar.gz"):
            load_dataset("Kinship")
    finally:
        server.close()
    assert _files_in(download_env) == []


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_url_names_dataset_file_variable_and_url(download_env, monkeypatch):
    url = f"http://127.0.0.1:{_closed_port()}/{{file}}"
    monkeypatch.setattr(datasets, "ORIGIN_URL", url)
    with pytest.raises(DatasetError) as err:
        load_dataset("Nations")
    msg = str(err.value)
    assert "Nations" in msg
    assert "nations.tar.gz" in msg
    assert DATA_DIR_ENV in msg
    assert url.format(file="nations.tar.gz") in msg
    assert _files_in(download_env) == []


def test_expand_runs_flattens_csr_runs_including_empty_ones():
    from kgdistill.core.datasets import expand_runs

    start, count = torch.tensor([5, 0, 2, 9]), torch.tensor([2, 0, 3, 1])
    rows, position = expand_runs(start, count)
    assert rows.tolist() == [0, 0, 2, 2, 2, 3]
    assert position.tolist() == [5, 6, 2, 3, 4, 9]


def test_data_folder_default_is_owned_by_the_library(monkeypatch, tmp_path, data_dir):
    """No KGC_DATA_DIR: ../shared/data next to the repository (a plain papermill run needs no make)."""
    from kgdistill import environment

    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    assert environment.default_data_dir() == environment.shared_data_dir() == data_dir.resolve()
    assert fetch_archive("UMLS") == data_dir.resolve() / "umls.tar.gz"
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert environment.default_data_dir() == tmp_path.resolve()
    monkeypatch.setenv(DATA_DIR_ENV, "")
    assert environment.default_data_dir() is None
