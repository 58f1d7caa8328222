"""The Hypercorn internals tickcast relies on still have the shape it was written for."""

from __future__ import annotations

from tickcast.web.hypercorn_bridge import shape_mismatches


def test_hypercorn_internals_have_the_tested_shape() -> None:
    problems = shape_mismatches()
    assert not problems, "Hypercorn changed under tickcast:\n" + "\n".join(problems)
