"""``pv evidence prune``: old records go, every status and the gate's verdict stay, the chain
still verifies, and the gate refuses a prune that took what a status rests on."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from demo_project import DemoProject
from tests_falsify_records import NODE, claim, make_record

from pv.cli import run
from pv.contract.model import Falsifier
from pv.falsify import records as rec
from pv.falsify import store
from pv.report import prune
from pv.report.status import integrity_problems

CUT = "2031-01-01"


def _extend(demo: DemoProject, fid: str, outcomes: str) -> list[Path]:
    """Copies of the falsifier's newest record chained after it: ``p`` passes, ``F`` fails."""
    folder = demo.evidence / "demo-v1" / fid
    chain = store.load_stored(demo.evidence, "demo-v1", fid)
    base, previous = chain[-1].record, chain[-1].file_sha256
    written = []
    for i, what in enumerate(outcomes):
        ts = datetime(2030, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=i)
        r = replace(base, previous=previous, started_at=rec.iso(ts), finished_at=rec.iso(ts))
        if what == "F":
            r = replace(r, outcome=rec.FAILED, tests=tuple(replace(t, outcome=rec.FAILED, reason="boom")
                                                               for t in r.tests))
        data = store.payload(r.sealed(None))
        path = folder / store.record_name(ts, "copy", i)
        path.write_bytes(data)
        previous = hashlib.sha256(data).hexdigest()
        written.append(path)
    return written


def _view(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert run(["status", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    for c in data["contracts"]:
        for f in c["falsifiers"]:
            f.pop("evidence")
            f.pop("records")
    return data


def _gate(capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = run(["gate", "--baseline", "HEAD~1"])
    out = capsys.readouterr()
    return code, [line for line in (out.out + out.err).splitlines() if line.startswith("evidence:")]


@pytest.fixture
def grown(demo: DemoProject, capsys: pytest.CaptureFixture[str]) -> DemoProject:
    demo.behave(two_live="skip-absent", three="skip-absent")
    assert run(demo.args()) == 0
    capsys.readouterr()
    demo.commit("first evidence")
    _extend(demo, "FALSIFY-DEMO-001", "ppppFpppp")
    _extend(demo, "FALSIFY-DEMO-002", "pppppp")
    _extend(demo, "FALSIFY-DEMO-003", "ppp")
    demo.commit("grown")
    return demo


def test_prune_keeps_every_status_and_the_gate_passes(grown: DemoProject, capsys: pytest.CaptureFixture[str]) -> None:
    assert _gate(capsys) == (0, [])
    before = _view(capsys)
    failure = next(p for p in grown.records("FALSIFY-DEMO-001") if store.read_record(p).outcome == rec.FAILED)
    assert run(["evidence", "prune", "--before", CUT]) == 0
    out = capsys.readouterr().out
    assert "removed" in out and "commit the deletions" in out
    assert _view(capsys) == before
    assert failure.exists(), "the latest failure bounds what counts: it stays"
    kept = store.load_stored(grown.evidence, "demo-v1", "FALSIFY-DEMO-001")
    assert [s.record.kind for s in kept].count(rec.PRUNE) == 1 and len(kept) < 11
    assert integrity_problems(kept, "demo-v1", "FALSIFY-DEMO-001", grown.root, None) == []
    grown.commit("prune")
    assert _gate(capsys) == (0, [])
    head = store.head(kept)
    assert run(grown.args()) == 0  # the next run chains onto the prune record
    capsys.readouterr()
    again = store.load_stored(grown.evidence, "demo-v1", "FALSIFY-DEMO-001")
    assert again[-1].record.previous == head
    assert integrity_problems(again, "demo-v1", "FALSIFY-DEMO-001", grown.root, None) == []


def test_dry_run_deletes_nothing(grown: DemoProject, capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted(grown.evidence.rglob("*.json"))
    assert run(["evidence", "prune", "--before", CUT, "--dry-run", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dry_run"] and report["removed"] > 0
    assert sorted(grown.evidence.rglob("*.json")) == files


def _forge(demo: DemoProject, fid: str, gone: list[store.StoredRecord]) -> None:
    """A prune record listing ``gone`` (whatever they are), written, and the records deleted."""
    from pv.contract.model import load_contract

    contract = load_contract(demo.contract)
    f = contract.falsifier(fid)
    assert f is not None
    stored = store.load_stored(demo.evidence, "demo-v1", fid)
    record = prune.prune_record(contract, f, stored, gone, rec.iso(datetime(2031, 1, 1, tzinfo=timezone.utc)),
                                root=demo.root, key=None)
    store.write_record(demo.evidence, record, root=demo.root)
    for s in gone:
        s.path.unlink()


def test_the_gate_refuses_a_prune_that_took_a_backing_record(grown: DemoProject,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    stored = store.load_stored(grown.evidence, "demo-v1", "FALSIFY-DEMO-001")
    _forge(grown, "FALSIFY-DEMO-001", [stored[1], stored[-1]])  # an old pass and the head, which backs FUNCTIONAL
    grown.commit("prune too much")
    code, lines = _gate(capsys)
    assert code == 1
    backing = [line for line in lines if "the status rests on it" in line]
    assert len(backing) == 1 and stored[-1].path.name in backing[0], lines
    assert "(the record backing its status)" in backing[0]


def test_the_gate_refuses_a_removal_no_prune_record_lists(grown: DemoProject,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["evidence", "prune", "--before", CUT]) == 0
    stored = store.load_stored(grown.evidence, "demo-v1", "FALSIFY-DEMO-002")
    unlisted = next(s for s in stored if s.record.kind != rec.PRUNE)
    unlisted.path.unlink()
    grown.commit("prune, and one more")
    code, lines = _gate(capsys)
    assert code == 1
    assert [line for line in lines if "append-only" in line] == [
        (f"evidence: demo-v1/FALSIFY-DEMO-002: record {unlisted.path.relative_to(grown.root).as_posix()} of the "
        "baseline was removed; evidence is append-only (restore it from the baseline)")]


def test_the_gate_refuses_a_listing_that_is_not_the_record(grown: DemoProject,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    stored = store.load_stored(grown.evidence, "demo-v1", "FALSIFY-DEMO-002")
    victim = stored[1]
    liar = replace(victim, file_sha256="0" * 64)
    _forge(grown, "FALSIFY-DEMO-002", [liar])
    grown.commit("prune with a false listing")
    code, lines = _gate(capsys)
    assert code == 1 and any("with a sha256 or previous link that are not the baseline record's" in x for x in lines)


def test_an_old_prune_record_covers_no_new_deletion(grown: DemoProject, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["evidence", "prune", "--before", CUT]) == 0
    grown.commit("prune")
    prune_path = next(p for p in grown.records("FALSIFY-DEMO-001") if store.read_record(p).kind == rec.PRUNE)
    listed = store.read_record(prune_path).prune
    assert listed is not None
    name = listed["removed"][0]["name"]
    grown.git("checkout", "HEAD~1", "--", f"evidence/demo-v1/FALSIFY-DEMO-001/{name}")
    grown.commit("restore one")
    (grown.evidence / "demo-v1" / "FALSIFY-DEMO-001" / name).unlink()
    grown.commit("delete it again")
    code, lines = _gate(capsys)
    assert code == 1 and any(name in x and "append-only" in x for x in lines)


# --------------------------------------------------------------------------- the chain and what stays


def _chain(*records: rec.EvidenceRecord, folder: Path) -> list[store.StoredRecord]:
    out, previous = [], None
    for i, r in enumerate(records):
        r = replace(r, previous=previous).sealed(None)
        data = store.payload(r)
        path = folder / f"{i:02d}.json"
        path.write_bytes(data)
        out.append(store.read_stored(path))
        previous = out[-1].file_sha256
    return out


def test_removed_records_listed_by_a_prune_record_keep_the_chain(tmp_path: Path) -> None:
    chain = _chain(*(make_record(finished=f"2026-11-25T12:00:0{i}.000000Z") for i in range(4)), folder=tmp_path)
    gone = chain[1:3]
    listing = replace(make_record(finished="2026-11-26T00:00:00.000000Z"), kind=rec.PRUNE, outcome=rec.PRUNED,
                      reason="pruned", tests=(), previous=chain[-1].file_sha256,
                      prune={"before": "2026-11-26T00:00:00.000000Z", "removed": [prune.entry(s) for s in gone]},
                      ).sealed(None)
    data = store.payload(listing)
    (tmp_path / "99.json").write_bytes(data)
    for s in gone:
        s.path.unlink()
    left = [store.read_stored(p) for p in sorted(tmp_path.glob("*.json"))]
    ordered = store.chain_order(left)
    assert [s.path.name for s in ordered] == ["00.json", "03.json", "99.json"]
    assert integrity_problems(ordered, "demo-v1", "FALSIFY-DEMO-001", tmp_path, None) == []
    (tmp_path / "99.json").unlink()
    problems = integrity_problems(store.chain_order(left[:2]), "demo-v1", "FALSIFY-DEMO-001", tmp_path, None)
    assert any(p.startswith("broken chain:") and "03.json follows a record that is not here" in p for p in problems)


def test_needed_keeps_failure_backing_why_and_blocker(tmp_path: Path) -> None:
    live = {"device": "cuda:0", "dtype": "float32"}
    records = [make_record(finished="2026-11-25T12:00:00.000000Z"),
               make_record("failed", finished="2026-11-25T12:00:01.000000Z"),
               make_record(measured=live, cuda=True, finished="2026-11-25T12:00:02.000000Z"),
               make_record(finished="2026-11-25T12:00:03.000000Z"),
               make_record("skipped", absent=True, finished="2026-11-25T12:00:04.000000Z"),
               make_record(finished="2026-11-25T12:00:05.000000Z"),
               make_record(finished="2026-11-25T12:00:06.000000Z")]
    chain = _chain(*records, folder=tmp_path)
    keep = prune.needed(claim(), chain, root=tmp_path)
    names = {s.path.name: keep.get(s.file_sha256) for s in chain}
    assert names == {"00.json": None, "01.json": "the latest failure", "02.json": "the record backing its status",
                     "03.json": None, "04.json": None, "05.json": None,
                     "06.json": "the newest record saying why nothing reaches further"}
    blocked = Falsifier("FALSIFY-DEMO-001", "BLOCKER_FIXTURE_ABSENT", {"device": "cuda"}, tests=(NODE,),
                        claim_digest="0" * 64)
    assert prune.needed(blocked, chain, root=tmp_path).get(chain[4].file_sha256) == \
        "the latest skip behind its blocker"
    assert prune.removable(claim(), chain, "2026-11-25T12:00:04.000000Z", root=tmp_path) == [chain[0], chain[3]]


@pytest.mark.parametrize("args, needle", [
    ([], "exactly one of --keep-days N and --before DATE"),
    (["--keep-days", "3", "--before", "2026-01-01"], "exactly one of"),
    (["--before", "yesterday"], "not a date (2026-01-31) or a UTC time"),
    (["--keep-days", "-1"], "--keep-days must be 0 or more"),
])
def test_bad_arguments_are_one_line(demo: DemoProject, capsys: pytest.CaptureFixture[str], args: list[str],
                                    needle: str) -> None:
    assert run(["evidence", "prune", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err
