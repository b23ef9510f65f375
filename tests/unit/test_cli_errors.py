"""No traceback reaches an operator: an exception no handler names (a bug) ends a command
with one line on stderr (its type, where it was raised, its text) and exit 1."""

from __future__ import annotations

import asyncio

import pytest

from indexer import cli, errors


def _run(main: object, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        cli._run(main)  # type: ignore[arg-type]
    return int(info.value.code or 0), capsys.readouterr().err


def test_an_unexpected_exception_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    async def main(stop: asyncio.Event) -> int:
        raise KeyError("boom")

    code, err = _run(main, capsys)
    assert code == errors.EXIT_FAILURE
    assert err.startswith("error: internal error: KeyError at test_cli_errors.py:"), err
    assert "'boom'" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_one_inside_a_task_group_is_unwrapped(capsys: pytest.CaptureFixture[str]) -> None:
    async def fails() -> None:
        raise ZeroDivisionError("division by zero")

    async def main(stop: asyncio.Event) -> int:
        async with asyncio.TaskGroup() as group:
            group.create_task(fails())
        return 0

    code, err = _run(main, capsys)
    assert code == errors.EXIT_FAILURE
    assert "internal error: ZeroDivisionError at test_cli_errors.py:" in err, err
    assert "Traceback" not in err and "ExceptionGroup" not in err


def test_a_typed_error_in_a_task_group_keeps_its_exit_code(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def main(stop: asyncio.Event) -> int:
        async with asyncio.TaskGroup() as group:
            group.create_task(asyncio.sleep(0))
            raise errors.ReorgTooDeep("reorg of depth 99 exceeds 64")

    code, err = _run(main, capsys)
    assert code == errors.EXIT_REORG_TOO_DEEP
    assert err == "error: reorg of depth 99 exceeds 64\n"
