"""A second process on the same PostgreSQL learning store (tests/test_learn_store.py).

``python learn_pg_worker.py DSN add NAME N``: adds N records, keys ``shared-<i>`` for
even i (every worker writes those) and ``NAME-<i>`` for odd i, and promotes and rolls
back ``NAME``'s versions of target ``race`` in between.
"""

from __future__ import annotations

import asyncio
import sys

from slmgraph.learn import LearningRecord, PostgresLearningStore, Version


async def main(dsn: str, name: str, n: int) -> None:
    store = PostgresLearningStore(dsn)
    added = 0
    for i in range(n):
        key = f"shared-{i}" if i % 2 == 0 else f"{name}-{i}"
        added += await store.add(LearningRecord(key=key, request=f"request {i} from {name}", skill="race", label="x"))
        if i % 10 == 0:
            vid = f"race@{name}-{i}"
            await store.save_version(Version(id=vid, target="race", strategy="memory"))
            await store.promote("race", vid, f"{name} {i}")
            await store.add_outcome("race", vid, i % 4 == 0, 0.001, 1_000_000.0)
        if i % 20 == 10:
            await store.rollback("race", f"{name} undo {i}")
    await store.close()
    print(added)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[3], int(sys.argv[4])))
