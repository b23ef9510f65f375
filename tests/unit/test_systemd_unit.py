"""The shipped systemd unit: `systemd-analyze verify` and `security` pass, key directives hold.

systemd-analyze is required, never skipped (Debian: package `systemd`). `verify` insists that
ExecStart's binary exists, which it does not on a build machine, so the unit is verified
inside a throwaway root (`--root`): the unit in its etc/systemd/system, an executable stub at
the ExecStart path, and a copy of the host's unit directory for the targets it names.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "indexer.service"
HOST_UNITS = Path("/usr/lib/systemd/system")
# Exposure on systemd-analyze's 0-100 scale (printed /10): 20 means "2.0 OK" or better.
SECURITY_THRESHOLD = 20
SHUTDOWN_GRACE_SECS = 60  # the daemon's default [service] shutdown_grace_secs


def _analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail("systemd-analyze is required (Debian/Ubuntu: apt-get install systemd)")
    return path


def _directives(text: str) -> dict[str, list[str]]:
    """`Key=value` lines of the unit, by key, in order (comments and sections dropped)."""
    found: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a Key=value line: {raw!r}"
        found.setdefault(key.strip(), []).append(value.strip())
    return found


def _seconds(value: str) -> float:
    """A systemd time span without units or with one unit (`90`, `90s`, `2min`)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|min|m)?", value)
    assert match, f"unsupported time span {value!r}"
    return float(match[1]) * (60 if match[2] in ("min", "m") else 1)


def _verify(unit_text: str, root: Path) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` of `unit_text` in a fake root holding its Exec* binaries."""
    directives = _directives(unit_text)
    for key in ("ExecStart", "ExecReload"):
        for line in directives.get(key, []):
            binary = shlex.split(line)[0].lstrip("@-:+!")
            stub = root / binary.lstrip("/")
            stub.parent.mkdir(parents=True, exist_ok=True)
            stub.write_text("#!/bin/sh\nexit 0\n")
            stub.chmod(0o755)
    units = root / "usr/lib/systemd/system"
    if not units.exists():
        shutil.copytree(HOST_UNITS, units, symlinks=True)
    unit = root / "etc/systemd/system" / UNIT.name
    unit.parent.mkdir(parents=True, exist_ok=True)
    unit.write_text(unit_text)
    return subprocess.run(
        [_analyze(), "verify", f"--root={root}", "--man=no", "--generators=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _security(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_analyze(), "security", "--offline=yes", "--no-pager",
         f"--threshold={SECURITY_THRESHOLD}", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip


def test_verify_passes_without_warnings(tmp_path: Path) -> None:
    result = _verify(UNIT.read_text(), tmp_path)
    # verify only warns (exit 0) about unknown keys and unparsable values: any output fails.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_verify_reports_a_broken_unit(tmp_path: Path) -> None:
    """The verify harness can fail: a misspelt key and a bad value are both reported."""
    broken = UNIT.read_text().replace("WatchdogSec=", "WatchdogSecs=")
    broken = broken.replace("Type=notify", "Type=notfy")
    result = _verify(broken, tmp_path)
    output = result.stdout + result.stderr
    assert "Unknown key 'WatchdogSecs'" in output
    assert "notfy" in output


def test_security_exposure_is_ok_or_better() -> None:
    result = _security(UNIT)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, summary or result.stderr
    match = re.search(r"Overall exposure level for indexer\.service: (\d+\.\d) (\w+)", summary)
    assert match, summary
    assert float(match[1]) * 10 <= SECURITY_THRESHOLD
    assert match[2] in ("PERFECT", "SAFE", "OK")


def test_security_threshold_rejects_an_unhardened_unit(tmp_path: Path) -> None:
    bare = tmp_path / "indexer.service"
    bare.write_text("[Service]\nType=notify\nExecStart=/opt/indexer/venv/bin/indexer sync\n")
    result = _security(bare)
    assert result.returncode != 0
    assert "UNSAFE" in result.stdout or "EXPOSED" in result.stdout


def test_lifecycle_directives() -> None:
    unit = _directives(UNIT.read_text())
    assert unit["Type"] == ["notify"]
    assert unit["NotifyAccess"] == ["main"]
    assert _seconds(unit["WatchdogSec"][-1]) > 0
    assert unit["Restart"] == ["on-failure"]
    assert _seconds(unit["RestartSec"][-1]) >= 1
    prevented = {int(code) for value in unit["RestartPreventExitStatus"] for code in value.split()}
    assert {2, 3} <= prevented
    assert 1 not in prevented
    assert _seconds(unit["TimeoutStopSec"][-1]) > SHUTDOWN_GRACE_SECS
    command = shlex.split(unit["ExecStart"][-1])
    assert command[0].startswith("/") and command[-1] == "sync"
    assert "--to" not in command


def test_secrets_come_from_credentials_not_the_environment() -> None:
    unit = _directives(UNIT.read_text())
    assert "database-url:/etc/indexer/database-url" in unit["LoadCredential"]
    assert "EnvironmentFile" not in unit
    for value in unit.get("Environment", []):
        for assignment in shlex.split(value):
            name, _, setting = assignment.partition("=")
            assert not re.search(r"URL|PASSWORD|SECRET|TOKEN|KEY|DSN", name, re.I), assignment
            assert not re.search(r"://|@", setting), assignment


def test_hardening_directives() -> None:
    unit = _directives(UNIT.read_text())
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "PrivateUsers": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "ProtectClock": "yes",
        "ProtectHostname": "yes",
        "ProtectProc": "invisible",
        "ProcSubset": "pid",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "RestrictNamespaces": "yes",
        "RestrictRealtime": "yes",
        "RestrictSUIDSGID": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "RemoveIPC": "yes",
        "SystemCallArchitectures": "native",
        "CapabilityBoundingSet": "",
        "UMask": "0077",
    }
    assert {key: unit.get(key, ["<missing>"])[-1] for key in expected} == expected
    assert "@system-service" in unit["SystemCallFilter"]
    assert unit["User"] != ["root"]
    assert "MemoryMax" in unit
    # Nodes and Postgres may be remote: the shipped unit must not confine them to loopback.
    assert "IPAddressDeny" not in unit
    assert "PrivateNetwork" not in unit
