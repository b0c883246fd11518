"""Benchmark knowledge graphs: fetching, parsing, ids, filter index, long-tail split.

Ids follow kbc/DURA/MetaSD so that numbers compare: entity and relation vocabularies are
built over train ∪ valid ∪ test and sorted by name; the reciprocal of relation ``r`` is
``r + n_relations``. A *query* is a row ``(anchor, relation, target)`` with relation in
``[0, 2·n_relations)``: ``(h, r, t)`` asks for the tail, ``(t, r + R, h)`` for the head.
"""
from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

#: name -> (archive file, SHA-256) as released with ConvE (TimDettmers/ConvE).
ARCHIVES: dict[str, tuple[str, str]] = {
    "FB15k-237": ("FB15k-237.tar.gz", "311df7930f842a02979eaa7a802484a6afe62303c07f915f1e6edbc30cbe05e8"),
    "WN18RR": ("WN18RR.tar.gz", "1eb9152f804c140d163462c0d49f65e5a0b30ab5fbb375c5e3353c11a6249060"),
    "Kinship": ("kinship.tar.gz", "a3cb9ca67213eb38133aebc12901195e283d844ebd59f1a6cbf2d4fa12ced4e6"),
    "Nations": ("nations.tar.gz", "feb3e3e027103089934ea7dfb67d2048d8a43e65d6757a86f2e037acb66f640b"),
    "UMLS": ("umls.tar.gz", "26223aa91f0ec8db2324e0f489b9a4425e04d1d0df72ce5cfd62af4b91aee6fd"),
}
ORIGIN_URL = "https://github.com/TimDettmers/ConvE/raw/master/{file}"
from .environment import DATA_DIR_ENV  # noqa: E402  (re-exported)

CACHE_DIR_ENV = "KGC_CACHE_DIR"
SPLITS = ("train", "valid", "test")


class DatasetError(RuntimeError):
    """A dataset could not be found, verified or parsed; the message says how to fix it."""


def canonical_name(name: str) -> str:
    """Map a case-insensitive dataset name to its canonical spelling (``'umls'`` -> ``'UMLS'``)."""
    for known in ARCHIVES:
        if known.lower() == str(name).lower():
            return known
    raise DatasetError(f"unknown dataset {name!r}; choose one of {sorted(ARCHIVES)}")


def dataset_argument(name: str) -> str:
    """``argparse`` type of a dataset option: the canonical spelling of a known dataset (any case);
    an unknown name is returned as given, so that ``choices=sorted(ARCHIVES)`` refuses it."""
    try:
        return canonical_name(name)
    except DatasetError:
        return name


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_archive(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Return the path of a verified ``<name>.tar.gz``.

    With ``data_dir`` (default :func:`kgdistill.core.environment.default_data_dir`: ``KGC_DATA_DIR``,
    else ``../shared/data`` next to the repository) the archive is taken from that folder and no
    network is used; otherwise pooch downloads it from the ConvE release into
    the cache (``KGC_CACHE_DIR`` or pooch's default), verifying its SHA-256. A file whose checksum
    does not match is deleted and an error is raised.
    """
    name = canonical_name(name)
    file, sha = ARCHIVES[name]
    if data_dir is None:
        from .environment import default_data_dir

        data_dir = default_data_dir()
    url = ORIGIN_URL.format(file=file)
    if data_dir:
        path = Path(data_dir) / file
        if not path.is_file():
            raise DatasetError(
                f"dataset {name}: expected archive {path} but it does not exist. Put {file} "
                f"there, point {DATA_DIR_ENV} at the folder that holds it, or unset {DATA_DIR_ENV} "
                f"to download it from {url}"
            )
        actual = _sha256(path)
        if actual != sha:
            raise DatasetError(
                f"dataset {name}: checksum mismatch for {path} (sha256 {actual}, expected {sha}). "
                f"The file is corrupt or a different release; replace it with the one from {url}"
            )
        return path

    import pooch

    cache = os.environ.get(CACHE_DIR_ENV) or pooch.os_cache("kgdistill")
    try:
        # pooch downloads to a temporary name and renames only after the hash matched,
        # so the cache never holds a half-written archive.
        return Path(pooch.retrieve(url, known_hash=f"sha256:{sha}", fname=file, path=cache, progressbar=False))
    except ValueError as err:  # pooch's hash mismatch; it has already removed the download
        cached = Path(cache) / file
        cached.unlink(missing_ok=True)
        raise DatasetError(f"dataset {name}: downloaded {file} failed verification ({err}); try again") from err
    except Exception as err:  # no network, HTTP error, ...
        raise DatasetError(
            f"dataset {name}: could not download {file} from {url} ({type(err).__name__}: {err}). "
            f"Without network, set {DATA_DIR_ENV} to a folder holding {file}"
        ) from err


def _read_split(archive: tarfile.TarFile, member_name: str, label: str) -> list[tuple[str, str, str]]:
    member = next((m for m in archive.getmembers() if Path(m.name).name == member_name), None)
    if member is None:
        raise DatasetError(f"{label}: archive has no {member_name}")
    rows = []
    text = io.TextIOWrapper(archive.extractfile(member), encoding="utf-8")
    for line_no, line in enumerate(text, start=1):
        line = line.rstrip("\n\r")
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3 or not all(p.strip() for p in parts):
            raise DatasetError(
                f"{label}/{member_name} line {line_no}: expected 'head<TAB>relation<TAB>tail', got {line[:120]!r}"
            )
        rows.append((parts[0].strip(), parts[1].strip(), parts[2].strip()))
    return rows


def expand_runs(start: torch.Tensor, count: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten the runs ``[start[i], start[i] + count[i])`` of a CSR-style array, all at once.

    ``start``, ``count``: (B,) int64. Returns ``(rows, position)``, each (sum(count),): the run each
    element belongs to and its flat index into the array - a running index shifted to each run's start.
    """
    rows = torch.repeat_interleave(count)
    end = torch.cumsum(count, 0)
    position = torch.arange(len(rows), device=start.device) + (start - (end - count))[rows]
    return rows, position


@dataclass
class FilterIndex:
    """All known answers of every query over train ∪ valid ∪ test, as CSR tensors.

    ``keys`` (sorted, int64) encode a query as ``anchor * n_query_relations + relation``;
    the answers of ``keys[i]`` are ``targets[offsets[i]:offsets[i+1]]``.
    """

    keys: torch.Tensor
    offsets: torch.Tensor
    targets: torch.Tensor
    n_query_relations: int

    @classmethod
    def from_queries(cls, queries: torch.Tensor, n_query_relations: int) -> "FilterIndex":
        """Build from query rows ``(anchor, relation, target)`` of shape (n, 3)."""
        key = queries[:, 0] * n_query_relations + queries[:, 1]
        order = torch.argsort(key * (queries[:, 2].max() + 1) + queries[:, 2])
        key, target = key[order], queries[order, 2]
        keep = torch.ones_like(key, dtype=torch.bool)  # drop duplicate (query, target) pairs
        keep[1:] = (key[1:] != key[:-1]) | (target[1:] != target[:-1])
        key, target = key[keep], target[keep]
        keys, counts = torch.unique_consecutive(key, return_counts=True)
        offsets = torch.zeros(len(keys) + 1, dtype=torch.long)
        offsets[1:] = torch.cumsum(counts, 0)
        return cls(keys, offsets, target.contiguous(), n_query_relations)

    def to(self, device: torch.device | str) -> "FilterIndex":
        return FilterIndex(
            self.keys.to(device), self.offsets.to(device), self.targets.to(device), self.n_query_relations
        )

    def answers(self, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Known answers of a batch of queries (B, ≥2) as (row in batch, entity) index pairs."""
        key = queries[:, 0] * self.n_query_relations + queries[:, 1]
        pos = torch.searchsorted(self.keys, key).clamp_max(len(self.keys) - 1)
        start = self.offsets[pos]
        count = torch.where(self.keys[pos] == key, self.offsets[pos + 1] - start, torch.zeros_like(start))
        rows, position = expand_runs(start, count)
        return rows, self.targets[position]


@dataclass
class KGDataset:
    """A benchmark KG with integer ids; triple tensors are (n, 3) int64 ``(head, relation, tail)``."""

    name: str
    entities: list[str]
    relations: list[str]
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    filters: FilterIndex = field(repr=False)

    @property
    def n_entities(self) -> int:
        return len(self.entities)

    @property
    def n_relations(self) -> int:
        """Number of original relations |R| (reciprocals excluded)."""
        return len(self.relations)

    def split(self, split: str) -> torch.Tensor:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
        return getattr(self, split)

    def reciprocal(self, triples: torch.Tensor) -> torch.Tensor:
        """Triples (n, 3) -> queries (2n, 3): each ``(h, r, t)`` and its ``(t, r + R, h)``."""
        inverse = torch.stack([triples[:, 2], triples[:, 1] + self.n_relations, triples[:, 0]], 1)
        return torch.cat([triples, inverse], 0)

    def queries(self, split: str) -> torch.Tensor:
        """Tail queries then head queries (as reciprocal tail queries) of a split, shape (2n, 3)."""
        return self.reciprocal(self.split(split))

    def relation_counts(self) -> torch.Tensor:
        """Training triples per original relation, shape (|R|,)."""
        return torch.bincount(self.train[:, 1], minlength=self.n_relations)

    def entity_frequency_weights(self) -> torch.Tensor:
        """DURA's ``-weight`` class weights: 0.1 + 0.9 · (train occurrences / max occurrences), (N,)."""
        counts = torch.bincount(self.train[:, [0, 2]].reshape(-1), minlength=self.n_entities).double()
        return (0.1 + 0.9 * counts / counts.max()).float()

    def stats(self) -> dict[str, int]:
        train_entities = torch.unique(self.train[:, [0, 2]]).numel()
        seen = torch.zeros(self.n_entities, dtype=torch.bool)
        seen[self.train[:, [0, 2]].reshape(-1)] = True

        def unseen(t: torch.Tensor) -> int:
            return int((~(seen[t[:, 0]] & seen[t[:, 2]])).sum())

        return {
            "entities": self.n_entities,
            "entities_in_train": train_entities,
            "relations": self.n_relations,
            "train": len(self.train),
            "valid": len(self.valid),
            "test": len(self.test),
            "valid_unseen_entity": unseen(self.valid),
            "test_unseen_entity": unseen(self.test),
        }


def load_dataset(name: str, data_dir: str | os.PathLike | None = None) -> KGDataset:
    """Load a benchmark by name (FB15k-237, WN18RR, UMLS, Kinship, Nations); see :func:`fetch_archive`."""
    name = canonical_name(name)
    path = fetch_archive(name, data_dir)
    with tarfile.open(path, "r:gz") as archive:
        raw = {s: _read_split(archive, f"{s}.txt", f"dataset {name} ({path})") for s in SPLITS}
    entities = sorted({e for rows in raw.values() for h, _, t in rows for e in (h, t)})
    relations = sorted({r for rows in raw.values() for _, r, _ in rows})
    ent_id = {e: i for i, e in enumerate(entities)}
    rel_id = {r: i for i, r in enumerate(relations)}
    tensors = {
        s: torch.tensor([(ent_id[h], rel_id[r], ent_id[t]) for h, r, t in rows], dtype=torch.long).reshape(-1, 3)
        for s, rows in raw.items()
    }
    all_triples = torch.cat([tensors[s] for s in SPLITS])
    n_rel = len(relations)
    inverse = torch.stack([all_triples[:, 2], all_triples[:, 1] + n_rel, all_triples[:, 0]], 1)
    filters = FilterIndex.from_queries(torch.cat([all_triples, inverse]), 2 * n_rel)
    return KGDataset(name, entities, relations, tensors["train"], tensors["valid"], tensors["test"], filters)


@dataclass
class LongTailSplit:
    """Relations with fewer than ``threshold`` training triples and the test triples that use them."""

    threshold: int
    relations: torch.Tensor  # (k,) relation ids
    test_mask: torch.Tensor  # (n_test,) bool
    share_of_relation_types: float
    share_of_train: float

    @property
    def n_relations(self) -> int:
        return int(self.relations.numel())

    def summary(self) -> dict[str, float]:
        return {
            "threshold": self.threshold,
            "long_tail_relations": self.n_relations,
            "share_of_relation_types": self.share_of_relation_types,
            "share_of_train": self.share_of_train,
            "test_triples": int(self.test_mask.sum()),
        }


def long_tail_split(dataset: KGDataset, threshold: int = 1000) -> LongTailSplit:
    """The paper's long-tail subset: test triples whose relation has < ``threshold`` train triples."""
    counts = dataset.relation_counts()
    is_tail = counts < threshold
    return LongTailSplit(
        threshold=threshold,
        relations=torch.nonzero(is_tail).flatten(),
        test_mask=is_tail[dataset.test[:, 1]],
        share_of_relation_types=float(is_tail.float().mean()),
        share_of_train=float(counts[is_tail].sum() / counts.sum()),
    )
