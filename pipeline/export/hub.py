"""A curriculum as a Hugging Face dataset repository: the folder, its card, and the push.

The folder is exactly what the Hub repository will hold: `data/stage_k/train-00000-of-00001.parquet`
per non-empty stage and a `README.md` whose YAML front matter declares one config per stage (plus
`all`, one split per stage), so `datasets.load_dataset(repo_or_folder, "stage_1")` works the same
on the local folder and on the Hub. Rebuilding keeps the card's hand-written notes and any front
matter keys gradus does not write.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow.parquet as pq
import yaml

from pipeline.core.storage import replacing, write_text_atomic
from pipeline.curriculum.build import manifest_problems, read_manifest
from pipeline.rewards.trainers import trainer_config

CARD = "README.md"
NOTES_START = "<!-- gradus:notes:start -->"
NOTES_END = "<!-- gradus:notes:end -->"
DEFAULT_NOTES = "_Your notes (intended use, caveats, citation): gradus keeps this section when it rebuilds the card._"
SOURCE_LICENCES = {"reasoning_gym/": ("apache-2.0", "Apache-2.0 (reasoning-gym generators)")}
"""Licences known from a problem source's name prefix; other sources must be declared by hand."""
UNKNOWN_LICENCE = "not recorded: check the source's licence before publishing"
HISTOGRAM_BINS = 10
_FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---\n", re.S)


@dataclass(frozen=True)
class ExportSpec:
    """Which curriculum is exported and how its card describes it."""

    curriculum: str = field(default="", metadata={
        "help": "curriculum name under $GRADUS_HOME/curricula/; empty: the latest one materialized"})
    license: str | None = field(default=None, metadata={
        "help": "licence id for the card; empty: derived from the sources (reasoning-gym: apache-2.0)"})
    pretty_name: str | None = field(default=None, metadata={"help": "dataset title on the card"})


@dataclass(frozen=True)
class PublishSpec:
    """Where and how an exported folder is pushed to the Hugging Face Hub (a dry run by default)."""

    repo_id: str = field(default="", metadata={"help": "dataset repository, e.g. me/my-curriculum"})
    token: str | None = field(default=None, metadata={
        "help": "Hub token; give it as {env: HF_TOKEN}, never inline"})
    dry_run: bool = field(default=True, metadata={
        "help": "build the folder and report the upload without contacting the Hub"})
    overwrite: bool = field(default=False, metadata={"help": "allow replacing an existing repository or branch"})
    private: bool = field(default=True, metadata={"help": "visibility of a repository this creates"})
    revision: str | None = field(default=None, metadata={
        "help": "branch to push to (created if missing); empty: main"})


class OverwriteRefused(RuntimeError):
    """The repository (or branch) exists and overwriting was not asked for."""


@dataclass(frozen=True)
class HubFolder:
    """A built repository folder."""

    path: Path
    configs: tuple[str, ...]
    """Configs declared in the card: `all`, then every non-empty stage."""
    rows: dict[str, int]
    """Rows per stage, empty stages included (they get no config and no file)."""
    license: str
    """The card's `license:` value."""

    def files(self) -> list[tuple[str, int]]:
        """Every file that an upload would send: (path in the repository, bytes), sorted."""
        return sorted(
            (p.relative_to(self.path).as_posix(), p.stat().st_size) for p in self.path.rglob("*") if p.is_file()
        )


def data_file(stage: str) -> str:
    return f"data/{stage}/train-00000-of-00001.parquet"


def split_card(text: str) -> tuple[dict[str, Any], str]:
    """A card's YAML front matter (as a dict) and its Markdown body."""
    match = _FRONT_MATTER.match(text)
    if not match:
        return {}, text
    return yaml.safe_load(match.group(1)) or {}, text[match.end():]


def notes_of(body: str) -> str:
    """The hand-written section between the notes markers (the default text if there is none)."""
    start, end = body.find(NOTES_START), body.find(NOTES_END)
    if start < 0 or end < start:
        return DEFAULT_NOTES
    return body[start + len(NOTES_START):end].strip("\n")


def card_licence(sources: Mapping[str, int], license: str | None) -> tuple[str, dict[str, str]]:
    """The card's `license:` value and a licence line per source.

    A declared `license` wins; otherwise the licence is known only when every source's is, and is
    `other` when they differ or one is unknown.
    """
    per_source, ids = {}, set()
    for source in sources:
        known = next((v for prefix, v in SOURCE_LICENCES.items() if source.startswith(prefix)), None)
        per_source[source] = known[1] if known else (f"declared: {license}" if license else UNKNOWN_LICENCE)
        ids.add(known[0] if known else None)
    if license:
        return license, per_source
    return (ids.pop() if len(ids) == 1 and None not in ids else "other"), per_source


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "n>1M"


def front_matter(stages: list[str], license: str, pretty_name: str, rows: int) -> dict[str, Any]:
    """The YAML keys gradus owns: licence, name, tags and one config per stage."""
    configs: list[dict[str, Any]] = [
        {"config_name": "all", "default": True,
         "data_files": [{"split": s, "path": f"data/{s}/train-*.parquet"} for s in stages]}
    ] if stages else []
    configs += [{"config_name": s, "data_files": [{"split": "train", "path": f"data/{s}/train-*.parquet"}]}
                for s in stages]
    return {
        "license": license,
        "pretty_name": pretty_name,
        "task_categories": ["text-generation"],
        "tags": ["gradus", "curriculum", "difficulty", "rlvr"],
        "size_categories": [_size_category(rows)],
        "configs": configs,
    }


def _histogram(rates: np.ndarray, excluded: Mapping[str, int]) -> str:
    edges = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
    # Right-closed bins (a, b] like the strata's, 0 joining the first; the rounding keeps 0.3 out of
    # (0.3, 0.4] despite 0.3 * 10 > 3 in floating point.
    index = np.ceil(np.round(np.asarray(rates, float) * HISTOGRAM_BINS, 9)).astype(int) - 1
    counts = np.bincount(np.clip(index, 0, HISTOGRAM_BINS - 1), minlength=HISTOGRAM_BINS)
    widest = max(int(counts.max()), 1)
    lines = ["| pass rate | problems | |", "|---|---:|---|"]
    for lo, hi, n in zip(edges, edges[1:], counts):
        lines.append(f"| {lo:.1f}–{hi:.1f} | {n} | {'█' * round(20 * n / widest)} |")
    lines.append("")
    lines.append(f"Left out of the stages: {excluded.get('solved', 0)} always solved (pass rate 1) and "
                 f"{excluded.get('unsolved', 0)} never solved (pass rate 0) problems — they give GRPO-style "
                 "training no gradient.")
    return "\n".join(lines)


def _span(values: np.ndarray) -> str:
    if not len(values):
        return "–"
    lo, hi = int(values.min()), int(values.max())
    return str(lo) if lo == hi else f"{lo}–{hi}"


def _decontamination(record: Mapping[str, Any] | None) -> str:
    """Which benchmarks the pool was checked against, how, and what was left out."""
    if not record:
        return "This curriculum was not checked against evaluation benchmarks."
    methods = list(record["methods"])
    rows = "\n".join(f"| `{b}` | " + " | ".join(str(c.get(m, 0)) for m in methods) + f" | {c.get('any', 0)} |"
                     for b, c in record["benchmarks"].items())
    notes = "\n".join(f"- `{m}`: {text}" for m, text in record["methods"].items())
    verdict = ("Flagged problems were left out of every stage."
               if record["excluded_flagged"] else "**Flagged problems were kept** (exclusion was turned off).")
    return f"""{record['checked']} problems were checked against {len(record['benchmarks'])} benchmark(s); \
{record['flagged']} were flagged. {verdict}

| benchmark | {' | '.join(methods)} | any |
|---|{'---:|' * (len(methods) + 1)}
{rows}

{notes}
- {record['template_rule']}."""


def _training(manifest: Mapping[str, Any]) -> str:
    """How to train on the stages in order with the labels' own reward, and what a trainer's group
    filter will keep of each stage."""
    stages = [s for s in manifest["stages"] if s["rows"]]
    predicted = [s["group_filter"] for s in stages if s.get("group_filter")]
    sizes = [p["generation_batch_size"] for p in predicted]
    group = predicted[0] if predicted else {}
    config = trainer_config([data_file(s["name"]) for s in stages], group.get("group_size"),
                            group.get("train_batch_size"),
                            None if not sizes or None in sizes else max(sizes))
    text = f"""Every row's `extra_info` records how it was labelled (verifier, answer extraction
`{manifest.get('extraction_policy', '?')}`, the problem's metadata); gradus's reward entry points apply
exactly that, so a stage's train reward is comparable with its pass rates. They need gradus importable
in the trainer's environment (`pip install --no-deps -e <gradus>` plus math-verify and reasoning-gym).

verl (the stages in order: `data.shuffle=False` reads `data.train_files` as listed):

```bash
python -m verl.trainer.main_ppo \\
  {" ".join(config["verl"])}
```

TRL:

```python
{chr(10).join(config["trl"])}
```

OpenRLHF (one run per stage, each resuming from the last one's checkpoint):

```bash
python -m openrlhf.cli.train_ppo_ray {" ".join(config["openrlhf"])}
```"""
    if not predicted:
        return text
    rows = "\n".join(
        f"| `{s['name']}` | {p['surviving_fraction']:.3f} | {p['surviving_fraction_range'][0]:.3f}–"
        f"{p['surviving_fraction_range'][1]:.3f} | {p['generation_batch_size'] or '–'} | "
        f"{p['generation_batch_size_at_low'] or '–'} |"
        for s in stages if (p := s.get("group_filter")))
    return text + f"""

### What a group filter keeps

verl's DAPO `filter_groups` and OpenRLHF's dynamic filtering drop every group whose {group['group_size']} rewards
are all equal. Expected from the labels (each problem survives with 1 − p^G − (1 − p)^G), with the range its
pass-rate interval allows, and the prompts to generate so that {group['train_batch_size']} groups survive with
probability {group['confidence']:.0%} (an exact binomial bound; at the range's low end too). Labels make
these figures optimistic: a problem staged at 1/8 may be nearly unsolvable.

| stage | surviving fraction | range | generation batch | at low end |
|---|---:|---|---:|---:|
{rows}"""


def _other_models(record: Mapping[str, Any] | None) -> str:
    """The other models whose pass rates ride along, and the selection on them."""
    if not record or not record.get("models"):
        return "No other model's labels: rows carry no `extra_info.model_difficulty`."
    rows = "\n".join(f"| `{m['name']}` | `{m['model_id']}` | `{m['revision']}` | {m['problems']} | "
                     f"{m['mean_pass_rate']:.3f} |" for m in record["models"])
    text = ("Every row's `extra_info.model_difficulty` holds these models' pass rates on the problem, one "
            "field per model (as Skywork-OR1 ships it), from gradus's label history; null where a model never "
            "labelled the problem.\n\n| name | model | revision | problems labelled | mean pass rate |\n"
            "|---|---|---|---:|---:|\n" + rows)
    chosen = record.get("selection")
    if chosen:
        text += (f"\n\nStaged only problems `{chosen['solved_by']}` solves at a pass rate of at least "
                 f"{chosen['min_other_pass_rate']:g} and the target at most {chosen['max_target_pass_rate']:g}: "
                 f"{chosen['kept']} kept, {chosen['left_out']} left out.")
    return text


def render_card(manifest: Mapping[str, Any], rates: np.ndarray, trials: np.ndarray, licences: Mapping[str, str],
                name: str, usage_id: str, notes: str) -> str:
    """The card's Markdown body (without front matter)."""
    model, sampling = manifest.get("model", {}), manifest.get("sampling") or {}
    strata = manifest["strata"]
    stage_rows = "\n".join(
        f"| `{s['name']}` | ({s['pass_rate_bin'][0]:.3g}, {s['pass_rate_bin'][1]:.3g}] | {s['rows']} | "
        + ("–" if s["mean_pass_rate"] is None else f"{s['mean_pass_rate']:.3f}")
        + f" | {'yes' if s['rows'] else 'no (empty)'} |"
        for s in manifest["stages"]
    )
    provenance = {
        "model": model.get("id", "?"),
        "revision": model.get("revision", "?"),
        "sampling": ", ".join(f"{k}={v}" for k, v in sampling.items()) or "?",
        "rollouts per problem": _span(trials),
        "sampling key": manifest.get("sampling_key", "?"),
        "label key": manifest.get("label_key", "?"),
        "verifier version": manifest.get("verifier_version", "?"),
        "answer extraction": manifest.get("extraction_policy", "?"),
        "token cap": (manifest.get("truncation") or {}).get("message", "truncations not counted"),
        "strata edges": ", ".join(f"{e:.3g}" for e in strata["edges"]),
        "curriculum built": manifest.get("created_at", "?"),
        "problem ids sha256": manifest.get("source_snapshot", {}).get("problem_ids_sha256", "?"),
    }
    sources = manifest.get("source_snapshot", {}).get("sources", {})
    source_rows = "\n".join(f"| `{s}` | {n} | {licences[s]} |" for s, n in sorted(sources.items()))
    counts = manifest["counts"]
    return f"""
# {name}

A difficulty-stratified curriculum for RL fine-tuning with verifiable rewards, built by gradus.
Each problem's pass rate was measured for **{provenance['model']}**
(revision `{provenance['revision']}`) by sampling rollouts and verifying their answers; `stage_1` is
the easiest stage. Rows follow verl's RL schema (`data_source`, `prompt`, `ability`, `reward_model`,
`extra_info`) plus the label columns (`problem_id`, `stage`, `successes`, `trials`, `pass_rate`,
`ci_low`, `ci_high`).

## Usage

```python
from datasets import load_dataset

stage_1 = load_dataset("{usage_id}", "stage_1", split="train")
every_stage = load_dataset("{usage_id}")  # config `all`: one split per stage
```

## Stages

{counts['in_stages']} of {counts['labelled']} labelled problems ({counts['problems']} in the pool) are in a stage.

| config | pass-rate bin | rows | mean pass rate | config exists |
|---|---|---:|---:|---|
{stage_rows}

## Pass-rate histogram (problems in the stages)

{_histogram(rates, manifest.get('excluded', {}))}

## Training

{_training(manifest)}

## Provenance

| | |
|---|---|
""" + "\n".join(f"| {k} | `{v}` |" for k, v in provenance.items()) + f"""

## Sources and licences

| source | problems | licence |
|---|---:|---|
{source_rows}

The labels are measurements of the model above; they describe difficulty for that model only.

## Difficulty across models

{_other_models(manifest.get("other_models"))}

## Decontamination

{_decontamination(manifest.get("decontamination"))}

## Notes

{NOTES_START}
{notes}
{NOTES_END}
"""


def build_hub_folder(
    curriculum: Path,
    out: Path,
    *,
    license: str | None = None,
    pretty_name: str | None = None,
    repo_id: str = "",
) -> HubFolder:
    """Build the repository folder for the curriculum at `curriculum` into `out` (replaced whole,
    keeping the existing card's notes and foreign front matter keys)."""
    if issues := manifest_problems(curriculum):
        raise ValueError(f"curriculum {curriculum} disagrees with its manifest: {'; '.join(issues)}")
    manifest = read_manifest(curriculum)
    old_meta, old_body = split_card((out / CARD).read_text()) if (out / CARD).is_file() else ({}, "")
    with replacing(out) as staging:
        rows, stages, rates, trials = {}, [], [], []
        for stage in manifest["stages"]:
            rows[stage["name"]] = stage["rows"]
            if not stage["rows"]:
                continue  # `datasets` cannot load a zero-row Parquet file: an empty stage gets no config
            stages.append(stage["name"])
            target = staging / data_file(stage["name"])
            target.parent.mkdir(parents=True)
            shutil.copyfile(curriculum / stage["file"], target)
            labels = pq.read_table(target, columns=["pass_rate", "trials"])
            rates.append(labels.column("pass_rate").to_numpy())
            trials.append(labels.column("trials").to_numpy())
        all_rates = np.concatenate(rates) if rates else np.array([])
        all_trials = np.concatenate(trials) if trials else np.array([], dtype=np.int64)

        licence, licences = card_licence(manifest.get("source_snapshot", {}).get("sources", {}), license)
        name = pretty_name or old_meta.get("pretty_name") or f"gradus curriculum: {manifest['name']}"
        meta = {**old_meta, **front_matter(stages, licence, name, sum(rows.values()))}
        body = render_card(manifest, all_rates, all_trials, licences, name, repo_id or str(out), notes_of(old_body))
        card = "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n" + body
        write_text_atomic(card, staging / CARD)
    return HubFolder(out, tuple(c["config_name"] for c in meta["configs"]), rows, licence)


class HubClient(Protocol):
    """The part of `huggingface_hub.HfApi` a publish uses (the token lives inside the client)."""

    def repo_exists(self, repo_id: str, *, repo_type: str | None = None) -> bool: ...
    def create_repo(self, repo_id: str, *, private: bool | None = None, repo_type: str | None = None) -> Any: ...
    def list_repo_refs(self, repo_id: str, *, repo_type: str | None = None) -> Any: ...
    def create_branch(self, repo_id: str, *, branch: str, repo_type: str | None = None,
                      exist_ok: bool = False) -> None: ...
    def upload_folder(self, *, repo_id: str, folder_path: str, commit_message: str | None = None,
                      repo_type: str | None = None, revision: str | None = None,
                      delete_patterns: list[str] | None = None) -> Any: ...


@dataclass(frozen=True)
class Publication:
    """Where a push landed."""

    repo_id: str
    revision: str
    """The branch written (`main` unless one was given)."""
    commit: str
    url: str
    created_repo: bool


def publish(
    folder: HubFolder,
    api: HubClient,
    repo_id: str,
    *,
    message: str,
    private: bool = True,
    overwrite: bool = False,
    revision: str | None = None,
) -> Publication:
    """Push the folder as one commit to dataset `repo_id` (branch `revision` if given).

    Refuses to write into an existing repository's `main`, or an existing branch, unless
    `overwrite`; a new branch of an existing repository is always allowed. Stage files the folder no
    longer has are deleted in the same commit.
    """
    exists = api.repo_exists(repo_id, repo_type="dataset")
    if exists and not overwrite:
        branches = {b.name for b in api.list_repo_refs(repo_id, repo_type="dataset").branches} if revision else set()
        if revision is None or revision in branches:
            where = f"branch {revision!r} of " if revision else ""
            raise OverwriteRefused(
                f"{where}dataset {repo_id} already exists: set overwrite=True to replace it, "
                "or publish to a new revision (branch)"
            )
    if not exists:
        api.create_repo(repo_id, private=private, repo_type="dataset")
    if revision:
        api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True)
    info = api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder.path),
        commit_message=message,
        repo_type="dataset",
        revision=revision,
        delete_patterns=["data/**"],
    )
    return Publication(repo_id, revision or "main", str(info.oid), str(info.commit_url), created_repo=not exists)
