"""What the one schema check costs: per event over the corpus, beside the whole pipeline.

    python bench/schemas.py [--corpus ../shared/corpus] [--rounds 5]

Parses every corpus mail once, then times, over the same events in the same run: the
bridge's check (each topic's schema compiled once; fastjsonschema where both drafts read the
schema alike), a plain jsonschema validation of the same bodies (the baseline), and the
whole pipeline per mail. Prints microseconds per event and the check's share of a mail.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.pipeline import Pipeline  # noqa: E402
from bridge.pipeline.plugins import discover  # noqa: E402
from bridge.pipeline.schemas import Schemas  # noqa: E402


def best_of(rounds: int, work) -> float:
    """The fastest of *rounds* runs of *work*, in seconds (the least disturbed one)."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"))
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    mails = [p.read_bytes() for p in sorted(Path(args.corpus).glob("mails/*/*.eml"))]
    if not mails:
        sys.exit(f"no mail under {args.corpus}/mails")
    parsers = discover().parsers
    pipeline = Pipeline(parsers)
    events = [e for raw in mails for e in pipeline.process(raw).events]
    schemas = Schemas(parsers)
    for event in events:  # compile every schema before timing
        schemas.check(event.topic, event.body)

    import json

    import jsonschema

    plain = {
        t: jsonschema.Draft202012Validator(
            json.loads((Path(p.schemas) / f"{t}.json").read_text(encoding="utf-8"))
        )
        for p in parsers
        for t in p.topics
    }

    def bridge_check() -> None:
        for event in events:
            schemas.check(event.topic, event.body)

    def jsonschema_check() -> None:
        for event in events:
            plain[event.topic].validate(event.body)

    def whole_pipeline() -> None:
        for raw in mails:
            pipeline.process(raw)

    ours = best_of(args.rounds, bridge_check) / len(events) * 1e6
    baseline = best_of(args.rounds, jsonschema_check) / len(events) * 1e6
    per_mail = best_of(args.rounds, whole_pipeline) / len(mails) * 1e6
    per_mail_check = ours * len(events) / len(mails)
    print(f"corpus: {len(mails)} mails, {len(events)} events")
    print(f"schema check (bridge): {ours:8.1f} us/event")
    print(f"jsonschema alone:      {baseline:8.1f} us/event   ratio {ours / baseline:.3f}")
    share = per_mail_check / per_mail
    print(f"whole pipeline:        {per_mail:8.1f} us/mail    check share {share:.1%}")


if __name__ == "__main__":
    main()
