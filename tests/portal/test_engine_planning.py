"""When the engine plans (portal.engine.Planning): whenever nothing can be sent, otherwise only in the time the
rate limiter leaves before the next send, so planning never makes a send late."""

from __future__ import annotations

from collections.abc import Iterator

from portal.engine import Planning


class Steps:
    """A protocol's planning side only: `n` planning steps, sends spaced by `spacing` seconds."""

    def __init__(self, n: int, spacing: float) -> None:
        self.n = n
        self.spacing = spacing
        self.planned = 0

    def plan_steps(self) -> Iterator[int]:
        for _ in range(self.n):
            self.planned += 1
            yield self.planned

    def send_spacing(self) -> float:
        return self.spacing


def test_it_plans_whenever_nothing_can_be_sent():
    planning = Planning(Steps(2, spacing=0.0))  # type: ignore[arg-type]
    assert planning.step_now(can_send=False)
    assert planning.advance() and planning.advance()
    assert not planning.advance() and planning.done
    assert not planning.step_now(can_send=False)


def test_it_plans_before_a_send_only_when_the_step_fits_before_the_next_slot():
    planning = Planning(Steps(5, spacing=60.0))  # type: ignore[arg-type]
    planning.advance()
    assert not planning.step_now(can_send=True)  # no send yet: the first planned request leaves at once
    planning.sending()
    assert planning.step_now(can_send=True)  # a minute until the next slot: room to plan
    planning.took = 120.0  # a step longer than the spacing would make the next send late
    assert not planning.step_now(can_send=True)


def test_an_unpaced_service_sends_what_is_planned_before_planning_more():
    planning = Planning(Steps(5, spacing=0.0))  # type: ignore[arg-type]
    planning.advance()
    planning.sending()
    assert not planning.step_now(can_send=True)


def test_finish_plans_everything_left():
    steps = Steps(4, spacing=1.0)
    planning = Planning(steps)  # type: ignore[arg-type]
    planning.advance()
    planning.finish()
    assert steps.planned == 4 and planning.done
